"""One figure of an evaluation: DET curves and score distributions.

:func:`plot_evaluation` draws, for a list of :class:`Scenario` (one score file, or the four files of a
submission):

* left, the DET curves: false-rejection rate against false-acceptance rate on normal-deviate (probit) axes,
  as in speaker verification, one curve per scenario, its EER (from :func:`fva.evaluate.eer.compute_eer`, the
  number of the evaluation table) marked on the curve and given in the legend;
* right, the distances of same-person and different-person trials as step histograms (one small panel per
  scenario), with the EER threshold as a vertical line.

Scores are distances: a trial is accepted as "same person" when ``distance <= threshold``. The figure is
drawn with matplotlib's Agg canvas on a :class:`matplotlib.figure.Figure` (pyplot is never imported, so no
display is needed and the process's backend is left alone) and written atomically.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import norm

from fva.atomic import atomic_write
from fva.data.trials import labels_path, read_labels
from fva.errors import FvaError
from fva.evaluate.eer import check_eer_inputs, compute_eer, eer_threshold
from fva.evaluate.scores import align, parse_scores, read_scores
from fva.evaluate.submission import TRIALS_SUFFIX, SubmissionResult, evaluate_submission, submission_name

__all__ = ["Scenario", "det_points", "det_curve", "probit", "file_scenario", "submission_scenarios",
           "check_plot_path", "evaluation_figure", "plot_evaluation", "DET_TICKS"]

RATE_CLIP = 1e-4  # rates are clipped to [RATE_CLIP, 1 - RATE_CLIP] before the probit transform
DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)  # labelled 0.1 ... 40 %
_HIGH_TICKS = (0.6, 0.8, 0.95, 0.99)  # shown only when a poor system pushes the axes past 40 %


@dataclass(frozen=True, eq=False)
class Scenario:
    """One scored trial set: ``labels`` (1 same person, 0 different), ``distances``, and its ``eer`` (percent)
    and ``threshold`` (distance at the EER); build it with :meth:`from_arrays` to have both computed."""

    name: str
    labels: np.ndarray
    distances: np.ndarray
    eer: float
    threshold: float

    @classmethod
    def from_arrays(cls, name: str, labels: Sequence[int] | np.ndarray,
                    distances: Sequence[float] | np.ndarray) -> "Scenario":
        """Check the arrays and compute the EER and its threshold exactly as the evaluation table does.

        >>> s = Scenario.from_arrays("toy", [1, 1, 1, 1, 0, 0, 0, 0], [.1, .2, .3, .5, .4, .6, .7, .8])
        >>> round(s.eer, 9), round(s.threshold, 9)
        (25.0, 0.4)
        """
        y, d = check_eer_inputs(labels, distances)
        return cls(name=name, labels=y, distances=d, eer=compute_eer(y, d), threshold=eer_threshold(y, d))


def det_points(labels: Sequence[int] | np.ndarray, distances: Sequence[float] | np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, far, frr)``: one DET point per distinct distance ``t``, in increasing order.

    FAR is the fraction of different-person trials with ``distance <= t`` (wrongly accepted), FRR the
    fraction of same-person trials with ``distance > t`` (wrongly rejected). Joined by straight lines and
    started at (FAR 0, FRR 1), the points are the organisers' interpolated ROC, so the curve meets the
    diagonal at the EER.

    >>> t, far, frr = det_points([1, 1, 1, 1, 0, 0, 0, 0], [.1, .2, .3, .5, .4, .6, .7, .8])
    >>> far.tolist(), frr.tolist()
    ([0.0, 0.0, 0.0, 0.25, 0.25, 0.5, 0.75, 1.0], [0.75, 0.5, 0.25, 0.25, 0.0, 0.0, 0.0, 0.0])
    """
    y, d = check_eer_inputs(labels, distances)
    target = np.sort(d[y == 1])
    nontarget = np.sort(d[y == 0])
    thresholds = np.unique(d)
    frr = 1.0 - np.searchsorted(target, thresholds, side="right") / len(target)
    far = np.searchsorted(nontarget, thresholds, side="right") / len(nontarget)
    return thresholds, far, frr


