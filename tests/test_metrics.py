"""Metrics beyond the EER (minDCF, actDCF, Cllr, min Cllr, breakdowns, the identity bootstrap), calibration and
its thresholds, each against a direct reference; ``fva evaluate``'s new lines and JSON; calibration in the fold
checkpoints; ``--seeds`` for train-head and compare."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from conftest import assert_user_error
from fva.data.records import Manifest, MediaRecord
from fva.data.trials import read_labels
from fva.errors import FvaError
from fva.evaluate.calibration import Calibration, experiment_calibration
from fva.evaluate.eer import compute_eer, eer_threshold
from fva.evaluate.metrics import (DEFAULT_OPERATING_POINTS, OperatingPoint, act_dcf, bootstrap_eer, breakdown, cllr,
                                  error_rates, min_cllr, min_dcf, parse_operating_points, trial_metrics)
from fva.evaluate.scores import align, read_scores
from fva.heads.experiment import load_checkpoint
from fva.synth.testing import run_cli as run

POINTS = [OperatingPoint(0.01), OperatingPoint(0.05), OperatingPoint(0.5), OperatingPoint(0.2, c_miss=10, c_fa=1)]


def random_trials(seed: int, n: int = 300, sep: float = 0.8, decimals: int | None = 2):
    """Random labels and distances (rounded, so that ties occur)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    y[:2] = [0, 1]
    d = rng.normal(size=n) - sep * y
    return y, (np.round(d, decimals) if decimals is not None else d)


# ------------------------------------------------------------------------------------------------ 1. DCF


def brute_min_dcf(y, d, p: OperatingPoint) -> float:
    """Every threshold in turn (accept nothing, then "distance <= t" for each distinct distance), by loops."""
    best = math.inf
    n_tar, n_non = int(sum(y)), int(len(y) - sum(y))
    for t in [-math.inf] + sorted(set(d.tolist())):
        miss = sum(1 for yi, di in zip(y, d) if yi == 1 and not di <= t) / n_tar
        fa = sum(1 for yi, di in zip(y, d) if yi == 0 and di <= t) / n_non
        cost = (p.c_miss * p.p_target * miss + p.c_fa * (1 - p.p_target) * fa)
        best = min(best, cost / min(p.c_miss * p.p_target, p.c_fa * (1 - p.p_target)))
    return best


