"""Every head system through the one trainer: paired batches, the system registry and its config,
checkpoints that rebuild each system, and ``fva compare`` training each system on the same fold of the
synthetic stage-1 cache (conftest.py's ``synth``, as tests/test_heads.py uses it) to well below chance."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import assert_user_error
from fva.data.trials import read_trials
from fva.evaluate.scores import read_scores
from fva.heads.config import load_config
from fva.heads.features import InMemoryRows
from fva.heads.postprocess import polarise, refine
from fva.heads.scoring import score_trial_list
from fva.heads.experiment import load_checkpoint, read_experiment
from fva.heads.trainer import paired_faces, train_epoch
from fva.heads.trialset import TrialSet, embed_rows, open_features
from fva.synth.testing import naive_trial_features, official_state, reference_forward, run_cli as run, write_official

SYSTEMS = ["fame2026", "xm-align", "fop", "dual-fop", "contrastive", "cross-attention"]


# ------------------------------------------------------------------------------------------- paired batches


def test_paired_faces_draw_a_face_of_the_same_identity_uniformly():
    face_labels = np.array([2, 0, 1, 2, 0, 2, 1])
    voice_labels = np.repeat(np.array([0, 1, 2, 3]), 3000)
    picks = paired_faces(voice_labels, face_labels, np.random.default_rng(0))
    has_face = voice_labels != 3
    assert (picks[~has_face] == -1).all()  # identity 3 has no face
    assert (face_labels[picks[has_face]] == voice_labels[has_face]).all()
    for label in (0, 1, 2):  # each face of the identity about equally often
        counts = np.bincount(picks[voice_labels == label], minlength=len(face_labels))[face_labels == label]
        assert counts.min() > 0.8 * counts.mean()


class _Recorder(torch.nn.Module):
    """A 'paired' system that records its batches."""

    pairing = "paired"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.batches = []

    def loss(self, batch):
        self.batches.append(batch)
        return self.w.sum() * 0 + batch.voice.sum() * 0 + self.w.square().sum()


class _Rows(InMemoryRows):
    def __init__(self, data, labels):
        self.data, self.labels = data, labels


def test_paired_epochs_pair_same_identity_rows_and_repeat_with_new_pairs():
    rng = np.random.default_rng(1)
    voice_labels = rng.integers(0, 5, 40)
    face_labels = np.concatenate([np.arange(5), rng.integers(0, 5, 25)])
    voice = _Rows(np.arange(40, dtype=np.float32)[:, None], voice_labels)
    face = _Rows(np.arange(30, dtype=np.float32)[:, None], face_labels)
    model = _Recorder()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    train_epoch(model, optimiser, voice, face, batch_size=8, seed=[0], epoch=0, block_rows=4, buffer_blocks=2,
                pair_repeats=3)
    seen_voices, pairs = [], set()
    for b in model.batches:
        assert torch.equal(b.voice_labels, b.face_labels) and len(b.voice) == len(b.face)
        assert (voice_labels[b.voice[:, 0].long().numpy()] == b.voice_labels.numpy()).all()
        assert (face_labels[b.face[:, 0].long().numpy()] == b.face_labels.numpy()).all()
        seen_voices += b.voice[:, 0].long().tolist()
        pairs |= set(zip(b.voice[:, 0].long().tolist(), b.face[:, 0].long().tolist()))
    assert sorted(seen_voices) == sorted(list(range(40)) * 3)  # every voice once per repeat
    assert len(pairs) > 80  # re-paired: most repeats meet another face


# ------------------------------------------------------------------------------------------------ configs


def test_unknown_system_and_unknown_system_option_are_one_line_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"system": "nope"}}))
    with pytest.raises(Exception, match="unknown head system 'nope'; known systems: .*fame2026"):
        load_config(path)
    path.write_text(yaml.safe_dump({"model": {"system": "fame2026", "params": {"lambda": 1}}}))
    with pytest.raises(Exception, match="unknown config key 'lambda'"):
        load_config(path)


# ------------------------------------------------------------------------------------------ fva compare


@pytest.fixture(scope="module")
def compared(synth, tmp_path_factory):
    """``fva compare`` over fold 0 of the synthetic cache: every shipped system, fop before dual-fop (whose
    frozen FOP is the same fold's of the fop experiment)."""
    base = tmp_path_factory.mktemp("compare")
    out = base / "out"
    config = yaml.safe_load(synth.config.read_text())
    config["train"].update(epochs=30, patience=10, lr=0.01, batch_size=8)  # small batches: more steps
    (base / "base.yaml").write_text(yaml.safe_dump(config))
    torch.set_num_threads(1)  # tiny heads: one thread is faster, and much faster on a shared CPU
    try:
        result = run("compare", "--systems", ",".join(SYSTEMS), "--config", base / "base.yaml", "--cache",
                     synth.root, "--fold", "0", "--out", out)
    finally:
        torch.set_num_threads(THREADS)
    assert result.exit_code == 0, result.output
    return out, result.output


THREADS = torch.get_num_threads()


def test_compare_trains_every_system_on_the_same_fold_well_below_chance(compared):
    out, output = compared
    rows = json.loads((out / "compare.json").read_text())
    assert [r["system"] for r in rows] == SYSTEMS
    for row in rows:
        assert row["folds"] == 1 and row["seconds"] > 0
        # chance is 50; the pair classifier learns slowest from this cache's 9 training identities
        assert row["heard"] < (40.0 if row["system"] == "cross-attention" else 20.0), row
        metrics = json.loads((out / row["system"] / "metrics.json").read_text())
        assert list(metrics["folds"]) == ["0"]
    table = (out / "compare.md").read_text()
    assert table.splitlines()[0].startswith("| system | dev EER heard % |")
    assert all(f"| {name} |" in output for name in SYSTEMS)
    # the same identity-disjoint fold for everyone: identical dev trial lists
    dev = {name: (out / name / "fold0" / "dev_English.txt").read_text() for name in SYSTEMS}
    assert len(set(dev.values())) == 1


def test_every_system_rebuilds_from_its_checkpoint_and_rescores_its_dev_trials(compared, synth):
    """``fva score``'s path (checkpoint rebuilt through the registry, distances post-processed as configured)
    reproduces the dev scores the trainer wrote, for every system."""
    out, _ = compared
    for name in SYSTEMS:
        exp = out / name
        for lang in ("English", "German"):
            dev = exp / "fold0" / f"dev_{lang}.txt"
            again = score_trial_list(exp, dev, synth.root, subset="train")
            stored = read_scores(exp / "fold0" / f"dev_scores_{lang}.txt")
            assert again.keys() == stored.keys()
            np.testing.assert_allclose([again[k] for k in stored], list(stored.values()), rtol=1e-6, atol=1e-6,
                                       err_msg=name)


def raw_and_post(exp, synth, lang="English"):
    """The trial set of fold 0's dev trials, its raw distances and the model (no post-processing)."""
    cfg, _ = read_experiment(exp)
    model, _ = load_checkpoint(exp / "fold0" / "checkpoint.pt")
    feats = open_features(cfg, synth.train)
    try:
        ts = TrialSet.build(read_trials(exp / "fold0" / f"dev_{lang}.txt"), feats, "dev")
    finally:
        feats.close()
    return cfg, model, ts, ts.distances(model)


def test_configured_post_processing_is_what_the_dev_scores_hold(compared, synth):
    out, _ = compared
    stored = read_scores(out / "contrastive" / "fold0" / "dev_scores_English.txt")
    cfg, model, ts, raw = raw_and_post(out / "contrastive", synth)
    assert cfg.score.refine.enabled and not cfg.score.polarise.enabled
    ev, ef = (embed_rows(model, m, x).numpy() for m, x in (("voice", ts.voice), ("face", ts.face)))
    expected = refine(raw, ev, ef, ts.voice_of, ts.face_of, cfg.score.refine)
    assert not np.allclose(expected, raw)  # refinement changed something here
    np.testing.assert_allclose([stored[t.key] for t in ts.trials], expected, atol=1e-6)

    stored = read_scores(out / "dual-fop" / "fold0" / "dev_scores_English.txt")
    cfg, model, ts, raw = raw_and_post(out / "dual-fop", synth)
    assert cfg.score.polarise.enabled and not cfg.score.refine.enabled
    v, f = ts.voice_extras, ts.face_extras
    expected = polarise(raw, v["age"][ts.voice_of], v["p_female"][ts.voice_of], f["age"][ts.face_of],
                        f["p_female"][ts.face_of], cfg.score.polarise)
    assert not np.allclose(expected, raw)
    np.testing.assert_allclose([stored[t.key] for t in ts.trials], expected, atol=1e-6)


def test_polarisation_without_age_gender_features_is_a_one_line_error(synth, tmp_path):
    config = yaml.safe_load(synth.config.read_text())
    config["features"] = {"voice_encoders": ["speaker-ecapa"], "face_encoders": ["vggface"]}
    config["score"] = {"polarise": {"enabled": True}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = run("train-head", "--fold", "0", "--config", tmp_path / "c.yaml", "--cache", synth.root, "--exp",
                 tmp_path / "exp")
    assert_user_error(result, "score.polarise needs the age and p_female")


def test_dual_fop_takes_the_same_folds_frozen_fop(compared):
    out, _ = compared
    model, payload = load_checkpoint(out / "dual-fop" / "fold0" / "checkpoint.pt")
    assert payload["model_config"]["params"]["frozen"] == f"{out}/fop/fold0/checkpoint.pt"
    fop, _ = load_checkpoint(out / "fop" / "fold0" / "checkpoint.pt")
    frozen = model.pretrained.state_dict()
    for key, value in fop.state_dict().items():
        if not key.startswith("logits_layer."):
            assert torch.equal(frozen[key], value), key


def test_imported_official_fop_scores_a_trial_list_through_the_cli(synth, tmp_path):
    sd = official_state(seed=3, voice_in=32, face_in=38)  # the synthetic cache's 24+8 and 32+6 features
    ckpt = write_official(tmp_path / "checkpoint.pth.tar", sd, prefix="module.")
    exp = tmp_path / "official"
    result = run("import-fop", ckpt, "--out", exp, "--voice-encoders", "speaker-ecapa,voice-age-gender-ecapa",
                 "--face-encoders", "vggface,vit-age-gender", "--cache", synth.root)
    assert result.exit_code == 0, result.output
    result = run("score", "--exp", exp, "--trials", synth.test_list, "--out", tmp_path / "scores.txt")
    assert result.exit_code == 0, result.output
    scores = read_scores(tmp_path / "scores.txt")
    voice, face = naive_trial_features(synth, synth.trials)
    expected = reference_forward(sd, torch.from_numpy(voice), torch.from_numpy(face))["distance"].numpy()
    np.testing.assert_allclose([scores[t.key] for t in synth.trials], expected, atol=1e-5)
    assert_user_error(run("import-fop", ckpt, "--out", exp, "--voice-encoders", "speaker-ecapa"), "exists")


@pytest.mark.parametrize("system", SYSTEMS)
def test_input_standardisation_is_fitted_for_every_system(system):
    """``model.input_norm``: each system's voice and face inputs are standardised with the training rows'
    statistics (so encoders of very different scales weigh alike), whatever its architecture."""
    from fva.heads.config import ModelConfig
    from fva.heads.experiment import build_model
    from fva.heads.trainer import fit_input_norm

    rng = np.random.default_rng(0)
    voice = _Rows((rng.normal(3.0, 0.01, (64, 10))).astype(np.float32), np.arange(64) % 4)
    face = _Rows((rng.normal(-1.0, 5.0, (64, 12))).astype(np.float32), np.arange(64) % 4)
    model = build_model(10, 12, 4, ModelConfig(system=system, embedding_dim=8, input_norm=True))
    norms = model.input_norms()
    assert set(norms) == {"voice", "face"}
    fit_input_norm(model, voice, face, seed=[0])
    for modality, rows in (("voice", voice), ("face", face)):
        x = norms[modality](torch.from_numpy(rows.data))
        assert torch.allclose(x.mean(0), torch.zeros(x.shape[1]), atol=1e-3)
        assert torch.allclose(x.std(0, unbiased=False), torch.ones(x.shape[1]), atol=1e-3)


def test_compare_finds_the_shipped_systems_in_an_installed_wheel_outside_the_source_tree(request, tmp_path):
    """The system configs are package data: a wheel of fva, unpacked outside the source tree and run from
    another folder, compares fop and fame2026 with nothing but itself on the path."""
    cache = request.getfixturevalue("synth")  # the module's synthetic cache (a parameter would be F811)
    repo = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # the build's own copy, so the worktree gets no build/ or egg-info
    shutil.copytree(repo / "fva", source / "fva", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    tmp_path / "dist", source], check=True, capture_output=True)
    site = tmp_path / "site"
    (wheel,) = (tmp_path / "dist").glob("fva-*.whl")
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "fva" / "configs" / "systems" / "fop.yaml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    imported = subprocess.run([sys.executable, "-c", "import fva; print(fva.__file__)"], cwd=work, env=env,
                              check=True, capture_output=True, text=True).stdout.strip()
    assert Path(imported).resolve() == (site / "fva" / "__init__.py").resolve()
    config = yaml.safe_load(cache.config.read_text())
    config["train"].update(epochs=2, patience=2)
    (work / "base.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "fva.cli", "compare", "--systems", "fop,fame2026", "--config",
                             "base.yaml", "--cache", cache.root, "--fold", "0", "--out", "out"], cwd=work, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads((work / "out" / "compare.json").read_text())
    assert [r["system"] for r in rows] == ["fop", "fame2026"] and all(r["folds"] == 1 for r in rows)


def test_compare_refuses_an_unknown_system_before_training_anything(synth, tmp_path):
    result = run("compare", "--systems", "fame2026,nonesuch", "--config", synth.config, "--cache", synth.root,
                 "--fold", "0", "--out", tmp_path / "out")
    assert_user_error(result, "system 'nonesuch'", "known systems:", "fop")
    assert not (tmp_path / "out").exists()
