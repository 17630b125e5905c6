"""Equal error rate, computed exactly as the FAME organisers compute it.

Scores are distances: lower means more likely the same person. Labels are 1 for a same-person (target) trial
and 0 otherwise. The organisers take ``fpr, tpr, _ = sklearn.metrics.roc_curve(labels, -distances)`` and find
the false-positive rate ``x`` where ``1 - x`` equals the ROC's true-positive rate linearly interpolated with
``scipy.interpolate.interp1d``, solved by ``scipy.optimize.brentq`` on ``[0, 1]``; the EER is ``100 * x``.
:func:`compute_eer` is that computation, plus input checks that raise :class:`fva.errors.FvaError`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_curve

from fva.errors import FvaError

__all__ = ["compute_eer", "eer_threshold", "check_eer_inputs"]


def check_eer_inputs(labels: Sequence[int] | np.ndarray, distances: Sequence[float] | np.ndarray,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(labels, distances)`` as 1-D int / float64 arrays, or raise FvaError saying what is wrong.

    Errors: different lengths, no trials, labels other than 0/1, only one class, NaN or infinite distances.

    >>> check_eer_inputs([1, 0], [0.2, 0.9])
    (array([1, 0]), array([0.2, 0.9]))
    """
    try:
        y = np.asarray(labels)
        d = np.asarray(distances, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise FvaError(f"labels and distances must be numeric sequences ({err})") from None
    if y.ndim != 1 or d.ndim != 1:
        raise FvaError(f"labels and distances must be 1-D, got shapes {y.shape} and {d.shape}")
    if len(y) != len(d):
        raise FvaError(f"{len(y)} labels but {len(d)} distances; give exactly one distance per labelled trial")
    if len(y) == 0:
        raise FvaError("no trials: labels and distances are empty; the EER needs scored trials")
    if y.dtype == bool:
        y = y.astype(np.int64)
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise FvaError(f"{int(bad.sum())} label(s) are neither 0 nor 1 (first {y[bad][0]!r}); use 1 for "
                       "same-person trials and 0 for different-person trials")
    y = y.astype(np.int64)
    n_bad = int((~np.isfinite(d)).sum())
    if n_bad:
        raise FvaError(f"{n_bad} of {len(d)} distance(s) are NaN or infinite; scores must be finite numbers, "
                       "check the model outputs")
    n_target = int(y.sum())
    if n_target == 0 or n_target == len(y):
        kind = "same-person (label 1)" if n_target else "different-person (label 0)"
        raise FvaError(f"all {len(y)} trials are {kind}; the EER needs both same-person and different-person "
                       "trials")
    return y, d


def compute_eer(labels: Sequence[int] | np.ndarray, distances: Sequence[float] | np.ndarray) -> float:
    """EER in percent of distance scores (lower = same person), exactly as the FAME organisers compute it.

    Four same-person trials at distances .1 .2 .3 .5 and four different-person trials at .4 .6 .7 .8: a
    threshold between .4 and .5 wrongly accepts one of four different-person trials (.4) and wrongly rejects
    one of four same-person trials (.5), so both error rates are 25 %.

    >>> round(compute_eer([1, 1, 1, 1, 0, 0, 0, 0], [.1, .2, .3, .5, .4, .6, .7, .8]), 9)
    25.0
    """
    y, d = check_eer_inputs(labels, distances)
    fpr, tpr, _ = roc_curve(y, -d)
    eer = brentq(lambda x: 1. - x - interp1d(fpr, tpr)(x), 0., 1.)
    return float(eer) * 100


def eer_threshold(labels: Sequence[int] | np.ndarray, distances: Sequence[float] | np.ndarray) -> float:
    """Distance threshold at the EER point: decide "same person" when ``distance <= threshold``.

    Walks the full ROC (``roc_curve(labels, -distances, drop_intermediate=False)``) to the segment where
    ``1 - fpr - tpr`` changes sign and interpolates the ROC thresholds linearly at the crossing, the same
    point :func:`compute_eer` finds. The infinite first ROC threshold is replaced by the highest score, so the
    result is always a finite distance within the range of the scores.

    In the example of :func:`compute_eer` the crossing is the ROC point reached by accepting up to .4:

    >>> round(eer_threshold([1, 1, 1, 1, 0, 0, 0, 0], [.1, .2, .3, .5, .4, .6, .7, .8]), 9)
    0.4
    """
    y, d = check_eer_inputs(labels, distances)
    fpr, tpr, thr = roc_curve(y, -d, drop_intermediate=False)
    thr = np.asarray(thr, dtype=np.float64).copy()
    thr[0] = thr[1]  # +inf (accept nothing) -> the highest score
    g = 1.0 - fpr - tpr  # non-increasing along the ROC: 1 at (0, 0), -1 at (1, 1)
    i = int(np.flatnonzero((g[:-1] > 0) & (g[1:] <= 0))[0])
    s = g[i] / (g[i] - g[i + 1])
    return float(-(thr[i] + s * (thr[i + 1] - thr[i])))
