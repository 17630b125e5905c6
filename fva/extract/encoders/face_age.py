"""face-age: the ViT age classifier ``nateraw/vit-age-classifier``; output one number per face, the expected age
in years under the classifier's 9 age bins (also kept as the per-item extra ``age``).

The published model (Hugging Face ``nateraw/vit-age-classifier``, "ViT For Age Classification", fine-tuned on
FairFace from ``google/vit-base-patch16-224-in21k``) is transformers' own ``ViTForImageClassification``, loaded
here from a ``save_pretrained`` folder with that class (never remote code). Its forward: ViT-Base/16 without
pooler, the CLS token of the last hidden state (after the final layer norm) -> ``classifier`` Linear(768, 9).

fva's output row (width 1): ``age = sum_i softmax(logits)_i * centre_i`` with the bin centres

    bin ("id2label")   0-2  3-9  10-19  20-29  30-39  40-49  50-59  60-69  more than 70
    centre (years)     1    6    15     25     35     45     55     65     75

(the open last bin is given 75). The folder's config.json must carry exactly these nine labels in this order,
else the centres would not mean years: a different classifier is one line naming its labels.

Input: what the folder's ``preprocessor_config.json``, read by transformers' ``ViTImageProcessor`` (its PIL
implementation), makes of an RGB image. The published file is an old ``ViTFeatureExtractor`` file (no
``image_processor_type``) with only ``do_normalize: true``, ``do_resize: true``, ``image_mean``/``image_std``
[0.5, 0.5, 0.5] and ``size: 224``; the processor's defaults fill the rest: resize to 224 x 224 (bilinear),
rescale 1/255, then (x - 0.5) / 0.5.

Verified (public copies of the model's files and card, read through the reference search tools; no network
here): config.json on ``main`` (``ViTForImageClassification``, ``model_type`` "vit", hidden 768, 12 layers,
12 heads, intermediate 3072, image 224, patch 16, the ``id2label`` above, transformers 4.5.0.dev0), the
preprocessor_config.json above (197 bytes), and the card's usage (``ViTFeatureExtractor`` +
``ViTForImageClassification`` on a FairFace face: "A vision transformer finetuned to classify the age of a
given person's face"). The card states no licence (its metadata holds only tags and the fairface dataset), so
fva's source entry leaves the licence unverified. Not verified: the weight
files themselves (``pytorch_model.bin`` / ``model.safetensors``, with the transformers-4 key names that
transformers 5 still loads into ``ViTForImageClassification``); if a real download does not load, the error
lists the missing and unexpected keys. The bin centres are fva's choice (the card reports only the bins).

``save_face_age(folder, config, seed)`` writes a seeded random model in this format (``save_pretrained`` plus
the published-style preprocessor_config.json); ``tiny_config()`` is a small config for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fva.errors import FvaError
from fva.extract.encoders.base import Encoded, register
from fva.extract.encoders.hf_image import HFImageEncoder, crop_size
from fva.extract.encoders.hf_pretrained import build_config, load_pretrained, quiet_transformers, read_config_dict
from fva.extract.weights import FACE_AGE_HUB_ID

HUB_ID = FACE_AGE_HUB_ID
AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
BIN_CENTRES = (1.0, 6.0, 15.0, 25.0, 35.0, 45.0, 55.0, 65.0, 75.0)


def expected_age(logits: torch.Tensor) -> torch.Tensor:
    """(N, 9) classifier logits -> (N,) expected age in years (softmax-weighted bin centres)."""
    centres = torch.tensor(BIN_CENTRES, dtype=torch.float32, device=logits.device)
    return torch.softmax(logits.float(), dim=-1) @ centres


def labels_of(config) -> list[str]:
    return [str(config.id2label[i]) for i in range(len(config.id2label))]


@register
class FaceAge(HFImageEncoder):
    """``nateraw/vit-age-classifier``: the expected age in years over its 9 bins (width 1, extra ``age``)."""

    name = "face-age"
    default_weights = HUB_ID
    hub_id = HUB_ID
    processor_class = "ViTImageProcessorPil"
    extras = ("age",)

    def load(self, folder: Path, processor) -> torch.nn.Module:
        from transformers import ViTConfig, ViTForImageClassification

        path = folder / "config.json"
        config = build_config(ViTConfig, read_config_dict(folder, ("vit",), HUB_ID), path)
        if labels_of(config) != list(AGE_BINS):
            raise FvaError(f"{path}: id2label {labels_of(config)} is not the 9 age bins of {HUB_ID} "
                           f"({', '.join(AGE_BINS)}); face-age reads its bins as years")
        if crop_size(processor) != (config.image_size, config.image_size):
            raise FvaError(f"{folder / 'preprocessor_config.json'}: images of {crop_size(processor)} but the model "
                           f"takes {config.image_size} x {config.image_size} (config.json)")
        model = load_pretrained(ViTForImageClassification, folder, config, HUB_ID)
        self._dim = 1
        return model

    def encode(self, batch: torch.Tensor) -> Encoded:
        self.model.eval()
        with torch.inference_mode():
            logits = self.model(pixel_values=batch.to(self.device, torch.float32)).logits
            age = expected_age(logits).float().cpu()
        return Encoded(age[:, None].contiguous(), {"age": age})

    def config(self) -> dict:
        return {"output": "expected age in years: softmax(logits) . bin centres", "bins": list(AGE_BINS),
                "bin_centres": list(BIN_CENTRES), **self.input_config()}


# ------------------------------------------------------------------------------------------------------- saving
def tiny_config(image_size: int = 32):
    """A small ViT age classifier config with the published 9 bins (hidden 32, 2 layers, 16 x 16 patches)."""
    from transformers import ViTConfig

    return ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     image_size=image_size, patch_size=16, id2label=dict(enumerate(AGE_BINS)),
                     label2id={label: i for i, label in enumerate(AGE_BINS)})


def save_face_age(folder: str | Path, config=None, seed: int = 0) -> Path:
    """Write a seeded, randomly initialised ``ViTForImageClassification`` for ``config`` (default
    :func:`tiny_config`) as the published folder: transformers' ``save_pretrained`` (config.json,
    model.safetensors) and a preprocessor_config.json with the published keys (0.5 mean / std, size an int).
    Returns the folder (a ``--weights``)."""
    from transformers import ViTForImageClassification

    config = config or tiny_config()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTForImageClassification(config).eval()
    with quiet_transformers():
        model.save_pretrained(folder)
    pre = {"do_normalize": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
           "size": int(config.image_size)}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    return folder
