"""The few-identity systems and the scoring levels: ridge CCA and the input reduction against plain numpy and
scipy, the InfoNCE loss and the bridge against hand computations, the cosine schedule against torch's, z-norm
recomputed by hand, the invariance of level 0-2 scores to how a file pairs its other trials (and level 3's lack
of it), ``--pairwise`` refusals, and cca and bridge beating fame2026 on the synthetic cache's test trials.

Experiments are trained once per module on fold 0 of the synthetic cache (conftest.py's ``synth``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import yaml

from conftest import assert_user_error
from fva.data.folds import Folds
from fva.data.trials import Trial, read_trials, write_trials
from fva.errors import FvaError
from fva.evaluate.eer import compute_eer
from fva.experiment import CHECKPOINT_FILE, INFO_FILE, LOG_FILE, METRICS_FILE
from fva.heads.compare import summary_row, system_config
from fva.heads.config import ModelConfig, TrainConfig
from fva.heads.experiment import build_model, load_checkpoint, read_experiment, save_checkpoint
from fva.heads.features import InMemoryRows, MappedRows, select_rows
from fva.heads.linalg import cross_moments, fit_reduction, ridge_cca
from fva.heads.plan import levels_path, make_submission
from fva.heads.scoring import score_trial_list
from fva.heads.systems.contrastive import cross_infonce
from fva.heads.trainer import learning_rate, train_epoch, train_head
from fva.heads.trialset import TrialSet, cross_distances, embed_rows, open_features
from fva.layout import find_features_folder, folds_path, manifest_records
from fva.synth.testing import LANGUAGES, LATENT, naive_trial_features, run_cli, synthetic_media

KEPT = 50  # trials of a file whose scores must not move when the file's other trials are re-paired


# ------------------------------------------------------------------------------------------------ helpers


def train(synth, exp: Path, name: str, overrides: dict | None = None, folds=(0,)) -> Path:
    """An experiment of the shipped system ``name`` over the synthetic config, trained on ``folds`` into ``exp``."""
    train_head(system_config(name, synth.config, overrides), synth.root, exp, list(folds), log=lambda line: None)
    return exp


def truth_labels(synth) -> np.ndarray:
    """1 where a trial of synth's test list pairs one person's voice and face: each test medium's identity
    recovered by replaying the generator's layout (identities t0.. in order, keys numbered per language)."""
    identities = [f"t{i}" for i in range(4)]
    zeros = {i: np.zeros(LATENT) for i in identities}
    who: dict[str, str] = {}
    for k in range(len(identities)):  # the records of the first k + 1 identities extend those of the first k
        records, _ = synthetic_media(np.random.default_rng(0), identities[:k + 1], zeros, np.zeros((LATENT, 1)),
                                     np.zeros((LATENT, 1)), LANGUAGES, test=True)
        for r in records:
            who.setdefault(r.path, identities[k])
    assert all(t.voice in who and t.face in who for t in synth.trials)
    return np.array([int(who[t.voice] == who[t.face]) for t in synth.trials])



def list_eer(synth, exp: Path, labels: np.ndarray) -> float:
    scores = score_trial_list(exp, synth.test_list)
    return compute_eer(labels, np.array([scores[t.key] for t in synth.trials]))



def kept_scores(exp: Path, path: Path) -> np.ndarray:
    """The scores of the list's first KEPT trials."""
    scores = score_trial_list(exp, path)
    return np.array([scores[t.key] for t in read_trials(path)[:KEPT]])


def repaired(trials: list[Trial], perm: np.ndarray, path: Path) -> Path:
    """The list with its first KEPT trials as they are and the others' voices re-paired: other trial j gets
    the voice of other trial perm[j] (the same faces, voices and keys)."""
    others = trials[KEPT:]
    write_trials(path, trials[:KEPT] + [Trial(t.key, others[p].voice, t.face) for t, p in zip(others, perm)])
    return path


