"""Trials with their features resolved, and a head system's distances over them: what training (the dev
trials of each fold) and scoring (any trial list) share; and S-norm's cohort of a fold model."""

from __future__ import annotations

from dataclasses import dataclass, replace
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
from fva.heads.postprocess import SnormConfig, cluster_space, cohort_moments, polarise, refine, snorm
from fva.heads.systems.base import HeadSystem
from fva.heads.transductive import block_mix, cluster_labels, fit_threshold


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
    """Features of the distinct keys (sorted, so that the rows do not depend on how the trials pair them), per key
    of ``keys`` its row in them, and the distinct keys."""
    row = {k: i for i, k in enumerate(sorted(set(keys)))}  # canonical: the same media, the same rows
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

    def distances(self, model: HeadSystem, post: ScoreConfig | None = None, cohort: "Cohort | None" = None,
                  stats: "TrainStats | None" = None) -> np.ndarray:
        """The system's distance of each trial, post-processed as ``post`` says when given: embeddings centred,
        S-norm against ``cohort`` (the model's own), z-norm and cluster thresholds from ``stats`` (the fold's
        :class:`TrainStats`), block mixing over the file's clusters, refinement, polarisation.

        Only refinement (level 3) reads which voice the list pairs with which face: every other step sees the
        file's distinct media (in sorted order) and each trial's own pair."""
        if post is None or post.plain:
            return score_distances(model, self.voice, self.face, voice_of=self.voice_of, face_of=self.face_of)
        ev, ef = embed_rows(model, "voice", self.voice), embed_rows(model, "face", self.face)
        ev, ef, centres = centre_embeddings(model, ev, ef, post.centre, stats)
        per_pair = PairSteps(model, ev, ef, post, cohort, stats, centres)
        if post.cluster.enabled:
            full = block_mix(per_pair.matrix(), *self.clusters(post, stats), post.cluster.weight)
            dist = full[self.voice_of, self.face_of]
        else:
            dist = per_pair(pair_distances(model, ev, ef, self.voice_of, self.face_of), self.voice_of, self.face_of)
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

    def clusters(self, post: ScoreConfig, stats: "TrainStats | None") -> tuple[np.ndarray, np.ndarray]:
        """Cluster labels of the file's distinct voices and faces (:class:`~fva.heads.postprocess.ClusterConfig`),
        each modality on its encoder features, at the configured or the fold's fitted threshold."""
        labels = []
        for modality, x in (("voice", self.voice), ("face", self.face)):
            threshold = getattr(post.cluster, f"{modality}_threshold") or (
                getattr(stats, f"{modality}_threshold", None) if stats is not None else None)
            if not threshold:
                raise FvaError(f"score.cluster: no {modality} threshold; retrain the experiment with score.cluster "
                               "enabled (it fits them on the training identities) or set score.cluster."
                               f"{modality}_threshold")
            labels.append(cluster_labels(cluster_space(x), threshold))
        return labels[0], labels[1]


def centre_embeddings(model: HeadSystem, ev: torch.Tensor, ef: torch.Tensor, centre: str,
                      stats: "TrainStats | None") -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
    """The embeddings centred as ``score.centre`` says (``train``: the fold's training means from ``stats``;
    ``file``: the mean of the file's distinct media) and the two means subtracted (None when not centred)."""
    if centre == "none":
        return ev, ef, None
    if ev.dim() != 2:
        raise FvaError(f"score.centre: the {model.name} system has no embedding per medium to centre; set "
                       "score.centre none")
    if centre == "train":
        if stats is None or stats.voice_mean is None:
            raise FvaError("score.centre train needs the training means that training stores in each fold's "
                           "checkpoint; retrain the experiment with it")
        means = (stats.voice_mean, stats.face_mean)
    else:
        means = (ev.mean(dim=0), ef.mean(dim=0))
    return ev - means[0], ef - means[1], means


class PairSteps:
    """The per-pair steps of :meth:`TrialSet.distances` on the (centred) embeddings ``ev``, ``ef``: the system's
    distance, then S-norm (its cohort centred like the media) and z-norm on training pairs. Called with a
    trial's voice and face rows; :meth:`matrix` gives every voice x face pair."""

    def __init__(self, model: HeadSystem, ev: torch.Tensor, ef: torch.Tensor, post: ScoreConfig,
                 cohort: "Cohort | None", stats: "TrainStats | None", centres: tuple | None) -> None:
        self.model, self.ev, self.ef, self.post = model, ev, ef, post
        self.moments = None
        if post.snorm.enabled:
            if cohort is None:
                raise FvaError("score.snorm needs the cohort that training stores in each fold's checkpoint; "
                               "retrain the experiment with score.snorm enabled")
            cv, cf = (cohort.voice, cohort.face) if centres is None else (cohort.voice - centres[0],
                                                                           cohort.face - centres[1])
            k = post.snorm.adaptive_top_k
            self.moments = (*cohort_statistics(model, "voice", ev, cf, k), *cohort_statistics(model, "face", ef, cv, k))
        self.z = None
        if post.znorm.enabled:
            if stats is None or stats.pair_mean is None:
                raise FvaError("score.znorm needs the training pairs' statistics that training stores in each "
                               "fold's checkpoint; retrain the experiment with score.znorm enabled")
            self.z = (stats.pair_mean, stats.pair_std)

    def __call__(self, dist: np.ndarray, voice_of: np.ndarray, face_of: np.ndarray) -> np.ndarray:
        if self.moments is not None:
            mu_v, sd_v, mu_f, sd_f = self.moments
            dist = snorm(dist, mu_v[voice_of], sd_v[voice_of], mu_f[face_of], sd_f[face_of])
        if self.z is not None:
            dist = (dist - self.z[0]) / self.z[1]
        return dist

    def matrix(self) -> np.ndarray:
        """(voices, faces): every pair of the file's media through the same steps."""
        nv, nf = len(self.ev), len(self.ef)
        voice_of, face_of = np.repeat(np.arange(nv), nf), np.tile(np.arange(nf), nv)
        return self(cross_distances(self.model, "voice", self.ev, self.ef).reshape(-1), voice_of,
                    face_of).reshape(nv, nf)


