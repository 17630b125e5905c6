"""Trials with their features resolved, and a head system's distances over them: what training (the dev
trials of each fold) and scoring (any trial list) share; and S-norm's cohort of a fold model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fva.data.mavceleb import media_key
from fva.data.records import MediaRecord
from fva.data.trials import Trial
from fva.errors import FvaError
from fva.heads.config import HeadConfig, ScoreConfig
from fva.heads.features import FeatureTable, select_rows
from fva.heads.postprocess import SnormConfig, cohort_moments, polarise, refine, snorm
from fva.heads.systems.base import HeadSystem


@dataclass
class Modalities:
    voice: FeatureTable
    face: FeatureTable

    def close(self) -> None:
        self.voice.close()
        self.face.close()


def open_features(cfg: HeadConfig, folder: Path) -> Modalities:
    """The config's voice and face encoders' features in ``folder``, each modality checked to be what the
    config puts there."""
    voice = FeatureTable(folder, cfg.features.voice_encoders)
    try:
        face = FeatureTable(folder, cfg.features.face_encoders)
    except BaseException:
        voice.close()
        raise
    for table, want in ((voice, "voice"), (face, "face")):
        if table.modality and table.modality != want:
            voice.close()
            face.close()
            raise FvaError(f"{folder}: features.{want}_encoders names {', '.join(table.encoders)}, whose features "
                           f"are of {table.modality}s; name {want} encoders there")
    return Modalities(voice, face)


def features_for_keys(table: FeatureTable, keys: list[str], by_key: dict[str, np.ndarray],
                      what: str) -> np.ndarray:
    """float32 (len(keys), dim): each key's row, or the mean of its frames for a face track."""
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise FvaError(f"{what}: no {table.modality} features for key {missing[0]!r} ({len(missing)} key(s) "
                       f"missing) in {table.folder}; extract them with 'fva extract'")
    flat = np.concatenate([by_key[k] for k in keys])
    rows = table.rows(flat)
    counts = np.array([len(by_key[k]) for k in keys])
    if (counts == 1).all():
        return rows
    sums = np.add.reduceat(rows, np.concatenate([[0], np.cumsum(counts)[:-1]]), axis=0)
    return sums / counts[:, None].astype(np.float32)  # stays float32 (an int64 divisor made float64)


