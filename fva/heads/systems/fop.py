"""FOP, the official FAME baseline (Saeed et al., "Fusion and Orthogonal Projection for Improved Face-Voice
Association", ICASSP 2022), and the dual-branch FOP with multi-similarity pair weighting (FAME 2024, 3rd).

FOP, per modality: Linear(in -> 128) -> BatchNorm -> ReLU -> Dropout(0.5) -> L2-normalise. Gated fusion of a
voice-face pair of the same identity::

    gate  = sigmoid(Linear(128 -> 128)(ReLU(BatchNorm(Linear(256 -> 128)(concat(face, voice))))))
    fused = gate * tanh(face) + (1 - gate) * tanh(voice)
    loss  = CE(Linear(128 -> classes)(fused), y) + alpha * OPL(fused, y)

Score: Euclidean distance between tanh(face) and tanh(voice), as the official test code.

Options beyond the published FOP (off by default; the ``gated-fusion-opl`` config, FAME 2026's 4th entry, turns
them on): an MLP adapter per modality (``adapter_hidden``: Linear -> BatchNorm -> activation -> Dropout ->
Linear -> BatchNorm -> activation), a LayerNorm over each input row (``input_layer_norm``), a Linear per
modality between the branch and tanh (``modality_linear``: fusion and score see ``tanh(W x)``), dropout in
the gate's MLP (``gate_dropout``). Module names follow
the official model so that its checkpoints load as they are (:mod:`fva.heads.systems.fop_checkpoint`,
:mod:`fva.heads.fop_import`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fva.errors import FvaError
from fva.heads.layers import Standardize
from fva.heads.systems import register_system
from fva.heads.systems.base import Batch, HeadSystem, check_paired
from fva.heads.systems.fop_checkpoint import read_fop_state


def opl_loss(features: torch.Tensor, labels: torch.Tensor, gamma: float = 0.7) -> torch.Tensor:
    """Orthogonal projection loss on the L2-normalised ``features`` (N, D) with cosines c_ij:
    ``(1 - mean_{i != j, y_i = y_j} c_ij) + gamma * mean_{y_i != y_j} |c_ij|`` over ordered pairs; the mean
    of an empty set is 0 (the official code divides by the count + 1e-6)."""
    z = F.normalize(features, dim=1)
    cos = z @ z.T
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    neg = ~same
    pos_mean = (cos * pos).sum() / pos.sum().clamp(min=1)
    neg_mean = (cos.abs() * neg).sum() / neg.sum().clamp(min=1)
    return 1.0 - pos_mean + gamma * neg_mean


def multi_similarity_loss(sim: torch.Tensor, positive_mask: torch.Tensor, alpha: float = 2.0,
                          beta: float = 50.0, theta: float = 0.6, gamma: float = 0.3) -> torch.Tensor:
    """Multi-similarity pair weighting with polarisation terms, per anchor (row i of ``sim``, (N, M)), with
    P_i its positives (``positive_mask``) and N_i the rest::

        (1/alpha) log(1 + sum_P exp(-alpha (S - theta))) + (1/beta) log(1 + sum_N exp(beta (S - theta)))
        + (2 - mean_P S) + gamma * mean_N |S|

    averaged over the rows; an empty set's sum and mean are 0. The log terms go through logsumexp (exact,
    no overflow at beta = 50)."""
    pos = positive_mask.bool()
    neg = ~pos
    zero = sim.new_zeros(sim.shape[0], 1)
    off = float("-inf")  # exp(-inf) = 0: a masked pair adds nothing to its sum
    pos_term = torch.logsumexp(torch.cat([zero, (-alpha * (sim - theta)).masked_fill(neg, off)], 1), 1) / alpha
    neg_term = torch.logsumexp(torch.cat([zero, (beta * (sim - theta)).masked_fill(pos, off)], 1), 1) / beta
    pos_mean = (sim * pos).sum(1) / pos.sum(1).clamp(min=1)
    neg_mean = (sim.abs() * neg).sum(1) / neg.sum(1).clamp(min=1)
    return (pos_term + neg_term + 2.0 - pos_mean + gamma * neg_mean).mean()


class ForwardBlock(nn.Module):
    """Linear -> BatchNorm1d -> ReLU held as ``block`` (the official state-dict path ``attention.0.block.*``)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class Branch(nn.Module):
    """One modality: ``fc1`` = Linear -> BatchNorm1d -> ReLU -> Dropout, then L2-normalise. Before it, fva's
    optional input standardisation ``norm`` (``model.input_norm``; not in official checkpoints, whose
    import keeps it the identity). ``adapter_hidden`` > 0: ``fc1`` is the MLP adapter Linear(in -> hidden) ->
    BatchNorm -> act -> Dropout -> Linear(hidden -> dim) -> BatchNorm -> act; ``layer_norm``: a LayerNorm over
    each input row after ``norm``."""

    def __init__(self, d_in: int, dim: int, dropout: float, input_norm: bool = False, adapter_hidden: int = 0,
                 activation: str = "relu", layer_norm: bool = False) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise FvaError(f"model.params: activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
        act = ACTIVATIONS[activation]
        self.norm = Standardize(d_in, input_norm)
        self.layer_norm = nn.LayerNorm(d_in) if layer_norm else nn.Identity()
        if adapter_hidden > 0:
            self.fc1 = nn.Sequential(nn.Linear(d_in, adapter_hidden), nn.BatchNorm1d(adapter_hidden), act(),
                                     nn.Dropout(dropout), nn.Linear(adapter_hidden, dim), nn.BatchNorm1d(dim), act())
        else:
            self.fc1 = nn.Sequential(nn.Linear(d_in, dim), nn.BatchNorm1d(dim), act(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc1(self.layer_norm(self.norm(x))), dim=1)


def with_own_norms(state: dict, model: nn.Module) -> dict:
    """``state`` completed with ``model``'s own input-standardisation buffers where it has none (an official
    checkpoint): those stay the identity (mean 0, 1 / std 1)."""
    return {**{k: v for k, v in model.state_dict().items() if ".norm." in k}, **state}


class GatedFusion(nn.Module):
    """gate = sigmoid(attention(concat(face, voice))); fused = gate * tanh(face) + (1 - gate) * tanh(voice).
    FOP's attention is an MLP (``ForwardBlock(2 dim, hidden)`` then ``Linear(hidden, dim)``; ``dropout`` > 0
    puts a Dropout between them). ``modality_linear``: tanh(W_face face) and tanh(W_voice voice) instead
    (:meth:`project`), the gate still reading the inputs."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, modality_linear: bool = False) -> None:
        super().__init__()
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        self.attention = nn.Sequential(ForwardBlock(2 * dim, hidden), *drop, nn.Linear(hidden, dim))
        self.linears = nn.ModuleDict({m: nn.Linear(dim, dim) for m in ("face", "voice")} if modality_linear else {})

    def project(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """What tanh is applied to: ``x``, or its modality's Linear of it."""
        return self.linears[modality](x) if modality in self.linears else x

    def gate(self, face: torch.Tensor, voice: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.attention(torch.cat([face, voice], dim=1)))

    def forward(self, face: torch.Tensor, voice: torch.Tensor) -> torch.Tensor:
        gate = self.gate(face, voice)
        return gate * torch.tanh(self.project("face", face)) + (1.0 - gate) * torch.tanh(self.project("voice", voice))


class ConvGatedFusion(GatedFusion):
    """The same fusion with a 1-D convolution attention: face and voice embeddings as two channels of length
    dim, ``Conv1d(2 -> 1, kernel, same padding)``, sigmoid: each dimension's gate sees both modalities in a
    window of ``kernel`` neighbouring dimensions."""

    def __init__(self, dim: int, kernel: int) -> None:
        nn.Module.__init__(self)
        if kernel < 1 or kernel % 2 == 0:
            raise FvaError(f"model.params (dual-fop): kernel must be a positive odd number, got {kernel}")
        self.attention = nn.Conv1d(2, 1, kernel, padding=kernel // 2)
        self.linears = nn.ModuleDict()

    def gate(self, face: torch.Tensor, voice: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.attention(torch.stack([face, voice], dim=1)).squeeze(1))


def init_linear(module: nn.Module) -> None:
    """The official initialisation: Xavier-uniform weights, biases 0.01, for every Linear layer."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.constant_(m.bias, 0.01)


def tanh_distances(voice: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """(N,) Euclidean distance between tanh(face) and tanh(voice), the official FOP score."""
    return torch.linalg.vector_norm(torch.tanh(face) - torch.tanh(voice), dim=1)


@dataclass
class FOPParams:
    dim: int = 128  # embedding size of each branch (published: 128)
    gate_dim: int = 128  # hidden size of the fusion gate's MLP (published: 128)
    dropout: float = 0.5  # after each branch's ReLU
    alpha: float = 1.0  # weight of the orthogonal projection loss (the official training uses 1)
    gamma: float = 0.7  # weight of the different-identity |cosine| in the OPL
    # beyond the published FOP (the gated-fusion-opl config); the defaults are FOP's
    adapter_hidden: int = 0  # > 0: each branch is a 2-layer MLP adapter with this hidden size
    activation: str = "relu"  # of the branches: relu or gelu
    input_layer_norm: bool = False  # LayerNorm over each input row before the branch
    modality_linear: bool = False  # a Linear per modality before tanh (fusion and score)
    gate_dropout: float = 0.0  # dropout inside the gate's MLP


class FOPParts(HeadSystem):
    """What FOP and dual-FOP share: a branch per modality, a fusion layer and the identity logits, trained
    on pairs."""

    pairing = "paired"
    classifier_modules = ("logits_layer",)

    def build(self, voice_dim: int, face_dim: int, n_classes: int, fusion: nn.Module) -> None:
        p = self.params
        extra = {}
        if isinstance(p, FOPParams):
            extra = dict(adapter_hidden=p.adapter_hidden, activation=p.activation, layer_norm=p.input_layer_norm)
        self.voice_branch = Branch(voice_dim, p.dim, p.dropout, self.cfg.input_norm, **extra)
        self.face_branch = Branch(face_dim, p.dim, p.dropout, self.cfg.input_norm, **extra)
        self.fusion_layer = fusion
        self.logits_layer = nn.Linear(p.dim, n_classes)

    def input_norms(self) -> dict:
        return {"voice": self.voice_branch.norm, "face": self.face_branch.norm}

    def replace_classifier(self, n_classes: int) -> None:
        self.logits_layer = nn.Linear(self.params.dim, n_classes)
        init_linear(self.logits_layer)
        super().replace_classifier(n_classes)


@register_system
class FOP(FOPParts):
    """The official FAME baseline. Published training: Adam, lr 1e-2, weight decay 0.01, batch 32 pairs."""

    name = "fop"
    Params = FOPParams

    def __init__(self, voice_dim: int, face_dim: int, n_classes: int, cfg) -> None:
        super().__init__(voice_dim, face_dim, n_classes, cfg)
        p = self.params
        self.build(voice_dim, face_dim, n_classes, GatedFusion(p.dim, p.gate_dim, p.gate_dropout, p.modality_linear))
        init_linear(self)

    def forward(self, voice: torch.Tensor, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused features and identity logits of voice-face pairs."""
        fused = self.fusion_layer(self.face_branch(face), self.voice_branch(voice))
        return fused, self.logits_layer(fused)

    def loss(self, batch: Batch) -> torch.Tensor:
        check_paired(batch, self.name, min_pairs=2)  # batch norm in training mode
        fused, logits = self(batch.voice, batch.face)
        return F.cross_entropy(logits, batch.voice_labels) + self.params.alpha * opl_loss(
            fused, batch.voice_labels, self.params.gamma)

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised branch output, through its modality's Linear with ``modality_linear`` (tanh comes in
        :meth:`pair_distances`)."""
        branch = {"voice": self.voice_branch, "face": self.face_branch}[modality]
        return self.fusion_layer.project(modality, branch(x))

    def pair_distances(self, voice: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return tanh_distances(voice, face)



class PretrainedFOP(nn.Module):
    """The scoring parts of a FOP (branches and MLP-gated fusion; no classifier), state-dict names as FOP's."""

    def __init__(self, voice_dim: int, face_dim: int, dim: int, gate_dim: int, dropout: float) -> None:
        super().__init__()
        # standardisation on: the frozen FOP's own statistics are loaded (the identity for official weights)
        self.voice_branch = Branch(voice_dim, dim, dropout, input_norm=True)
        self.face_branch = Branch(face_dim, dim, dropout, input_norm=True)
        self.fusion_layer = GatedFusion(dim, gate_dim)


@dataclass
class DualFOPParams:
    frozen: str = ""  # the pretrained FOP: an experiment folder (its fold0) or a checkpoint.pt / official file
    dim: int = 128  # embedding size of both FOPs (the frozen one's must match)
    gate_dim: int = 128  # hidden size of the frozen FOP's gate MLP (must match its checkpoint)
    dropout: float = 0.5
    kernel: int = 3  # width of the trainable FOP's convolution gate
    ms_weight: float = 1.0  # weight of the multi-similarity term beside cross-entropy
    ms_alpha: float = 2.0  # positive-pair sharpness (the usual multi-similarity loss value)
    ms_beta: float = 50.0  # negative-pair sharpness (idem)
    ms_theta: float = 0.6  # similarity margin
    ms_gamma: float = 0.3  # weight of the mean |cosine| of negative pairs


@register_system
class DualFOP(FOPParts):
    """A frozen pretrained FOP beside a trainable FOP whose gate is a convolution (:class:`ConvGatedFusion`),
    mixed by learned attention weights w = softmax(``mix_logits``) (one pair of weights for everything).

    Per modality the representation is ``w0 tanh(frozen branch) + w1 tanh(trainable branch)``; the identity
    classifier reads ``w0 fused_frozen + w1 fused_trainable``. Loss = CE + ``ms_weight`` x
    :func:`multi_similarity_loss` on the cosine similarities of every voice with every face of the batch
    (positive = same identity), with voices as anchors and with faces as anchors, averaged. Score = 1 - cosine
    of the mixed representations: the quantity the multi-similarity term (margin ``theta`` on cosines) shapes.

    ``params.frozen`` should name a trained or imported FOP; its weights are read on the first :meth:`loss`
    or :meth:`embed` call and are part of the state dict (with the flag ``pretrained_loaded``), so a saved
    checkpoint rebuilds without that file. Empty: the frozen FOP is a frozen copy of the trainable branches'
    initial weights (a random projection; only useful for tests and ablations). Re-pairing each identity's
    faces and voices across scenes (k = 4 times the data, as published) is the trainer's
    ``train.pair_repeats``.
    """

    name = "dual-fop"
    Params = DualFOPParams

    def __init__(self, voice_dim: int, face_dim: int, n_classes: int, cfg) -> None:
        super().__init__(voice_dim, face_dim, n_classes, cfg)
        p = self.params
        self.build(voice_dim, face_dim, n_classes, ConvGatedFusion(p.dim, p.kernel))
        self.mix_logits = nn.Parameter(torch.zeros(2))
        init_linear(self)
        self.pretrained = PretrainedFOP(voice_dim, face_dim, p.dim, p.gate_dim, p.dropout)
        init_linear(self.pretrained)
        self.pretrained.voice_branch.load_state_dict(self.voice_branch.state_dict())
        self.pretrained.face_branch.load_state_dict(self.face_branch.state_dict())
        self.pretrained.requires_grad_(False)
        self.pretrained.eval()
        self.register_buffer("pretrained_loaded", torch.tensor(False))

    def train(self, mode: bool = True) -> "DualFOP":
        super().train(mode)
        self.pretrained.eval()  # batch-norm statistics and dropout of the frozen FOP stay as trained
        return self

    def load_pretrained(self) -> None:
        """Copy the frozen FOP's weights from ``params.frozen`` (once: the flag is saved in the state dict)."""
        if not self.params.frozen or bool(self.pretrained_loaded):
            return
        path = Path(self.params.frozen)
        state = with_own_norms({k: v for k, v in read_fop_state(path).items() if not k.startswith("logits_layer.")},
                               self.pretrained)
        own = self.pretrained.state_dict()
        for key, value in own.items():
            if key not in state:
                raise FvaError(f"{path}: not a FOP checkpoint (no {key!r}); model.params.frozen needs a FOP")
            if state[key].shape != value.shape:
                raise FvaError(f"{path}: {key} is {tuple(state[key].shape)} but this dual-fop needs "
                               f"{tuple(value.shape)} (voice {self.sizes['voice_dim']}-d, face "
                               f"{self.sizes['face_dim']}-d, dim {self.params.dim}, gate_dim {self.params.gate_dim})")
        self.pretrained.load_state_dict({k: state[k] for k in own})
        self.pretrained_loaded.fill_(True)

    def mix_weights(self) -> torch.Tensor:
        return torch.softmax(self.mix_logits, dim=0)

    def encode(self, voice: torch.Tensor, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixed voice representations, mixed face representations, mixed fused features."""
        self.load_pretrained()
        w = self.mix_weights()
        fv, ff = self.pretrained.voice_branch(voice), self.pretrained.face_branch(face)
        tv, tf = self.voice_branch(voice), self.face_branch(face)
        fused = w[0] * self.pretrained.fusion_layer(ff, fv) + w[1] * self.fusion_layer(tf, tv)
        return w[0] * torch.tanh(fv) + w[1] * torch.tanh(tv), w[0] * torch.tanh(ff) + w[1] * torch.tanh(tf), fused

    def loss(self, batch: Batch) -> torch.Tensor:
        check_paired(batch, self.name, min_pairs=2)  # batch norm in training mode
        voice, face, fused = self.encode(batch.voice, batch.face)
        y = batch.voice_labels
        sim = F.normalize(voice, dim=1) @ F.normalize(face, dim=1).T
        positive = y[:, None] == y[None, :]
        p = self.params
        ms = 0.5 * (multi_similarity_loss(sim, positive, p.ms_alpha, p.ms_beta, p.ms_theta, p.ms_gamma)
                    + multi_similarity_loss(sim.T, positive.T, p.ms_alpha, p.ms_beta, p.ms_theta, p.ms_gamma))
        return F.cross_entropy(self.logits_layer(fused), y) + p.ms_weight * ms

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """``w0 tanh(frozen branch(x)) + w1 tanh(trainable branch(x))``; scored with 1 - cosine (the default)."""
        self.load_pretrained()
        w = self.mix_weights()
        frozen = {"voice": self.pretrained.voice_branch, "face": self.pretrained.face_branch}[modality]
        trainable = {"voice": self.voice_branch, "face": self.face_branch}[modality]
        return w[0] * torch.tanh(frozen(x)) + w[1] * torch.tanh(trainable(x))

