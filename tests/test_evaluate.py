"""EER (against the organisers' literal formula and an independent closed form) and score files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_curve

from fva.errors import FvaError
from fva.evaluate.eer import compute_eer, eer_threshold
from fva.evaluate.scores import align, evaluate_files, read_scores, write_scores


def organisers_eer(labels, distances) -> float:
    """The FAME organisers' computation, written out literally."""
    fpr, tpr, _ = roc_curve(labels, -np.asarray(distances))
    return brentq(lambda x: 1. - x - interp1d(fpr, tpr)(x), 0., 1.) * 100


def closed_form_eer(labels, distances) -> float:
    """Independent EER: build the ROC by hand, find the segment where 1 - fpr - tpr changes sign and solve
    the linear crossing on it. Accepting every trial with distance <= t for each distinct t, in increasing t,
    gives the ROC points; tied distances move both rates at once (a diagonal segment)."""
    y = np.asarray(labels)
    d = np.asarray(distances, dtype=float)
    n_t, n_n = int(y.sum()), int(len(y) - y.sum())
    points = [(0.0, 0.0)]
    tp = fp = 0
    for t in sorted(set(d.tolist())):
        at = d == t
        tp += int(y[at].sum())
        fp += int(at.sum() - y[at].sum())
        points.append((fp / n_n, tp / n_t))
    for (f0, t0), (f1, t1) in zip(points, points[1:]):
        g0, g1 = 1 - f0 - t0, 1 - f1 - t1
        if g0 > 0 >= g1:
            s = g0 / (g0 - g1)  # the crossing's position along the segment
            return (f0 + s * (f1 - f0)) * 100
    raise AssertionError("no crossing")  # unreachable: g is 1 at (0, 0) and -1 at (1, 1)


def random_sets():
    """24 score sets: sizes from 2 to 3000 trials, balanced and very unbalanced classes, continuous scores and
    scores rounded to a few values (many ties), targets separated from non-targets by varying margins."""
    rng = np.random.default_rng(20240917)
    sets = []
    sizes = [(1, 1), (1, 7), (9, 1), (3, 4), (10, 10), (25, 400), (400, 25), (100, 100), (7, 1500), (1000, 2000),
             (50, 60), (333, 777)]
    for i, (n_t, n_n) in enumerate(sizes * 2):
        sep = rng.uniform(-0.5, 3.0)
        target = rng.normal(0.0, 1.0, n_t)
        nontarget = rng.normal(sep, 1.0, n_n)
        d = np.concatenate([target, nontarget])
        if i >= len(sizes):
            d = np.round(d, int(rng.integers(0, 2)))  # 0 or 1 decimal: heavy ties, also across classes
        y = np.concatenate([np.ones(n_t, int), np.zeros(n_n, int)])
        perm = rng.permutation(len(y))
        sets.append((y[perm], d[perm]))
    return sets


@pytest.mark.parametrize("idx", range(24))
def test_eer_matches_organisers_and_closed_form(idx):
    y, d = random_sets()[idx]
    eer = compute_eer(y, d)
    assert isinstance(eer, float)
    assert eer == pytest.approx(organisers_eer(y, d), abs=1e-9)
    assert eer == pytest.approx(closed_form_eer(y, d), abs=1e-9)


def test_random_sets_include_ties_and_unbalanced_classes():
    sets = random_sets()
    assert sum(len(np.unique(d)) < len(d) for _, d in sets) >= 10
    assert any(y.mean() < 0.01 for y, _ in sets) and any(y.mean() > 0.9 for y, _ in sets)


def test_hand_computed_eer():
    # Same person at distances .1 .2 .3 .5, different people at .4 .6 .7 .8 (one overlap: .4 < .5).
    # Accepting distance <= .4 accepts 1 of 4 different-person trials (FAR 25 %) and rejects 1 of 4
    # same-person trials, the one at .5 (FRR 25 %): the ROC passes through (fpr .25, tpr .75), where
    # 1 - fpr - tpr = 0, so the EER is 25 %.
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    d = [.1, .2, .3, .5, .4, .6, .7, .8]
    assert compute_eer(y, d) == pytest.approx(25.0, abs=1e-9)
    assert eer_threshold(y, d) == pytest.approx(0.4, abs=1e-12)


