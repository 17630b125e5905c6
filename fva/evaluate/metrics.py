"""Verification metrics beyond the EER: detection costs (minDCF, actDCF), Cllr and min Cllr, per-group
breakdowns and a bootstrap confidence interval of the EER that resamples identities.

Scores are DISTANCES (lower = same person), as everywhere in fva; metrics that need log-likelihood ratios
(actDCF, Cllr) take LLRs (higher = same person), e.g. from :class:`fva.evaluate.calibration.Calibration`.

Operating points (:data:`DEFAULT_OPERATING_POINTS`): P_target 0.01 and 0.05, both with C_miss = C_fa = 1.
These are the two points of the VoxCeleb Speaker Recognition Challenges (VoxSRC 2020-2023 report minDCF at
P_target 0.05; VoxSRC and NIST SRE 2016-2021 use 0.01) and of WeSpeaker's ``compute_metrics.py``; NIST SRE'10's
0.001 (C_miss 10) is far outside what dev sets of a few hundred face-voice trials can measure: at 0.001 a single
false accept among 1,000 non-target trials already costs a normalised DCF of about 1. Costs are normalised by
the cost of the best trial-independent decision, ``min(C_miss P_target, C_fa (1 - P_target))``, so 1 means "no
better than always deciding the same", as in the NIST evaluation plans.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np
from sklearn.isotonic import IsotonicRegression

from fva.errors import FvaError
from fva.evaluate.eer import check_eer_inputs, compute_eer

__all__ = ["OperatingPoint", "DEFAULT_OPERATING_POINTS", "parse_operating_points", "error_rates", "min_dcf",
           "act_dcf", "cllr", "min_cllr", "pav_llrs", "trial_metrics", "breakdown", "BootstrapInterval",
           "bootstrap_eer", "groups_of"]


@dataclass(frozen=True)
class OperatingPoint:
    """A detection cost function's parameters: prior of a same-person trial and the two error costs.

    >>> OperatingPoint(0.01).name
    'p0.01'
    >>> round(OperatingPoint(0.01).bayes_llr_threshold, 4)  # decide "same" when llr > log(99)
    4.5951
    """

    p_target: float
    c_miss: float = 1.0
    c_fa: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.p_target < 1.0:
            raise FvaError(f"P_target {self.p_target}: give a prior strictly between 0 and 1, e.g. 0.01")
        if self.c_miss <= 0 or self.c_fa <= 0:
            raise FvaError(f"costs C_miss {self.c_miss}, C_fa {self.c_fa}: both must be positive")

    @property
    def name(self) -> str:
        """``p<P_target>``, with the costs appended when they are not 1: the key in reports and JSON."""
        costs = "" if self.c_miss == self.c_fa == 1.0 else f"-cmiss{self.c_miss:g}-cfa{self.c_fa:g}"
        return f"p{self.p_target:g}{costs}"

    @property
    def bayes_llr_threshold(self) -> float:
        """The Bayes decision threshold on a calibrated LLR: decide "same" when ``llr > log(C_fa (1-P) / (C_miss P))``
        (``-logit(P_target)`` when the costs are equal)."""
        return float(np.log(self.c_fa * (1.0 - self.p_target)) - np.log(self.c_miss * self.p_target))

    @property
    def default_cost(self) -> float:
        """Cost of the best decision that ignores the trial: the normaliser of the DCF."""
        return min(self.c_miss * self.p_target, self.c_fa * (1.0 - self.p_target))

    def cost(self, p_miss, p_fa):
        """Normalised DCF of miss and false-accept rates (arrays or floats)."""
        return (self.c_miss * self.p_target * np.asarray(p_miss)
                + self.c_fa * (1.0 - self.p_target) * np.asarray(p_fa)) / self.default_cost


DEFAULT_OPERATING_POINTS: tuple[OperatingPoint, ...] = (OperatingPoint(0.01), OperatingPoint(0.05))


def parse_operating_points(p_targets: str, c_miss: float = 1.0, c_fa: float = 1.0) -> tuple[OperatingPoint, ...]:
    """``"0.01,0.05"`` -> operating points with those priors and the given costs; FvaError on bad text.

    >>> [p.name for p in parse_operating_points("0.01,0.05")]
    ['p0.01', 'p0.05']
    """
    try:
        values = [float(v) for v in p_targets.split(",") if v.strip()]
    except ValueError:
        raise FvaError(f"P_target list {p_targets!r}: give comma-separated priors, e.g. 0.01,0.05") from None
    if not values:
        raise FvaError("P_target list is empty: give comma-separated priors, e.g. 0.01,0.05")
    return tuple(OperatingPoint(v, c_miss, c_fa) for v in values)


def error_rates(labels, distances) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, p_miss, p_fa)`` for every decision "same when distance <= t": t = -inf (accept nothing)
    and each distinct distance in increasing order.

    >>> t, miss, fa = error_rates([1, 0, 1, 0], [.1, .2, .3, .4])
    >>> miss.tolist(), fa.tolist()
    ([1.0, 0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5, 1.0])
    """
    y, d = check_eer_inputs(labels, distances)
    order = np.argsort(d, kind="stable")
    d, y = d[order], y[order]
    last = np.r_[d[1:] != d[:-1], True]  # the last of each run of tied distances
    tar = np.cumsum(y)[last]
    non = np.cumsum(1 - y)[last]
    n_tar, n_non = tar[-1], non[-1]
    thresholds = np.r_[-np.inf, d[last]]
    return thresholds, np.r_[1.0, 1.0 - tar / n_tar], np.r_[0.0, non / n_non]


