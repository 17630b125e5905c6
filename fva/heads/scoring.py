"""Scoring trial lists with a trained experiment: each fold model's distances (post-processed as the config
says; S-norm with the cohort its checkpoint stores), averaged over the folds (:class:`FoldModels`, shared with
``fva verify`` and :mod:`fva.api`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fva.data.trials import read_trials
from fva.errors import FvaError
from fva.heads.experiment import check_same_weights, fold_checkpoints, load_checkpoint, read_experiment
from fva.heads.postprocess import check_level
from fva.heads.systems.base import HeadSystem
from fva.heads.trialset import Cohort, TrainStats, TrialSet, open_features
from fva.layout import find_features_folder


def score_trial_list(exp: str | Path, trials_path: str | Path, cache_root: str | Path | None = None,
                     subset: str = "test", max_level: int = 3) -> dict[str, float]:
    """key -> distance for every trial of ``trials_path``, features from the ``subset`` caches of the weight set
    the experiment was trained on; features of other weights are refused, and so is an experiment whose score
    steps read more than ``max_level`` allows (:data:`fva.heads.postprocess.LEVELS`; ``--pairwise``: 0)."""
    exp = Path(exp)
    cfg, info = read_experiment(exp)
    check_level(cfg.score.level, max_level, str(exp))
    root = Path(cache_root) if cache_root else Path(info.cache)
    trials = read_trials(trials_path)
    weight_set = info.weight_set
    feats = open_features(cfg, find_features_folder(root, cfg.data.dataset, subset, weight_set))
    try:
        for modality, table in (("voice", feats.voice), ("face", feats.face)):
            check_same_weights(info.weights_ids, table.weights_ids, str(table.folder), str(exp),
                               f"score with {subset} features of the same weights (weight set {weight_set})")
            trained = sum(info.modality(modality).dims)
            if table.dim != trained:
                raise FvaError(f"{table.folder}: {modality} features are {table.dim}-d but {exp} was trained on "
                               f"{trained}-d; score with the caches it was trained on")
        ts = TrialSet.build(trials, feats, str(trials_path))
    finally:
        feats.close()
    distances = FoldModels.load(exp).distances(ts, cfg.score).mean(axis=0)
    return {t.key: float(d) for t, d in zip(trials, distances)}


@dataclass
class FoldModels:
    """An experiment's fold models and their checkpoint payloads: the one place that averages over folds."""

    models: list[HeadSystem]
    payloads: list[dict]

    @classmethod
    def load(cls, exp: str | Path) -> "FoldModels":
        loaded = [load_checkpoint(p) for p in fold_checkpoints(Path(exp))]
        return cls([model for model, _ in loaded], [payload for _, payload in loaded])

    def __len__(self) -> int:
        return len(self.models)

    def distances(self, ts: TrialSet, post=None) -> np.ndarray:
        """(folds, trials): each fold model's distances; their mean over axis 0 is the experiment's score."""
        return np.stack([ts.distances(model, post, Cohort.from_payload(payload), TrainStats.from_payload(payload))
                         for model, payload in zip(self.models, self.payloads)])

    def threshold(self) -> float | None:
        """The decision threshold: the mean of the folds' dev-EER thresholds; None when a fold has none (an
        imported model, never scored on dev trials)."""
        values = [float(p.get("threshold", np.nan)) for p in self.payloads]
        return None if np.isnan(values).any() else float(np.mean(values))

    def llrs(self, per_fold: np.ndarray) -> np.ndarray | None:
        """Calibrated log-likelihood ratios of the trials whose per-fold distances are ``per_fold`` (folds,
        trials): the mean over folds of each fold's calibration (checkpoint key ``calibration``) applied to
        its own distances; None when a fold has no calibration."""
        calibrations = [p.get("calibration") for p in self.payloads]
        if any(c is None for c in calibrations):
            return None
        return np.mean([calibration_llr(c, d) for c, d in zip(calibrations, per_fold)], axis=0)


def calibration_llr(calibration: dict, distances: np.ndarray) -> np.ndarray:
    """One fold's calibration (its checkpoint's ``calibration`` record) applied to that fold's distances: the
    map of :class:`fva.evaluate.calibration.Calibration`, the one owner of calibration."""
    from fva.evaluate.calibration import Calibration

    return Calibration.from_dict(calibration).llr(distances)
