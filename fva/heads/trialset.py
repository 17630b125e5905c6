"""Trials with their features resolved, and a head system's distances over them: what training (the dev
trials of each fold) and scoring (any trial list) share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fva.data.mavceleb import media_key
from fva.data.trials import Trial
from fva.errors import FvaError
from fva.heads.config import HeadConfig, ScoreConfig
from fva.heads.features import FeatureTable
from fva.heads.postprocess import polarise, refine
from fva.heads.systems.base import HeadSystem


@dataclass
class Modalities:
    voice: FeatureTable
    face: FeatureTable

    def close(self) -> None:
        self.voice.close()
        self.face.close()


def open_features(cfg: HeadConfig, folder: Path) -> Modalities:
    return Modalities(FeatureTable(folder, cfg.features.voice_encoders),
                      FeatureTable(folder, cfg.features.face_encoders))


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

    def distances(self, model: HeadSystem, post: ScoreConfig | None = None) -> np.ndarray:
        """The system's distance of each trial, post-processed as ``post`` says (refinement, then
        polarisation) when given."""
        if post is None or not (post.refine.enabled or post.polarise.enabled):
            return score_distances(model, self.voice, self.face, voice_of=self.voice_of, face_of=self.face_of)
        ev, ef = embed_rows(model, "voice", self.voice), embed_rows(model, "face", self.face)
        dist = pair_distances(model, ev, ef, self.voice_of, self.face_of)
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
