"""XM-ALIGN (Fang et al., ICASSP 2026, FAME challenge): per-modality projection to one shared space,
identity classification through a classifier shared by both modalities (implicit alignment) or one per
modality, plus an explicit alignment term between the voice and face embeddings of the same identity:

    L = CE(voice) + CE(face) + λ · align(v, f)

with ``align`` the squared Euclidean distance of the RAW (not normalised) paired embeddings averaged over
pairs ("mse", as in the authors' released code, which sums the squared error over dimensions), or the mean
of 1 - cosine ("cosine"). The classifier is a bias-free linear layer with cross-entropy ("softmax", the
authors' CE runs) or a cosine classifier with additive angular margin ("aam", margin and scale from the
model config). Score = 1 - cosine of the embeddings.

Raw embeddings for "mse" because that is what distinguishes it from "cosine" (on unit vectors the squared
distance is 2 - 2 cos, the cosine variant up to a factor); the price is that a scale-invariant classifier
("aam") lets the model lower it by shrinking both embeddings, so pair "aam" with "cosine" if that shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fva.errors import FvaError
from fva.heads.layers import CosineClassifier, aam_softmax, projection
from fva.heads.systems import register_system
from fva.heads.systems.base import Batch, HeadSystem, check_paired

ALIGNMENTS = ("mse", "cosine")
CLASSIFIERS = ("softmax", "aam")


def check_choice(value: str, known: tuple[str, ...], what: str) -> None:
    if value not in known:
        raise FvaError(f"{what} must be one of {', '.join(known)}, got '{value}'")


def alignment_loss(v: torch.Tensor, f: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Alignment of paired embeddings (N, D): "mse" = mean_i ||v_i - f_i||² (squared error summed over
    dimensions, mean over pairs; raw embeddings), "cosine" = mean_i (1 - cos(v_i, f_i)).

    >>> v, f = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    >>> alignment_loss(v, f, "mse"), alignment_loss(v, f, "cosine")
    (tensor(5.), tensor(1.))
    """
    if kind == "mse":
        return (v - f).pow(2).sum(dim=1).mean()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(v, f, dim=1)).mean()
    raise FvaError(f"alignment loss must be one of {', '.join(ALIGNMENTS)}, got '{kind}'")


@dataclass
class XmAlignParams:
    shared_classifier: bool = True  # one classifier for both modalities (the paper's implicit alignment)
    classifier: str = "softmax"  # softmax (linear + cross-entropy) or aam (margin/scale: model.aam_*)
    align: str = "mse"  # mse (raw embeddings) or cosine
    # λ: published 0.1, 0.3 and 1.0. 0.1 is in every family of the authors' released runs (shared classifier
    # or not, MAV-Celeb v1 and v3) and is the run their README trains; being the smallest, it also keeps the
    # raw-embedding squared distance (which grows with the embedding norm) from swamping cross-entropy.
    lambda_align: float = 0.1


@register_system
class XmAlign(HeadSystem):
    """Voice and face projections, identity classifier(s), λ-weighted embedding alignment."""

    name = "xm-align"
    Params = XmAlignParams
    pairing = "paired"
    classifier_modules = ("classifier", "face_classifier")

    def __init__(self, voice_dim: int, face_dim: int, n_classes: int, cfg) -> None:
        super().__init__(voice_dim, face_dim, n_classes, cfg)
        p = self.params
        check_choice(p.classifier, CLASSIFIERS, "model.params.classifier (xm-align)")
        check_choice(p.align, ALIGNMENTS, "model.params.align (xm-align)")
        if p.lambda_align < 0:
            raise FvaError(f"model.params.lambda_align (xm-align) must be >= 0, got {p.lambda_align}")
        self.voice = projection(voice_dim, cfg)
        self.face = projection(face_dim, cfg)
        self.replace_classifier(n_classes)
        if p.classifier == "aam":
            self.aam_loss = aam_softmax(cfg)

    def _new_classifier(self, n_classes: int) -> nn.Module:
        dim = self.cfg.embedding_dim
        if self.params.classifier == "aam":
            return CosineClassifier(dim, n_classes)
        return nn.Linear(dim, n_classes, bias=False)

    def replace_classifier(self, n_classes: int) -> None:
        """Fresh classifier(s) for a new identity set: one shared, or one per modality."""
        self.classifier = self._new_classifier(n_classes)
        self.face_classifier = None if self.params.shared_classifier else self._new_classifier(n_classes)
        self.sizes["n_classes"] = n_classes

    def identity_loss(self, emb: torch.Tensor, labels: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
        """Mean cross-entropy (softmax) or AAM-softmax loss of one modality's embeddings."""
        if self.params.classifier == "aam":
            return self.aam_loss(classifier(emb), labels)
        return F.cross_entropy(classifier(emb), labels)

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return (self.voice if modality == "voice" else self.face)(x)

    def loss(self, batch: Batch) -> torch.Tensor:
        """CE(voice) + CE(face) + λ · align(v, f) over the batch's voice-face pairs."""
        check_paired(batch, self.name)
        v = self.embed("voice", batch.voice)
        f = self.embed("face", batch.face)
        face_classifier = self.classifier if self.face_classifier is None else self.face_classifier
        return (self.identity_loss(v, batch.voice_labels, self.classifier)
                + self.identity_loss(f, batch.face_labels, face_classifier)
                + self.params.lambda_align * alignment_loss(v, f, self.params.align))
