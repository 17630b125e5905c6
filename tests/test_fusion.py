"""Score fusion in submission plans: seeds of one system, and weights fitted on dev trials by logistic
regression (checked against scikit-learn's own fit), applied as a weighted sum of z-normalised scores."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from fva.errors import FvaError
from fva.experiment import CONFIG_FILE, Experiment, ExperimentInfo, ModalityFeatures
from fva.heads.config import load_config
from fva.heads import plan as plan_module
from fva.heads.postprocess import fit_fusion_weights, weighted_znorm_fusion, znorm_fusion

LANGS = ("English", "German")
FOLDS = 3


def write_experiment(exp: Path, seed: int, quality: float, trial_seed: int = 0) -> Path:
    """An experiment folder as ``fva train-head`` lays out its dev trials: experiment.json and per fold
    ``dev_<Lang>.txt``, ``dev_<Lang>_labels.txt``, ``dev_scores_<Lang>.txt`` (distances: lower for same-person
    trials by ``quality``, with noise of this seed)."""
    exp.mkdir(parents=True)
    features = ModalityFeatures(["speaker-ecapa"], [4], {})
    Experiment(exp, ExperimentInfo.new(cache="cache", dataset="mavceleb-v3", weight_set="full", train_features="f",
                                       heard=["English"], unheard=[], folds=FOLDS, voice=features, face=features,
                                       encoders_unheard=None, fine_tuned=True)).write()
    load_config(overrides={"seed": seed}).dump(exp / CONFIG_FILE)
    trials = np.random.default_rng(trial_seed)
    noise = np.random.default_rng(1000 + seed + int(quality * 100))
    for k in range(FOLDS):
        fold = exp / f"fold{k}"
        fold.mkdir()
        for lang in LANGS:
            n = 40
            labels = trials.integers(0, 2, n)
            labels[:2] = (0, 1)
            keys = [f"{lang[:2]}{k}_{i:03d}" for i in range(n)]
            (fold / f"dev_{lang}.txt").write_text("".join(f"{key} v/{key}.wav f/{key}.jpg\n" for key in keys))
            (fold / f"dev_{lang}_labels.txt").write_text("".join(f"{key} {y}\n" for key, y in zip(keys, labels)))
            dist = 3.0 + 2 * k - quality * labels + noise.normal(0, 1, n)
            (fold / f"dev_scores_{lang}.txt").write_text("".join(f"{key} {d:.9f}\n" for key, d in zip(keys, dist)))
    return exp


def write_seeds(exp: Path, seeds=(0, 1, 2), quality: float = 1.0) -> Path:
    """What ``fva train-head --seeds`` writes: seed<k>/ experiments and seeds.json, no experiment of its own."""
    for s in seeds:
        write_experiment(exp / f"seed{s}", s, quality)
    (exp / "seeds.json").write_text(json.dumps({"seeds": list(seeds)}))
    return exp


@pytest.fixture
def trials_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    for lang in LANGS:
        (root / f"{lang}_test.txt").write_text("".join(f"{lang[:2]}{i} v/{i}.wav f/{i}.jpg\n" for i in range(6)))
    return root


def fake_scores(exp, trials_path, cache_root=None, **_) -> dict[str, float]:
    """Test-list distances that depend on the experiment folder."""
    keys = [line.split()[0] for line in Path(trials_path).read_text().splitlines()]
    rng = np.random.default_rng(abs(hash(str(exp))) % 2**32)
    return {k: float(v) for k, v in zip(keys, rng.normal(5, 2, len(keys)))}


def read_zip(path: Path) -> dict[str, dict[str, float]]:
    with zipfile.ZipFile(path) as zf:
        return {name: {k: float(v) for k, v in (line.split() for line in zf.read(name).decode().splitlines())}
                for name in zf.namelist()}


def by_hand_dev(exps: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Every fold's and language's dev list, each z-normalised per experiment with numpy, concatenated."""
    zs, ys = [], []
    for k in range(FOLDS):
        for lang in LANGS:
            fold = f"fold{k}"
            lab = dict(line.split() for line in (exps[0] / fold / f"dev_{lang}_labels.txt").read_text().splitlines())
            cols = []
            for exp in exps:
                sc = dict(line.split() for line in (exp / fold / f"dev_scores_{lang}.txt").read_text().splitlines())
                x = np.array([float(sc[key]) for key in lab])
                cols.append((x - x.mean()) / x.std())
            zs.append(np.stack(cols, 1))
            ys.append(np.array([int(v) for v in lab.values()]))
    return np.concatenate(zs), np.concatenate(ys)


