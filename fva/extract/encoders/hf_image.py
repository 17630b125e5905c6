"""What the transformers image encoders (dinov2, clip-image) share: their preprocessing, batching and loading."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fva.extract.encoders.base import Encoder
from fva.extract.encoders.hf_pretrained import processor_from_folder, resolve_folder
from fva.extract.weights import pretrained_identity


@dataclass(frozen=True)
class ImagePreprocess:
    """RGB uint8 H x W x 3 -> float32 3 x H' x W', by transformers' (PIL) image processor of the folder."""

    processor: Any

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 H x W x 3 image, got {rgb.dtype} {rgb.shape}")
        out = self.processor(images=np.ascontiguousarray(rgb), return_tensors="np")
        return np.ascontiguousarray(out["pixel_values"][0], dtype=np.float32)


def crop_size(processor) -> tuple[int, int]:
    """(height, width) the processor's output has (its center crop, else its resize)."""
    size = processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
    return int(size.height or size.shortest_edge), int(size.width or size.shortest_edge)


class HFImageEncoder(Encoder):
    """A face encoder over a transformers vision model; subclasses set ``hub_id``, ``processor_class`` (its
    name in transformers) and implement ``load`` and ``encode``. Images are resized / cropped to one size, so a
    batch is the stacked images and gives the one-at-a-time output."""

    modality = "face"
    hub_id: str = ""
    processor_class: str = ""

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        import transformers

        super().__init__(weights, device)
        self.folder = resolve_folder(self.weights, self.name, self.hub_id)
        processor = processor_from_folder(getattr(transformers, self.processor_class), self.folder, self.hub_id)
        self.model = self.load(self.folder, processor).to(self.device)
        self._preprocess = ImagePreprocess(processor)
        self._weights_id = pretrained_identity(self.weights, self.folder)

    def load(self, folder: Path, processor) -> torch.nn.Module:
        raise NotImplementedError

    @property
    def preprocess(self) -> Callable[[np.ndarray], np.ndarray]:
        return self._preprocess

    def collate(self, items: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items).astype(np.float32, copy=False))

    def input_config(self) -> dict:
        p = self._preprocess.processor
        return {"image_size": list(crop_size(p)), "image_mean": [float(v) for v in p.image_mean],
                "image_std": [float(v) for v in p.image_std]}
