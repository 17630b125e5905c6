"""Scoring trial lists with a trained experiment: each fold model's distances (post-processed as the config
says), averaged over the folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fva.data.trials import read_trials
from fva.errors import FvaError
from fva.heads.experiment import fold_checkpoints, load_checkpoint, read_experiment
from fva.heads.trialset import TrialSet, open_features, score_distances
from fva.layout import find_features_folder


def score_trial_list(exp: str | Path, trials_path: str | Path, cache_root: str | Path | None = None,
                     subset: str = "test") -> dict[str, float]:
    """key -> distance for every trial of ``trials_path``, features from the ``subset`` caches."""
    exp = Path(exp)
    cfg, info = read_experiment(exp)
    root = Path(cache_root) if cache_root else Path(info["cache"])
    trials = read_trials(trials_path)
    feats = open_features(cfg, find_features_folder(root, cfg.data.dataset, subset))
    try:
        for modality, table in (("voice", feats.voice), ("face", feats.face)):
            if table.dim != sum(info["features"][modality]["dims"]):
                raise FvaError(f"{table.folder}: {modality} features are {table.dim}-d but {exp} was trained on "
                               f"{sum(info['features'][modality]['dims'])}-d; score with the caches it was trained on")
        ts = TrialSet.build(trials, feats, str(trials_path))
    finally:
        feats.close()
    distances = np.mean([ts.distances(load_checkpoint(p)[0], cfg.score) for p in fold_checkpoints(exp)], axis=0)
    return {t.key: float(d) for t, d in zip(trials, distances)}


def verify_pair(exp: str | Path, face_path: str | Path, voice_path: str | Path, device: str = "cpu",
                weights: dict[str, str] | None = None) -> dict:
    """Run the experiment's encoders and heads on one face image and one voice clip.

    The encoders are rebuilt from the weights recorded in the experiment's training caches (``weights``
    overrides per encoder). Returns the distance (mean over folds), the threshold at the dev EER point
    (mean over folds) and the decision.
    """
    import torch

    from fva.extract.cache import open_cache
    from fva.extract.encoders.base import get_encoder_class
    from fva.extract.media import MediaError, load_audio, load_face

    exp = Path(exp)
    cfg, info = read_experiment(exp)
    train_folder = Path(info["train_features"])
    try:
        audio = load_audio(voice_path)
    except MediaError as err:
        raise FvaError(f"{voice_path}: {err}") from None
    try:
        frames = [img for _, img in load_face(face_path)]
    except MediaError as err:
        raise FvaError(f"{face_path}: {err}") from None
    vectors = {}
    for modality, names, inputs in (("voice", cfg.features.voice_encoders, [audio]),
                                    ("face", cfg.features.face_encoders, frames)):
        parts = []
        for name in names:
            with open_cache(train_folder / name) as table:
                source = (weights or {}).get(name, table.attrs.get("weights"))
                expected = table.attrs.get("weights_id")
            encoder = get_encoder_class(name)(source, device=device)
            if expected and encoder.weights_id != expected:
                raise FvaError(f"{name}: weights {source} ({encoder.weights_id}) are not the ones {exp} was trained "
                               f"on ({expected}); pass the same weights")
            if modality == "voice" and len(audio) < getattr(encoder, "min_samples", 0):
                raise FvaError(f"{voice_path}: too short for {name} ({len(audio)} samples at 16 kHz)")
            emb = encoder.encode(encoder.collate([encoder.preprocess(x) for x in inputs])).embeddings
            parts.append(emb.mean(dim=0))  # a face track's frames are averaged
        vectors[modality] = torch.cat(parts).numpy()[None].astype("float32")
    checkpoints = fold_checkpoints(exp)
    models = [load_checkpoint(p) for p in checkpoints]
    distance = float(np.mean([score_distances(m, vectors["voice"], vectors["face"])[0] for m, _ in models]))
    threshold = float(np.mean([payload.get("threshold", np.nan) for _, payload in models]))
    return {"distance": distance, "threshold": threshold, "same_person": bool(distance <= threshold),
            "folds": len(models)}
