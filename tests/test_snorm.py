"""S-norm and adaptive S-norm (``score.snorm``): the statistics and the formula against direct numpy
computations (both sides, top-k, the sign convention, blocked distances), the cohort of the fold's training
identities (never its dev or test identities), and ``fva train-head`` / ``fva score`` end to end on the
synthetic cache, with the dev EER recorded on the normalised distances."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from conftest import assert_user_error
from fva.data.trials import Trial, read_labels, read_trials
from fva.errors import FvaError
from fva.evaluate.eer import compute_eer, eer_threshold
from fva.evaluate.scores import read_scores
from fva.heads import trialset as trialset_module
from fva.heads.config import ModelConfig, ScoreConfig
from fva.heads.experiment import build_model, load_checkpoint
from fva.heads.model import FameHead
from fva.heads.postprocess import PolariseConfig, SnormConfig, cohort_moments, polarise, snorm
from fva.heads.trialset import Cohort, TrialSet, build_cohort, embed_rows, open_features
from fva.layout import manifest_records
from fva.synth.testing import CONFIG, FACE_ENCODERS, IDENTITIES, NUM_FOLDS, VOICE_ENCODERS, naive_trial_features
from fva.synth.testing import run_cli as run

TOP_K = 4

# ------------------------------------------------------------------------------------------ direct numpy


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def linear_embeddings(model, modality: str, x: np.ndarray) -> np.ndarray:
    """A fame2026 model's eval-mode embedding (input norm off, dropout off: the linear map), in float64."""
    sd = model.state_dict()
    w, b = sd[f"{modality}.2.weight"].double().numpy(), sd[f"{modality}.2.bias"].double().numpy()
    return np.asarray(x, dtype=np.float64) @ w.T + b


def direct_snorm(ev, ef, voice_of, face_of, cohort_voice, cohort_face, top_k: int) -> np.ndarray:
    """S-norm of cosine distances by plain loops: per trial, the voice's distances to every cohort face and
    the face's to every cohort voice, sorted, the top_k smallest kept (0: all), population mean and std."""
    ev, ef, cv, cf = (unit(np.asarray(a, dtype=np.float64)) for a in (ev, ef, cohort_voice, cohort_face))
    out = []
    for v, f in zip(voice_of, face_of):
        d = 1.0 - ev[v] @ ef[f]
        sides = []
        for to_cohort in (1.0 - cf @ ev[v], 1.0 - cv @ ef[f]):
            closest = np.sort(to_cohort)[:top_k] if top_k else to_cohort
            sides.append((d - closest.mean()) / closest.std())
        out.append(0.5 * (sides[0] + sides[1]))
    return np.array(out)


def similarity_snorm(ev, ef, voice_of, face_of, cohort_voice, cohort_face, top_k: int) -> np.ndarray:
    """The speaker-verification convention: S-norm of cosine SIMILARITIES, AS-norm over the top_k highest."""
    ev, ef, cv, cf = (unit(np.asarray(a, dtype=np.float64)) for a in (ev, ef, cohort_voice, cohort_face))
    out = []
    for v, f in zip(voice_of, face_of):
        s = ev[v] @ ef[f]
        sides = []
        for to_cohort in (cf @ ev[v], cv @ ef[f]):
            top = np.sort(to_cohort)[::-1][:top_k] if top_k else to_cohort
            sides.append((s - top.mean()) / top.std())
        out.append(0.5 * (sides[0] + sides[1]))
    return np.array(out)


@pytest.mark.parametrize("top_k", [0, 3, 50])
def test_cohort_moments_and_snorm_formula_match_numpy(top_k):
    rng = np.random.default_rng(top_k)
    to_cohort = rng.uniform(0, 2, size=(7, 11))
    mu, sd = cohort_moments(to_cohort, top_k)
    for i, row in enumerate(to_cohort):
        kept = np.sort(row)[:top_k] if 0 < top_k < len(row) else row  # k >= cohort size: plain S-norm
        assert mu[i] == pytest.approx(kept.mean()) and sd[i] == pytest.approx(kept.std(ddof=0))
    d, mv, sv, mf, sf = rng.uniform(0.1, 2, size=(5, 9))
    np.testing.assert_allclose(snorm(d, mv, sv, mf, sf), [0.5 * ((d[t] - mv[t]) / sv[t] + (d[t] - mf[t]) / sf[t])
                                                          for t in range(9)], rtol=1e-12)


