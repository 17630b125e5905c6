"""Stage-2 heads on a synthetic stage-1 cache: the model (one shared AAM classifier, input dropout, cosine
scoring), the loaders, and the ``fva train-head`` / ``fva score`` commands end to end.

No encoder runs here: the module fixture ``synth`` (conftest.py, :func:`fva.synth.testing.synthetic_heads_cache`)
writes HDF5 caches with :class:`ShardWriter` in exactly the layout ``fva extract`` produces
(``<cache>/mavceleb-v3/<subset>-full/<encoder>/shard-00000-of-00001.h5`` plus ``manifest.jsonl``), whose
features carry an identity signal shared by voices and faces through a hidden per-identity vector, so that
training can beat chance.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import assert_user_error
from fva.data.records import MediaRecord
from fva.data.trials import read_labels, read_trials
from fva.evaluate.eer import compute_eer
from fva.evaluate.scores import read_scores
from fva.heads.config import ModelConfig, load_config
from fva.experiment import EXPERIMENT_FORMAT
from fva.heads.experiment import load_checkpoint
from fva.heads.features import FeatureTable, InMemoryRows, StreamingRows, epoch_order, select_rows
from fva.heads.model import FameHead
from fva.heads.systems.base import Batch
from fva.heads.trialset import features_for_keys, score_distances
from fva.layout import manifest_records
from fva.synth.testing import (CONFIG, DATASET, EPOCHS, FACE_ENCODERS, IDENTITIES, LANGUAGES, LATENT, NUM_FOLDS,
                         PATIENCE, TRACK_FRAMES, VOICE_ENCODERS, naive_trial_features, naive_vector,
                         run_cli as run, write_split)

# ------------------------------------------------------------------------------------------------ CLI helpers


def train(synth, exp: Path, *extra):
    return run("train-head", "--fold", "all", "--config", synth.config, "--cache", synth.root, "--exp", exp, *extra)


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_exp(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def trained(synth):
    """One full-split experiment trained over all folds through the CLI (seed 0)."""
    exp = synth.base / "exp_full"
    result = train(synth, exp)
    assert result.exit_code == 0, result.output
    return SimpleNamespace(exp=exp, output=result.output)


def fold_dirs(exp: Path) -> list[Path]:
    return [exp / f"fold{f}" for f in range(NUM_FOLDS)]


# ------------------------------------------------------------------------------------------------ 1. model


def tiny_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"embedding_dim": 4, "aam_margin": 0.2, "aam_scale": 30.0, **kw})


def test_aam_classifier_is_one_matrix_shared_by_both_modalities():
    torch.manual_seed(0)
    model = FameHead(voice_dim=7, face_dim=5, n_classes=3, cfg=tiny_cfg())
    names = {name for name, _ in model.named_parameters()}
    assert names == {"voice.2.weight", "voice.2.bias", "face.2.weight", "face.2.bias", "classifier.weight"}
    assert tuple(model.classifier.weight.shape) == (3, 4)
    model.eval()  # dropout off: the losses below are deterministic
    g = torch.Generator().manual_seed(1)
    xv1, xv2, xf1, xf2 = (torch.randn(6, d, generator=g) for d in (7, 7, 5, 5))
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    def grads(loss):
        model.zero_grad(set_to_none=False)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    # voice-only: the face halves of the two losses are identical and cancel
    voice_only = grads(model.loss(Batch(xv1, y, xf1, y)) - model.loss(Batch(xv2, y, xf1, y)))
    # face-only: likewise with the voice halves
    face_only = grads(model.loss(Batch(xv1, y, xf1, y)) - model.loss(Batch(xv1, y, xf2, y)))
    assert voice_only["classifier.weight"].abs().sum() > 0
    assert face_only["classifier.weight"].abs().sum() > 0
    assert voice_only["voice.2.weight"].abs().sum() > 0 and face_only["face.2.weight"].abs().sum() > 0
    assert torch.equal(voice_only["face.2.weight"], torch.zeros_like(voice_only["face.2.weight"]))
    assert torch.equal(face_only["voice.2.weight"], torch.zeros_like(face_only["voice.2.weight"]))


def hand_aam(emb: np.ndarray, weight: np.ndarray, labels: np.ndarray, margin: float, scale: float) -> float:
    """Mean over rows of -log softmax(s * [cos(theta + m) on the target, cos elsewhere]) at the target."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    w = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    cos = e @ w.T
    losses = []
    for i, target in enumerate(labels):
        logits = cos[i].copy()
        c = cos[i, target]
        # cos(theta + m), with speechbrain's linear continuation past theta = pi - m (not hit here)
        logits[target] = math.cos(math.acos(c) + margin) if c > math.cos(math.pi - margin) \
            else c - math.sin(math.pi - margin) * margin
        z = scale * logits
        losses.append(-(z[target] - (z.max() + math.log(np.exp(z - z.max()).sum()))))
    return float(np.mean(losses))


