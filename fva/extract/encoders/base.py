"""The encoder interface and registry.

An encoder is built by name from the registry; it loads its model with the source library's real loading
code and brings its own preprocessing, so the two cannot drift apart. Extraction runs ``preprocess`` in
background data-loader workers (it must be a picklable, module-level callable), ``collate`` on the batch and
``encode`` on the device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from fva.extract.catalogue import CATALOGUE
from fva.extract.media import MIN_FACE_SIDE, MIN_SECONDS
from fva.extract.weights import files_digest  # noqa: F401  (re-exported: one owner of identities)
from fva.registry import Registry


@dataclass
class Encoded:
    """One batch's output: ``embeddings`` (N, dim) float32 on the CPU and per-item scalar ``extras``
    (e.g. ``age`` in years and ``p_female``), each (N,) float32."""

    embeddings: torch.Tensor
    extras: dict[str, torch.Tensor]


class Encoder(ABC):
    """A frozen feature extractor for one modality."""

    name: ClassVar[str]
    modality: ClassVar[str]  # "voice" or "face"
    default_weights: ClassVar[str]  # what a user gets without --weights (a hub id)
    extras: ClassVar[tuple[str, ...]] = ()  # names of the per-item scalars kept beside the embedding
    min_samples: ClassVar[int] = 0  # the model's receptive field: audio shorter than this (16 kHz samples) is a
    #                                 failed item
    min_seconds: ClassVar[float] = MIN_SECONDS  # voice shorter than this carries no identity (a failed item);
    #                                             an encoder may raise it. The larger of the two applies.
    min_face_side: ClassVar[int] = MIN_FACE_SIDE  # face images with a shorter side (pixels) are failed items

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        self.weights = str(weights) if weights is not None else self.default_weights
        self.device = torch.device(device)

    _dim: int  # set by the subclass while loading, read off the model
    _weights_id: str

    @property
    def dim(self) -> int:
        """Embedding dimension, read off the loaded model."""
        return self._dim

    @property
    def weights_id(self) -> str:
        """A stable identity of the loaded weights (source plus content hash), stored in the cache."""
        return self._weights_id

    @property
    @abstractmethod
    def preprocess(self) -> Callable[[np.ndarray], Any]:
        """Decoded media (16 kHz mono float32 audio, or an RGB uint8 H x W x 3 image) -> one model input.
        Must be picklable: it runs in data-loader worker processes."""

    @abstractmethod
    def collate(self, items: list[Any]) -> Any:
        """Stack preprocessed items into one batch."""

    @abstractmethod
    def encode(self, batch: Any) -> Encoded:
        """Run the frozen model on a batch (no gradients); outputs on the CPU in float32."""

    def config(self) -> dict:
        """What the cache records about this encoder besides its name, dim and weights identity."""
        return {}


ENCODERS: Registry[type[Encoder]] = Registry("encoder", choices="choose from")
# the built-in encoders, each imported from its catalogue module on first lookup (the module calls register)
for _entry in CATALOGUE:
    ENCODERS.lazy(_entry.name, f"fva.extract.encoders.{_entry.module}")


def register(cls: type[Encoder]) -> type[Encoder]:
    """Class decorator adding an encoder to the registry under ``cls.name``; duplicates are an error."""
    return ENCODERS.register(cls.name, cls)


def get_encoder_class(name: str) -> type[Encoder]:
    """The encoder class called ``name``; an unknown name is an error listing the known ones."""
    return ENCODERS.get(name)