class PairwiseCosine(FameHead):
    """fame2026 with pair_distances overridden (by the same 1 - cosine): the cohort's pair-by-pair path."""

    def pair_distances(self, voice: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return super().pair_distances(voice, face)


@pytest.fixture
def random_case():
    """A random fame2026 model (embedding 5), 6 voices, 5 faces, 13 trials, a cohort of 6 identities."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(10, 7, 4, ModelConfig(embedding_dim=5)).eval()
    voice, face = rng.normal(size=(6, 10)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32)
    voice_of, face_of = rng.integers(0, 6, 13), rng.integers(0, 5, 13)
    cv_x, cf_x = rng.normal(size=(6, 10)).astype(np.float32), rng.normal(size=(6, 7)).astype(np.float32)
    cohort = Cohort([f"c{i}" for i in range(6)], embed_rows(model, "voice", cv_x), embed_rows(model, "face", cf_x))
    extras = {"age": rng.uniform(20, 60, 6), "p_female": rng.uniform(0, 1, 6)}
    face_extras = {"age": rng.uniform(20, 60, 5), "p_female": rng.uniform(0, 1, 5)}
    ts = TrialSet([Trial(f"k{t}", "v", "f") for t in range(13)], voice, face, voice_of, face_of, extras, face_extras)
    args = (linear_embeddings(model, "voice", voice), linear_embeddings(model, "face", face), voice_of, face_of,
            linear_embeddings(model, "voice", cv_x), linear_embeddings(model, "face", cf_x))
    return SimpleNamespace(model=model, ts=ts, cohort=cohort, args=args)


@pytest.mark.parametrize("top_k", [0, 3])
def test_trialset_snorm_equals_a_direct_numpy_computation_with_lower_still_same_person(random_case, top_k,
                                                                                        monkeypatch):
    c = random_case
    post = ScoreConfig(snorm=SnormConfig(enabled=True, adaptive_top_k=top_k))
    got = c.ts.distances(c.model, post, c.cohort)
    np.testing.assert_allclose(got, direct_snorm(*c.args, top_k), rtol=1e-5, atol=1e-5)
    # the sign convention: minus the S-norm of cosine similarities (AS-norm over the most similar entries)
    np.testing.assert_allclose(got, -similarity_snorm(*c.args, top_k), rtol=1e-5, atol=1e-5)
    # a system with its own pair_distances (here the same cosine) goes through it pair by pair: same numbers
    generic = PairwiseCosine(10, 7, 4, c.model.cfg)
    generic.load_state_dict(c.model.state_dict())
    np.testing.assert_allclose(c.ts.distances(generic.eval(), post, c.cohort), got, rtol=0, atol=1e-5)
    # blocked: one medium's cohort distances at a time gives the same numbers
    monkeypatch.setattr(trialset_module, "COHORT_PAIRS", 1)
    np.testing.assert_allclose(c.ts.distances(c.model, post, c.cohort), got, rtol=0, atol=1e-6)  # float32 blocks
    np.testing.assert_allclose(c.ts.distances(generic, post, c.cohort), got, rtol=0, atol=1e-5)


def test_snorm_comes_before_polarisation_and_needs_its_cohort(random_case):
    c = random_case
    normed = c.ts.distances(c.model, ScoreConfig(snorm=SnormConfig(enabled=True)), c.cohort)
    both = c.ts.distances(c.model, ScoreConfig(snorm=SnormConfig(enabled=True), polarise=PolariseConfig(enabled=True)),
                          c.cohort)
    v, f = c.ts.voice_extras, c.ts.face_extras
    np.testing.assert_allclose(both, polarise(normed, v["age"][c.ts.voice_of], v["p_female"][c.ts.voice_of],
                                              f["age"][c.ts.face_of], f["p_female"][c.ts.face_of], PolariseConfig()))
    with pytest.raises(FvaError, match="score.snorm needs the cohort"):
        c.ts.distances(c.model, ScoreConfig(snorm=SnormConfig(enabled=True)))


def test_snorm_config_and_input_checks():
    for bad in ({"adaptive_top_k": 1}, {"adaptive_top_k": -2}, {"cohort_size": 1}):
        with pytest.raises(FvaError, match="score.snorm"):
            SnormConfig(**bad)
    with pytest.raises(FvaError, match="at least 2 entries"):
        cohort_moments(np.ones((3, 1)))
    with pytest.raises(FvaError, match="deviation 0"):
        snorm(np.ones(2), np.ones(2), np.array([0.1, 0.0]), np.ones(2), np.ones(2))


# ------------------------------------------------------------------------------------------ the cohort


def naive_rows(synth, modality: str, key: str) -> list[np.ndarray]:
    """Every stored row (frame) of ``key``: the encoders' float16 features concatenated, joined by frame."""
    encoders = list(VOICE_ENCODERS if modality == "voice" else FACE_ENCODERS)
    frames0, _ = synth.stored[encoders[0]][key]
    rows = []
    for frame in frames0.tolist():
        parts = []
        for encoder in encoders:
            frames, emb = synth.stored[encoder][key]
            parts.append(emb[frames.tolist().index(frame)].astype(np.float64))
        rows.append(np.concatenate(parts))
    return rows


def naive_identity_mean(synth, modality: str, identity: str, unheard: str | None) -> np.ndarray:
    rows = [row for r in synth.records if r.identity == identity and r.modality == modality and r.language != unheard
            for row in naive_rows(synth, modality, r.key)]
    return np.mean(rows, axis=0)


def test_cohort_is_the_training_identities_mean_features_through_the_model(synth):
    cfg_model = ModelConfig(embedding_dim=6)
    torch.manual_seed(1)
    model = build_model(sum(VOICE_ENCODERS.values()), sum(FACE_ENCODERS.values()), 3, cfg_model).eval()
    feats = open_features(SimpleNamespace(features=SimpleNamespace(voice_encoders=list(VOICE_ENCODERS),
                                                                   face_encoders=list(FACE_ENCODERS))), synth.train)
    try:
        records = manifest_records(synth.train)
        train_ids = IDENTITIES[:9]
        cohort = build_cohort(model, feats, records, train_ids, "German", SnormConfig(enabled=True), fold=0)
        assert cohort.identities == train_ids
        for modality, got in (("voice", cohort.voice), ("face", cohort.face)):
            means = np.stack([naive_identity_mean(synth, modality, i, "German") for i in train_ids])
            np.testing.assert_allclose(got.numpy(), linear_embeddings(model, modality, means), rtol=1e-4, atol=1e-5)
        sampled = build_cohort(model, feats, records, train_ids, None, SnormConfig(enabled=True, cohort_size=3), 0)
        again = build_cohort(model, feats, records, train_ids, None, SnormConfig(enabled=True, cohort_size=3), 0)
        assert len(sampled.identities) == 3 and set(sampled.identities) <= set(train_ids)
        assert sampled.identities == again.identities and torch.equal(sampled.voice, again.voice)
        with pytest.raises(FvaError, match="at least 2"):
            build_cohort(model, feats, records, IDENTITIES[:1], None, SnormConfig(enabled=True), 0)
    finally:
        feats.close()


# ------------------------------------------------------------------------------------------ end to end


def write_config(tmp, snorm_section: dict, name: str = "snorm.yaml"):
    config = {**CONFIG, "score": {"snorm": snorm_section}}
    path = tmp / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def snormed(synth):
    """An experiment trained over all folds through the CLI with adaptive S-norm (top 4 of each fold's cohort)."""
    exp = synth.base / "exp_snorm"
    config = write_config(synth.base, {"enabled": True, "adaptive_top_k": TOP_K})
    result = run("train-head", "--fold", "all", "--config", config, "--cache", synth.root, "--exp", exp)
    assert result.exit_code == 0, result.output
    return SimpleNamespace(exp=exp, output=result.output)


def test_train_head_with_snorm_records_the_normalised_dev_eer(synth, snormed):
    exp = snormed.exp
    feats = open_features(SimpleNamespace(features=SimpleNamespace(voice_encoders=list(VOICE_ENCODERS),
                                                                   face_encoders=list(FACE_ENCODERS))), synth.train)
    try:
        for f in range(NUM_FOLDS):
            fold = exp / f"fold{f}"
            model, payload = load_checkpoint(fold / "checkpoint.pt")
            cohort = Cohort.from_payload(payload)
            held_out = set(IDENTITIES) - set(payload["classes"])
            # the cohort: every training identity of the fold, none of its dev (held-out) or test identities
            assert cohort.identities == sorted(payload["classes"]) and not set(cohort.identities) & held_out
            assert not any(i.startswith("t") for i in cohort.identities)
            assert tuple(cohort.voice.shape) == tuple(cohort.face.shape) == (len(cohort.identities), 16)
            labels_all, dist_all = [], []
            for lang in ("English", "German"):
                trials = read_trials(fold / f"dev_{lang}.txt")
                assert all(t.voice.split("/")[1] in held_out for t in trials)
                labels = read_labels(fold / f"dev_{lang}_labels.txt")
                stored = np.array([read_scores(fold / f"dev_scores_{lang}.txt")[t.key] for t in trials])
                voice, face = naive_trial_features(synth, trials)
                rows = np.arange(len(trials))
                ev, ef = linear_embeddings(model, "voice", voice), linear_embeddings(model, "face", face)
                expected = direct_snorm(ev, ef, rows, rows, cohort.voice.numpy(), cohort.face.numpy(), TOP_K)
                np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-4)
                raw = TrialSet.build(trials, feats, "dev").distances(model)
                assert not np.allclose(stored, raw, atol=1e-3)  # normalised, not the raw cosine distances
                y = np.array([labels[t.key] for t in trials])
                metrics = json.loads((fold / "metrics.json").read_text())
                assert metrics["heard"][lang] == pytest.approx(compute_eer(y, stored))
                labels_all.append(y)
                dist_all.append(stored)
            assert payload["threshold"] == pytest.approx(eer_threshold(np.concatenate(labels_all),
                                                                       np.concatenate(dist_all)))
    finally:
        feats.close()
    metrics = json.loads((exp / "metrics.json").read_text())
    assert all(v < 30.0 for v in metrics["mean_heard"].values()), metrics  # lower still means the same person


