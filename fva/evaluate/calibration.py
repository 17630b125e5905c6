"""Score calibration (distances -> log-likelihood ratios) and decision thresholds.

:class:`Calibration` is a logistic regression of "same person" on the distance (scikit-learn's
:class:`~sklearn.linear_model.LogisticRegression`, practically unregularised), turned into an LLR by taking out
the log prior odds of the trials it was fitted on: ``llr = a * distance + b - logit(prior)``. It also keeps
what the two empirical thresholds need: the EER threshold of the same trials
(:func:`fva.evaluate.eer.eer_threshold`) and their sorted different-person distances (the false-accept curve).

Where the calibrations come from:

* a fold (``fva train-head``): fitted on the fold's dev trials of the heard languages (those the EER threshold
  is taken on), kept in ``fold<k>/checkpoint.pt`` under ``calibration`` (plain floats) and summarised in
  ``fold<k>/metrics.json``;
* an experiment (:func:`experiment_calibration`, what ``fva score`` distances need, since they are the mean of
  the folds' distances): fitted on the concatenation of every fold's heard dev trials with their
  ``dev_scores_<Lang>.txt`` distances. Each dev trial was scored by the one fold model that never saw its
  identities, so the pool is an honest held-out sample, and it is k times larger than one fold's. Averaging k
  models keeps the distances' scale but narrows their spread a little, so the LLRs of averaged test distances
  can be slightly under-confident; nothing extra is stored: the fit is recomputed (milliseconds) from the dev
  files.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fva.errors import FvaError
from fva.evaluate.eer import check_eer_inputs, eer_threshold

__all__ = ["Calibration", "THRESHOLD_KINDS", "experiment_calibration", "experiment_dev_trials", "logit"]

THRESHOLD_KINDS = ("eer", "far", "prior")
_C = 1e6  # inverse L2 strength on the standardised distance: negligible, but finite on perfectly separated trials


def logit(p: float) -> float:
    """``log(p / (1 - p))``.

    >>> logit(0.5)
    0.0
    """
    if not 0.0 < p < 1.0:
        raise FvaError(f"probability {p}: give a value strictly between 0 and 1")
    return math.log(p) - math.log1p(-p)


@dataclass(frozen=True)
class Calibration:
    """Affine distance -> LLR map fitted by logistic regression, with the trials' EER threshold and
    different-person distances for the empirical thresholds.

    >>> cal = Calibration.fit([1, 1, 0, 1, 0, 0], [.1, .4, .3, .5, .6, .9])
    >>> cal.a < 0, round(cal.prior, 3)  # larger distance, less likely the same person
    (True, 0.5)
    >>> Calibration.from_dict(cal.to_dict()) == cal
    True
    """

    a: float  # logistic-regression slope on the distance (negative for a useful system)
    b: float  # its intercept
    prior: float  # same-person proportion of the fitted trials, whose log odds the LLR takes out
    n_target: int
    n_nontarget: int
    eer_threshold: float  # decide "same" when distance <= this: the EER point of the fitted trials
    nontarget: tuple[float, ...] = field(default=(), repr=False)  # sorted different-person distances

    @classmethod
    def fit(cls, labels, distances) -> "Calibration":
        """Fit on labelled trials (1 = same person; inputs checked as for the EER)."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        y, d = check_eer_inputs(labels, distances)
        mean, std = float(d.mean()), float(d.std())
        std = std if std > 0 else 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=_C, max_iter=1000).fit(((d - mean) / std)[:, None], y)
        w, c = float(model.coef_[0, 0]), float(model.intercept_[0])
        n_tar = int(y.sum())
        return cls(a=w / std, b=c - w * mean / std, prior=n_tar / len(y), n_target=n_tar,
                   n_nontarget=len(y) - n_tar, eer_threshold=eer_threshold(y, d),
                   nontarget=tuple(float(x) for x in np.sort(d[y == 0])))

    def llr(self, distances) -> np.ndarray:
        """Log-likelihood ratios (natural log; > 0 favours the same person) of distances."""
        return self.a * np.asarray(distances, dtype=np.float64) + self.b - logit(self.prior)

    def probability(self, distances, prior: float = 0.5) -> np.ndarray:
        """Posterior probability of the same person given a prior: ``sigmoid(llr + logit(prior))``."""
        z = self.llr(distances) + logit(prior)
        return np.exp(-np.logaddexp(0.0, -z))

    def threshold_for(self, kind: str = "eer", value: float | None = None) -> float:
        """A distance threshold (decide "same person" when ``distance <= threshold``):

        * ``eer``: the EER point of the fitted trials (``value`` unused);
        * ``far``: the largest dev different-person distance at which at most a share ``value`` of them is
          accepted (e.g. 0.01), just below the smallest when none may be;
        * ``prior``: the Bayes decision of prior ``value`` with equal costs, ``llr > -logit(value)``.

        >>> cal = Calibration.fit([1, 1, 0, 1, 0, 0], [.1, .4, .3, .5, .6, .9])
        >>> cal.threshold_for("far", 1 / 3)
        0.3
        >>> t = cal.threshold_for("prior", 0.5)
        >>> bool(abs(cal.llr(t)) < 1e-9)
        True
        """
        if kind not in THRESHOLD_KINDS:
            raise FvaError(f"threshold kind {kind!r}: use one of {', '.join(THRESHOLD_KINDS)}")
        if kind == "eer":
            return float(self.eer_threshold)
        if value is None:
            raise FvaError(f"threshold {kind}: give its value (a false-accept rate for far, a prior for prior)")
        if kind == "far":
            if not 0.0 <= value <= 1.0:
                raise FvaError(f"false-accept rate {value}: give a share between 0 and 1, e.g. 0.01")
            nt = np.asarray(self.nontarget, dtype=np.float64)
            if len(nt) == 0:
                raise FvaError("this calibration keeps no different-person distances: refit it for a far threshold")
            accepted = np.searchsorted(nt, nt, side="right")  # accepted by "distance <= nt[i]"
            ok = nt[accepted <= math.floor(value * len(nt) + 1e-9)]
            return float(ok.max()) if len(ok) else float(np.nextafter(nt[0], -np.inf))
        if self.a >= 0:  # kind == "prior"
            raise FvaError(f"calibration slope {self.a:.4g} >= 0: larger distances do not mean other people on "
                           "these trials, so no prior threshold exists; check the model")
        return float((-logit(value) + logit(self.prior) - self.b) / self.a)

    def to_dict(self) -> dict:
        """Plain floats, ints and a list (a checkpoint payload loads with ``weights_only=True``)."""
        out = asdict(self)
        out["nontarget"] = list(self.nontarget)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        try:
            return cls(**{**data, "nontarget": tuple(data.get("nontarget", ()))})
        except TypeError as err:
            raise FvaError(f"not a calibration record ({err}); refit it with this fva version") from None

    def summary(self) -> dict:
        """What a metrics file shows: the map and its counts, without the distances."""
        return {k: v for k, v in asdict(self).items() if k != "nontarget"}


