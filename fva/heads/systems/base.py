"""What every head system provides to the trainer and to scoring.

The trainer (:func:`fva.heads.trainer.train_epoch`) builds a :class:`Batch` per step and calls
:meth:`HeadSystem.loss`; scoring embeds each distinct medium once with :meth:`HeadSystem.embed` (eval mode)
and turns paired rows of those representations into distances (lower = same person) with
:meth:`HeadSystem.pair_distances`. Pretraining and ``--init`` carry :meth:`HeadSystem.projections_state`
from one model to another of the same system and dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fva.heads.typed import parse_params


@dataclass
class Batch:
    """One training step's rows. ``independent`` systems get voice and face rows drawn separately
    (N voices, M faces, any identities). ``paired`` systems get N == M and row i of ``face`` is another
    sample of the identity of row i of ``voice`` (``voice_labels`` equals ``face_labels``)."""

    voice: torch.Tensor  # (N, voice_dim) float32
    voice_labels: torch.Tensor  # (N,) int64 class index
    face: torch.Tensor  # (M, face_dim) float32
    face_labels: torch.Tensor  # (M,) int64


@dataclass
class NoParams:
    """A system without options of its own."""


class HeadSystem(nn.Module):
    """Base class. Subclasses set ``name``, ``Params`` (a dataclass whose defaults are the published
    values; the config's ``model.params`` mapping fills it) and ``pairing``, and implement
    :meth:`loss` and :meth:`embed`; the rest has defaults.

    Constructor signature (the trainer and checkpoints rebuild systems through it):
    ``System(voice_dim, face_dim, n_classes, cfg)`` with ``cfg`` a :class:`fva.heads.config.ModelConfig`;
    ``self.params`` is the parsed ``Params`` instance.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    pairing: ClassVar[str] = "independent"  # or "paired"
    classifier_modules: ClassVar[tuple[str, ...]] = ("classifier",)  # not carried by projections_state
    # closed-form systems are not trained by gradient steps: the trainer calls :meth:`solutions` instead of
    # running epochs, and selects among its candidates on the dev trials as it selects among epochs
    closed_form: ClassVar[bool] = False

    def __init__(self, voice_dim: int, face_dim: int, n_classes: int, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.params = parse_params(self.Params, cfg.params, f"model.params ({self.name})")
        self.sizes = {"voice_dim": voice_dim, "face_dim": face_dim, "n_classes": n_classes}

    def loss(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Representation of each row of one modality, (N, ...), used for scoring (called in eval mode)."""
        raise NotImplementedError

    @staticmethod
    def check_features(voice: list[str], face: list[str], source: str) -> None:
        """Refuse (one line naming ``source``, the config) voice / face encoders the system cannot score;
        called when a config is loaded. Default: any."""

    def fit_inputs(self, voice_rows, face_rows, seed: int) -> None:
        """Fit fixed input transforms (e.g. a :class:`~fva.heads.layers.Reduce`) on a fold's training rows,
        before training; a model started from other weights keeps theirs. Default: nothing to fit."""

    def training_rows(self, modality: str, rows):
        """The rows :meth:`loss` (or :meth:`solutions`) sees for ``modality``: by default the cache's rows; a
        system with a fixed input transform returns them transformed once (:class:`~fva.heads.features.MappedRows`)
        so that no epoch repeats it."""
        return rows

    def solutions(self, voice_rows, face_rows):
        """Closed-form systems: a generator that sets the model to each candidate solution in turn (e.g. each
        point of a hyper-parameter grid) and yields a mapping describing it, fitted on the training rows
        (:meth:`training_rows`)."""
        raise NotImplementedError(f"{self.name} is trained by gradient steps, not in closed form")

    def pair_distances(self, voice: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """(N,) distance of voice row i and face row i of :meth:`embed` outputs; default 1 - cosine."""
        return 1.0 - F.cosine_similarity(voice, face, dim=1)

    def replace_classifier(self, n_classes: int) -> None:
        """A fresh identity classifier for a new identity set (fine-tuning after pretraining). Systems with
        an identity classifier override this."""
        self.sizes["n_classes"] = n_classes

    def projections_state(self) -> dict:
        """The parts carried from a pretrained model (pretraining, ``--init``): everything but the
        submodules named in ``classifier_modules`` (their shape depends on the identity set)."""
        return {k: v for k, v in self.state_dict().items() if k.split(".")[0] not in self.classifier_modules}

    def load_projections(self, state: dict) -> None:
        """Load what :meth:`projections_state` of a model of the same system and sizes returned."""
        from fva.errors import FvaError

        expected = self.projections_state()
        odd = sorted(set(state) ^ set(expected)) or [k for k in state if state[k].shape != expected[k].shape]
        if odd:
            raise FvaError(f"the pretrained head does not fit this {self.name} head (first differing weight: "
                           f"{odd[0]}); start from a head of the same system and features")
        self.load_state_dict(state, strict=False)

    def input_norms(self) -> dict:
        """modality -> its input standardisation module (set from the training rows when ``input_norm`` is
        on): by default the first module of ``self.voice`` / ``self.face`` where that is a Standardize."""
        from fva.heads.layers import Standardize

        found = {}
        for modality in ("voice", "face"):
            module = getattr(self, modality, None)
            if isinstance(module, nn.Sequential) and len(module) and isinstance(module[0], Standardize):
                found[modality] = module[0]
        return found


class ReducedInputs:
    """Mixin of systems whose inputs pass a fixed :class:`~fva.heads.layers.Reduce` per modality
    (``self.voice_reduce``, ``self.face_reduce``): fitted on the fold's training rows, and the training rows
    reduced once (:class:`~fva.heads.features.MappedRows`)."""

    def reduction(self, modality: str):
        return self.voice_reduce if modality == "voice" else self.face_reduce

    def fit_inputs(self, voice_rows, face_rows, seed: int) -> None:
        self.voice_reduce.fit_rows(voice_rows, seed, 0)
        self.face_reduce.fit_rows(face_rows, seed, 1)

    def training_rows(self, modality: str, rows):
        from fva.heads.features import MappedRows

        return MappedRows(rows, self.reduction(modality).rows)


def check_paired(batch: Batch, system: str, min_pairs: int = 1) -> None:
    """Paired systems need face row i to belong to voice row i's identity (the trainer's paired sampler);
    systems with batch norm need ``min_pairs`` = 2 (the trainer skips a last batch of one pair)."""
    if len(batch.voice) != len(batch.face) or not torch.equal(batch.voice_labels, batch.face_labels):
        raise ValueError(f"{system} needs paired rows (same count, same labels), got {len(batch.voice)} voices "
                         f"and {len(batch.face)} faces")
    if len(batch.voice) < min_pairs:
        raise ValueError(f"{system} needs at least {min_pairs} pairs per training batch")