def test_hand_computed_eer_on_horizontal_and_diagonal_segments():
    # Same person at .1 .2 .3 .6, different people at .4 .5 .7. Accepting up to .3 gives the ROC point
    # (fpr 0, tpr .75), up to .4 gives (1/3, .75): 1 - fpr - tpr goes from .25 to -1/12 along this horizontal
    # segment, crossing zero at fpr .25 (three quarters of the way, s = .25 / (1/3)): EER 25 %, and the
    # threshold is interpolated the same three quarters of the way from .3 to .4, i.e. .375.
    y = [1, 1, 1, 1, 0, 0, 0]
    d = [.1, .2, .3, .6, .4, .5, .7]
    assert compute_eer(y, d) == pytest.approx(25.0, abs=1e-9)
    assert eer_threshold(y, d) == pytest.approx(0.375, abs=1e-12)
    # A tie across classes: same person at .1 and .3, different people at .3 and .4. The tie at .3 moves
    # the ROC diagonally from (0, .5) to (.5, 1); 1 - fpr - tpr goes from .5 to -.5, crossing halfway at
    # fpr .25: EER 25 %.
    assert compute_eer([1, 1, 0, 0], [.1, .3, .3, .4]) == pytest.approx(25.0, abs=1e-9)


def test_perfect_and_reversed():
    y = [1, 1, 1, 0, 0, 0, 0]
    good = [.1, .2, .3, .4, .5, .6, .7]
    assert compute_eer(y, good) == pytest.approx(0.0, abs=1e-9)
    assert eer_threshold(y, good) == pytest.approx(0.3)  # accept up to the worst same-person trial
    bad = [.5, .6, .7, .1, .2, .3, .4]
    assert compute_eer(y, bad) == pytest.approx(100.0, abs=1e-9)


def test_eer_threshold_gives_the_eer_error_rates():
    rng = np.random.default_rng(7)
    y = np.concatenate([np.ones(1500, int), np.zeros(2500, int)])
    d = np.concatenate([rng.normal(0, 1, 1500), rng.normal(1.5, 1, 2500)])
    eer, thr = compute_eer(y, d), eer_threshold(y, d)
    accept = d <= thr
    far = accept[y == 0].mean() * 100
    frr = (~accept[y == 1]).mean() * 100
    # at the threshold both error rates are the EER, up to one trial of each class
    assert abs(far - eer) <= 100 / 2500 + 1e-9
    assert abs(frr - eer) <= 100 / 1500 + 1e-9
    assert d.min() <= thr <= d.max()


def test_eer_threshold_finite_when_all_targets_tie_at_the_top():
    y = [1, 1, 0, 0]
    d = [.2, .2, .5, .6]
    assert eer_threshold(y, d) == pytest.approx(.2)


@pytest.mark.parametrize("labels, distances, needle", [
    ([], [], "empty"),
    ([1, 0, 1], [0.1, 0.2], "3 labels but 2 distances"),
    ([1, 1, 1], [0.1, 0.2, 0.3], "all 3 trials are same-person"),
    ([0, 0], [0.1, 0.2], "all 2 trials are different-person"),
    ([1, 0, 1, 0, 1], [0.1, math.nan, 0.3, math.inf, 0.5], "2 of 5 distance(s) are NaN or infinite"),
    ([1, 2], [0.1, 0.2], "neither 0 nor 1"),
])
def test_eer_input_errors(labels, distances, needle):
    for fn in (compute_eer, eer_threshold):
        with pytest.raises(FvaError) as err:
            fn(labels, distances)
        assert needle in str(err.value)
    if "NaN" in needle:
        assert "must be finite" in str(err.value)


# --- score files ---------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


@pytest.fixture
def labels_file(tmp_path: Path) -> Path:
    return write(tmp_path / "English_test_labels.txt", "a 1\nb 1\nc 0\nd 0\n")


def test_evaluate_files(tmp_path, labels_file):
    scores = write(tmp_path / "s.txt", "d 0.9\nc 0.2\nb 0.3\na 0.1\nunlabelled 5\n")
    res = evaluate_files(scores, labels_file)
    # c (different, .2) sits between the targets .1 and .3: points (0,.5) (.5,.5) -> EER 50
    assert res.eer == pytest.approx(50.0, abs=1e-9)
    assert (res.n_trials, res.n_target, res.n_nontarget) == (4, 2, 2)
    assert res.eer == pytest.approx(compute_eer([1, 1, 0, 0], [.1, .3, .2, .9]), abs=1e-12)
    assert res.threshold == pytest.approx(eer_threshold([1, 1, 0, 0], [.1, .3, .2, .9]))