def parse_threshold(text: str) -> tuple[str, float | None]:
    """A decision-threshold rule as users write it: ``eer``, ``far:<rate>`` or ``prior:<P_target>``.

    >>> parse_threshold("far:0.01"), parse_threshold("eer")
    (('far', 0.01), ('eer', None))
    """
    kind, _, value = text.strip().partition(":")
    if kind not in THRESHOLD_KINDS or (kind == "eer") != (value == ""):
        raise FvaError(f"threshold {text!r}: use eer, far:<false-accept rate> (e.g. far:0.01) or prior:<P(same)> "
                       "(e.g. prior:0.01)")
    if kind == "eer":
        return kind, None
    try:
        return kind, float(value)
    except ValueError:
        raise FvaError(f"threshold {text!r}: {value!r} is not a number") from None


def experiment_dev_trials(exp: str | Path, languages: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels and distances of every fold's dev trials of ``languages`` (default: the experiment's heard
    ones), from ``fold<k>/dev_<Lang>_labels.txt`` and ``dev_scores_<Lang>.txt``."""
    from fva.evaluate.scores import read_scored
    from fva.experiment import Experiment

    opened = Experiment.open(exp)
    langs = languages if languages is not None else opened.info.heard
    ys, ds = [], []
    for fold in opened.folds():
        for dev in fold.dev_lists(names=langs):
            _, y, d = read_scored(dev.scores_path, dev.labels_path)
            ys.append(y)
            ds.append(d)
    if not ys:
        raise FvaError(f"{exp}: no dev scores (fold*/dev_scores_<Lang>.txt of {', '.join(langs) or 'any language'}) "
                       "to calibrate on; an experiment trained with 'fva train-head' has them")
    return np.concatenate(ys), np.concatenate(ds)


def experiment_calibration(exp: str | Path) -> Calibration:
    """The calibration of an experiment's fold-averaged distances: fitted on all its folds' heard dev trials
    (see the module text for why)."""
    return Calibration.fit(*experiment_dev_trials(exp))
