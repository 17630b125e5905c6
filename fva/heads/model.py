"""The FAME 2026 winning head: per modality dropout on the input and one linear map to a shared space;
ONE cosine classifier over identities serves both modalities, trained with speechbrain's additive angular
margin softmax; the score is the cosine similarity of a voice and a face embedding."""

from __future__ import annotations


import torch

from fva.heads.config import ModelConfig
from fva.heads.layers import CosineClassifier, aam_softmax, projection
from fva.heads.systems import register_system
from fva.heads.systems.base import Batch, HeadSystem


@register_system
class FameHead(HeadSystem):
    """Voice and face projections into one embedding space, one shared AAM-softmax classifier."""

    name = "fame2026"

    def __init__(self, voice_dim: int, face_dim: int, n_classes: int, cfg: ModelConfig) -> None:
        super().__init__(voice_dim, face_dim, n_classes, cfg)
        self.voice = projection(voice_dim, cfg)
        self.face = projection(face_dim, cfg)
        self.classifier = CosineClassifier(cfg.embedding_dim, n_classes)
        self.aam_loss = aam_softmax(cfg)

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return (self.voice if modality == "voice" else self.face)(x)

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean AAM-softmax loss of the voice batch plus that of the face batch, through one classifier."""
        return sum(self.aam_loss(self.classifier(self.embed(modality, x)), y)
                   for x, y, modality in ((batch.voice, batch.voice_labels, "voice"),
                                          (batch.face, batch.face_labels, "face")))

    def replace_classifier(self, n_classes: int) -> None:
        """A fresh classifier for a new identity set (fine-tuning after pretraining)."""
        self.classifier = CosineClassifier(self.classifier.weight.shape[1], n_classes)
        self.sizes["n_classes"] = n_classes