def min_dcf(labels, distances, point: OperatingPoint = DEFAULT_OPERATING_POINTS[0]) -> float:
    """Normalised minimum DCF: the lowest cost over every distance threshold (calibration-independent).

    One same-person and one different-person trial, perfectly separated, cost nothing:

    >>> min_dcf([1, 0], [0.1, 0.9])
    0.0
    """
    _, p_miss, p_fa = error_rates(labels, distances)
    return float(np.min(point.cost(p_miss, p_fa)))


def _check_llrs(labels, llrs) -> tuple[np.ndarray, np.ndarray]:
    """Labels and LLRs checked like distances (check_eer_inputs: lengths, 0/1, both classes, finite)."""
    return check_eer_inputs(labels, llrs)


def act_dcf(labels, llrs, point: OperatingPoint = DEFAULT_OPERATING_POINTS[0]) -> float:
    """Normalised actual DCF: the cost of Bayes decisions ``llr > point.bayes_llr_threshold`` on these LLRs
    (depends on their calibration; always >= :func:`min_dcf` of the same trials).

    >>> act_dcf([1, 0], [10.0, -10.0])
    0.0
    """
    y, s = _check_llrs(labels, llrs)
    accept = s > point.bayes_llr_threshold
    p_miss = float(np.mean(~accept[y == 1]))
    p_fa = float(np.mean(accept[y == 0]))
    return float(point.cost(p_miss, p_fa))


def cllr(labels, llrs) -> float:
    """Log-likelihood-ratio cost in bits (Brümmer): ``(mean log2(1 + e^-llr) over same-person trials
    + mean log2(1 + e^llr) over different-person trials) / 2``; 1 bit = an uninformative system (LLR 0).

    >>> cllr([1, 0], [0.0, 0.0])
    1.0
    """
    y, s = _check_llrs(labels, llrs)
    return _cllr(y, s)


def _cllr(y: np.ndarray, s: np.ndarray) -> float:
    """Cllr of checked arrays; LLRs of +-inf are allowed (PAV gives them to pure bins and they cost 0)."""
    tar = np.logaddexp(0.0, -s[y == 1]).mean()
    non = np.logaddexp(0.0, s[y == 0]).mean()
    return float((tar + non) / (2.0 * np.log(2.0)))


def pav_llrs(labels, distances) -> np.ndarray:
    """The optimal monotonic LLRs of these trials (pool-adjacent-violators: scikit-learn's
    :class:`~sklearn.isotonic.IsotonicRegression` of the label on -distance, tied distances pooled), with the
    trials' own same-person proportion taken out of the posterior: ``logit(p) - logit(n_target / n)``.
    Pure bins get +-inf."""
    y, d = check_eer_inputs(labels, distances)
    p = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0).fit_transform(-d, y.astype(np.float64))
    prior_logodds = np.log(y.sum()) - np.log(len(y) - y.sum())
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p) - prior_logodds


def min_cllr(labels, distances) -> float:
    """Minimum Cllr in bits: the Cllr of :func:`pav_llrs`, the best any monotonic calibration of these
    distances can reach (calibration-independent; <= the Cllr of any LLRs that preserve the distances' order).

    >>> min_cllr([1, 1, 0, 0], [.1, .2, .3, .4])  # perfectly separated
    0.0
    """
    y, _ = check_eer_inputs(labels, distances)
    return _cllr(y, pav_llrs(labels, distances))


def trial_metrics(labels, distances, llrs=None,
                  points: Sequence[OperatingPoint] = DEFAULT_OPERATING_POINTS) -> dict:
    """Every metric of one set of trials as a JSON-ready dict: ``eer`` (percent), ``min_dcf`` per operating
    point name, ``min_cllr``, and with ``llrs`` also ``act_dcf`` per point and ``cllr``; trial counts."""
    y, d = check_eer_inputs(labels, distances)
    out: dict = {"trials": len(y), "target": int(y.sum()), "nontarget": int(len(y) - y.sum()),
                 "eer": compute_eer(y, d), "min_dcf": {p.name: min_dcf(y, d, p) for p in points},
                 "min_cllr": min_cllr(y, d)}
    if llrs is not None:
        s = np.asarray(llrs, dtype=np.float64)
        out["act_dcf"] = {p.name: act_dcf(y, s, p) for p in points}
        out["cllr"] = cllr(y, s)
    return out


