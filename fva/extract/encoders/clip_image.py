"""clip-image: CLIP's image tower (``openai/clip-vit-large-patch14`` by default) as a face encoder.

* ``clip-image``: the projected image embedding (``image_embeds``: the visual projection of the pooled
  output), ``projection_dim`` wide (768 for ViT-L/14);
* ``clip-image-pooled``: the pooled output before the projection (the CLS token after ``post_layernorm``),
  ``vision_config.hidden_size`` wide (1024 for ViT-L/14).

The folder is a ``save_pretrained`` folder of a whole CLIP model (config.json ``model_type`` "clip", as
published: the text tower's weights are left unused) or of its image tower alone (``clip_vision_model``, e.g.
``CLIPVisionModelWithProjection.save_pretrained``), loaded into transformers' ``CLIPVisionModelWithProjection``
(the projection width is the CLIP config's ``projection_dim``). The input is what the folder's
``preprocessor_config.json`` (transformers' ``CLIPImageProcessor``, its PIL implementation) makes of an RGB
image: for the published model, shortest edge to 224 (bicubic), center crop 224 x 224, CLIP's mean and std.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from fva.errors import FvaError
from fva.extract.encoders.base import Encoded, register
from fva.extract.encoders.hf_image import HFImageEncoder, crop_size
from fva.extract.encoders.hf_pretrained import build_config, load_pretrained, read_config_dict
from fva.extract.weights import CLIP_HUB_ID

HUB_ID = CLIP_HUB_ID
TEXT_PARTS = ("text_model.", "text_projection.", "logit_scale")


def vision_config(folder: Path):
    """The image tower's ``CLIPVisionConfig`` (with the CLIP config's ``projection_dim``)."""
    from transformers import CLIPConfig, CLIPVisionConfig

    path = folder / "config.json"
    raw = read_config_dict(folder, ("clip", "clip_vision_model"), HUB_ID)
    if raw["model_type"] == "clip_vision_model":
        return build_config(CLIPVisionConfig, raw, path)
    full = build_config(CLIPConfig, raw, path)
    config = full.vision_config
    config.projection_dim = full.projection_dim
    return config


@register
class ClipImage(HFImageEncoder):
    name = "clip-image"
    default_weights = HUB_ID
    hub_id = HUB_ID
    processor_class = "CLIPImageProcessorPil"
    projected: ClassVar[bool] = True

    def load(self, folder: Path, processor) -> torch.nn.Module:
        from transformers import CLIPVisionModelWithProjection

        config = vision_config(folder)
        if crop_size(processor) != (config.image_size, config.image_size):
            raise FvaError(f"{folder / 'preprocessor_config.json'}: images of {crop_size(processor)} but the model "
                           f"takes {config.image_size} x {config.image_size} (config.json)")
        model = load_pretrained(CLIPVisionModelWithProjection, folder, config, HUB_ID, ignored=TEXT_PARTS)
        self._dim = int(config.projection_dim if self.projected else config.hidden_size)
        return model

    def encode(self, batch: torch.Tensor) -> Encoded:
        self.model.eval()
        with torch.inference_mode():
            pooled = self.model.vision_model(pixel_values=batch.to(self.device, torch.float32)).pooler_output
            emb = self.model.visual_projection(pooled) if self.projected else pooled
        return Encoded(emb.float().cpu(), {})

    def config(self) -> dict:
        output = "projected image embedding (image_embeds)" if self.projected else "pooled output (post_layernorm CLS)"
        return {"output": output, **self.input_config()}


@register
class ClipImagePooled(ClipImage):
    name = "clip-image-pooled"
    projected = False