def log_lines(exp: Path, fold: int = 0) -> list[dict]:
    return [json.loads(line) for line in (exp / f"fold{fold}" / LOG_FILE).read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ experiments

INVARIANT = {  # name -> (system, overrides, scoring level): each trained for 2 epochs
    "plain": ("fame2026", {}, 0),
    "znorm": ("fame2026", {"score": {"centre": "train", "znorm": {"enabled": True, "pairs": 500}}}, 0),
    "snorm": ("fame2026", {"score": {"snorm": {"enabled": True}}}, 0),
    "file": ("fame2026", {"score": {"centre": "file"}}, 1),
    "cluster": ("fame2026", {"score": {"centre": "file", "cluster": {"enabled": True}}}, 2),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("few")


@pytest.fixture(scope="module")
def levelled(synth, base) -> dict[str, Path]:
    """One experiment per scoring configuration of :data:`INVARIANT`, and the shipped contrastive (level 3)."""
    out = {name: train(synth, base / "levels" / name, system, {**overrides, "train": {"epochs": 2}})
           for name, (system, overrides, _) in INVARIANT.items()}
    out["contrastive"] = train(synth, base / "levels" / "contrastive", "contrastive", {"train": {"epochs": 2}})
    return out


@pytest.fixture(scope="module")
def cca_runs(synth, base) -> tuple[Path, Path]:
    return train(synth, base / "cca-a", "cca"), train(synth, base / "cca-b", "cca")


@pytest.fixture(scope="module")
def fame(synth, base) -> Path:
    """fame2026 with the synthetic config's own training budget."""
    return train(synth, base / "fame2026", "fame2026")


@pytest.fixture(scope="module")
def bridge(synth, base) -> Path:
    return train(synth, base / "bridge", "bridge", {"train": {"epochs": 10}})


# ------------------------------------------------------------------------------------------- linear algebra


def test_ridge_cca_without_regularisation_matches_bjorck_golub():
    """reg 0, one row per identity: the correlations are the singular values of Qx'Qy, the projections unit."""
    rng = np.random.default_rng(0)
    n, p, q = 60, 3, 5
    shared = rng.normal(size=(n, 2))
    x = shared @ rng.normal(size=(2, p)) + rng.normal(size=(n, p))
    y = shared @ rng.normal(size=(2, q)) + 0.5 * rng.normal(size=(n, q))
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    ids = np.arange(n)
    wx, wy, corr = ridge_cca(*cross_moments(x, ids, y, ids), 0.0)
    qx, qy = np.linalg.qr(x)[0], np.linalg.qr(y)[0]
    expected = np.linalg.svd(qx.T @ qy, compute_uv=False)
    assert wx.shape == (p, p) and wy.shape == (q, p) and corr.shape == (p,)
    np.testing.assert_allclose(corr, expected, atol=1e-10)
    assert expected[0] > 0.5  # a real shared signal
    for i in range(p):
        u, v = x @ wx[:, i], y @ wy[:, i]
        assert np.mean(u * u) == pytest.approx(1.0, abs=1e-9) and np.mean(v * v) == pytest.approx(1.0, abs=1e-9)
        assert np.corrcoef(u, v)[0, 1] == pytest.approx(corr[i], abs=1e-9)


@pytest.mark.parametrize("reg", [0.05, 1.0])
def test_ridge_cca_with_regularisation_solves_the_generalised_eigenproblem(reg):
    """reg > 0: corr and directions agree with scipy's generalised eigenproblem of the block matrices."""
    rng = np.random.default_rng(1)
    p, q = 4, 3
    a, b = rng.normal(size=(p, p)), rng.normal(size=(q, q))
    cxx, cyy = a @ a.T / p + 0.1 * np.eye(p), b @ b.T / q + 0.1 * np.eye(q)
    cxy = 0.3 * rng.normal(size=(p, q))
    wx, wy, corr = ridge_cca(cxx, cyy, cxy, reg)
    rx, ry = cxx + reg * np.eye(p), cyy + reg * np.eye(q)
    lhs = np.block([[np.zeros((p, p)), cxy], [cxy.T, np.zeros((q, q))]])
    rhs = scipy.linalg.block_diag(rx, ry)
    values = scipy.linalg.eigh(lhs, rhs, eigvals_only=True)[::-1][:min(p, q)]
    np.testing.assert_allclose(corr, values, atol=1e-10)
    # and the squared correlations as eigenvalues of Rx^-1 Cxy Ry^-1 Cyx, with each direction an eigenvector
    m = np.linalg.solve(rx, cxy) @ np.linalg.solve(ry, cxy.T)
    np.testing.assert_allclose(np.sort(np.linalg.eigvals(m).real)[::-1][:min(p, q)], corr ** 2, atol=1e-10)
    for i in range(min(p, q)):
        np.testing.assert_allclose(m @ wx[:, i], corr[i] ** 2 * wx[:, i], atol=1e-10)
        assert wx[:, i] @ rx @ wx[:, i] == pytest.approx(1.0, abs=1e-10)
        assert wy[:, i] @ ry @ wy[:, i] == pytest.approx(1.0, abs=1e-10)
        assert wx[:, i] @ cxy @ wy[:, i] == pytest.approx(corr[i], abs=1e-10)


def test_cross_moments_with_several_rows_per_identity_match_a_loop():
    """C_xy is sum_i (n_i / n) m_x,i m_y,i' over identities with both modalities; C_xx, C_yy over all rows."""
    rng = np.random.default_rng(2)
    yv = np.array([0, 0, 0, 1, 2, 2, 5, 5])  # 5: voices only
    yf = np.array([2, 0, 1, 1, 1, 0, 7])  # 7: faces only
    xv, xf = rng.normal(size=(len(yv), 3)), rng.normal(size=(len(yf), 2))
    cxx, cyy, cxy = cross_moments(xv, yv, xf, yf)
    np.testing.assert_allclose(cxx, xv.T @ xv / len(yv), atol=1e-12)
    np.testing.assert_allclose(cyy, xf.T @ xf / len(yf), atol=1e-12)
    shared = [i for i in sorted(set(yv.tolist())) if i in set(yf.tolist())]
    n = sum(int((yv == i).sum()) for i in shared)
    expected = sum((yv == i).sum() / n * np.outer(xv[yv == i].mean(axis=0), xf[yf == i].mean(axis=0))
                   for i in shared)
    np.testing.assert_allclose(cxy, expected, atol=1e-12)
    # the same as the mean, over voice rows, of the voice row times a random face row of its identity
    by_rows = np.zeros((3, 2))
    for r in range(len(yv)):
        faces = [f for f in range(len(yf)) if yf[f] == yv[r]]
        for f in faces:
            by_rows += np.outer(xv[r], xf[f]) / len(faces) / n
    np.testing.assert_allclose(cxy, by_rows, atol=1e-12)
    with pytest.raises(FvaError, match="share none"):
        cross_moments(xv, yv + 100, xf, yf)


def test_fit_reduction_gives_numpy_svds_leading_axes():
    """Orthonormal axes equal (sign fixed: largest entry positive) to numpy's leading right singular vectors."""
    rng = np.random.default_rng(3)
    n, d, dims = 300, 12, 3
    x = rng.normal(size=(n, dims)) @ rng.normal(size=(dims, d)) * 3 + 0.1 * rng.normal(size=(n, d)) + 5
    mean, std, axes = fit_reduction(x, dims, seed=4)
    np.testing.assert_allclose(mean, x.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=0), atol=1e-12)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    s, vt = np.linalg.svd(z, full_matrices=False)[1:]
    assert s[dims - 1] > 10 * s[dims]  # a clear spectral gap
    assert axes.shape == (d, dims)
    np.testing.assert_allclose(axes.T @ axes, np.eye(dims), atol=1e-5)
    for i in range(dims):
        v = vt[i] * np.sign(vt[i][np.abs(vt[i]).argmax()])
        np.testing.assert_allclose(axes[:, i], v, atol=1e-4)
        assert axes[np.abs(axes[:, i]).argmax(), i] > 0
    np.testing.assert_array_equal(fit_reduction(x, dims, seed=4)[2], axes)
    assert fit_reduction(x, d, seed=4)[2] is None and fit_reduction(x, 0)[2] is None


# ------------------------------------------------------------------------------------------------------ cca


def test_cca_is_deterministic_logs_its_grid_and_keeps_the_first_best(cca_runs, synth):
    """Two runs give identical dev scores; one log line per grid point; the first best setting is kept."""
    a, b = cca_runs
    dev_files = sorted(p.name for p in (a / "fold0").glob("dev_scores_*.txt"))
    assert dev_files
    for name in dev_files:
        assert (a / "fold0" / name).read_bytes() == (b / "fold0" / name).read_bytes()
    cfg, _ = read_experiment(a)
    width = min(32, 38)  # voice 24 + 8, face 32 + 6 features: no more directions than the narrower side has
    grid = [(float(r), k) for r in cfg.model.params["reg"] for k in sorted(cfg.model.params["k"]) if k <= width]
    lines = log_lines(a)
    assert [(line["setting"]["reg"], line["setting"]["k"]) for line in lines] == grid
    assert [line["epoch"] for line in lines] == list(range(len(grid)))
    best = min(line["selection_eer"] for line in lines)
    first = next(line for line in lines if line["selection_eer"] == best)
    metrics = json.loads((a / "fold0" / METRICS_FILE).read_text())
    assert metrics["setting"] == first["setting"] and metrics["epoch"] == first["epoch"]
    _, payload = load_checkpoint(a / "fold0" / CHECKPOINT_FILE)
    assert payload["setting"] == first["setting"]


# --------------------------------------------------------------------------------------- InfoNCE and bridge


def hand_infonce(v: list[list[float]], f: list[list[float]], labels: list[int], tau: float) -> float:
    """The symmetric supervised cross-modal InfoNCE with python floats and loops."""
    def unit(rows):
        return [[a / math.sqrt(sum(b * b for b in r)) for a in r] for r in rows]

    v, f = unit(v), unit(f)
    n = len(v)
    s = [[sum(a * b for a, b in zip(v[i], f[j])) / tau for j in range(n)] for i in range(n)]

    def directed(logits):
        total = 0.0
        for i in range(n):
            norm = sum(math.exp(logits[i][j]) for j in range(n))
            positives = [p for p in range(n) if labels[p] == labels[i]]
            total += -sum(math.log(math.exp(logits[i][p]) / norm) for p in positives) / len(positives)
        return total / n

    return 0.5 * (directed(s) + directed([[s[j][i] for j in range(n)] for i in range(n)]))


@pytest.mark.parametrize("labels", [[0, 1, 2], [4, 4, 9], [3, 3, 3]])
def test_cross_infonce_matches_a_hand_computation(labels):
    """Distinct identities, a repeated one (two positives), one identity only."""
    v = [[1.0, 0.2, -0.5], [0.3, -1.0, 0.4], [-0.7, 0.1, 0.9]]
    f = [[0.8, -0.1, 0.2], [0.5, -0.6, 1.1], [-0.2, 0.4, 0.3]]
    got = cross_infonce(torch.tensor(v, dtype=torch.float64), torch.tensor(f, dtype=torch.float64),
                        torch.tensor(labels), 0.5)
    assert got.item() == pytest.approx(hand_infonce(v, f, labels, 0.5), abs=1e-12)
    two = cross_infonce(torch.eye(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64), torch.tensor([0, 1]), 1.0)
    assert two.item() == pytest.approx(-math.log(math.e / (math.e + 1)), abs=1e-12)


class _Rows(InMemoryRows):
    def __init__(self, data, labels):
        self.data, self.labels = data, labels


def test_bridge_trains_on_reduced_rows_and_its_checkpoint_keeps_the_reduction(tmp_path):
    """The loss sees MappedRows' reduced rows; the checkpoint holds the reductions; a rebuilt bridge embeds alike."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(4), 6)
    voice = _Rows(rng.normal(size=(24, 6)).astype(np.float32), labels)
    face = _Rows(rng.normal(size=(24, 7)).astype(np.float32) + 2, labels.copy())
    cfg = ModelConfig(system="bridge", embedding_dim=4, input_dropout=0.0,
                      params={"hidden": 8, "dropout": 0.3, "tau": 0.1, "pca_dim": 3})
    torch.manual_seed(0)
    model = build_model(6, 7, 4, cfg)
    model.fit_inputs(voice, face, seed=11)
    mean, std, axes = fit_reduction(voice.data, 3, seed=11)
    np.testing.assert_allclose(model.voice_reduce.mean.numpy(), mean, atol=1e-6)
    np.testing.assert_allclose(model.voice_reduce.axes.numpy(), axes, atol=1e-6)
    rows = {m: model.training_rows(m, r) for m, r in (("voice", voice), ("face", face))}
    assert all(isinstance(r, MappedRows) for r in rows.values())
    reduced = {"voice": model.voice_reduce.rows(voice.data), "face": model.face_reduce.rows(face.data)}
    seen = []
    loss = model.loss

    def recording(batch):
        seen.append(batch)
        return loss(batch)

    model.loss = recording
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train_epoch(model, optimiser, rows["voice"], rows["face"], batch_size=8, seed=[0], epoch=0, block_rows=4,
                buffer_blocks=2)
    assert seen
    for batch in seen:
        for modality, x in (("voice", batch.voice.numpy()), ("face", batch.face.numpy())):
            assert x.shape[1] == 3
            gap = np.abs(x[:, None, :] - reduced[modality][None, :, :]).max(axis=2).min(axis=1)
            assert (gap == 0).all()  # every row is a reduced training row, as it is
    del model.loss
    save_checkpoint(tmp_path / CHECKPOINT_FILE, model, {})
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    for name in ("voice_reduce", "face_reduce"):
        assert {f"{name}.mean", f"{name}.inv_std", f"{name}.axes"} <= set(state)
    rebuilt, _ = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    model.eval()
    for modality, x in (("voice", voice.data), ("face", face.data)):
        with torch.inference_mode():
            assert torch.equal(rebuilt.embed(modality, torch.from_numpy(x)), model.embed(modality, torch.from_numpy(x)))


def test_trained_bridge_checkpoint_holds_its_input_standardisation(bridge, synth):
    """The synthetic features are narrower than pca_dim: standardised only, the statistics in the checkpoint."""
    _, payload = load_checkpoint(bridge / "fold0" / CHECKPOINT_FILE)
    state = payload["state_dict"]
    assert state["voice_reduce.mean"].shape == (32,) and state["face_reduce.inv_std"].shape == (38,)
    assert "voice_reduce.axes" not in state
    assert float(state["voice_reduce.mean"].abs().sum()) > 0


# ------------------------------------------------------------------------------------------ learning rate


@pytest.mark.parametrize("warmup", [0, 2])
def test_cosine_schedule_matches_torch(warmup):
    """learning_rate equals CosineAnnealingLR (after a linear warm-up) stepped once per epoch."""
    epochs = 9
    tc = TrainConfig(lr=0.2, schedule="cosine", warmup_epochs=warmup)
    optimiser = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=tc.lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs - warmup)
    if warmup:
        linear = torch.optim.lr_scheduler.LinearLR(optimiser, start_factor=1 / warmup, total_iters=warmup - 1)
        scheduler = torch.optim.lr_scheduler.SequentialLR(optimiser, [linear, cosine], milestones=[warmup])
    else:
        scheduler = cosine
    for epoch in range(epochs):
        assert learning_rate(tc, epoch, epochs) == pytest.approx(optimiser.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        optimiser.step()
        scheduler.step()


# ------------------------------------------------------------------------------------------------- z-norm


def test_znorm_statistics_and_scores_by_hand(levelled, synth):
    """The stored training means and pair statistics, and the test scores, recomputed from the fold model."""
    exp = levelled["znorm"]
    cfg, _ = read_experiment(exp)
    model, payload = load_checkpoint(exp / "fold0" / CHECKPOINT_FILE)
    stats = payload["train_stats"]
    feats = open_features(cfg, synth.train)
    try:
        records = manifest_records(synth.train)
        identities = Folds.load(folds_path(synth.root, cfg.data.dataset)).train_identities(0)
        classes = {identity: i for i, identity in enumerate(identities)}
        emb = {}
        for m in ("voice", "face"):
            table = getattr(feats, m)
            sel = select_rows(table, records, set(identities), None, classes)
            emb[m] = embed_rows(model, m, table.rows(sel.rows)).double().numpy()
    finally:
        feats.close()
    vm, fm = emb["voice"].mean(axis=0), emb["face"].mean(axis=0)
    np.testing.assert_allclose(stats["voice_mean"].numpy(), vm, atol=1e-5)
    np.testing.assert_allclose(stats["face_mean"].numpy(), fm, atol=1e-5)
    rng = np.random.default_rng([cfg.score.znorm.seed, 0, 2])
    pv, pf = (rng.integers(len(emb[m]), size=500) for m in ("voice", "face"))

    def distance(v, f):
        v, f = v - stats["voice_mean"].double().numpy(), f - stats["face_mean"].double().numpy()
        return 1 - (v * f).sum(axis=1) / np.linalg.norm(v, axis=1) / np.linalg.norm(f, axis=1)

    d = distance(emb["voice"][pv], emb["face"][pf])
    assert stats["pair_mean"] == pytest.approx(d.mean(), abs=1e-5)
    assert stats["pair_std"] == pytest.approx(d.std(), abs=1e-5)
    voice, face = naive_trial_features(synth, synth.trials)
    with torch.inference_mode():
        ev = model.embed("voice", torch.from_numpy(voice)).double().numpy()
        ef = model.embed("face", torch.from_numpy(face)).double().numpy()
    expected = (distance(ev, ef) - stats["pair_mean"]) / stats["pair_std"]
    scores = score_trial_list(exp, synth.test_list)
    np.testing.assert_allclose([scores[t.key] for t in synth.trials], expected, atol=1e-5)


# ------------------------------------------------------------------------------------------------ levels


def test_score_levels_of_the_configurations(levelled):
    """ScoreConfig.level: plain, centre train + z-norm and S-norm 0; centre file 1; clusters 2; refinement 3."""
    expected = {name: level for name, (_, _, level) in INVARIANT.items()} | {"contrastive": 3}
    for name, exp in levelled.items():
        cfg, _ = read_experiment(exp)
        assert cfg.score.level == expected[name], name
        info = json.loads((exp / INFO_FILE).read_text())
        metrics = json.loads((exp / METRICS_FILE).read_text())
        assert info["score_level"] == expected[name]
        assert all(m["score_level"] == expected[name] for m in metrics["folds"].values())
        assert summary_row(name, metrics, 0.0)["level"] == expected[name]


def test_level_0_to_2_scores_ignore_how_the_file_pairs_its_other_trials(levelled, synth, base):
    """Re-pairing the voices of a file's other trials leaves its first trials' scores unchanged up to level 2;
    chaining-cluster refinement (level 3) moves them."""
    original = read_trials(synth.test_list)
    trials = [original[i] for i in np.random.default_rng(7).permutation(len(original))]  # both languages kept
    folder = base / "lists"
    folder.mkdir()
    listed = folder / "list.txt"
    write_trials(listed, trials)
    n = len(trials) - KEPT
    perms = [np.random.default_rng(seed).permutation(n) for seed in (0, 1)]
    # a transposition that gives one other trial the farthest voice-face pair of the others' media under the
    # contrastive model: the file's highest distance, which refinement gives cross-gender trials, moves
    cfg, info = read_experiment(levelled["contrastive"])
    feats = open_features(cfg, find_features_folder(synth.root, cfg.data.dataset, "test", info.weight_set))
    try:
        ts = TrialSet.build(trials, feats, str(listed))
    finally:
        feats.close()
    model, _ = load_checkpoint(levelled["contrastive"] / "fold0" / CHECKPOINT_FILE)
    full = cross_distances(model, "voice", embed_rows(model, "voice", ts.voice), embed_rows(model, "face", ts.face))
    others = full[np.ix_(ts.voice_of[KEPT:], ts.face_of[KEPT:])]
    i, j = divmod(int(others.argmax()), n)
    assert others[i, j] > full[ts.voice_of, ts.face_of].max()
    swap = np.arange(n)
    swap[[i, j]] = swap[[j, i]]
    perms.append(swap)
    lists = [repaired(trials, perm, folder / f"repaired{k}.txt") for k, perm in enumerate(perms)]
    for path in lists:  # the same media, each trial's face kept
        again = read_trials(path)
        assert sorted(t.voice for t in again) == sorted(t.voice for t in trials)
        assert [t.face for t in again] == [t.face for t in trials] and again[:KEPT] == trials[:KEPT]
    for name in INVARIANT:
        before = kept_scores(levelled[name], listed)
        for path in lists:
            np.testing.assert_array_equal(kept_scores(levelled[name], path), before, err_msg=f"{name}, {path.name}")
    before = kept_scores(levelled["contrastive"], listed)
    moved = max(np.abs(kept_scores(levelled["contrastive"], path) - before).max() for path in lists)
    assert moved > 0


# ---------------------------------------------------------------------------------------------- --pairwise


def test_pairwise_train_head_refuses_a_file_level_config_before_writing(synth, tmp_path):
    """fva train-head --pairwise with score.centre file: one line, exit 2, no experiment folder."""
    config = tmp_path / "file.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load(synth.config.read_text()), "score": {"centre": "file"}}))
    exp = tmp_path / "exp"
    assert_user_error(run_cli("train-head", "--pairwise", "--config", config, "--cache", synth.root, "--exp", exp,
                              "--fold", 0), "level 1", "--pairwise")
    assert not exp.exists()


def test_pairwise_refuses_level_2_scoring_and_submissions(levelled, synth, tmp_path):
    """fva score --pairwise and make_submission(max_level=0) refuse a level-2 experiment, writing nothing."""
    out = tmp_path / "scores.txt"
    assert_user_error(run_cli("score", "--pairwise", "--exp", levelled["cluster"], "--trials", synth.test_list,
                              "--out", out), "level 2", "--pairwise")
    assert not out.exists()
    trials_dir = tmp_path / "data"
    trials_dir.mkdir()
    for lang in LANGUAGES:
        write_trials(trials_dir / f"{lang}_test.txt", [t for t in synth.trials if t.voice.startswith(lang)])
    files = {f"{lang}_{cond}": str(levelled["plain"]) for lang in LANGUAGES for cond in ("heard", "unheard")}
    files["German_unheard"] = str(levelled["cluster"])
    zip_path = tmp_path / "sub.zip"
    with pytest.raises(FvaError, match="German_unheard scores at level 2") as err:
        make_submission({"trials": str(trials_dir), "files": files}, zip_path, max_level=0)
    assert "\n" not in str(err.value)
    assert not zip_path.exists() and not levels_path(zip_path).exists()
    files["German_unheard"] = str(levelled["plain"])  # level 0 everywhere: made, its levels recorded
    made = make_submission({"trials": str(trials_dir), "files": files}, zip_path, max_level=0)
    levels = json.loads(levels_path(made).read_text())
    assert levels["level"] == 0 and levels["allowed"] == 0 and set(levels["files"].values()) == {0}


def test_pairwise_trains_and_scores_a_level_0_experiment(synth, tmp_path):
    """--pairwise with plain scores: trained and scored; experiment.json and metrics record level 0."""
    exp = tmp_path / "exp"
    result = run_cli("train-head", "--pairwise", "--config", synth.config, "--cache", synth.root, "--exp", exp,
                     "--fold", 0, "--epochs", 1)
    assert result.exit_code == 0, result.output
    assert json.loads((exp / INFO_FILE).read_text())["score_level"] == 0
    assert json.loads((exp / "fold0" / METRICS_FILE).read_text())["score_level"] == 0
    assert read_experiment(exp)[0].score.max_level == 0
    out = tmp_path / "scores.txt"
    result = run_cli("score", "--pairwise", "--exp", exp, "--trials", synth.test_list, "--out", out)
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == len(synth.trials)


# ------------------------------------------------------------------------------------------- test EER


def test_cca_and_bridge_beat_fame2026_on_the_test_trials(fame, cca_runs, bridge, synth):
    """Test EER (the test list's truth from the generator): cca and bridge below fame2026."""
    labels = truth_labels(synth)
    assert 0 < labels.sum() < len(labels)
    eers = {name: list_eer(synth, exp, labels) for name, exp in (("fame2026", fame), ("cca", cca_runs[0]),
                                                                 ("bridge", bridge))}
    print("test EER %: " + ", ".join(f"{name} {eer:.2f}" for name, eer in eers.items()))
    assert eers["cca"] < eers["fame2026"] and eers["bridge"] < eers["fame2026"]


def test_polarisation_after_a_normalisation_is_level_3():
    """Polarisation scales about min(0, the lowest listed distance): level 0 on the systems' non-negative
    distances, level 3 once S-norm or z-norm made them signed (the lowest is then the list's)."""
    from fva.heads.config import load_config

    polarise = {"polarise": {"enabled": True}}
    assert load_config(overrides={"score": polarise}).score.level == 0
    for normalise in ({"snorm": {"enabled": True}}, {"znorm": {"enabled": True}}):
        cfg = load_config(overrides={"score": {**polarise, **normalise}})
        assert cfg.score.level == 3
    with pytest.raises(FvaError, match="score.polarise scores at level 3"):
        load_config(overrides={"score": {**polarise, "snorm": {"enabled": True}, "max_level": 0}})


def test_the_verifier_refuses_an_experiment_that_reads_other_test_samples(levelled):
    """FaceVoiceVerifier (fva verify, the demo page) scores each pair alone: a level-1 or level-2 experiment is
    one line before any encoder loads."""
    from fva.api import FaceVoiceVerifier

    for name in ("file", "cluster"):
        with pytest.raises(FvaError, match="verification scores each pair alone") as err:
            FaceVoiceVerifier.from_experiment(levelled[name])
        assert "\n" not in str(err.value)