def breakdown(labels, distances, groups: Sequence[Hashable | None], llrs=None,
              points: Sequence[OperatingPoint] = DEFAULT_OPERATING_POINTS) -> dict[str, dict]:
    """:func:`trial_metrics` per group (e.g. the gender or language of each trial's voice; None: unknown, left
    out). Groups with trials of one class only get ``{"trials": n, "skipped": "..."}`` instead of metrics.

    >>> r = breakdown([1, 0, 1, 0], [.1, .9, .2, .3], ["female", "female", "male", "male"])
    >>> r["female"]["eer"], r["male"]["eer"]
    (0.0, 0.0)
    """
    y, d = check_eer_inputs(labels, distances)
    g = np.asarray(list(groups), dtype=object)
    if len(g) != len(y):
        raise FvaError(f"{len(g)} group labels for {len(y)} trials; give one group (or None) per trial")
    s = None if llrs is None else np.asarray(llrs, dtype=np.float64)
    out: dict[str, dict] = {}
    for group in sorted({x for x in g if x is not None}, key=str):
        mask = g == group
        n_tar = int(y[mask].sum())
        if n_tar == 0 or n_tar == int(mask.sum()):
            out[str(group)] = {"trials": int(mask.sum()), "skipped": "one class only"}
            continue
        out[str(group)] = trial_metrics(y[mask], d[mask], None if s is None else s[mask], points)
    return out


@dataclass(frozen=True)
class BootstrapInterval:
    """Percentile bootstrap interval of the EER (percent) and how it was drawn: ``unit`` says what was
    resampled (``identities``, ``voice clips`` or ``trials``), ``n_groups`` how many of them there are,
    ``dropped`` how many resamples held one class only (redrawn: they have no EER)."""

    eer: float
    low: float
    high: float
    percentiles: tuple[float, float]
    n_resamples: int
    n_groups: int
    unit: str
    seed: int
    dropped: int
    std: float

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_eer(labels, distances, groups: Sequence[Hashable] | None = None, *, n_resamples: int = 1000,
                  seed: int = 0, percentiles: tuple[float, float] = (2.5, 97.5), unit: str = "identities",
                  ) -> BootstrapInterval:
    """Percentile bootstrap interval of the EER, resampling GROUPS of trials with replacement.

    ``groups`` gives each trial's group, normally the identity of its voice: trials of one person are
    correlated (same voice clips, same faces), so resampling them one by one understates the spread of the EER
    over people. A drawn group brings all its trials (a group drawn twice, twice). ``groups=None`` resamples
    single trials (``unit`` then says ``trials``). The same seed gives the same interval. Resamples with one
    class only are redrawn and counted in ``dropped`` (at most ``10 * n_resamples`` draws).

    >>> ci = bootstrap_eer([1, 0] * 20, [.1, .2] * 20, [i // 2 for i in range(40)], n_resamples=50)
    >>> ci.low, ci.high, ci.n_groups
    (0.0, 0.0, 20)
    """
    y, d = check_eer_inputs(labels, distances)
    if n_resamples < 1:
        raise FvaError(f"bootstrap resamples {n_resamples}: give at least 1 (e.g. 1000)")
    lo_p, hi_p = percentiles
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise FvaError(f"bootstrap percentiles {percentiles}: give 0 <= low < high <= 100, e.g. 2.5 97.5")
    if groups is None:
        codes, unit = np.arange(len(y)), "trials"
    else:
        g = list(groups)
        if len(g) != len(y):
            raise FvaError(f"{len(g)} group labels for {len(y)} trials; give one group per trial")
        _, codes = np.unique(np.asarray([str(x) for x in g]), return_inverse=True)
    n_groups = int(codes.max()) + 1
    if n_groups < 2:
        raise FvaError(f"one {unit[:-1] if unit.endswith('s') else unit} only: a bootstrap over {unit} needs "
                       "at least two")
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(n_groups + 1))
    members = [order[starts[i]:starts[i + 1]] for i in range(n_groups)]
    rng = np.random.default_rng(seed)
    eers: list[float] = []
    dropped = 0
    while len(eers) < n_resamples:
        if dropped > 10 * n_resamples:
            raise FvaError(f"{dropped} bootstrap resamples of {unit} held one class only; too few {unit} with "
                           "both same-person and different-person trials for a bootstrap")
        idx = np.concatenate([members[i] for i in rng.integers(n_groups, size=n_groups)])
        n_tar = int(y[idx].sum())
        if n_tar == 0 or n_tar == len(idx):
            dropped += 1
            continue
        eers.append(compute_eer(y[idx], d[idx]))
    low, high = np.percentile(eers, [lo_p, hi_p])
    return BootstrapInterval(eer=compute_eer(y, d), low=float(low), high=float(high), percentiles=(lo_p, hi_p),
                             n_resamples=n_resamples, n_groups=n_groups, unit=unit, seed=seed, dropped=dropped,
                             std=float(np.std(eers)))


def groups_of(keys: Sequence[str], mapping: Mapping[str, Hashable | None]) -> list[Hashable | None]:
    """Each key's group from ``mapping`` (key -> group), None for keys it lacks.

    >>> groups_of(["a", "b"], {"a": "female"})
    ['female', None]
    """
    return [mapping.get(k) for k in keys]