# --------------------------------------------------------------------------------------------------------
# Training statistics of level-0 and level-2 steps
# --------------------------------------------------------------------------------------------------------

STATS_ROWS = 65536  # training rows per modality the mean embeddings are taken over at most


@dataclass
class TrainStats:
    """What the score steps take from a fold's training identities, kept in its checkpoint as plain tensors
    and floats (``weights_only`` loading works): mean embeddings (``score.centre train``), the mean and
    deviation of random training pairs' distances (``score.znorm``), fitted cluster thresholds with their
    adjusted Rand index (``score.cluster``). Parts a config does not use are None."""

    voice_mean: torch.Tensor | None = None
    face_mean: torch.Tensor | None = None
    pair_mean: float | None = None
    pair_std: float | None = None
    voice_threshold: float | None = None
    face_threshold: float | None = None
    voice_ari: float | None = None
    face_ari: float | None = None

    def payload(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}

    @classmethod
    def from_payload(cls, payload: dict) -> "TrainStats | None":
        stats = payload.get("train_stats")
        return None if stats is None else cls(**stats)


def _sample(n: int, size: int, seed: list[int]) -> np.ndarray:
    """Sorted positions of a seeded sample of ``size`` of ``n`` (all of them when ``size`` >= ``n``)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def build_train_stats(model: HeadSystem, feats: Modalities, records: dict[str, MediaRecord], identities: list[str],
                      unheard: str | None, post: ScoreConfig, fold: int, cohort: "Cohort | None") -> TrainStats:
    """:class:`TrainStats` of a fold model from its training identities' rows (the ``unheard`` language left
    out): the parts ``post`` needs. Z-norm's pairs go through the same centring and S-norm as scoring (with
    ``score.centre file`` the training mean stands for a file's)."""
    classes = {identity: i for i, identity in enumerate(identities)}
    tables = {"voice": feats.voice, "face": feats.face}
    chosen = {m: select_rows(t, records, set(identities), unheard, classes) for m, t in tables.items()}
    stats = TrainStats()
    if post.centre != "none" or post.znorm.enabled:
        means = {}
        for stream, (m, sel) in enumerate(chosen.items()):
            rows = sel.rows[_sample(len(sel.rows), STATS_ROWS, [post.znorm.seed, fold, stream])]
            means[m] = embed_rows(model, m, tables[m].rows(rows)).mean(dim=0)
        stats.voice_mean, stats.face_mean = means["voice"], means["face"]
    if post.znorm.enabled:
        rng = np.random.default_rng([post.znorm.seed, fold, 2])
        picks = {m: rng.integers(len(sel.rows), size=post.znorm.pairs) for m, sel in chosen.items()}
        emb, index = {}, {}
        for m, sel in chosen.items():
            distinct, index[m] = np.unique(sel.rows[picks[m]], return_inverse=True)
            emb[m] = embed_rows(model, m, tables[m].rows(distinct))
        centre = "train" if post.centre != "none" else "none"
        ev, ef, centres = centre_embeddings(model, emb["voice"], emb["face"], centre, stats)
        steps = PairSteps(model, ev, ef, replace(post, znorm=replace(post.znorm, enabled=False)), cohort, None,
                          centres)
        d = steps(pair_distances(model, ev, ef, index["voice"], index["face"]), index["voice"], index["face"])
        if d.std() <= 1e-12:
            raise FvaError(f"score.znorm: fold {fold}'s training pairs all have the same distance; it cannot "
                           "z-normalise")
        stats.pair_mean, stats.pair_std = float(d.mean()), float(d.std())
    if post.cluster.enabled:
        for stream, (m, sel) in enumerate(chosen.items()):
            if getattr(post.cluster, f"{m}_threshold"):
                continue
            rows = _sample(len(sel.rows), post.cluster.fit_rows, [post.cluster.seed, fold, 3 + stream])
            threshold, ari = fit_threshold(cluster_space(tables[m].rows(sel.rows[rows])), sel.labels[rows],
                                           np.asarray(post.cluster.grid, dtype=np.float64))
            setattr(stats, f"{m}_threshold", threshold)
            setattr(stats, f"{m}_ari", ari)
    return stats


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