def test_min_dcf_by_hand():
    # P_target 0.5, equal costs: normalised DCF = P_miss + P_fa. Accepting up to .5 misses no same-person trial
    # and accepts one of three different-person ones (.3): 1/3, the lowest of all thresholds.
    y, d = [1, 1, 0, 1, 0, 0], [.1, .4, .3, .5, .6, .9]
    assert min_dcf(y, d, OperatingPoint(0.5)) == pytest.approx(1 / 3)
    # P_target 0.01: a false accept costs 99 times a miss, so accept only .1 (miss 2/3, no false accept):
    # 0.01 * 2/3 / 0.01
    assert min_dcf(y, d, OperatingPoint(0.01)) == pytest.approx(2 / 3)
    t, miss, fa = error_rates(y, d)
    assert t.tolist() == [-math.inf, .1, .3, .4, .5, .6, .9]
    assert miss.tolist() == pytest.approx([1, 2 / 3, 2 / 3, 1 / 3, 0, 0, 0])
    assert fa.tolist() == pytest.approx([0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_dcf_against_a_sweep_of_every_threshold(seed):
    y, d = random_trials(seed)
    for p in POINTS:
        assert min_dcf(y, d, p) == pytest.approx(brute_min_dcf(y, d, p), abs=1e-12)


def test_act_dcf_by_hand_and_against_direct_decisions():
    # llr threshold at P_target 0.5 is 0: same-person llrs 2, -1 (one miss of two), different 0.5, -3 (one false
    # accept of two): 0.5 + 0.5
    assert act_dcf([1, 1, 0, 0], [2.0, -1.0, 0.5, -3.0], OperatingPoint(0.5)) == pytest.approx(1.0)
    assert OperatingPoint(0.01).bayes_llr_threshold == pytest.approx(math.log(99))
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(100, int), np.zeros(150, int)]
    llr = rng.normal(size=250) * 3 + 2 * y
    for p in POINTS:
        thr = math.log(p.c_fa * (1 - p.p_target) / (p.c_miss * p.p_target))
        miss = np.mean(llr[y == 1] <= thr)
        fa = np.mean(llr[y == 0] > thr)
        ref = (p.c_miss * p.p_target * miss + p.c_fa * (1 - p.p_target) * fa) / min(p.c_miss * p.p_target,
                                                                                     p.c_fa * (1 - p.p_target))
        assert act_dcf(y, llr, p) == pytest.approx(ref)
        assert act_dcf(y, llr, p) >= min_dcf(y, -llr, p) - 1e-12  # min over thresholds of the same order


def test_operating_points_and_their_errors():
    assert [p.p_target for p in DEFAULT_OPERATING_POINTS] == [0.01, 0.05]
    assert all(p.c_miss == p.c_fa == 1 for p in DEFAULT_OPERATING_POINTS)
    assert [p.name for p in parse_operating_points("0.01", 10, 1)] == ["p0.01-cmiss10-cfa1"]
    for bad in ("x", "", "0,0.5", "1.5"):
        with pytest.raises(FvaError):
            parse_operating_points(bad)


# ------------------------------------------------------------------------------------------------ 2. Cllr


def test_cllr_formula():
    assert cllr([1, 0], [0.0, 0.0]) == pytest.approx(1.0)  # LLR 0 everywhere: one bit
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(40, int), np.zeros(60, int)]
    llr = rng.normal(size=100) * 2 + y
    ref = 0.5 * (np.mean(np.log2(1 + np.exp(-llr[y == 1]))) + np.mean(np.log2(1 + np.exp(llr[y == 0]))))
    assert cllr(y, llr) == pytest.approx(ref, rel=1e-12)