def extras_for_keys(table: FeatureTable, keys: list[str], by_key: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-row scalars the encoders predicted (age, p_female), one per key: a face track's frames averaged."""
    return {name: np.array([float(np.mean(values[by_key[k]])) for k in keys]) for name, values in table.extras.items()}


def distinct_features(table: FeatureTable, keys: list[str], by_key: dict[str, np.ndarray],
                      what: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features of the distinct keys (first-seen order), per key of ``keys`` its row in them, and the
    distinct keys."""
    row = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return (features_for_keys(table, list(row), by_key, what), np.array([row[k] for k in keys], dtype=np.int64),
            list(row))


@dataclass
class TrialSet:
    """Trials with their features resolved: one voice and one (frame-averaged) face vector per distinct
    medium, and per trial the row of its voice and of its face (a dev voice clip is in six trials: each
    medium is embedded once per scoring)."""

    trials: list[Trial]
    voice: np.ndarray  # (distinct voices, dim)
    face: np.ndarray  # (distinct faces, dim)
    voice_of: np.ndarray  # (trials,) row of each trial's voice in ``voice``
    face_of: np.ndarray
    voice_extras: dict[str, np.ndarray]  # per distinct voice: the encoders' age, p_female (where predicted)
    face_extras: dict[str, np.ndarray]

    @classmethod
    def build(cls, trials: list[Trial], feats: Modalities, what: str,
              by_key: tuple[dict, dict] | None = None) -> "TrialSet":
        vk, fk = by_key or (feats.voice.rows_by_key(), feats.face.rows_by_key())
        voice, voice_of, voices = distinct_features(feats.voice, [media_key(t.voice) for t in trials], vk, what)
        face, face_of, faces = distinct_features(feats.face, [media_key(t.face) for t in trials], fk, what)
        return cls(trials, voice, face, voice_of, face_of, extras_for_keys(feats.voice, voices, vk),
                   extras_for_keys(feats.face, faces, fk))

    def distances(self, model: HeadSystem, post: ScoreConfig | None = None,
                  cohort: "Cohort | None" = None) -> np.ndarray:
        """The system's distance of each trial, post-processed as ``post`` says (S-norm against ``cohort``,
        the model's own, then refinement, then polarisation) when given."""
        if post is None or not (post.snorm.enabled or post.refine.enabled or post.polarise.enabled):
            return score_distances(model, self.voice, self.face, voice_of=self.voice_of, face_of=self.face_of)
        ev, ef = embed_rows(model, "voice", self.voice), embed_rows(model, "face", self.face)
        dist = pair_distances(model, ev, ef, self.voice_of, self.face_of)
        if post.snorm.enabled:
            if cohort is None:
                raise FvaError("score.snorm needs the cohort that training stores in each fold's checkpoint; "
                               "retrain the experiment with score.snorm enabled")
            mu_v, sd_v = cohort_statistics(model, "voice", ev, cohort.face, post.snorm.adaptive_top_k)
            mu_f, sd_f = cohort_statistics(model, "face", ef, cohort.voice, post.snorm.adaptive_top_k)
            dist = snorm(dist, mu_v[self.voice_of], sd_v[self.voice_of], mu_f[self.face_of], sd_f[self.face_of])
        if post.refine.enabled:
            if ev.dim() != 2:
                raise FvaError(f"score.refine: the {model.name} system has no embedding per medium to cluster; "
                               "turn refinement off for it")
            dist = refine(dist, ev.numpy(), ef.numpy(), self.voice_of, self.face_of, post.refine)
        if post.polarise.enabled:
            for modality, extras in (("voice", self.voice_extras), ("face", self.face_extras)):
                if not {"age", "p_female"} <= set(extras):
                    raise FvaError(f"score.polarise needs the age and p_female that a {modality} age-gender "
                                   "encoder predicts; add one to the features or turn polarisation off")
            dist = polarise(dist, self.voice_extras["age"][self.voice_of], self.voice_extras["p_female"][self.voice_of],
                            self.face_extras["age"][self.face_of], self.face_extras["p_female"][self.face_of],
                            post.polarise)
        return dist


# --------------------------------------------------------------------------------------------------------
# S-norm's cohort
# --------------------------------------------------------------------------------------------------------

COHORT_PAIRS = 2**20  # media x cohort distances computed (and held) at a time


@dataclass
class Cohort:
    """S-norm's cohort of one fold model: per training identity (with rows in both modalities) the model's
    representation of its mean voice features and of its mean face features. Stored in the fold's checkpoint
    as plain tensors (:meth:`payload`), so scoring needs no training cache and ``weights_only`` loading works."""

    identities: list[str]
    voice: torch.Tensor  # (C, ...) model.embed("voice", mean voice features of identity i)
    face: torch.Tensor

    def payload(self) -> dict:
        return {"identities": list(self.identities), "voice": self.voice.clone(), "face": self.face.clone()}

    @classmethod
    def from_payload(cls, payload: dict) -> "Cohort | None":
        """The cohort a checkpoint's payload holds, or None."""
        c = payload.get("cohort")
        return None if c is None else cls(list(c["identities"]), c["voice"], c["face"])


def identity_means(table: FeatureTable, rows: np.ndarray, labels: np.ndarray, n: int,
                   chunk: int = 65536) -> np.ndarray:
    """float32 (n, dim): per label 0..n-1 the mean of its rows' features, read ``chunk`` rows at a time."""
    sums = torch.zeros((n, table.dim), dtype=torch.float64)
    for lo in range(0, len(rows), chunk):
        x = torch.from_numpy(table.rows(rows[lo:lo + chunk])).double()
        sums.index_add_(0, torch.from_numpy(labels[lo:lo + chunk]), x)
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    return (sums.numpy() / counts[:, None]).astype(np.float32)


def build_cohort(model: HeadSystem, feats: Modalities, records: dict[str, MediaRecord], identities: list[str],
                 unheard: str | None, cfg: SnormConfig, fold: int) -> Cohort:
    """The cohort of a fold model from its training identities (``identities``: never the fold's dev ones) and
    the rows it trained on (the ``unheard`` language left out): every identity with voice and face rows, or a
    sample of ``cfg.cohort_size`` of them seeded by ``cfg.seed`` and ``fold``; each mean embedded by ``model``."""
    classes = {identity: i for i, identity in enumerate(identities)}
    voice = select_rows(feats.voice, records, set(identities), unheard, classes)
    face = select_rows(feats.face, records, set(identities), unheard, classes)
    both = np.intersect1d(voice.labels, face.labels)
    if cfg.cohort_size and cfg.cohort_size < len(both):
        both = np.sort(np.random.default_rng([cfg.seed, fold]).choice(both, cfg.cohort_size, replace=False))
    if len(both) < 2:
        raise FvaError(f"score.snorm: fold {fold} has {len(both)} training identities with voice and face rows; "
                       "the cohort needs at least 2")
    out = {}
    for modality, sel in (("voice", voice), ("face", face)):
        keep = np.isin(sel.labels, both)
        labels = np.searchsorted(both, sel.labels[keep])
        means = identity_means(getattr(feats, modality), sel.rows[keep], labels, len(both))
        out[modality] = embed_rows(model, modality, means)
    return Cohort([identities[i] for i in both], out["voice"], out["face"])


@torch.inference_mode()
def cohort_statistics(model: HeadSystem, modality: str, emb: torch.Tensor, cohort: torch.Tensor,
                      top_k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per medium of ``emb`` (of ``modality``): the :func:`~fva.heads.postprocess.cohort_moments` of its
    system distances to every entry of ``cohort`` (the other modality's), computed in blocks of about
    :data:`COHORT_PAIRS` pairs."""
    step = max(1, COHORT_PAIRS // max(len(cohort), 1))
    means, stds = [], []
    for lo in range(0, len(emb), step):
        mu, sd = cohort_moments(cross_distances(model, modality, emb[lo:lo + step], cohort), top_k)
        means.append(mu)
        stds.append(sd)
    return (np.concatenate(means), np.concatenate(stds)) if means else (np.zeros(0), np.zeros(0))


@torch.inference_mode()
def cross_distances(model: HeadSystem, modality: str, emb: torch.Tensor, other: torch.Tensor) -> np.ndarray:
    """float64 (len(emb), len(other)): the system's distance of every medium of ``emb`` (of ``modality``) to every
    medium of ``other`` (the other modality). Systems scored by the default distance (1 - cosine,
    :meth:`HeadSystem.pair_distances`) get it as one matrix product; others through their ``pair_distances`` on
    every pair (about 200x slower on the CPU)."""
    if type(model).pair_distances is HeadSystem.pair_distances and emb.dim() == 2:
        return (1.0 - F.normalize(emb, dim=1, eps=1e-8) @ F.normalize(other, dim=1, eps=1e-8).T).double().numpy()
    mine = np.repeat(np.arange(len(emb), dtype=np.int64), len(other))
    theirs = np.tile(np.arange(len(other), dtype=np.int64), len(emb))
    d = (pair_distances(model, emb, other, mine, theirs) if modality == "voice"
         else pair_distances(model, other, emb, theirs, mine))
    return d.reshape(len(emb), len(other))


@torch.inference_mode()
def embed_rows(model: HeadSystem, modality: str, x: np.ndarray, batch: int = 4096) -> torch.Tensor:
    """The system's representation of every row of ``x`` (eval mode), computed in batches."""
    model.eval()
    return torch.cat([model.embed(modality, torch.from_numpy(np.ascontiguousarray(x[lo:lo + batch])))
                      for lo in range(0, max(len(x), 1), batch)])


@torch.inference_mode()
def score_distances(model: HeadSystem, voice: np.ndarray, face: np.ndarray, batch: int = 4096,
                    voice_of: np.ndarray | None = None, face_of: np.ndarray | None = None) -> np.ndarray:
    """The system's distance (fame2026: 1 - cosine) of the voice and face of each trial, dropout off:
    trial i pairs ``voice[i]`` with ``face[i]``, or ``voice[voice_of[i]]`` with ``face[face_of[i]]`` when
    those are given (each medium is embedded once)."""
    ev, ef = embed_rows(model, "voice", voice, batch), embed_rows(model, "face", face, batch)
    return pair_distances(model, ev, ef, voice_of, face_of, batch)


@torch.inference_mode()
def pair_distances(model: HeadSystem, ev: torch.Tensor, ef: torch.Tensor, voice_of: np.ndarray | None,
                   face_of: np.ndarray | None, batch: int = 4096) -> np.ndarray:
    """float64 distances of trials given the media's representations and each trial's rows in them."""
    vi = torch.arange(len(ev)) if voice_of is None else torch.from_numpy(voice_of)
    fi = torch.arange(len(ef)) if face_of is None else torch.from_numpy(face_of)
    out = [model.pair_distances(ev[vi[lo:lo + batch]], ef[fi[lo:lo + batch]]) for lo in range(0, len(vi), batch)]
    return (torch.cat(out) if out else torch.zeros(0)).numpy().astype(np.float64)