def test_aam_loss_equals_hand_computed_additive_angular_margin():
    torch.manual_seed(3)
    cfg = tiny_cfg(aam_margin=0.3, aam_scale=10.0)
    model = FameHead(voice_dim=5, face_dim=6, n_classes=4, cfg=cfg).eval()
    g = torch.Generator().manual_seed(4)
    xv, xf = torch.randn(5, 5, generator=g), torch.randn(3, 6, generator=g)
    yv, yf = torch.tensor([0, 1, 2, 3, 1]), torch.tensor([3, 0, 2])
    with torch.no_grad():
        loss = float(model.loss(Batch(xv, yv, xf, yf)))
        ev = F.linear(xv, model.voice[2].weight, model.voice[2].bias).double().numpy()
        ef = F.linear(xf, model.face[2].weight, model.face[2].bias).double().numpy()
    w = model.classifier.weight.detach().double().numpy()
    expected = hand_aam(ev, w, yv.numpy(), 0.3, 10.0) + hand_aam(ef, w, yf.numpy(), 0.3, 10.0)
    assert loss == pytest.approx(expected, rel=1e-4)
    # the margin matters: without it the loss is smaller (the target logit is not penalised)
    assert hand_aam(ev, w, yv.numpy(), 0.0, 10.0) < hand_aam(ev, w, yv.numpy(), 0.3, 10.0)


# ---------------------------------------------------------------------------------------------- 2. dropout


@pytest.mark.parametrize("modality", ["voice", "face"])
def test_input_dropout_only_in_training(modality):
    torch.manual_seed(5)
    dim = 2000
    model = FameHead(voice_dim=dim, face_dim=dim, n_classes=3, cfg=ModelConfig(embedding_dim=dim))
    assert ModelConfig().input_dropout == 0.9
    linear = (model.voice if modality == "voice" else model.face)[2]
    x = torch.rand(3, dim) + 0.5  # no zero inputs
    # with an identity map the embedding shows the dropped-out input itself
    with torch.no_grad():
        saved = linear.weight.clone(), linear.bias.clone()
        linear.weight.copy_(torch.eye(dim))
        linear.bias.zero_()
        model.train()
        a, b = model.embed(modality, x), model.embed(modality, x)
        assert not torch.equal(a, b)
        zeroed = float((a == 0).float().mean())
        assert 0.87 < zeroed < 0.93, zeroed
        kept = a != 0
        assert torch.allclose(a[kept], x[kept] * 10, rtol=1e-5)  # survivors scaled by 1 / (1 - p)
        linear.weight.copy_(saved[0])
        linear.bias.copy_(saved[1])
        model.eval()
        a, b = model.embed(modality, x), model.embed(modality, x)
        assert torch.equal(a, b)
        assert torch.equal(a, F.linear(x, linear.weight, linear.bias))


def test_input_dropout_is_seeded_by_torch_and_matches_torch_dropout_statistics():
    from fva.heads.layers import InputDropout

    layer = InputDropout(0.9).train()
    x = torch.rand(64, 4096) + 0.5
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    assert torch.equal(a, layer(x))  # torch.manual_seed fixes the mask
    assert not torch.equal(a, layer(x))  # and the next call draws a new one
    kept = a != 0
    assert abs(float(kept.float().mean()) - 0.1) < 0.005  # the same keep rate as torch's dropout
    assert torch.allclose(a[kept], x[kept] * 10, rtol=1e-6)
    torch.manual_seed(3)
    expected_torch = F.dropout(x, 0.9, training=True)
    assert abs(float((expected_torch != 0).float().mean()) - float(kept.float().mean())) < 0.005
    # per feature the keep rate is uniform (no column or row pattern in the mask)
    assert float(kept.float().mean(0).std()) < 0.06 and float(kept.float().mean(1).std()) < 0.02
    # inputs that want gradients go through torch's dropout, whose backward is known
    g = x.clone().requires_grad_(True)
    layer(g).sum().backward()
    assert set(torch.unique(g.grad).tolist()) <= {0.0, 10.0}


# ---------------------------------------------------------------------------------------------- 3. scoring