def det_curve(labels: Sequence[int] | np.ndarray, distances: Sequence[float] | np.ndarray,
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(far, frr)`` of the drawn DET curve: (0, 1) (accept nothing), then :func:`det_points`."""
    _, far, frr = det_points(labels, distances)
    return np.concatenate(([0.0], far)), np.concatenate(([1.0], frr))


def probit(rate: float | np.ndarray) -> np.ndarray:
    """Normal deviate of error rates clipped to ``[1e-4, 1 - 1e-4]`` (the DET axes' scale)."""
    return norm.ppf(np.clip(np.asarray(rate, dtype=np.float64), RATE_CLIP, 1.0 - RATE_CLIP))


def file_scenario(scores_path: str | Path, labels_file: str | Path, name: str | None = None) -> Scenario:
    """The scenario of one score file against its ``<key> <0|1>`` labels; named after the score file's stem."""
    scores_path = Path(scores_path)
    labels = read_labels(labels_file)
    _, y, d = align(read_scores(scores_path), labels, name=scores_path)
    try:
        return Scenario.from_arrays(name or scores_path.stem, y, d)
    except FvaError as err:
        raise FvaError(f"{labels_file}: {err}") from None


def submission_scenarios(zip_path: str | Path, ground_truth_dir: str | Path,
                         result: SubmissionResult | None = None) -> list[Scenario]:
    """One scenario per file of a submission zip ("English heard", ...), in the evaluation table's order.

    ``result`` is the zip's :func:`~fva.evaluate.submission.evaluate_submission` result when the caller has
    it (otherwise it is computed here, which also checks the zip and raises its FvaError); each scenario's EER
    and threshold are that result's, so the figure shows the table's numbers.
    """
    zip_path, gt = Path(zip_path), Path(ground_truth_dir)
    if result is None:
        result = evaluate_submission(zip_path, gt)
    scenarios: list[Scenario] = []
    labels: dict[str, dict[str, int]] = {}
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for row in result.rows:
                name = submission_name(row.language, row.condition)
                shown = f"{zip_path}/{name}"
                if row.language not in labels:
                    labels[row.language] = read_labels(labels_path(gt / f"{row.language}{TRIALS_SUFFIX}"))
                try:
                    text = zf.read(name).decode("utf-8")
                except (KeyError, UnicodeDecodeError) as err:
                    raise FvaError(f"{shown}: cannot be read ({err}); check the zip with "
                                   "'fva submission validate'") from None
                _, y, d = align(parse_scores(text, shown), labels[row.language], name=shown)
                scenarios.append(Scenario(name=f"{row.language} {row.condition}", labels=y, distances=d,
                                          eer=row.eer, threshold=row.threshold))
    except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, NotImplementedError) as err:
        raise FvaError(f"{zip_path}: not a readable zip file ({err}); check it with 'fva submission validate'"
                       ) from None
    return scenarios


def _format(path: Path) -> str:
    return path.suffix[1:].lower() or "png"


def check_plot_path(path: str | Path) -> Path:
    """``path`` as a Path if a figure can be written there (its folder exists, it is not a folder, its suffix
    is a format matplotlib writes), else FvaError; cheap, so callers check before any long work."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FvaError(f"{path}: folder {path.parent} not found; create it first or choose another plot path")
    if path.is_dir():
        raise FvaError(f"{path}: is a folder; give a file name such as {path / 'evaluation.png'}")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise FvaError("matplotlib is not installed; install it with: pip install 'matplotlib>=3.7'") from None
    if _format(path) not in FigureCanvasAgg.get_supported_filetypes():
        raise FvaError(f"{path}: cannot write a .{_format(path)} figure; use .png (or .pdf, .svg)")
    return path


def _percent(rate: float) -> str:
    return f"{100 * rate:g}"


def plot_evaluation(path: str | Path, scenarios: list[Scenario]) -> Path:
    """Write the figure (DET curves, score distributions) of ``scenarios`` to ``path``; returns the path.

    The format follows the suffix (``.png`` usually; anything matplotlib writes, e.g. ``.pdf``, ``.svg``).
    The file is written under a temporary name in the same folder and renamed into place; a folder that does
    not exist is an FvaError.
    """
    path = check_plot_path(path)
    if not scenarios:
        raise FvaError(f"{path}: nothing to plot; give at least one scored trial set")
    fig = evaluation_figure(scenarios)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=_format(path))
    return path


def evaluation_figure(scenarios: list[Scenario]):
    """The :class:`matplotlib.figure.Figure` (on an Agg canvas) that :func:`plot_evaluation` writes."""
    if not scenarios:
        raise FvaError("nothing to plot; give at least one scored trial set")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 6.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # attaches the Agg canvas: no display, no pyplot
    outer = fig.add_gridspec(1, 2, width_ratios=(1.0, 1.15))
    colors = [f"C{i % 10}" for i in range(len(scenarios))]
    _draw_det(fig.add_subplot(outer[0]), scenarios, colors)
    n = len(scenarios)
    ncols = 1 if n == 1 else 2
    nrows = -(-n // ncols)
    inner = outer[1].subgridspec(nrows, ncols)
    axes = [fig.add_subplot(inner[i // ncols, i % ncols]) for i in range(n)]
    for i, (ax, sc) in enumerate(zip(axes, scenarios)):
        _draw_histogram(ax, sc, colors[i], legend=i == 0, xlabel=i >= n - ncols)
    fig.suptitle(f"Face-voice verification: DET curves and distance distributions ({n} trial set"
                 f"{'s' if n > 1 else ''})")
    return fig


def _draw_det(ax, scenarios: list[Scenario], colors: list[str]) -> None:
    """DET curves on probit axes, EER points, FAR = FRR diagonal."""
    worst = max(sc.eer for sc in scenarios) / 100
    # FAME systems are often poor: the axes reach the first high tick at least 20 points above the worst EER
    high = next((t for t in _HIGH_TICKS if t >= worst + 0.2), _HIGH_TICKS[-1])
    low = 0.0005
    lo, hi = probit(low), probit(high)
    ax.plot([lo, hi], [lo, hi], color="0.7", lw=0.8, ls=":", label="_nolegend_")
    for sc, color in zip(scenarios, colors):
        far, frr = det_curve(sc.labels, sc.distances)
        e = sc.eer / 100
        ax.plot(probit(far), probit(frr), color=color, lw=1.6, label=f"{sc.name} (EER {sc.eer:.1f} %)")
        ax.plot(probit(e), probit(e), marker="o", ms=6, mfc="white", mec=color, mew=1.6, label="_nolegend_")
    ticks = [t for t in DET_TICKS + _HIGH_TICKS if t <= high + 1e-12]
    for set_ticks, set_labels, set_lim in ((ax.set_xticks, ax.set_xticklabels, ax.set_xlim),
                                           (ax.set_yticks, ax.set_yticklabels, ax.set_ylim)):
        set_ticks(probit(ticks))
        set_labels([_percent(t) for t in ticks])
        set_lim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(True, color="0.88", lw=0.6)
    ax.set_xlabel("False acceptance rate (%)")
    ax.set_ylabel("False rejection rate (%)")
    ax.set_title("DET curves (o: EER)")
    ax.legend(loc="lower left", fontsize="small", framealpha=0.9)


def _draw_histogram(ax, sc: Scenario, color: str, *, legend: bool, xlabel: bool) -> None:
    """Step histograms (densities, shared bins) of same- and different-person distances, EER threshold."""
    d, y = sc.distances, sc.labels
    bins = int(np.clip(np.sqrt(len(d)), 10, 60))
    lo, hi = float(d.min()), float(d.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    ax.hist(d[y == 1], bins=edges, density=True, histtype="step", lw=1.5, color="tab:green",
            label=f"same person ({int(y.sum())})")
    ax.hist(d[y == 0], bins=edges, density=True, histtype="step", lw=1.5, ls="--", color="tab:red",
            label=f"different person ({int((y == 0).sum())})")
    ax.axvline(sc.threshold, color="black", lw=1.0, ls=":", label="EER threshold")
    ax.set_title(f"{sc.name}: EER {sc.eer:.1f} %", fontsize="medium", color=color)
    ax.annotate(f" {sc.threshold:.3g}", (sc.threshold, 0.01), xycoords=("data", "axes fraction"),
                va="bottom", ha="left", fontsize="x-small")
    ax.tick_params(labelsize="small")
    ax.set_ylabel("density", fontsize="small")
    if xlabel:
        ax.set_xlabel("distance (lower = same person)", fontsize="small")
    if legend:
        ax.legend(fontsize="x-small", loc="best", framealpha=0.9)
