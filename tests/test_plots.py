"""`fva evaluate --plot`: DET points against a naive reference, the EER on the curve, and the written figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fva.cli import cli
from fva.errors import FvaError
from fva.evaluate.eer import compute_eer, eer_threshold
from fva.evaluate.plots import (Scenario, det_curve, det_points, evaluation_figure, file_scenario, plot_evaluation,
                                probit, submission_scenarios)
from fva.evaluate.submission import CONDITIONS, write_submission

LANGS = ("English", "German")


def naive_det(labels: np.ndarray, distances: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """Per threshold t over the sorted distinct distances: FAR = different-person share with d <= t,
    FRR = same-person share with d > t, counted trial by trial."""
    ts, far, frr = [], [], []
    targets = [d for d, y in zip(distances, labels) if y == 1]
    others = [d for d, y in zip(distances, labels) if y == 0]
    for t in sorted(set(distances.tolist())):
        ts.append(t)
        far.append(sum(d <= t for d in others) / len(others))
        frr.append(sum(d > t for d in targets) / len(targets))
    return ts, far, frr


def random_set(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Unbalanced classes, overlapping scores, and ties (distances rounded to 2 decimals)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    d = np.round(rng.normal(0.0, 1.0, n) - 1.2 * y, 2)
    return y, d


def diagonal_crossing(far: np.ndarray, frr: np.ndarray) -> float:
    """Where the polyline through the DET points (in linear rates) meets FAR = FRR."""
    g = far - frr  # non-decreasing along the curve, from -1 to +1
    i = int(np.flatnonzero((g[:-1] < 0) & (g[1:] >= 0))[0])
    s = -g[i] / (g[i + 1] - g[i])
    return float(far[i] + s * (far[i + 1] - far[i]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_det_points_equal_naive_reference(seed):
    y, d = random_set(seed)
    assert len(np.unique(d)) < len(d)  # ties are exercised
    t, far, frr = det_points(y, d)
    ref_t, ref_far, ref_frr = naive_det(y, d)
    np.testing.assert_array_equal(t, ref_t)
    np.testing.assert_allclose(far, ref_far, rtol=0, atol=1e-12)
    np.testing.assert_allclose(frr, ref_frr, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_drawn_curve_passes_through_the_eer(seed):
    y, d = random_set(seed, n=300 + 50 * seed)
    far, frr = det_curve(y, d)
    assert (far[0], frr[0]) == (0.0, 1.0)
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(frr) <= 0)
    eer = compute_eer(y, d) / 100
    assert diagonal_crossing(far, frr) == pytest.approx(eer, abs=1e-9)


def test_hand_example_curve_and_eer():
    y, d = [1, 1, 1, 1, 0, 0, 0, 0], [.1, .2, .3, .5, .4, .6, .7, .8]
    far, frr = det_curve(y, d)
    assert far.tolist() == [0, 0, 0, 0, .25, .25, .5, .75, 1]
    assert frr.tolist() == [1, .75, .5, .25, .25, 0, 0, 0, 0]
    sc = Scenario.from_arrays("toy", y, d)
    assert sc.eer == pytest.approx(25.0) and sc.threshold == pytest.approx(0.4)


def test_figure_shows_the_eer_of_compute_eer():
    sets = [random_set(s, n=200) for s in range(4)]
    scenarios = [Scenario.from_arrays(f"{lang} {cond}", y, d)
                 for (lang, cond), (y, d) in zip([(lg, c) for lg in LANGS for c in CONDITIONS], sets)]
    fig = evaluation_figure(scenarios)
    det_ax, *hist_axes = fig.axes
    assert len(hist_axes) == 4
    legend = [t.get_text() for t in det_ax.get_legend().get_texts()]
    assert legend == [f"{sc.name} (EER {compute_eer(y, d):.1f} %)" for sc, (y, d) in zip(scenarios, sets)]
    markers = [(line.get_xdata()[0], line.get_ydata()[0]) for line in det_ax.get_lines() if line.get_marker() == "o"]
    for (x, yy), (y, d) in zip(markers, sets):
        assert x == yy == pytest.approx(float(probit(compute_eer(y, d) / 100)))
    assert [t.get_text() for t in det_ax.get_xticklabels()][:8] == ["0.1", "0.5", "1", "2", "5", "10", "20", "40"]
    for ax, (y, d) in zip(hist_axes, sets):  # the vertical line of each histogram panel is the EER threshold
        vlines = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
        assert len(vlines) == 1 and vlines[0].get_xdata()[0] == pytest.approx(eer_threshold(y, d))


# ---- files and the command line ---------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_png(path: Path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert 800 <= w <= 3000 and 400 <= h <= 2000 and w > h
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


@pytest.fixture
def score_files(tmp_path: Path) -> tuple[Path, Path]:
    y, d = random_set(5, n=120)
    keys = [f"k{i:04d}" for i in range(len(y))]
    scores = tmp_path / "my_model.txt"
    scores.write_text("".join(f"{k} {v!r}\n" for k, v in zip(keys, d.tolist())))
    labels = tmp_path / "English_test_labels.txt"
    labels.write_text("".join(f"{k} {v}\n" for k, v in zip(keys, y.tolist())))
    return scores, labels


@pytest.fixture
def submission(tmp_path: Path) -> tuple[Path, Path]:
    """A four-file submission zip and its ground-truth folder (different separations per file)."""
    gt = tmp_path / "gt"
    gt.mkdir()
    rng = np.random.default_rng(7)
    scores = {}
    for lang in LANGS:
        keys = [f"{lang[:2].lower()}{i:03d}" for i in range(80)]
        y = (np.arange(80) % 3 == 0).astype(int)
        (gt / f"{lang}_test.txt").write_text("".join(f"{k} v/{k}.wav f/{k}.jpg\n" for k in keys))
        (gt / f"{lang}_test_labels.txt").write_text("".join(f"{k} {v}\n" for k, v in zip(keys, y)))
        for j, cond in enumerate(CONDITIONS):
            d = rng.normal(0, 1, 80) - (1.5 - j) * y
            scores[(lang, cond)] = dict(zip(keys, d.tolist()))
    return write_submission(tmp_path / "submission.zip", scores), gt


def test_cli_scores_mode_writes_png(tmp_path, score_files):
    scores, labels = score_files
    out = tmp_path / "figs" / "eval.png"
    out.parent.mkdir()
    result = run("evaluate", "--scores", scores, "--labels", labels, "--plot", out)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    sc = file_scenario(scores, labels)
    assert sc.name == "my_model"
    assert lines[0].startswith(f"EER {sc.eer:.2f}% over 120 trials")
    assert lines[-1] == f"plot: {out}"
    assert_png(out)


def test_cli_submission_mode_writes_png(tmp_path, submission):
    zip_path, gt = submission
    out = tmp_path / "sub.png"
    out.write_bytes(b"old")  # replaced
    result = run("evaluate", "--submission", zip_path, "--ground-truth", gt, "--plot", out)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split() == ["Language", "Condition", "Trials", "EER", "%"]
    assert "Mean" in result.output and result.output.splitlines()[-1] == f"plot: {out}"
    assert_png(out)

    scenarios = submission_scenarios(zip_path, gt)
    assert [s.name for s in scenarios] == [f"{lg} {c}" for lg in LANGS for c in CONDITIONS]
    for s in scenarios:
        assert len(s.labels) == len(s.distances) == 80
        assert s.eer == compute_eer(s.labels, s.distances)
        assert f"{s.eer:.2f}" in result.output


@pytest.mark.parametrize("mode", ["scores", "submission"])
def test_missing_plot_folder_is_one_line(tmp_path, score_files, submission, mode):
    out = tmp_path / "absent" / "eval.png"
    args = (["--scores", score_files[0], "--labels", score_files[1]] if mode == "scores"
            else ["--submission", submission[0], "--ground-truth", submission[1]])
    result = run("evaluate", *args, "--plot", out)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "absent" in lines[0], result.output
    assert not out.parent.exists()


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "eval.png"
    out.write_bytes(b"old")

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        plot_evaluation(out, [Scenario.from_arrays("toy", [1, 0, 1, 0], [.1, .2, .3, .4])])
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["eval.png"]
    with pytest.raises(FvaError, match="folder"):
        plot_evaluation(tmp_path / "nope" / "x.png", [])
