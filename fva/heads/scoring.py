"""Scoring trial lists with a trained experiment: each fold model's distances (post-processed as the config
says; S-norm with the cohort its checkpoint stores), averaged over the folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fva.data.trials import read_trials
from fva.errors import FvaError
from fva.heads.experiment import (check_same_weights, experiment_weights, fold_checkpoints, load_checkpoint,
                                  read_experiment)
from fva.heads.trialset import Cohort, TrialSet, open_features
from fva.layout import FULL_SET, find_features_folder


def score_trial_list(exp: str | Path, trials_path: str | Path, cache_root: str | Path | None = None,
                     subset: str = "test") -> dict[str, float]:
    """key -> distance for every trial of ``trials_path``, features from the ``subset`` caches of the weight set
    the experiment was trained on; features of other weights are refused."""
    exp = Path(exp)
    cfg, info = read_experiment(exp)
    root = Path(cache_root) if cache_root else Path(info["cache"])
    trials = read_trials(trials_path)
    weight_set = info.get("weight_set", FULL_SET)
    feats = open_features(cfg, find_features_folder(root, cfg.data.dataset, subset, weight_set))
    try:
        for modality, table in (("voice", feats.voice), ("face", feats.face)):
            check_same_weights(experiment_weights(info), table.weights_ids, str(table.folder), str(exp),
                               f"score with {subset} features of the same weights (weight set {weight_set})")
            if table.dim != sum(info["features"][modality]["dims"]):
                raise FvaError(f"{table.folder}: {modality} features are {table.dim}-d but {exp} was trained on "
                               f"{sum(info['features'][modality]['dims'])}-d; score with the caches it was trained on")
        ts = TrialSet.build(trials, feats, str(trials_path))
    finally:
        feats.close()
    distances = np.mean([ts.distances(model, cfg.score, Cohort.from_payload(payload))
                         for model, payload in map(load_checkpoint, fold_checkpoints(exp))], axis=0)
    return {t.key: float(d) for t, d in zip(trials, distances)}


def verify_pair(exp: str | Path, face_path: str | Path, voice_path: str | Path, device: str = "cpu",
                weights: dict[str, str] | None = None) -> dict:
    """Run the experiment's encoders and heads on one face image (or face track) and one voice clip.

    The pair goes through the extraction path itself (:func:`fva.extract.runner.run_extraction`: the same
    decoding, preprocessing, batching and cache dtype as the experiment's training caches, into a scratch
    cache) and then through the scoring path (:class:`TrialSet`: frames averaged, the config's
    post-processing), so its distance is the one ``fva score`` gives the same pair. The encoders are rebuilt
    from the weights recorded in the experiment's training caches (``weights`` overrides per encoder).
    Returns the distance (mean over folds), the threshold at the dev EER point (mean over folds) and the
    decision.
    """
    import tempfile

    from fva.data.records import Manifest, MediaRecord
    from fva.data.trials import Trial
    from fva.extract.cache import open_cache
    from fva.extract.encoders.base import get_encoder_class
    from fva.extract.runner import run_extraction
    from fva.layout import features_folder

    exp = Path(exp)
    cfg, info = read_experiment(exp)
    train_folder = Path(info["train_features"])
    trained_on = experiment_weights(info)
    keys = {"voice": "voices/pair", "face": "faces/pair"}  # keys that media_key maps to themselves
    paths = {keys["voice"]: Path(voice_path), keys["face"]: Path(face_path)}
    records = [MediaRecord(key=keys[modality], identity=None, language=None, modality=modality,
                           path=str(paths[keys[modality]].resolve())) for modality in ("voice", "face")]
    manifest = Manifest("verify", "/", "pair", "full", records)
    with tempfile.TemporaryDirectory(prefix="fva-verify-") as scratch:
        for modality, names in (("voice", cfg.features.voice_encoders), ("face", cfg.features.face_encoders)):
            for name in names:
                with open_cache(train_folder / name) as table:
                    source = (weights or {}).get(name, table.attrs.get("weights"))
                    cached, dtype = table.attrs.get("weights_id"), table.dtype
                if name not in (weights or {}):  # the cache's weights are the ones to rebuild the encoder from
                    check_same_weights(trained_on, {name: cached}, str(train_folder / name), str(exp),
                                       "the cache was extracted again with other weights after training: "
                                       f"retrain, or pass --weights {name}=<the experiment's weights>")
                expected = trained_on.get(name) or cached
                encoder = get_encoder_class(name)(source, device=device)
                if expected and encoder.weights_id != expected:
                    raise FvaError(f"{name}: weights {source} ({encoder.weights_id}) are not the ones {exp} was "
                                   f"trained on ({expected}); pass the same weights")
                run_extraction(manifest, encoder, Path(scratch), root=Path("/"), workers=0, dtype=dtype,
                               progress=False)
                with open_cache(features_folder(scratch, "verify", "pair") / name) as table:
                    for key, reason in table.failures:
                        raise FvaError(f"{paths[key]}: {reason}")
        feats = open_features(cfg, features_folder(scratch, "verify", "pair"))
        try:
            ts = TrialSet.build([Trial("pair", keys["voice"], keys["face"])], feats, "the pair")
        finally:
            feats.close()
    models = [load_checkpoint(p) for p in fold_checkpoints(exp)]
    distance = float(np.mean([ts.distances(model, cfg.score, Cohort.from_payload(payload))[0]
                              for model, payload in models]))
    threshold = float(np.mean([payload.get("threshold", np.nan) for _, payload in models]))
    return {"distance": distance, "threshold": threshold, "same_person": bool(distance <= threshold),
            "folds": len(models)}