# --------------------------------------------------------------------------------------------------- seeds
def test_seed_folder_expands_to_its_seeds_and_fuses(tmp_path, trials_dir, monkeypatch):
    seeds = write_seeds(tmp_path / "exp" / "full-seeds", seeds=(0, 2, 10))
    plain = write_experiment(tmp_path / "exp" / "plain", 0, 1.0)
    assert plan_module.seed_experiments(seeds) == [seeds / "seed0", seeds / "seed2", seeds / "seed10"]
    assert plan_module.seed_experiments(plain) == []
    calls = []

    def scored(exp, trials, cache=None, **_):
        calls.append(str(exp))
        return fake_scores(exp, trials)

    monkeypatch.setattr(plan_module, "score_trial_list", scored)
    files = {"English_heard": str(seeds), "English_unheard": str(plain),
             "German_heard": [str(plain), {"exp": str(seeds), "cache": "c"}], "German_unheard": str(plain)}
    written = read_zip(plan_module.make_submission({"trials": str(trials_dir), "files": files}, tmp_path / "s.zip"))
    english = trials_dir / "English_test.txt"
    expected = znorm_fusion([fake_scores(seeds / f"seed{s}", english) for s in (0, 2, 10)])
    assert written["sub_score_English_heard.txt"] == pytest.approx(expected, abs=1e-6)
    assert written["sub_score_English_unheard.txt"] == pytest.approx(fake_scores(plain, english), abs=1e-6)
    german = trials_dir / "German_test.txt"
    expected = znorm_fusion([fake_scores(e, german) for e in [plain] + [seeds / f"seed{s}" for s in (0, 2, 10)]])
    assert written["sub_score_German_heard.txt"] == pytest.approx(expected, abs=1e-6)
    assert plan_module.entry_experiments("x", {"exp": str(seeds), "cache": "c"}, None) == [
        (str(seeds / f"seed{s}"), "c") for s in (0, 2, 10)]


# -------------------------------------------------------------------------------------------------- logistic
def test_logistic_weights_are_scikit_learns_fit_and_fuse_as_a_weighted_sum(tmp_path, trials_dir, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    good = write_experiment(tmp_path / "good", 0, 2.5)
    weak = write_experiment(tmp_path / "weak", 0, 0.4)
    seeds = write_seeds(tmp_path / "seeds", seeds=(0, 1), quality=1.2)
    exps = [good, weak, seeds / "seed0", seeds / "seed1"]

    z, y = plan_module.dev_fusion_trials([str(e) for e in exps])
    z_hand, y_hand = by_hand_dev(exps)
    np.testing.assert_allclose(z, z_hand, atol=1e-9)
    np.testing.assert_array_equal(y, y_hand)
    assert len(y) == FOLDS * len(LANGS) * 40
    reference = LogisticRegression().fit(z_hand, y_hand)
    weights = fit_fusion_weights(z, y)
    np.testing.assert_allclose(weights, -reference.coef_[0], rtol=1e-6)
    assert weights[0] > abs(weights[1]) and weights[0] > 0  # the better experiment weighs more (a distance: > 0)

    monkeypatch.setattr(plan_module, "score_trial_list", fake_scores)
    # the plan lists a seeds folder: one weight for the mean of its seeds' z-scores, shared by its seeds
    grouped = np.column_stack([z_hand[:, 0], z_hand[:, 1], z_hand[:, 2:].mean(axis=1)])
    item_weights = -LogisticRegression().fit(grouped, y_hand).coef_[0]
    weights = [item_weights[0], item_weights[1], item_weights[2] / 2, item_weights[2] / 2]
    entry = {"fuse": [str(good), str(weak), str(seeds)], "weights": "logistic"}
    files = {"English_heard": entry, "English_unheard": str(good), "German_heard": str(good),
             "German_unheard": {"fuse": [str(good), str(weak)], "weights": [0.25, 2]}}
    written = read_zip(plan_module.make_submission({"trials": str(trials_dir), "files": files}, tmp_path / "s.zip"))
    english = trials_dir / "English_test.txt"
    test = [fake_scores(e, english) for e in exps]
    # the weighted sum of the z-normalised test scores, computed by hand
    keys = list(test[0])
    by_hand = sum(w * (np.array([t[k] for k in keys]) - np.mean(list(t.values()))) / np.std(list(t.values()))
                  for w, t in zip(weights, test))
    assert list(written["sub_score_English_heard.txt"].values()) == pytest.approx(list(by_hand), abs=1e-5)
    german = trials_dir / "German_test.txt"
    assert written["sub_score_German_unheard.txt"] == pytest.approx(
        weighted_znorm_fusion([fake_scores(good, german), fake_scores(weak, german)], [0.25, 2.0]), abs=1e-6)


def test_logistic_fusion_refuses_other_dev_trials(tmp_path):
    a = write_experiment(tmp_path / "a", 0, 1.0)
    b = write_experiment(tmp_path / "b", 1, 1.0, trial_seed=5)  # other folds / seed: other dev trials
    with pytest.raises(FvaError) as err:
        plan_module.dev_fusion_trials([str(a), str(b)])
    text = str(err.value)
    assert "\n" not in text and "other dev trials than" in text and "same folds with the same seed" in text
    c = write_experiment(tmp_path / "c", 0, 1.0)
    for p in (c / "fold2").iterdir():
        p.unlink()
    (c / "fold2").rmdir()
    with pytest.raises(FvaError, match="fold2/dev_scores_English.txt is in only one of it and"):
        plan_module.dev_fusion_trials([str(a), str(c)])
    with pytest.raises(FvaError, match="no dev scores"):
        plan_module.dev_fusion_trials([str(tmp_path / "nothing"), str(a)])


def test_plan_fusion_entries_are_checked(tmp_path, trials_dir, monkeypatch):
    a = write_experiment(tmp_path / "a", 0, 1.0)
    seeds = write_seeds(tmp_path / "s", seeds=(0, 1))
    monkeypatch.setattr(plan_module, "score_trial_list", fake_scores)
    rest = {"English_unheard": str(a), "German_heard": str(a), "German_unheard": str(a)}
    cases = [({"fuse": [str(a), str(seeds)], "weights": [1, 2, 3, 4]}, "4 weights for 2 listed items"),
             ({"fuse": [str(a)], "weights": "softmax"}, "weights must be 'logistic' or a list of numbers"),
             ({"fuse": [str(a)], "weight": 1}, "unknown key 'weight'"),
             ({"fuse": [str(a)], "weights": "logistic"}, "name at least two experiments")]
    for entry, message in cases:
        with pytest.raises(FvaError, match=message) as err:
            plan_module.make_submission({"trials": str(trials_dir), "files": {"English_heard": entry, **rest}},
                                        tmp_path / "s.zip")
        assert str(err.value).startswith("plan: English_heard: ") and "\n" not in str(err.value)
    # a plan file with a fusion reads back as written
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"trials": str(trials_dir), "files": {
        "English_heard": {"fuse": [str(a), str(seeds)], "weights": "logistic"}, **rest}}))
    plan = plan_module.read_plan(path)
    assert plan_module.entry_experiments("English_heard", plan["files"]["English_heard"], None) == [
        (str(a), None), (str(seeds / "seed0"), None), (str(seeds / "seed1"), None)]