def reference_min_cllr(y, d) -> float:
    """PAV by scikit-learn's IsotonicRegression on the sorted scores, posteriors clipped away from 0 and 1, the
    trials' own prior taken out, then the Cllr formula with log2."""
    score = -np.asarray(d, dtype=float)
    order = np.argsort(score, kind="stable")
    p = np.empty(len(y))
    p[order] = IsotonicRegression().fit(score[order], np.asarray(y, float)[order]).predict(score[order])
    p = np.clip(p, 1e-300, 1 - 1e-16)
    prior = np.mean(y)
    llr = np.log(p / (1 - p)) - np.log(prior / (1 - prior))
    y = np.asarray(y)
    return 0.5 * (np.mean(np.log2(1 + np.exp(-llr[y == 1]))) + np.mean(np.log2(1 + np.exp(llr[y == 0]))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_cllr_against_isotonic_reference_and_below_cllr(seed):
    y, d = random_trials(seed)
    m = min_cllr(y, d)
    assert m == pytest.approx(reference_min_cllr(y, d), abs=1e-9)
    assert 0 < m < 1
    cal = Calibration.fit(y, d)
    assert m <= cllr(y, cal.llr(d)) + 1e-12
    for a, b in ((-1.0, 0.0), (-3.0, 1.0), (-0.2, -0.5)):  # any order-preserving affine LLRs
        assert m <= cllr(y, a * d + b) + 1e-12


def test_min_cllr_by_hand():
    assert min_cllr([1, 1, 0, 0], [.1, .2, .3, .4]) == 0.0  # separated: pure bins, LLRs +-inf cost nothing
    assert min_cllr([1, 0, 1, 0], [.5, .5, .5, .5]) == pytest.approx(1.0)  # all tied: the prior, LLR 0


# ------------------------------------------------------------------------------------------------ 3. calibration


def test_calibration_llrs_match_scikit_learns_logistic_regression():
    y, d = random_trials(7, n=400, decimals=None)
    cal = Calibration.fit(y, d)
    ref = LogisticRegression(C=np.inf, max_iter=10_000, tol=1e-10).fit(d[:, None], y)
    prior = y.mean()
    ref_llr = ref.decision_function(d[:, None]) - math.log(prior / (1 - prior))
    np.testing.assert_allclose(cal.llr(d), ref_llr, atol=1e-3)
    np.testing.assert_allclose(cal.probability(d, prior), ref.predict_proba(d[:, None])[:, 1], atol=1e-4)
    assert cal.prior == pytest.approx(prior) and cal.n_target == y.sum() and cal.n_nontarget == len(y) - y.sum()
    # the LLRs the regression gives are the best affine ones: nudging slope or offset never lowers the Cllr
    best = cllr(y, cal.llr(d))
    for da, db in ((0.05, 0), (-0.05, 0), (0, 0.05), (0, -0.05)):
        assert cllr(y, (cal.a + da) * d + cal.b + db - math.log(prior / (1 - prior))) >= best - 1e-9


def test_calibration_thresholds():
    y, d = random_trials(8, n=500, decimals=2)
    cal = Calibration.fit(y, d)
    assert cal.threshold_for("eer") == eer_threshold(y, d)
    non = d[y == 0]
    for far in (0.0, 0.01, 0.1, 0.5):
        t = cal.threshold_for("far", far)
        assert np.mean(non <= t) <= far + 1e-12
        bigger = non[non > t]  # accepting the next different-person distance would exceed the rate
        assert len(bigger) == 0 or np.mean(non <= bigger.min()) > far
    for prior in (0.01, 0.5, 0.9):
        t = cal.threshold_for("prior", prior)
        assert cal.llr(t) == pytest.approx(-math.log(prior / (1 - prior)), abs=1e-9)
        assert cal.probability(t - 1e-6, prior) > 0.5 > cal.probability(t + 1e-6, prior)
    with pytest.raises(FvaError, match="threshold kind"):
        cal.threshold_for("median")
    with pytest.raises(FvaError, match="slope"):
        Calibration.fit([1, 1, 0, 0], [.9, .8, .1, .2]).threshold_for("prior", 0.5)


def test_calibration_round_trips_through_a_weights_only_checkpoint(tmp_path):
    y, d = random_trials(9, n=60)
    cal = Calibration.fit(y, d)
    torch.save({"calibration": cal.to_dict()}, tmp_path / "c.pt")
    back = torch.load(tmp_path / "c.pt", weights_only=True)["calibration"]
    assert Calibration.from_dict(back) == cal
    assert "nontarget" not in cal.summary()


# ------------------------------------------------------------------------------------------------ 4. groups, bootstrap


def test_breakdown_is_the_metrics_of_each_group():
    y, d = random_trials(4, n=200)
    groups = np.where(np.arange(200) % 3 == 0, "female", "male").astype(object)
    groups[5] = None  # unknown: left out
    out = breakdown(y, d, list(groups))
    assert set(out) == {"female", "male"}
    for g in ("female", "male"):
        mask = groups == g
        assert out[g] == trial_metrics(y[mask], d[mask])
        assert out[g]["eer"] == compute_eer(y[mask], d[mask])
    one_class = breakdown([1, 0, 1], [.1, .2, .3], ["a", "a", "b"])
    assert one_class["b"] == {"trials": 1, "skipped": "one class only"}


def identity_world(seed: int = 0, identities: int = 20, per_identity: int = 50):
    """Trials whose errors are shared within an identity: a 'good' identity's trials are all easy, a 'bad'
    one's all reversed. Resampling identities moves the EER far more than resampling trials."""
    rng = np.random.default_rng(seed)
    ys, ds, gs = [], [], []
    for i in range(identities):
        good = i % 5 != 0  # 16 good, 4 bad
        y = np.arange(per_identity) % 2
        centre = np.where(y == 1, 0.3, 0.7) if good else np.where(y == 1, 0.7, 0.3)
        ys.append(y)
        ds.append(centre + rng.normal(0, 0.05, per_identity))
        gs += [f"id{i:02d}"] * per_identity
    return np.concatenate(ys), np.concatenate(ds), gs


def test_bootstrap_resamples_identities_seeded_and_covers_the_eer():
    y, d, groups = identity_world()
    a = bootstrap_eer(y, d, groups, n_resamples=300, seed=1)
    b = bootstrap_eer(y, d, groups, n_resamples=300, seed=1)
    assert a == b  # same seed, same interval
    assert bootstrap_eer(y, d, groups, n_resamples=300, seed=2) != a
    assert a.unit == "identities" and a.n_groups == 20 and a.eer == compute_eer(y, d)
    assert a.low <= a.eer <= a.high
    trials = bootstrap_eer(y, d, None, n_resamples=300, seed=1)
    assert trials.unit == "trials" and trials.n_groups == len(y)
    assert trials.low <= trials.eer <= trials.high
    assert a.std > 3 * trials.std  # per-identity resampling sees the identities' shared errors
    assert (a.high - a.low) > 2 * (trials.high - trials.low)


def test_bootstrap_interval_by_hand_and_errors():
    # each identity holds one same and one different trial, all separated: every resample has EER 0
    ci = bootstrap_eer([1, 0] * 10, [.1, .9] * 10, [i // 2 for i in range(20)], n_resamples=20,
                       percentiles=(5, 95))
    assert (ci.low, ci.high, ci.percentiles, ci.n_resamples) == (0.0, 0.0, (5, 95), 20)
    with pytest.raises(FvaError, match="at least two"):
        bootstrap_eer([1, 0], [.1, .9], ["a", "a"])
    with pytest.raises(FvaError, match="resamples"):
        bootstrap_eer([1, 0], [.1, .9], n_resamples=0)
    with pytest.raises(FvaError, match="group labels"):
        bootstrap_eer([1, 0], [.1, .9], ["a"])


# ------------------------------------------------------------------------------------------------ 5. fva evaluate


@pytest.fixture
def scored(tmp_path):
    """A trial list X.txt with X_labels.txt, a score file, and a manifest with identity, gender and language."""
    y, d, groups = identity_world(3, identities=10, per_identity=12)
    trials, labels, scores, records = [], [], [], {}
    for i, (yi, di, g) in enumerate(zip(y, d, groups)):
        lang = "English" if int(g[2:]) % 2 else "German"
        voice = f"voices/{g}/{lang}/v/{i % 3:05d}"
        records[voice] = MediaRecord(key=voice, identity=g, language=lang, modality="voice", path=voice + ".wav",
                                     gender="female" if int(g[2:]) < 5 else "male")
        trials.append(f"k{i:04d} {voice}.wav faces/{g}/{lang}/v/000000007.jpg\n")
        labels.append(f"k{i:04d} {int(yi)}\n")
        scores.append(f"k{i:04d} {float(di)!r}\n")
    (tmp_path / "X.txt").write_text("".join(trials))
    (tmp_path / "X_labels.txt").write_text("".join(labels))
    (tmp_path / "s.txt").write_text("".join(scores))
    Manifest("mavceleb-v3", "/", "train", "full", list(records.values())).write(tmp_path / "m.jsonl")
    return tmp_path, y, d, groups


def test_evaluate_text_and_json(scored):
    folder, y, d, groups = scored
    args = ["evaluate", "--scores", folder / "s.txt", "--labels", folder / "X_labels.txt", "--bootstrap", "200"]
    text = run(*args)
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0] == (f"EER {compute_eer(y, d):.2f}% over {len(y)} trials ({y.sum()} same, {len(y) - y.sum()} "
                        f"different); threshold {eer_threshold(y, d):.4f}")
    assert lines[1].startswith("EER 95% interval [") and "200 bootstrap resamples of" in lines[1]
    assert "voice clips" in lines[1]  # no manifest: the trial list's voice clips are resampled
    assert lines[2] == (f"minDCF {min_dcf(y, d, OperatingPoint(0.01)):.4f} (P_target 0.01), "
                        f"{min_dcf(y, d, OperatingPoint(0.05)):.4f} (P_target 0.05)")
    assert lines[3] == f"min Cllr {min_cllr(y, d):.4f} bits (Cllr and actDCF need LLRs: --calibration EXP)"
    assert len(lines) == 4

    out = json.loads(run(*args, "--json", "--manifest", folder / "m.jsonl").output)
    assert out["eer"] == compute_eer(y, d) and out["threshold"] == eer_threshold(y, d)
    assert out["min_dcf"] == {p.name: min_dcf(y, d, p) for p in DEFAULT_OPERATING_POINTS}
    assert out["min_cllr"] == min_cllr(y, d) and "cllr" not in out and "act_dcf" not in out
    ci = bootstrap_eer(y, d, groups, n_resamples=200, seed=0)
    assert out["eer_ci"]["unit"] == "identities" and out["eer_ci"]["n_groups"] == 10
    assert (out["eer_ci"]["low"], out["eer_ci"]["high"]) == (ci.low, ci.high)
    assert set(out["by_gender"]) == {"female", "male"} and set(out["by_language"]) == {"English", "German"}
    female = np.array([int(g[2:]) < 5 for g in groups])
    assert out["by_gender"]["female"]["eer"] == compute_eer(y[female], d[female])

    text = run(*args, "--manifest", folder / "m.jsonl", "--bootstrap", "0", "--p-target", "0.1")
    lines = text.output.splitlines()
    assert lines[1] == f"minDCF {min_dcf(y, d, OperatingPoint(0.1)):.4f} (P_target 0.1)"
    assert [line.split(":")[0] for line in lines[3:]] == ["gender female", "gender male", "language English",
                                                          "language German"]


def test_evaluate_user_errors(scored):
    folder = scored[0]
    base = ["evaluate", "--scores", folder / "s.txt", "--labels", folder / "X_labels.txt"]
    assert_user_error(run(*base, "--p-target", "2"), "P_target 2")
    assert_user_error(run(*base, "--calibration", folder), "not an fva experiment")
    (folder / "other.txt").write_text("z 1 2\n")
    assert_user_error(run(*base, "--trials", folder / "other.txt"), "not in this trial list")


# ------------------------------------------------------------------------------------------------ 6. training


@pytest.fixture(scope="module")
def two_seeds(synth):
    exp = synth.base / "exp_seeds"
    result = run("train-head", "--fold", "0,1", "--config", synth.config, "--cache", synth.root, "--exp", exp,
                 "--epochs", "2", "--seeds", "0,1")
    assert result.exit_code == 0, result.output
    return exp, result.output


def test_train_head_keeps_a_calibration_in_every_fold_checkpoint(two_seeds):
    exp = two_seeds[0] / "seed0"
    pooled_y, pooled_d = [], []
    for fold in (0, 1):
        folder = exp / f"fold{fold}"
        _, payload = load_checkpoint(folder / "checkpoint.pt")  # weights_only=True inside
        cal = Calibration.from_dict(payload["calibration"])
        ys, ds = [], []
        for lang in ("English", "German"):  # the full split: both heard
            _, y, d = align(read_scores(folder / f"dev_scores_{lang}.txt"),
                            read_labels(folder / f"dev_{lang}_labels.txt"))
            ys.append(y)
            ds.append(d)
        y, d = np.concatenate(ys), np.concatenate(ds)
        pooled_y.append(y)
        pooled_d.append(d)
        assert cal == Calibration.fit(y, d)
        assert payload["threshold"] == cal.eer_threshold == pytest.approx(eer_threshold(y, d))
        metrics = json.loads((folder / "metrics.json").read_text())
        summary = metrics["calibration"]
        assert summary["a"] == cal.a and summary["b"] == cal.b and "nontarget" not in summary
        assert summary["cllr"] == pytest.approx(cllr(y, cal.llr(d)))
        assert summary["min_cllr"] == pytest.approx(min_cllr(y, d)) and summary["min_cllr"] <= summary["cllr"]
    assert experiment_calibration(exp) == Calibration.fit(np.concatenate(pooled_y), np.concatenate(pooled_d))


def test_evaluate_with_an_experiments_calibration_and_identities(two_seeds):
    exp = two_seeds[0] / "seed0"
    scores, labels = exp / "fold0" / "dev_scores_English.txt", exp / "fold0" / "dev_English_labels.txt"
    result = run("evaluate", "--scores", scores, "--labels", labels, "--calibration", exp, "--json",
                 "--bootstrap", "50")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    _, y, d = align(read_scores(scores), read_labels(labels))
    llr = experiment_calibration(exp).llr(d)
    assert out["cllr"] == pytest.approx(cllr(y, llr)) and out["min_cllr"] <= out["cllr"] + 1e-12
    assert out["act_dcf"]["p0.01"] == pytest.approx(act_dcf(y, llr, OperatingPoint(0.01)))
    assert out["eer_ci"]["unit"] == "identities"  # the experiment's own manifest, found from fold0/
    assert out["manifest"].endswith("manifest.jsonl")
    text = run("evaluate", "--scores", scores, "--labels", labels, "--calibration", exp, "--bootstrap", "50")
    lines = text.output.splitlines()
    assert lines[3].startswith("actDCF ") and lines[4].startswith("Cllr ")
    assert "resamples of" in lines[1] and "identities" in lines[1]


def test_seeds_give_one_experiment_each_and_their_mean(two_seeds, synth):
    exp, output = two_seeds
    summary = json.loads((exp / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1]
    per = [json.loads((exp / f"seed{k}" / "metrics.json").read_text()) for k in (0, 1)]
    for k, m in zip((0, 1), per):
        assert json.loads(json.dumps(summary["per_seed"][str(k)])) == m
        assert f"seed: {k}" in (exp / f"seed{k}" / "config.yaml").read_text()
    for lang in ("English", "German"):
        values = [m["mean_heard"][lang] for m in per]
        s = summary["mean_heard"][lang]
        assert s["mean"] == pytest.approx(np.mean(values)) and s["std"] == pytest.approx(np.std(values, ddof=1))
        assert (s["min"], s["max"]) == (min(values), max(values))
        assert f"{lang} {np.mean(values):.2f}% ± " in output
    assert per[0] != per[1]  # the seeds train differently
    # one seed in --seeds is a plain run of that seed
    single = synth.base / "exp_one_seed"
    result = run("train-head", "--fold", "0", "--config", synth.config, "--cache", synth.root, "--exp", single,
                 "--epochs", "2", "--seeds", "1")
    assert result.exit_code == 0, result.output
    assert not (single / "seeds.json").exists() and (single / "fold0" / "checkpoint.pt").is_file()
    assert json.loads((single / "fold0" / "metrics.json").read_text()) == \
        json.loads((exp / "seed1" / "fold0" / "metrics.json").read_text())
    assert_user_error(run("train-head", "--config", synth.config, "--cache", synth.root, "--exp", single,
                          "--seeds", "0,x"), "--seeds")


def compare_fame2026(synth, tmp_path, *options):
    """`fva compare --systems fame2026` over the synthetic cache with 2 epochs; its output folder and result."""
    out = tmp_path / "cmp"
    config = tmp_path / "base.yaml"
    config.write_text(synth.config.read_text().replace("epochs: 6", "epochs: 2"))
    return out, run("compare", "--systems", "fame2026", "--config", config, "--cache", synth.root, "--out", out,
                    *options)


def test_compare_with_seeds(synth, tmp_path):
    out, result = compare_fame2026(synth, tmp_path, "--fold", "0", "--seeds", "0,1")
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "compare.json").read_text())
    per = [json.loads((out / f"seed{k}" / "fame2026" / "metrics.json").read_text()) for k in (0, 1)]
    heard = [np.mean(list(m["mean_heard"].values())) for m in per]
    assert rows[0]["seeds"] == [0, 1] and rows[0]["heard"] == pytest.approx(np.mean(heard))
    assert rows[0]["heard_spread"]["std"] == pytest.approx(np.std(heard, ddof=1))
    assert f"| fame2026 | {np.mean(heard):.2f} ± " in result.output and "| seeds |" in result.output


def naive_identity_bootstrap(exp, folds, resamples: int, seed: int) -> tuple[float, float]:
    """The documented procedure written out plainly: the folds' heard dev trials pooled in file order, grouped by
    their voice's identity (groups in sorted order), ``resamples`` draws of as many identities with replacement
    from one seeded generator (a draw holding one class only is drawn again), the organisers' EER of each
    draw (sklearn's ROC, brentq), and the 2.5th and 97.5th percentiles."""
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq
    from sklearn.metrics import roc_curve

    from fva.data.mavceleb import media_key
    from fva.data.trials import read_labels, read_trials
    from fva.evaluate.scores import read_scores
    from fva.layout import manifest_records

    info = json.loads((exp / "experiment.json").read_text())
    records = manifest_records(info["train_features"])
    trials = []  # (label, distance, identity)
    for fold in folds:
        for lang in info["heard"]:
            voice = {t.key: t.voice for t in read_trials(exp / fold / f"dev_{lang}.txt")}
            y, d = read_labels(exp / fold / f"dev_{lang}_labels.txt"), read_scores(exp / fold / f"dev_scores_{lang}.txt")
            trials += [(y[k], d[k], records[media_key(voice[k])].identity) for k in y]
    identities = sorted({t[2] for t in trials})
    members = [[i for i, t in enumerate(trials) if t[2] == who] for who in identities]

    def eer(rows):
        fpr, tpr, _ = roc_curve([r[0] for r in rows], [-r[1] for r in rows])
        return 100 * brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)

    rng, eers = np.random.default_rng(seed), []
    while len(eers) < resamples:
        drawn = [trials[i] for g in rng.integers(len(identities), size=len(identities)) for i in members[g]]
        if 0 < sum(r[0] for r in drawn) < len(drawn):
            eers.append(eer(drawn))
    low, high = np.percentile(eers, [2.5, 97.5])
    return float(low), float(high)


