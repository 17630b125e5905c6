"""Supervised cross-contrastive learning (FAME 2024, 2nd place): voice and face projections to a shared
space trained with a cross-modal InfoNCE over the batch's same-identity voice-face pairs; score = 1 - cosine.
(The chaining-cluster score refinement of that system is a separate score post-processor.) The same loss trains
the InfoNCE "bridge" of FLAG 2027 participants (:class:`Bridge`: MLP branches over reduced inputs).

With L2-normalised embeddings and s_ij = v_i · f_j / τ, the voice→face term of row i is

    -1/|P(i)| Σ_{p ∈ P(i)} log( exp(s_ip) / Σ_j exp(s_ij) ),   P(i) = {p : label_p = label_i}

i.e. the paper's -log exp(v_i·f_i/τ) / Σ_j exp(v_i·f_j/τ) when identities are distinct in the batch, and
the "supervised" form (Khosla et al. 2020, averaged over positives) when an identity repeats: another face
of the same person is a positive, never a negative. The face→voice term is the same with the roles swapped
(s_ji); the loss is the mean over rows of both terms, averaged (symmetric, as CLIP).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fva.errors import FvaError
from fva.heads.layers import CosineClassifier, Dropout, Reduce, aam_softmax, projection
from fva.heads.systems import register_system
from fva.heads.systems.base import Batch, HeadSystem, ReducedInputs, check_paired


def cross_infonce(v: torch.Tensor, f: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric supervised cross-modal InfoNCE of paired rows ``v`` (N, D) and ``f`` (N, D) whose row i
    has identity ``labels[i]``; same-identity rows are positives (see the module docstring).

    Two identities: -log(e / (e + 1)); one identity twice: both faces positives, log(e + 1) - 1/2.

    >>> eye = torch.eye(2)
    >>> round(cross_infonce(eye, eye, torch.tensor([0, 1]), 1.0).item(), 4)
    0.3133
    >>> round(cross_infonce(eye, eye, torch.tensor([7, 7]), 1.0).item(), 4)
    0.8133
    """
    logits = F.normalize(v, dim=1) @ F.normalize(f, dim=1).T / tau  # (N voices, N faces)
    positive = (labels[:, None] == labels[None, :]).to(logits.dtype)

    def directed(scores: torch.Tensor) -> torch.Tensor:
        log_prob = scores.log_softmax(dim=1)
        return (-(log_prob * positive).sum(dim=1) / positive.sum(dim=1)).mean()

    return 0.5 * (directed(logits) + directed(logits.T))


@dataclass
class ContrastiveParams:
    # 0.07: the usual fixed temperature of supervised contrastive learning (SupCon) and CLIP's initial value;
    # with cosine logits in [-1, 1] it gives the softmax enough range (±14) to separate identities.
    tau: float = 0.07
    # weight of an optional identity AAM-softmax term (one cosine classifier for both modalities, margin and
    # scale from model.aam_*); 0 = contrastive only, as published (no classifier is built then).
    ce_weight: float = 0.0


@register_system
class Contrastive(HeadSystem):
    """Voice and face projections, L2-normalised, trained by :func:`cross_infonce` (+ optional AAM term)."""

    name = "contrastive"
    Params = ContrastiveParams
    pairing = "paired"
    classifier_modules = ("classifier",)  # present only when ce_weight > 0

    def __init__(self, voice_dim: int, face_dim: int, n_classes: int, cfg) -> None:
        super().__init__(voice_dim, face_dim, n_classes, cfg)
        if self.params.tau <= 0:
            raise FvaError(f"model.params.tau (contrastive) must be > 0, got {self.params.tau}")
        if self.params.ce_weight < 0:
            raise FvaError(f"model.params.ce_weight (contrastive) must be >= 0, got {self.params.ce_weight}")
        self.voice = projection(voice_dim, cfg)
        self.face = projection(face_dim, cfg)
        self.classifier = None
        if self.params.ce_weight > 0:
            self.aam_loss = aam_softmax(cfg)
            self.replace_classifier(n_classes)

    def replace_classifier(self, n_classes: int) -> None:
        if self.params.ce_weight > 0:
            self.classifier = CosineClassifier(self.cfg.embedding_dim, n_classes)
        self.sizes["n_classes"] = n_classes

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return F.normalize((self.voice if modality == "voice" else self.face)(x), dim=1)

    def loss(self, batch: Batch) -> torch.Tensor:
        """cross_infonce(v, f) (+ ce_weight · (AAM(v) + AAM(f)))."""
        check_paired(batch, self.name)
        v = self.embed("voice", batch.voice)
        f = self.embed("face", batch.face)
        total = cross_infonce(v, f, batch.voice_labels, self.params.tau)
        if self.classifier is not None:
            for emb, labels in ((v, batch.voice_labels), (f, batch.face_labels)):
                total = total + self.params.ce_weight * self.aam_loss(self.classifier(emb), labels)
        return total


@dataclass
class BridgeParams:
    # the published InfoNCE bridge (FourFusion_FLAG2027, kaggle/flag_v2.py): per modality dropout 0.3, Linear
    # to 512, BatchNorm, ReLU, dropout 0.3, Linear to model.embedding_dim (128), L2-normalised
    hidden: int = 512
    dropout: float = 0.3
    tau: float = 0.07
    # inputs standardised on the fold's training rows and, where wider, projected onto this many principal
    # axes (the published face PCA-256; their 192-d voice input was kept whole); 0: standardise only
    pca_dim: int = 256


@register_system
class Bridge(ReducedInputs, HeadSystem):
    """Two MLP branches on reduced inputs (:class:`~fva.heads.layers.Reduce`, fitted once per fold and stored with
    the checkpoint; the training rows are reduced once, not per step), trained by :func:`cross_infonce` with every
    same-identity pair of the batch a positive."""

    name = "bridge"
    Params = BridgeParams
    pairing = "paired"
    classifier_modules = ()

    def __init__(self, voice_dim: int, face_dim: int, n_classes: int, cfg) -> None:
        super().__init__(voice_dim, face_dim, n_classes, cfg)
        p = self.params
        if p.tau <= 0 or p.hidden < 1 or not 0 <= p.dropout < 1 or p.pca_dim < 0:
            raise FvaError(f"model.params (bridge): tau > 0, hidden >= 1, 0 <= dropout < 1 and pca_dim >= 0, got "
                           f"tau {p.tau}, hidden {p.hidden}, dropout {p.dropout}, pca_dim {p.pca_dim}")
        self.voice_reduce = Reduce(voice_dim, p.pca_dim)
        self.face_reduce = Reduce(face_dim, p.pca_dim)
        self.voice = self._branch(self.voice_reduce.out_dim)
        self.face = self._branch(self.face_reduce.out_dim)

    def _branch(self, dim: int) -> nn.Sequential:
        p = self.params
        return nn.Sequential(Dropout(p.dropout), nn.Linear(dim, p.hidden), nn.BatchNorm1d(p.hidden), nn.ReLU(),
                             Dropout(p.dropout), nn.Linear(p.hidden, self.cfg.embedding_dim))

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(getattr(self, modality)(self.reduction(modality)(x)), dim=1)

    def loss(self, batch: Batch) -> torch.Tensor:
        """cross_infonce of the branches' L2-normalised outputs; the batch holds reduced rows."""
        check_paired(batch, self.name, min_pairs=2)
        v = F.normalize(self.voice(batch.voice), dim=1)
        f = F.normalize(self.face(batch.face), dim=1)
        return cross_infonce(v, f, batch.voice_labels, self.params.tau)