def test_fixed_weights_per_listed_item_share_a_seeds_folders_weight(tmp_path, trials_dir, monkeypatch):
    """FLAG 2027's 0.75 x (mean over seeds) + 0.25 x CCA: ``weights: [0.75, 0.25]`` over a seeds folder and one
    experiment is the weighted sum of the seeds' mean z-score and the other's z-score; one weight per seed
    weighs each seed on its own."""
    seeds = write_seeds(tmp_path / "bridge", seeds=(1, 101, 201), quality=1.5)
    cca = write_experiment(tmp_path / "cca", 0, 1.0)
    monkeypatch.setattr(plan_module, "score_trial_list", fake_scores)
    english = trials_dir / "English_test.txt"
    rest = {"English_unheard": str(cca), "German_heard": str(cca), "German_unheard": str(cca)}
    for weights, per_seed in (([0.75, 0.25], [0.25, 0.25, 0.25, 0.25]), ([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])):
        entry = {"fuse": [str(seeds), str(cca)], "weights": weights}
        written = read_zip(plan_module.make_submission({"trials": str(trials_dir), "files": {
            "English_heard": entry, **rest}}, tmp_path / "s.zip"))
        sources = [fake_scores(seeds / f"seed{k}", english) for k in (1, 101, 201)] + [fake_scores(cca, english)]
        z = [(np.array(list(t.values())) - np.mean(list(t.values()))) / np.std(list(t.values())) for t in sources]
        by_hand = sum(w * zi for w, zi in zip(per_seed, z))
        assert list(written["sub_score_English_heard.txt"].values()) == pytest.approx(list(by_hand), abs=1e-5)


def test_real_seeds_share_dev_trials_and_fit(synth, tmp_path):
    """``fva train-head --seeds`` on the synthetic cache: its seeds share the cache's folds and so their dev
    trials; logistic weights fit over them, and a plan entry naming the folder expands to the seeds."""
    import torch

    from fva.synth.testing import run_cli

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_cli("train-head", "--fold", "0", "--seeds", "0,1", "--config", synth.config, "--cache",
                         synth.root, "--exp", tmp_path / "exp")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    exps = plan_module.entry_experiments("English_heard", str(tmp_path / "exp"), None)
    assert [Path(e).name for e, _ in exps] == ["seed0", "seed1"]
    z, y = plan_module.dev_fusion_trials([e for e, _ in exps])
    assert z.shape == (len(y), 2) and set(y.tolist()) == {0, 1}
    assert np.isfinite(fit_fusion_weights(z, y)).all()