def test_score_distances_match_a_naive_cosine_loop():
    torch.manual_seed(6)
    model = FameHead(voice_dim=9, face_dim=11, n_classes=5, cfg=tiny_cfg(embedding_dim=6))
    model.train()  # score_distances must switch dropout off itself
    rng = np.random.default_rng(7)
    voice = rng.normal(size=(23, 9)).astype(np.float32)
    face = rng.normal(size=(23, 11)).astype(np.float32)
    got = score_distances(model, voice, face, batch=5)  # several batches, a ragged last one
    assert not model.training
    wv, bv = model.voice[2].weight.detach().double().numpy(), model.voice[2].bias.detach().double().numpy()
    wf, bf = model.face[2].weight.detach().double().numpy(), model.face[2].bias.detach().double().numpy()
    expected = []
    for i in range(len(voice)):
        v = wv @ voice[i] + bv
        f = wf @ face[i] + bf
        expected.append(1.0 - float(v @ f) / (np.linalg.norm(v) * np.linalg.norm(f)))
    assert got.shape == (23,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- 4. loaders


def test_epoch_order_is_a_seeded_block_permutation():
    n = 103  # not a multiple of the block size: the last block is short
    orders = [epoch_order(n, seed=[3, 1], epoch=e, block_rows=8, buffer_blocks=3) for e in range(4)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(n))
    assert all(not np.array_equal(orders[0], o) for o in orders[1:])
    np.testing.assert_array_equal(orders[2], epoch_order(n, seed=[3, 1], epoch=2, block_rows=8, buffer_blocks=3))
    assert not np.array_equal(orders[0], epoch_order(n, seed=[4, 1], epoch=0, block_rows=8, buffer_blocks=3))
    for seed in range(6):
        for epoch in range(6):
            for rows in (1, 8, 20, 50, 100):
                sample = epoch_order(n, seed=seed, epoch=epoch, block_rows=8, buffer_blocks=3, rows=rows)
                assert len(sample) == rows, (seed, epoch, rows)
                assert len(set(sample.tolist())) == rows and sample.min() >= 0 and sample.max() < n
    samples = [epoch_order(n, seed=0, epoch=e, block_rows=8, buffer_blocks=3, rows=40) for e in range(3)]
    assert not np.array_equal(np.sort(samples[0]), np.sort(samples[1]))  # a different sample each epoch


def test_streaming_and_in_memory_rows_give_identical_batches(synth):
    records = manifest_records(synth.train)
    ids = IDENTITIES[:9]
    classes = {identity: i for i, identity in enumerate(ids)}
    for modality, encoders in (("voice", VOICE_ENCODERS), ("face", FACE_ENCODERS)):
        table = FeatureTable(synth.train, list(encoders))
        try:
            assert table.modality == modality and table.dim == sum(encoders.values())
            selected = select_rows(table, records, set(ids), "German", classes)  # German unheard
            expected_rows = [i for i, k in enumerate(table.keys)
                             if records[k].identity in classes and records[k].language == "English"]
            assert selected.rows.tolist() == expected_rows
            memory, streaming = InMemoryRows(table, selected), StreamingRows(table, selected)
            assert len(memory) == len(streaming) == len(expected_rows)
            for epoch in range(3):
                order = epoch_order(len(selected.rows), seed=[0, 2], epoch=epoch, block_rows=8, buffer_blocks=2)
                for lo in range(0, len(order), 16):
                    positions = order[lo:lo + 16]
                    xm, ym = memory.batch(positions)
                    xs, ys = streaming.batch(positions)
                    assert xm.dtype == xs.dtype == np.float32
                    np.testing.assert_array_equal(xm.astype(np.float16), xs.astype(np.float16))
                    np.testing.assert_array_equal(ym, ys)
                    # and both are the stored features of those rows, joined across encoders by (key, frame)
                    rows = selected.rows[positions]
                    for x, row, label in zip(xs, rows, ys):
                        key, frame = table.keys[row], int(table.frames[row])
                        assert label == classes[records[key].identity]
                        parts = []
                        for encoder in encoders:
                            frames, emb = synth.stored[encoder][key]
                            parts.append(emb[frames.tolist().index(frame)])
                        np.testing.assert_array_equal(x, np.concatenate(parts).astype(np.float32))
        finally:
            table.close()


def test_features_for_keys_averages_the_frames_of_a_face_track(synth):
    table = FeatureTable(synth.train, list(FACE_ENCODERS))
    try:
        by_key = table.rows_by_key()
        track = f"faces/{IDENTITIES[2]}/German/{'ge'}{IDENTITIES[2][-2:]}Trk/00000"
        image = f"faces/{IDENTITIES[2]}/German/ge{IDENTITIES[2][-2:]}Vid1/000000032"
        assert sorted(table.frames[by_key[track]].tolist()) == list(TRACK_FRAMES)
        got = features_for_keys(table, [image, track, image], by_key, "test")
        assert got.shape == (3, table.dim) and got.dtype == np.float32  # the heads take float32
        np.testing.assert_allclose(got[1], naive_vector(synth, "face", track), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got[1], table.rows(by_key[track]).mean(axis=0), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got[0], naive_vector(synth, "face", image).astype(np.float32))
        np.testing.assert_array_equal(got[0], got[2])
    finally:
        table.close()


# ------------------------------------------------------------------------------------------- 5. train-head


def test_train_head_all_folds_writes_a_complete_experiment(synth, trained):
    exp, output = trained.exp, trained.output
    for f in range(NUM_FOLDS):
        assert any(line.startswith(f"fold {f}: epoch ") and "dev EER heard English" in line and "German" in line
                   for line in output.splitlines()), output
    assert "mean dev EER heard: English" in output and "unheard" not in output  # full split: nothing unheard

    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    assert cfg["seed"] == 0 and cfg["train"]["epochs"] == EPOCHS and cfg["data"]["num_folds"] == NUM_FOLDS
    assert cfg["model"]["aam_scale"] == 30.0 and cfg["model"]["input_dropout"] == 0.9  # defaults resolved
    assert load_config(exp / "config.yaml").to_dict() == cfg
    info = json.loads((exp / "experiment.json").read_text())
    assert info["format"] == EXPERIMENT_FORMAT and info["folds"] == NUM_FOLDS and info["dataset"] == DATASET
    assert info["features"]["voice"]["dims"] == list(VOICE_ENCODERS.values())
    assert info["features"]["face"]["encoders"] == list(FACE_ENCODERS)
    assert info["features"]["face"]["weights_ids"]["vggface"] == "vggface@0abc"
    assert info["heard"] == list(LANGUAGES) and info["unheard"] == []

    metrics = json.loads((exp / "metrics.json").read_text())
    assert sorted(metrics["folds"]) == [str(f) for f in range(NUM_FOLDS)]
    seen_ids: list[str] = []
    for f, fold in enumerate(fold_dirs(exp)):
        log = [json.loads(line) for line in (fold / "train_log.jsonl").read_text().splitlines()]
        assert 1 <= len(log) <= EPOCHS and [e["epoch"] for e in log] == list(range(len(log)))
        for entry in log:
            assert math.isfinite(entry["loss"]) and entry["loss"] > 0
            assert set(entry["dev_eer"]) == set(LANGUAGES)
        selection = [e["selection_eer"] for e in log]
        best = int(np.argmin(selection))
        fold_metrics = json.loads((fold / "metrics.json").read_text())
        assert fold_metrics == metrics["folds"][str(f)]
        assert fold_metrics["epoch"] == best
        if len(log) < EPOCHS:  # stopped early: only by patience
            assert len(log) - 1 - best == PATIENCE

        model, payload = load_checkpoint(fold / "checkpoint.pt")
        assert payload["fold"] == f and payload["epoch"] == best and math.isfinite(payload["threshold"])
        assert model.sizes == {"voice_dim": 32, "face_dim": 38, "n_classes": len(payload["classes"])}
        seen_ids += sorted(set(IDENTITIES) - set(payload["classes"]))  # held out of this fold
        for lang in LANGUAGES:
            trials = read_trials(fold / f"dev_{lang}.txt")
            labels = read_labels(fold / f"dev_{lang}_labels.txt")
            stored = read_scores(fold / f"dev_scores_{lang}.txt")
            assert sorted(stored) == sorted(t.key for t in trials) == sorted(labels)
            held = set(IDENTITIES) - set(payload["classes"])
            assert all(t.voice.split("/")[1] in held and t.face.split("/")[1] in held for t in trials)
            voice, face = naive_trial_features(synth, trials)
            again = score_distances(model, voice, face)
            np.testing.assert_allclose([stored[t.key] for t in trials], again, rtol=1e-5, atol=1e-6)
            eer = compute_eer(np.array([labels[t.key] for t in trials]), np.array([stored[t.key] for t in trials]))
            assert eer == pytest.approx(fold_metrics["heard"][lang])
    assert sorted(seen_ids) == IDENTITIES  # the folds cover every identity once
    for lang in LANGUAGES:
        mean = np.mean([metrics["folds"][str(f)]["heard"][lang] for f in range(NUM_FOLDS)])
        assert metrics["mean_heard"][lang] == pytest.approx(mean)
        assert f"{lang} {mean:.2f}%" in output
        assert metrics["mean_heard"][lang] < 30.0, metrics  # the synthetic identity signal is learnt
    assert metrics["mean_unheard"] == {}


def test_train_head_unheard_split_reports_the_unheard_language(synth, trained):
    exp = synth.base / "exp_noge"
    result = train(synth, exp, "--split", "german-unheard")
    assert result.exit_code == 0, result.output
    fold_lines = [line for line in result.output.splitlines() if line.startswith("fold ")]
    assert len(fold_lines) == NUM_FOLDS
    assert all("dev EER heard English" in line and "; unheard German" in line for line in fold_lines)
    assert "mean dev EER heard: English" in result.output and "mean dev EER unheard: German" in result.output
    metrics = json.loads((exp / "metrics.json").read_text())
    assert list(metrics["mean_heard"]) == ["English"] and list(metrics["mean_unheard"]) == ["German"]
    assert yaml.safe_load((exp / "config.yaml").read_text())["data"]["split"] == "german-unheard"
    info = json.loads((exp / "experiment.json").read_text())
    assert info["heard"] == ["English"] and info["unheard"] == ["German"]
    # German rows were not trained on, but German dev trials are still scored
    for fold in fold_dirs(exp):
        assert (fold / "dev_scores_German.txt").is_file()
        model, payload = load_checkpoint(fold / "checkpoint.pt")
        assert payload["heard"] == ["English"] and payload["unheard"] == ["German"]
    assert metrics["mean_heard"]["English"] < 40.0, metrics


# ------------------------------------------------------------------------------------------ 6. determinism


def test_same_seed_gives_identical_scores_and_another_seed_does_not(synth, trained):
    again = synth.base / "exp_full_again"
    other = synth.base / "exp_full_seed7"
    assert train(synth, again).exit_code == 0
    result = train(synth, other, "--seed", "7")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((other / "config.yaml").read_text())["seed"] == 7
    assert (trained.exp / "metrics.json").read_bytes() == (again / "metrics.json").read_bytes()
    differs = False
    for f in range(NUM_FOLDS):
        for lang in LANGUAGES:
            name = f"fold{f}/dev_scores_{lang}.txt"
            assert (trained.exp / name).read_bytes() == (again / name).read_bytes(), name
            a, b = read_scores(trained.exp / name), read_scores(other / name)
            assert sorted(a) == sorted(b)  # same folds and dev trials ...
            differs |= a != b  # ... scored by differently seeded models
    assert differs


def test_folds_trained_by_worker_processes_equal_the_sequential_run(synth, trained):
    """--workers 2: two spawned processes train the folds at once; each fold's selected epoch, dev scores and
    metrics equal the one-process run's (the threads only split the matrix products)."""
    exp = synth.base / "exp_workers"
    result = train(synth, exp, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert sorted(line.split(":")[0] for line in result.output.splitlines() if line.startswith("fold ")) == \
        [f"fold {f}" for f in range(NUM_FOLDS)]
    ours, theirs = json.loads((exp / "metrics.json").read_text()), json.loads((trained.exp / "metrics.json").read_text())
    for f in range(NUM_FOLDS):
        assert ours["folds"][str(f)]["epoch"] == theirs["folds"][str(f)]["epoch"]
        for lang in LANGUAGES:
            a = read_scores(exp / f"fold{f}" / f"dev_scores_{lang}.txt")
            b = read_scores(trained.exp / f"fold{f}" / f"dev_scores_{lang}.txt")
            assert a.keys() == b.keys()
            np.testing.assert_allclose(list(a.values()), [b[k] for k in a], atol=1e-5)


# ------------------------------------------------------------------------------------------------ 7. score


def test_score_averages_the_fold_models(synth, trained, tmp_path):
    out = tmp_path / "s.txt"
    result = run("score", "--exp", trained.exp, "--trials", synth.test_list, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"{len(synth.trials)} trials scored" in result.output
    lines = out.read_text().splitlines()
    assert len(lines) == len(synth.trials)
    scores = read_scores(out)
    assert sorted(scores) == sorted(t.key for t in synth.trials)
    assert any(t.face.endswith(".mp4") for t in synth.trials)  # face tracks are scored by their frame mean

    voice, face = naive_trial_features(synth, synth.trials)
    per_fold = []
    for fold in fold_dirs(trained.exp):
        sd = torch.load(fold / "checkpoint.pt", map_location="cpu", weights_only=True)["state_dict"]
        wv, bv, wf, bf = (sd[n].double().numpy() for n in ("voice.2.weight", "voice.2.bias", "face.2.weight",
                                                          "face.2.bias"))
        ev, ef = voice.astype(np.float64) @ wv.T + bv, face.astype(np.float64) @ wf.T + bf
        cos = (ev * ef).sum(1) / (np.linalg.norm(ev, axis=1) * np.linalg.norm(ef, axis=1))
        per_fold.append(1.0 - cos)
    expected = np.mean(per_fold, axis=0)
    got = np.array([scores[t.key] for t in synth.trials])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, per_fold[0], atol=1e-4)  # more than one fold model went into the mean


# ------------------------------------------------------------------------------------------- 8. bad input


def test_fold_out_of_range_is_one_error_line_and_keeps_the_experiment(synth, trained, tmp_path):
    assert_user_error(train(synth, tmp_path / "new", "--fold", "9"), "fold 9 out of range", "0..2")
    for flag in ("--resume", "--force"):
        exp = copy_exp(trained.exp, tmp_path / f"exp{flag}")
        before = snapshot(exp)
        result = run("train-head", "--fold", "9", "--config", synth.config, "--cache", synth.root, "--exp", exp,
                     flag)
        assert_user_error(result, "fold 9 out of range")
        assert snapshot(exp) == before, flag
    assert_user_error(train(synth, tmp_path / "x", "--fold", "first"), "--fold 'first'")


def test_score_of_a_trial_without_features_fails_cleanly(synth, trained, tmp_path):
    bad = tmp_path / "bad.txt"
    lines = synth.test_list.read_text().splitlines()
    bad.write_text("\n".join(lines[:3] + ["zz00001 English_test/voices/English/99999.wav "
                                          "English_test/faces/English/00000.jpg"]) + "\n")
    before = snapshot(trained.exp)
    out = tmp_path / "s.txt"
    result = run("score", "--exp", trained.exp, "--trials", bad, "--out", out)
    assert_user_error(result, "English_test/voices/English/99999", "fva extract")
    assert not out.exists()
    assert snapshot(trained.exp) == before


def test_experiment_of_another_format_is_refused(synth, trained, tmp_path):
    exp = copy_exp(trained.exp, tmp_path / "old")
    info = json.loads((exp / "experiment.json").read_text())
    info["format"] = 999
    (exp / "experiment.json").write_text(json.dumps(info))
    before = snapshot(exp)
    out = tmp_path / "s.txt"
    assert_user_error(run("score", "--exp", exp, "--trials", synth.test_list, "--out", out),
                      "format 999", "retrain")
    assert not out.exists()
    assert_user_error(train(synth, exp, "--resume"), "format 999")
    assert snapshot(exp) == before


@pytest.mark.parametrize("damage, fragments", [
    ("truncated-checkpoint", ("fold0/checkpoint.pt: damaged checkpoint", "train the fold again")),
    ("info-not-json", ("experiment.json: damaged experiment description", "train the experiment again")),
    ("info-features", ("experiment.json: damaged experiment description (features", "train the experiment again")),
    ("no-info", ("not an fva experiment (no experiment.json)",)),
])
def test_a_damaged_experiment_folder_is_one_line_naming_the_file(synth, trained, tmp_path, damage, fragments):
    """fva score on an experiment with a truncated checkpoint or a damaged description: one line naming the
    file, exit 2, nothing written, nothing changed."""
    exp = copy_exp(trained.exp, tmp_path / "damaged")
    if damage == "truncated-checkpoint":
        ckpt = exp / "fold0" / "checkpoint.pt"
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    elif damage == "info-not-json":
        (exp / "experiment.json").write_text('{"format": 3, "features": ')
    elif damage == "info-features":
        info = json.loads((exp / "experiment.json").read_text())
        info["features"]["voice"]["surprise"] = 1
        (exp / "experiment.json").write_text(json.dumps(info))
    else:
        (exp / "experiment.json").unlink()
    before = snapshot(exp)
    out = tmp_path / "s.txt"
    assert_user_error(run("score", "--exp", exp, "--trials", synth.test_list, "--out", out), *fragments)
    assert not out.exists() and snapshot(exp) == before


def test_unknown_config_key_is_named(synth, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  epoch: 3\n")
    exp = tmp_path / "exp"
    result = run("train-head", "--config", config, "--cache", synth.root, "--exp", exp)
    assert_user_error(result, "unknown config key 'train.epoch'", "epochs")
    assert not exp.exists()


def test_existing_experiment_needs_force_or_resume(synth, trained, tmp_path):
    exp = copy_exp(trained.exp, tmp_path / "exp")
    before = snapshot(exp)
    assert_user_error(train(synth, exp), "exists", "--force", "--resume")
    assert snapshot(exp) == before

    # --resume on a finished experiment: every fold is already trained, nothing retrained
    result = train(synth, exp, "--resume")
    assert result.exit_code == 0, result.output
    for f in range(NUM_FOLDS):
        assert f"fold {f}: already trained (resume)" in result.output
    after = snapshot(exp)
    assert {k: v for k, v in after.items() if k.startswith("fold")} == \
        {k: v for k, v in before.items() if k.startswith("fold")}
    assert after["metrics.json"] == before["metrics.json"]

    # --force overwrites: the old folder's content goes, a fresh experiment (here fold 0 only) is written
    (exp / "stale.txt").write_text("old")
    result = run("train-head", "--fold", "0", "--config", synth.config, "--cache", synth.root, "--exp", exp,
                 "--force")
    assert result.exit_code == 0, result.output
    assert not (exp / "stale.txt").exists() and not (exp / "fold1").exists()
    assert sorted(json.loads((exp / "metrics.json").read_text())["folds"]) == ["0"]
    assert (exp / "fold0" / "dev_scores_English.txt").read_bytes() == \
        (trained.exp / "fold0" / "dev_scores_English.txt").read_bytes()


def test_interrupted_training_resumes_to_the_uninterrupted_result(synth, tmp_path, monkeypatch):
    """Stopped mid-fold (after a resume point), --resume ends with the same scores as a run never stopped."""
    import fva.heads.trainer as trainer

    cfg = dict(CONFIG, train={**CONFIG["train"], "epochs": 12, "patience": 12})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))

    def go(exp: Path):
        return run("train-head", "--fold", "0", "--config", config, "--cache", synth.root, "--exp", exp,
                   *(["--resume"] if exp.exists() else []))

    assert go(tmp_path / "whole").exit_code == 0
    real_epoch, calls = trainer.train_epoch, []

    def dies_in_epoch_8(*args, **kwargs):
        calls.append(kwargs["epoch"])
        if kwargs["epoch"] == 8 and calls.count(8) == 1:
            raise KeyboardInterrupt  # as if killed: epochs 5..7 after the last resume point are lost
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_epoch", dies_in_epoch_8)
    assert go(tmp_path / "cut").exit_code != 0
    assert go(tmp_path / "cut").exit_code == 0
    assert calls.count(5) == 2 and calls.count(4) == 1  # resumed from the epoch-5 resume point
    for name in ("dev_scores_English.txt", "dev_scores_German.txt", "metrics.json"):
        assert (tmp_path / "cut" / "fold0" / name).read_bytes() == (tmp_path / "whole" / "fold0" / name).read_bytes()
    log = [json.loads(line)["epoch"] for line in (tmp_path / "cut" / "fold0" / "train_log.jsonl").read_text().splitlines()]
    assert log == list(range(12))


# ------------------------------------------------------------------------------- 6. VoxCeleb2: pretrain, joint

VOX_IDENTITIES = [f"id1{i:04d}" for i in range(8)]
VOX_SPLIT = "german-unheard"


@pytest.fixture(scope="module")
def vox(synth, tmp_path_factory):
    """A copy of the synthetic cache root plus a VoxCeleb2 cache of the german-unheard weight set (``dev``
    subset): voice clips and face tracks of other identities through the same latent maps, English or of
    unknown language (a video ``fva lid`` could not decide)."""
    root = tmp_path_factory.mktemp("vox") / "cache"
    shutil.copytree(synth.root, root)
    # the MAV-Celeb features of the same weight set as VoxCeleb2's (the same weights here: the same identities)
    shutil.copytree(root / DATASET / "train-full", root / DATASET / f"train-{VOX_SPLIT}")
    rng = np.random.default_rng(99)
    voice_map, face_map = synth.maps
    records, rows = [], {}
    for identity in VOX_IDENTITIES:
        z = rng.normal(size=LATENT)
        for v, language in enumerate(("English", "English", None)):
            video = f"vid{v}"
            for u in range(3):
                key = f"dev/aac/{identity}/{video}/{u:05d}"
                records.append(MediaRecord(key=key, identity=identity, language=language, modality="voice",
                                           path=key + ".m4a", video=video))
                rows[key] = (np.array([-1]), z @ voice_map + rng.normal(0, 0.6, size=(1, voice_map.shape[1])))
            key = f"dev/mp4/{identity}/{video}/00000"
            records.append(MediaRecord(key=key, identity=identity, language=language, modality="face",
                                       path=key + ".mp4", video=video))
            rows[key] = (np.array(TRACK_FRAMES), z @ face_map + rng.normal(0, 0.6, size=(3, face_map.shape[1])))
    write_split(root, "dev", records, rows, rng, dataset="voxceleb2", split=VOX_SPLIT)
    labelled = [r for r in records if r.language is not None]
    return SimpleNamespace(root=root, voice_rows=sum(r.modality == "voice" for r in labelled),
                           face_rows=sum(len(TRACK_FRAMES) for r in labelled if r.modality == "face"))


class EpochSpy:
    """Wraps ``train_epoch``: per call, the row sources, the labels it drew and the projections it started
    from."""

    def __init__(self, monkeypatch) -> None:
        import fva.heads.trainer as trainer

        self.calls: list[SimpleNamespace] = []
        real = trainer.train_epoch

        def spy(model, optimiser, voice_rows, face_rows, *args, **kwargs):
            labels = voice_rows.batch(np.arange(len(voice_rows)))[1]
            self.calls.append(SimpleNamespace(voice_rows=voice_rows, face_rows=face_rows, labels=labels,
                                              start={k: v.clone() for k, v in model.state_dict().items()},
                                              n_classes=model.classifier.weight.shape[0], epoch=kwargs["epoch"]))
            return real(model, optimiser, voice_rows, face_rows, *args, **kwargs)

        monkeypatch.setattr(trainer, "train_epoch", spy)


def vox_config(tmp_path: Path, **data) -> Path:
    cfg = {**CONFIG, "data": {**CONFIG["data"], "pretrain_dataset": "voxceleb2", **data},
           "train": {**CONFIG["train"], "epochs": 2, "patience": 2, "pretrain_epochs": 3,
                     "in_memory_limit_gb": 1e-6}}  # every source streams from disk
    path = tmp_path / "vox.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pretraining_on_voxceleb2_starts_every_fold_from_its_projections(vox, tmp_path, monkeypatch):
    from fva.heads.features import StreamingRows

    spy = EpochSpy(monkeypatch)
    exp = tmp_path / "exp"
    result = run("train-head", "--fold", "all", "--config", vox_config(tmp_path), "--cache", vox.root,
                 "--exp", exp, "--split", VOX_SPLIT)
    assert result.exit_code == 0, result.output
    pre, folds = spy.calls[:3], spy.calls[3:]
    # pretraining ran once for the experiment, 3 epochs, on the VoxCeleb2 rows of known language only
    # (the split's language is absent from its cache; unknown-language videos could be in it), streamed
    assert [c.epoch for c in pre] == [0, 1, 2] and all(c.voice_rows is pre[0].voice_rows for c in pre)
    assert len(pre[0].voice_rows) == vox.voice_rows and len(pre[0].face_rows) == vox.face_rows
    assert isinstance(pre[0].voice_rows, StreamingRows) and pre[0].n_classes == len(VOX_IDENTITIES)
    assert sorted(set(pre[0].labels.tolist())) == list(range(len(VOX_IDENTITIES)))
    ckpt, payload = load_checkpoint(exp / "pretrain" / "checkpoint.pt")
    assert payload["classes"] == VOX_IDENTITIES and payload["dataset"] == "voxceleb2"
    assert len((exp / "pretrain" / "train_log.jsonl").read_text().splitlines()) == 3
    # each fold's first epoch starts from the pretrained projections (not from its own random init), with a
    # fresh classifier over the fold's MAV-Celeb training identities
    firsts = [c for c in folds if c.epoch == 0]
    assert len(firsts) == NUM_FOLDS
    pretrained = ckpt.state_dict()
    for c in firsts:
        for name in ("voice.2.weight", "voice.2.bias", "face.2.weight", "face.2.bias"):
            assert torch.equal(c.start[name], pretrained[name]), name
        assert c.n_classes == len(IDENTITIES) - len(json.loads((vox.root / DATASET / "folds.json").read_text())
                                                    ["folds"][firsts.index(c)])
    assert (exp / "metrics.json").is_file()


def test_joint_training_adds_voxceleb2_identities_as_classes_in_the_same_batches(vox, tmp_path, monkeypatch):
    spy = EpochSpy(monkeypatch)
    exp = tmp_path / "exp"
    result = run("train-head", "--fold", "0", "--config", vox_config(tmp_path, joint=True), "--cache",
                 vox.root, "--exp", exp, "--split", VOX_SPLIT)
    assert result.exit_code == 0, result.output
    assert not (exp / "pretrain").exists()  # joint: no separate pretraining
    first = spy.calls[0]
    _, payload = load_checkpoint(exp / "fold0" / "checkpoint.pt")
    classes = payload["classes"]
    mav = [c for c in classes if not c.startswith("voxceleb2:")]
    assert classes[len(mav):] == [f"voxceleb2:{i}" for i in VOX_IDENTITIES] and first.n_classes == len(classes)
    # the rows: the fold's MAV-Celeb training rows (German removed by the split) then VoxCeleb2's
    records = manifest_records(synth_train := vox.root / DATASET / "train-full")
    table = FeatureTable(synth_train, list(VOICE_ENCODERS))
    try:
        mav_rows = select_rows(table, records, set(mav), "German", {c: i for i, c in enumerate(mav)})
    finally:
        table.close()
    assert len(first.voice_rows) == len(mav_rows.rows) + vox.voice_rows
    assert np.array_equal(first.labels[:len(mav_rows.rows)], mav_rows.labels)
    assert sorted(set(first.labels[len(mav_rows.rows):].tolist())) == list(range(len(mav), len(classes)))


def test_pretraining_on_features_of_other_dimensions_is_refused(vox, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(vox.root, root)
    other = root / "voxceleb2" / f"dev-{VOX_SPLIT}" / "vit-age-gender"
    shutil.rmtree(other)
    shutil.copytree(root / "voxceleb2" / f"dev-{VOX_SPLIT}" / "vggface", other)  # 32-d where 6-d belongs
    import h5py

    for shard in other.glob("*.h5"):  # a vit-age-gender cache of another width (e.g. another model's config)
        with h5py.File(shard, "r+") as f:
            f.attrs["encoder"] = "vit-age-gender"
    exp = tmp_path / "exp"
    result = run("train-head", "--fold", "0", "--config", vox_config(tmp_path), "--cache", root, "--exp", exp,
                 "--split", VOX_SPLIT)
    assert_user_error(result, "face features", "pretrain on features of the same encoders")
    assert not exp.exists()


# ------------------------------------------------------------------------------- 7. input standardisation


def test_row_statistics_match_numpy_for_every_row_source(synth):
    from fva.heads.features import ConcatRows, make_rows, row_statistics

    records = manifest_records(synth.train)
    table = FeatureTable(synth.train, list(FACE_ENCODERS))
    try:
        sel = select_rows(table, records, set(IDENTITIES), None, {i: n for n, i in enumerate(IDENTITIES)})
        x = table.load(sel.rows).astype(np.float64)
        for rows in (InMemoryRows(table, sel), StreamingRows(table, sel), make_rows(table, sel, 1e-9)):
            mean, std = row_statistics(rows, seed=[0], chunk=7)
            assert np.allclose(mean, x.mean(0), atol=1e-9) and np.allclose(std, x.std(0), atol=1e-9)
        both = ConcatRows([InMemoryRows(table, sel), StreamingRows(table, sel)], [0, 100])
        mean, std = row_statistics(both, seed=[0])
        assert np.allclose(mean, x.mean(0), atol=1e-9) and np.allclose(std, x.std(0), atol=1e-9)
        # above max_rows: a seeded sample of whole blocks, the same for the same seed
        sample = row_statistics(InMemoryRows(table, sel), seed=[3], max_rows=40, block_rows=8)
        assert np.array_equal(sample[0], row_statistics(StreamingRows(table, sel), seed=[3], max_rows=40,
                                                        block_rows=8)[0])
        assert not np.allclose(sample[0], x.mean(0))
    finally:
        table.close()


def test_input_norm_standardises_with_the_fold_training_rows(synth, tmp_path):
    cfg = dict(CONFIG, model={**CONFIG["model"], "input_norm": True}, train={**CONFIG["train"], "epochs": 2})
    config = tmp_path / "norm.yaml"
    config.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    result = run("train-head", "--fold", "1", "--config", config, "--cache", synth.root, "--exp", exp)
    assert result.exit_code == 0, result.output
    model, payload = load_checkpoint(exp / "fold1" / "checkpoint.pt")
    train_ids = list(payload["classes"])
    records = manifest_records(synth.train)
    for modality, encoders in (("voice", VOICE_ENCODERS), ("face", FACE_ENCODERS)):
        table = FeatureTable(synth.train, list(encoders))
        try:
            sel = select_rows(table, records, set(train_ids), None, {i: n for n, i in enumerate(train_ids)})
            x = table.load(sel.rows).astype(np.float64)
        finally:
            table.close()
        norm = getattr(model, modality)[0]
        assert np.allclose(norm.mean.numpy(), x.mean(0), atol=1e-5)
        assert np.allclose(1 / norm.inv_std.numpy(), x.std(0), rtol=1e-4)
        z = norm(torch.from_numpy(x.astype(np.float32))).numpy()
        assert np.allclose(z.mean(0), 0, atol=1e-4) and np.allclose(z.std(0), 1, atol=1e-3)
    # the scores of `fva score` go through the same standardisation: equal to the naive computation
    voice, face = naive_trial_features(synth, synth.trials)
    expected = score_distances(model, voice, face)
    with torch.no_grad():
        ev = model.voice[2]((torch.from_numpy(voice) - model.voice[0].mean) * model.voice[0].inv_std)
        ef = model.face[2]((torch.from_numpy(face) - model.face[0].mean) * model.face[0].inv_std)
    assert np.allclose(expected, 1 - F.cosine_similarity(ev, ef).numpy(), atol=1e-5)
