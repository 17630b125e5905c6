"""The FAME 2026 winning head: per modality dropout on the input and one linear map to a shared space;
ONE cosine classifier over identities serves both modalities, trained with speechbrain's additive angular
margin softmax; the score is the cosine similarity of a voice and a face embedding."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fva.heads.config import ModelConfig


class CosineClassifier(nn.Module):
    """Cosine similarity of L2-normalised embeddings to L2-normalised class weights: (N, classes)."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x), F.normalize(self.weight))


class InputDropout(nn.Dropout):
    """Dropout of input features (tensors that need no gradient) on the CPU: the same distribution as
    :class:`torch.nn.Dropout`, about twice as fast there. The mask comes from 16-bit integers drawn by a
    numpy generator seeded from torch's generator, so ``torch.manual_seed`` still fixes it (and resuming
    with torch's RNG state repeats it); a drop probability is represented to 1/65536. Anything else
    (gradients wanted, other devices, p outside (0, 1)) goes through :func:`torch.nn.functional.dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or x.requires_grad or x.device.type != "cpu" or x.dtype != torch.float32
                or not 0.0 < self.p < 1.0):
            return super().forward(x)
        seed = int(torch.randint(0, 2**62, (1,)).item())
        draws = np.frombuffer(np.random.default_rng(seed).bytes(2 * x.numel()), dtype=np.uint16).reshape(x.shape)
        keep = draws >= np.uint16(round(self.p * 65536))
        return torch.from_numpy(np.where(keep, x.numpy() * np.float32(1.0 / (1.0 - self.p)), np.float32(0.0)))


class Standardize(nn.Module):
    """(x - mean) / std per feature, with the statistics as buffers (saved in checkpoints, present whether
    ``enabled`` or not, so every head has the same state dict); a no-op unless enabled."""

    def __init__(self, dim: int, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))

    def fit(self, mean: np.ndarray, std: np.ndarray, floor: float = 1e-6) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.inv_std.copy_(1.0 / torch.as_tensor(np.maximum(std, floor), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std if self.enabled else x


class FameHead(nn.Module):
    """Voice and face projections into one embedding space, one shared AAM-softmax classifier."""

    def __init__(self, voice_dim: int, face_dim: int, n_classes: int, cfg: ModelConfig) -> None:
        super().__init__()
        from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

        self.voice = nn.Sequential(Standardize(voice_dim, cfg.input_norm), InputDropout(cfg.input_dropout),
                                   nn.Linear(voice_dim, cfg.embedding_dim))
        self.face = nn.Sequential(Standardize(face_dim, cfg.input_norm), InputDropout(cfg.input_dropout),
                                  nn.Linear(face_dim, cfg.embedding_dim))
        self.classifier = CosineClassifier(cfg.embedding_dim, n_classes)
        self.aam_loss = LogSoftmaxWrapper(AdditiveAngularMargin(margin=cfg.aam_margin, scale=cfg.aam_scale))
        self.cfg = cfg
        self.sizes = {"voice_dim": voice_dim, "face_dim": face_dim, "n_classes": n_classes}

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return (self.voice if modality == "voice" else self.face)(x)

    def loss(self, voice: torch.Tensor, voice_labels: torch.Tensor, face: torch.Tensor,
             face_labels: torch.Tensor) -> torch.Tensor:
        """Mean AAM-softmax loss of the voice batch plus that of the face batch, through one classifier."""
        total = voice.new_zeros(())
        for x, y, modality in ((voice, voice_labels, "voice"), (face, face_labels, "face")):
            cosine = self.classifier(self.embed(modality, x))
            total = total + self.aam_loss(cosine.unsqueeze(1), y.unsqueeze(1))
        return total

    def replace_classifier(self, n_classes: int) -> None:
        """A fresh classifier for a new identity set (fine-tuning after pretraining)."""
        self.classifier = CosineClassifier(self.classifier.weight.shape[1], n_classes)
        self.sizes["n_classes"] = n_classes


def cosine_scores(voice_emb: torch.Tensor, face_emb: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of paired voice and face embeddings."""
    return F.cosine_similarity(voice_emb, face_emb, dim=1)