def test_compare_reports_the_pooled_dev_eer_with_its_interval_over_identities(synth, tmp_path):
    """fva compare: each system's heard dev trials of all folds pooled (each scored by the fold model that never
    saw its identities), their EER as the organisers compute it, and a bootstrap interval over identities."""
    from fva.data.trials import read_labels
    from fva.evaluate.eer import compute_eer
    from fva.evaluate.report import experiment_dev_interval
    from fva.evaluate.scores import read_scores

    out, result = compare_fame2026(synth, tmp_path, "--fold", "0,1", "--bootstrap", "200")
    assert result.exit_code == 0, result.output
    row = json.loads((out / "compare.json").read_text())[0]
    exp = out / "fame2026"
    labels, distances = [], []
    for fold in ("fold0", "fold1"):
        for lang in json.loads((exp / "experiment.json").read_text())["heard"]:
            y, d = read_labels(exp / fold / f"dev_{lang}_labels.txt"), read_scores(exp / fold / f"dev_scores_{lang}.txt")
            labels += [y[k] for k in y]
            distances += [d[k] for k in y]
    pooled = row["pooled_heard"]
    assert pooled["eer"] == pytest.approx(compute_eer(np.array(labels), np.array(distances)))
    assert pooled["unit"] == "identities" and pooled["low"] <= pooled["eer"] <= pooled["high"]
    assert pooled == json.loads(json.dumps(experiment_dev_interval(exp, 200, 0).to_dict()))  # seeded: the same again
    low, high = naive_identity_bootstrap(exp, ("fold0", "fold1"), 200, seed=0)
    assert (pooled["low"], pooled["high"]) == (pytest.approx(low, abs=1e-6), pytest.approx(high, abs=1e-6))
    assert f"{pooled['eer']:.2f} [{pooled['low']:.2f}, {pooled['high']:.2f}]" in result.output
