"""Joint cross-attention (the FAME 2026 winners' fused alternative): each modality's feature vector is cut
into ``segments`` equal chunks (the last zero-padded when the dimension does not divide), each chunk is
linearly projected to ``d_model`` (one Linear per modality, shared over its chunks) plus a learned position
embedding; ``layers`` cross-attention layers let voice tokens attend to face tokens and face tokens to voice
tokens (both from the previous layer's states; residual + LayerNorm, then a small FFN, residual +
LayerNorm); the mean-pooled tokens of both modalities, concatenated, give one same/different logit.

Training: binary cross-entropy on balanced pairs: the batch's positives (voice_i, face_i) and one negative
per row, (voice_i, face_j) with j drawn uniformly (torch's generator) among the rows of ANOTHER identity, so
a negative is never a same-identity pair; the loss is the mean of the positives' and the negatives' mean BCE.
Scoring embeds each medium once (the token sequence) and runs the cross-attention per trial in
:meth:`CrossAttention.pair_distances`: distance = 1 - sigmoid(logit) (lower = same).
Inputs pass Standardize and input dropout (``model.input_norm``, ``model.input_dropout``) first, as in the
other heads; the default 0.9 was tuned for the fame2026 linear head, so set it in this system's config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fva.errors import FvaError
from fva.heads.layers import InputDropout, Standardize
from fva.heads.systems import register_system
from fva.heads.systems.base import Batch, HeadSystem, check_paired


class SegmentTokens(nn.Module):
    """(N, dim) → (N, segments, d_model): zero-pad to segments · ceil(dim / segments), cut into equal chunks,
    one shared Linear(chunk → d_model), plus a learned position embedding per segment."""

    def __init__(self, dim: int, segments: int, d_model: int) -> None:
        super().__init__()
        self.segments = segments
        self.chunk = -(-dim // segments)
        self.pad = self.chunk * segments - dim
        self.proj = nn.Linear(self.chunk, d_model)
        self.position = nn.Parameter(torch.randn(segments, d_model) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, self.pad)) if self.pad else x
        return self.proj(x.reshape(len(x), self.segments, self.chunk)) + self.position


class CrossBlock(nn.Module):
    """One direction of a cross-attention layer: queries from one modality, keys/values from the other."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * d_model, d_model))
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        x = self.norm1(query + self.dropout(self.attention(query, other, other, need_weights=False)[0]))
        return self.norm2(x + self.dropout(self.ffn(x)))


def negative_partners(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row i with another identity in the batch, a face row j drawn uniformly among the rows with
    ``labels[j] != labels[i]`` (torch's default generator): returns (rows i, partners j). Rows whose identity
    fills the whole batch get none.

    >>> rows, partners = negative_partners(torch.tensor([4, 4, 9]))  # row 2's partner: 0 or 1
    >>> rows.tolist(), partners[:2].tolist()
    ([0, 1, 2], [2, 2])
    >>> negative_partners(torch.tensor([4, 4]))[0].tolist()
    []
    """
    different = labels[:, None] != labels[None, :]
    draws = torch.rand(different.shape, device=labels.device).masked_fill(~different, -1.0)
    rows = torch.nonzero(different.any(dim=1)).squeeze(1)
    return rows, draws.argmax(dim=1)[rows]


@dataclass
class CrossAttentionParams:
    segments: int = 16  # tokens per modality
    d_model: int = 64
    heads: int = 4
    dropout: float = 0.1  # attention and FFN dropout (input dropout: model.input_dropout)
    layers: int = 2


@register_system
class CrossAttention(HeadSystem):
    """Segment tokens per modality, cross-attention layers, one same/different logit."""

    name = "cross-attention"
    Params = CrossAttentionParams
    pairing = "paired"
    classifier_modules = ()  # no identity classifier: every part carries over from pretraining

    def __init__(self, voice_dim: int, face_dim: int, n_classes: int, cfg) -> None:
        super().__init__(voice_dim, face_dim, n_classes, cfg)
        p = self.params
        for what, value in (("segments", p.segments), ("d_model", p.d_model), ("heads", p.heads),
                            ("layers", p.layers)):
            if value < 1:
                raise FvaError(f"model.params.{what} (cross-attention) must be >= 1, got {value}")
        if p.d_model % p.heads:
            raise FvaError(f"model.params.d_model (cross-attention) must be a multiple of heads ({p.heads}), "
                           f"got {p.d_model}")
        if not 0.0 <= p.dropout < 1.0:
            raise FvaError(f"model.params.dropout (cross-attention) must be in [0, 1), got {p.dropout}")
        self.voice = nn.Sequential(Standardize(voice_dim, cfg.input_norm), InputDropout(cfg.input_dropout),
                                   SegmentTokens(voice_dim, p.segments, p.d_model))
        self.face = nn.Sequential(Standardize(face_dim, cfg.input_norm), InputDropout(cfg.input_dropout),
                                  SegmentTokens(face_dim, p.segments, p.d_model))
        self.voice_layers = nn.ModuleList(CrossBlock(p.d_model, p.heads, p.dropout) for _ in range(p.layers))
        self.face_layers = nn.ModuleList(CrossBlock(p.d_model, p.heads, p.dropout) for _ in range(p.layers))
        self.output = nn.Linear(2 * p.d_model, 1)

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """The token sequence (N, segments, d_model) of each row (projected once per medium)."""
        return (self.voice if modality == "voice" else self.face)(x)

    def logits(self, voice_tokens: torch.Tensor, face_tokens: torch.Tensor) -> torch.Tensor:
        """(N,) same-person logit of voice row i with face row i."""
        v, f = voice_tokens, face_tokens
        for voice_layer, face_layer in zip(self.voice_layers, self.face_layers):
            v, f = voice_layer(v, f), face_layer(f, v)
        return self.output(torch.cat([v.mean(dim=1), f.mean(dim=1)], dim=1)).squeeze(1)

    def pair_distances(self, voice: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """1 - sigmoid(logit), computed as sigmoid(-logit) (no cancellation for confident pairs)."""
        return torch.sigmoid(-self.logits(voice, face))

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean BCE of the positives (voice_i, face_i) and of one different-identity negative per row,
        averaged (balanced even when a row has no negative)."""
        check_paired(batch, self.name)
        v = self.embed("voice", batch.voice)
        f = self.embed("face", batch.face)
        rows, partners = negative_partners(batch.voice_labels)
        logits = self.logits(torch.cat([v, v[rows]]), torch.cat([f, f[partners]]))  # positives, then negatives
        positive = F.binary_cross_entropy_with_logits(logits[:len(v)], torch.ones_like(logits[:len(v)]))
        if not len(rows):
            return positive
        negative = F.binary_cross_entropy_with_logits(logits[len(v):], torch.zeros_like(logits[len(v):]))
        return 0.5 * (positive + negative)
