"""dinov2: DINOv2 (``facebook/dinov2-giant`` by default; FAME 2026's 4th entry) as a face encoder.

Output dim = the config's ``hidden_size`` (1536 for DINOv2-Giant, 1024 Large, 768 Base, 384 Small), read off
the final layer norm's output (``last_hidden_state``) as one of:

* ``dinov2``: the CLS token (what transformers returns as ``pooler_output``);
* ``dinov2-patch-mean``: the mean of the patch tokens (CLS excluded);
* ``dinov2-mean``: the mean of every token, CLS included (what the 4th entry's code averages).

The model is transformers' ``Dinov2Model`` loaded from a ``save_pretrained`` folder (config.json with
``model_type`` "dinov2"); the input is what the folder's ``preprocessor_config.json`` (transformers'
``BitImageProcessor``, its PIL implementation) makes of an RGB image: for the published models, shortest edge
to 256 (bicubic), center crop 224 x 224, ImageNet mean and std.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from fva.extract.encoders.base import Encoded, register
from fva.extract.encoders.hf_image import HFImageEncoder
from fva.extract.encoders.hf_pretrained import build_config, load_pretrained, read_config_dict
from fva.extract.weights import DINOV2_HUB_ID

HUB_ID = DINOV2_HUB_ID
POOLINGS = {"cls": "CLS token of the last hidden state", "patch-mean": "mean of the patch tokens",
            "mean": "mean of every token (CLS and patches)"}


@register
class Dinov2(HFImageEncoder):
    name = "dinov2"
    default_weights = HUB_ID
    hub_id = HUB_ID
    processor_class = "BitImageProcessorPil"
    pooling: ClassVar[str] = "cls"

    def load(self, folder: Path, processor) -> torch.nn.Module:
        from transformers import Dinov2Config, Dinov2Model

        config = build_config(Dinov2Config, read_config_dict(folder, ("dinov2",), HUB_ID), folder / "config.json")
        model = load_pretrained(Dinov2Model, folder, config, HUB_ID, ignored=("mask_token",))
        self._dim = int(config.hidden_size)
        return model

    def encode(self, batch: torch.Tensor) -> Encoded:
        self.model.eval()
        with torch.inference_mode():
            hidden = self.model(pixel_values=batch.to(self.device, torch.float32)).last_hidden_state.float()
        if self.pooling == "cls":
            emb = hidden[:, 0]
        elif self.pooling == "patch-mean":
            emb = hidden[:, 1:].mean(1)
        else:
            emb = hidden.mean(1)
        return Encoded(emb.cpu(), {})

    def config(self) -> dict:
        return {"output": POOLINGS[self.pooling], "pooling": self.pooling, **self.input_config()}


@register
class Dinov2PatchMean(Dinov2):
    name = "dinov2-patch-mean"
    pooling = "patch-mean"


@register
class Dinov2Mean(Dinov2):
    name = "dinov2-mean"
    pooling = "mean"