@pytest.mark.parametrize("text, needle", [
    ("a 0.1\nb\t0.2\n", "s.txt:2: tab between fields; separate key and score with exactly one space"),
    ("a 0.1\nb nan\n", "s.txt:2: score 'nan' is NaN or infinite; every score must be a finite distance"),
    ("a 0.1\nb -inf\n", "s.txt:2: score '-inf' is NaN or infinite"),
    ("a 0.1\nb 0.2\na 0.3\n", "s.txt:3: key 'a' already scored on line 1; keep one score per key"),
    ("a 0.1\nb 0.2 x\n", "s.txt:2: expected 2 fields '<key> <score>', found 3"),
    ("a 0.1\nb  0.2\n", "s.txt:2: fields not separated by exactly one space"),
    ("a 0.1\nb 0.2 \n", "s.txt:2: fields not separated by exactly one space"),
    ("a 0.1\nb zero\n", "s.txt:2: score 'zero' is not a number"),
    ("a 0.1\nb 1_0\n", "s.txt:2: score '1_0' is not a number"),
    ("a 0.1\n\nb 0.2\n", "s.txt:2: blank line; remove it"),
    ("a 0.1\r\nb 0.2\r\n", "s.txt:1: line ends with a carriage return"),
    ("", "s.txt: score file is empty"),
])
def test_score_file_errors(tmp_path, text, needle):
    path = write(tmp_path / "s.txt", text)
    with pytest.raises(FvaError) as err:
        read_scores(path)
    assert needle in str(err.value)


def test_missing_labelled_key_is_named(tmp_path, labels_file):
    scores = write(tmp_path / "s.txt", "a 0.1\nc 0.2\nother 0.3\n")
    with pytest.raises(FvaError) as err:
        evaluate_files(scores, labels_file)
    msg = str(err.value)
    assert "s.txt: 2 of 4 labelled trial(s) have no score, first 'b'" in msg
    assert "score every trial" in msg


def test_align_order_and_ignored_extras():
    keys, y, d = align({"z": 3.0, "b": 0.5, "a": 0.25}, {"b": 0, "a": 1})
    assert keys == ["b", "a"] and y.tolist() == [0, 1] and d.tolist() == [0.5, 0.25]
    with pytest.raises(FvaError, match="1 of 2 labelled trial.s. have no score, first 'a'"):
        align({"b": 0.5}, {"b": 0, "a": 1})


def test_empty_labels_file(tmp_path):
    labels = write(tmp_path / "L_labels.txt", "")
    scores = write(tmp_path / "s.txt", "a 0.1\n")
    with pytest.raises(FvaError, match="labels file is empty"):
        evaluate_files(scores, labels)


def test_one_class_labels_name_the_labels_file(tmp_path):
    labels = write(tmp_path / "L_labels.txt", "a 1\nb 1\n")
    scores = write(tmp_path / "s.txt", "a 0.1\nb 0.2\n")
    with pytest.raises(FvaError, match=r"L_labels.txt: all 2 trials are same-person"):
        evaluate_files(scores, labels)


def test_write_read_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(3)
    values = {f"k{i:04d}": v for i, v in enumerate(rng.normal(size=200))}
    values.update({f"f{i:04d}": np.float32(v) for i, v in enumerate(rng.normal(size=200))})
    values["tiny"] = 1e-300
    values["neg"] = -0.0
    path = tmp_path / "s.txt"
    write_scores(path, values)
    back = read_scores(path)
    assert list(back) == sorted(values)
    assert all(back[k] == float(v) for k, v in values.items())
    assert all(line.count(" ") == 1 for line in path.read_text().splitlines())


@pytest.mark.parametrize("bad", [{"a": math.nan}, {"a b": 0.1}, {"": 0.1}])
def test_write_scores_rejects_bad_input(tmp_path, bad):
    with pytest.raises(FvaError):
        write_scores(tmp_path / "s.txt", bad)
