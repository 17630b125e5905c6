"""Layers the head systems share: the cosine classifier, input dropout, standardisation and reduction, the FAME
2026 projection and speechbrain's additive angular margin softmax."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fva.environment import require_torchaudio
from fva.heads.config import ModelConfig

require_torchaudio()  # the AAM-softmax loss is speechbrain's, and speechbrain imports torchaudio


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
        out = np.multiply(x.numpy(), draws >= np.uint16(round(self.p * 65536)), dtype=np.float32)
        out *= np.float32(1.0 / (1.0 - self.p))  # in place: ~1.7x faster than np.where(keep, x * scale, 0)
        return torch.from_numpy(out)


class Dropout(InputDropout):
    """Dropout of any activations, input features or hidden ones that need a gradient, with
    :class:`InputDropout`'s 16-bit numpy mask (torch's CPU dropout was a third of the InfoNCE bridge's epoch):
    where a gradient is wanted the output is ``x * mask``, so the gradient is the mask times the upstream one,
    as with :func:`torch.nn.functional.dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or not x.requires_grad or x.device.type != "cpu" or x.dtype != torch.float32
                or not 0.0 < self.p < 1.0):
            return super().forward(x)
        seed = int(torch.randint(0, 2**62, (1,)).item())
        draws = np.frombuffer(np.random.default_rng(seed).bytes(2 * x.numel()), dtype=np.uint16).reshape(x.shape)
        keep = np.multiply(draws >= np.uint16(round(self.p * 65536)), np.float32(1.0 / (1.0 - self.p)),
                           dtype=np.float32)
        return x * torch.from_numpy(keep)


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


class Reduce(nn.Module):
    """A fixed input reduction fitted on training rows (:func:`fva.heads.linalg.fit_reduction`): every feature
    standardised, then projected onto ``dims`` principal axes (none when ``dims`` is 0 or at least ``dim``).
    Buffers only: saved in checkpoints, never trained."""

    def __init__(self, dim: int, dims: int) -> None:
        super().__init__()
        self.out_dim = dims if 0 < dims < dim else dim
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))
        self.register_buffer("axes", torch.zeros(dim, self.out_dim) if self.out_dim < dim else None)

    def fit(self, x: np.ndarray, seed: int = 0) -> None:
        from fva.heads.linalg import STD_FLOOR, fit_reduction

        mean, std, axes = fit_reduction(x, self.out_dim if self.axes is not None else 0, seed)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.inv_std.copy_(1.0 / torch.as_tensor(np.maximum(std, STD_FLOOR), dtype=torch.float32))
        if self.axes is not None:
            self.axes.copy_(torch.as_tensor(axes, dtype=torch.float32))

    def fit_rows(self, rows, seed: int, stream: int) -> None:
        """:meth:`fit` on a row source's rows (a seeded sample beyond :data:`fva.heads.linalg.FIT_ROWS`)."""
        from fva.heads.linalg import fit_sample

        self.fit(fit_sample(rows, [seed, stream]), seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axes is None:
            return (x - self.mean) * self.inv_std
        weight, bias = self.affine()
        return x @ weight - bias

    def affine(self, then: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The reduction (followed by ``then``, a matrix) as one affine map x @ W - b: one product with the
        rows instead of an elementwise pass, a product and (with ``then``) another product."""
        axes = self.axes if self.axes is not None else torch.eye(len(self.mean))
        weight = self.inv_std[:, None] * (axes if then is None else axes @ then)
        return weight, self.mean @ weight

    @torch.inference_mode()
    def rows(self, x: np.ndarray) -> np.ndarray:
        """The reduction of float32 rows, numpy in and out (:class:`~fva.heads.features.MappedRows`' map)."""
        return self(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def projection(dim: int, cfg: ModelConfig) -> nn.Sequential:
    """[0] input standardisation (off unless ``cfg.input_norm``), [1] input dropout, [2] linear map to the
    shared space: the FAME 2026 projection, reused by other systems."""
    return nn.Sequential(Standardize(dim, cfg.input_norm), InputDropout(cfg.input_dropout),
                         nn.Linear(dim, cfg.embedding_dim))


def aam_softmax(cfg: ModelConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """speechbrain's additive angular margin softmax loss, as a function of (cosines (N, classes), labels (N,))."""
    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

    wrapped = LogSoftmaxWrapper(AdditiveAngularMargin(margin=cfg.aam_margin, scale=cfg.aam_scale))
    return lambda cosine, labels: wrapped(cosine.unsqueeze(1), labels.unsqueeze(1))