def test_score_with_snorm_uses_each_folds_stored_cohort(synth, snormed, tmp_path):
    out = tmp_path / "s.txt"
    result = run("score", "--exp", snormed.exp, "--trials", synth.test_list, "--out", out)
    assert result.exit_code == 0, result.output
    scores = read_scores(out)
    voice, face = naive_trial_features(synth, synth.trials)
    rows = np.arange(len(synth.trials))
    per_fold = []
    for f in range(NUM_FOLDS):
        model, payload = load_checkpoint(snormed.exp / f"fold{f}" / "checkpoint.pt")
        c = payload["cohort"]
        per_fold.append(direct_snorm(linear_embeddings(model, "voice", voice), linear_embeddings(model, "face", face),
                                     rows, rows, c["voice"].numpy(), c["face"].numpy(), TOP_K))
    np.testing.assert_allclose([scores[t.key] for t in synth.trials], np.mean(per_fold, axis=0), rtol=1e-4,
                               atol=1e-4)


def test_score_without_a_stored_cohort_is_one_error_line(synth, snormed, tmp_path):
    exp = shutil.copytree(snormed.exp, tmp_path / "exp")
    for f in range(NUM_FOLDS):
        path = exp / f"fold{f}" / "checkpoint.pt"
        payload = torch.load(path, map_location="cpu", weights_only=True)
        del payload["cohort"]
        torch.save(payload, path)
    result = run("score", "--exp", exp, "--trials", synth.test_list, "--out", tmp_path / "s.txt")
    assert_user_error(result, "score.snorm needs the cohort", "retrain")


@pytest.mark.parametrize("section, fragments", [
    ({"enabled": True, "top_k": 5}, ("unknown config key 'score.snorm.top_k'", "adaptive_top_k")),
    ({"enabled": True, "adaptive_top_k": 1}, ("score.snorm.adaptive_top_k must be 0",)),
    ({"enabled": "yes"}, ("score.snorm.enabled must be true or false",)),
])
def test_bad_snorm_config_is_one_error_line(synth, tmp_path, section, fragments):
    exp = tmp_path / "exp"
    result = run("train-head", "--config", write_config(tmp_path, section), "--cache", synth.root, "--exp", exp)
    assert_user_error(result, *fragments)
    assert not exp.exists()
