"""What ``fva evaluate`` reports for one score file: the EER (as the organisers compute it) and, beside it,
minDCF / actDCF, min Cllr / Cllr, the EER's bootstrap interval and per-gender / per-language breakdowns.

Who a trial belongs to comes from its trial list (``X.txt`` beside ``X_labels.txt`` unless named) and a
manifest: a trial's voice path maps to a manifest key (:func:`fva.data.mavceleb.media_key`), whose record gives
the identity, gender and language. An experiment's dev lists (``fold<k>/dev_<Lang>.txt``) find their manifest
themselves: the one beside the experiment's training features. The bootstrap resamples:

* identities (of the trials' voices) when every trial's voice has one;
* else voice clips: challenge test lists name no identities, and trials sharing a voice clip are the
  strongest dependence left to respect (several clips of one person still count as independent, so the
  interval can be somewhat too narrow);
* else, with no trial list at all, single trials (the narrowest, said as such).

actDCF and Cllr need LLRs: with ``calibration`` (an experiment folder) the distances are mapped by that
experiment's :func:`~fva.evaluate.calibration.experiment_calibration`; without it only the
calibration-independent minDCF and min Cllr are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


from fva.data.trials import read_labels, read_trials
from fva.errors import FvaError
from fva.experiment import Experiment
from fva.evaluate.metrics import (DEFAULT_OPERATING_POINTS, OperatingPoint, bootstrap_eer, breakdown,
                                  trial_metrics)
from fva.evaluate.scores import align, evaluate_labelled, read_scored, read_scores

__all__ = ["TrialGroups", "trial_groups", "default_trials_path", "experiment_manifest", "evaluate_report",
           "report_lines", "experiment_dev_interval"]


@dataclass(frozen=True)
class TrialGroups:
    """Per trial key: the group the bootstrap resamples (``unit`` says which kind), and gender / language
    where known."""

    unit: str
    group: dict[str, str]
    gender: dict[str, str]
    language: dict[str, str]


def trial_groups(trials, records: dict | None = None) -> TrialGroups:
    """Groups of trials (:class:`fva.data.trials.Trial`) from manifest records (key -> MediaRecord, or None)."""
    from fva.data.mavceleb import media_key

    voice = {t.key: (records or {}).get(media_key(t.voice)) for t in trials}
    gender = {k: r.gender for k, r in voice.items() if r is not None and r.gender}
    language = {k: r.language for k, r in voice.items() if r is not None and r.language}
    if voice and all(r is not None and r.identity for r in voice.values()):
        return TrialGroups("identities", {k: r.identity for k, r in voice.items()}, gender, language)
    return TrialGroups("voice clips", {t.key: media_key(t.voice) for t in trials}, gender, language)


def experiment_dev_interval(exp: str | Path, n_resamples: int = 1000, seed: int = 0):
    """The EER of an experiment's pooled heard dev trials (every fold's, each scored by the one fold model that
    never saw its identities) and its bootstrap interval over identities (a
    :class:`~fva.evaluate.metrics.BootstrapInterval`): the honest spread of a dev EER measured on few people."""
    from fva.layout import manifest_records

    opened = Experiment.open(exp)
    records = manifest_records(opened.info.train_features)
    labels, distances, groups = [], [], []
    for fold in opened.folds():
        for dev in fold.dev_lists(names=opened.info.heard):
            if not dev.trials_path.is_file():
                continue
            keys, y, d = read_scored(dev.scores_path, dev.labels_path)
            group = trial_groups(read_trials(dev.trials_path), records).group
            labels += list(y)
            distances += list(d)
            groups += [group[k] for k in keys]
    if not labels:
        raise FvaError(f"{exp}: no dev trials with scores (fold*/dev_<Lang>.txt); train it with 'fva train-head'")
    return bootstrap_eer(labels, distances, groups, n_resamples=n_resamples, seed=seed)


def default_trials_path(labels_path: str | Path) -> Path | None:
    """``X.txt`` for ``X_labels.txt`` when it exists, else None.

    >>> default_trials_path("nowhere/English_test_labels.txt") is None
    True
    """
    p = Path(labels_path)
    if p.stem.endswith("_labels"):
        candidate = p.with_name(p.stem[:-len("_labels")] + p.suffix)
        if candidate.is_file():
            return candidate
    return None


def experiment_manifest(trials_path: str | Path) -> Path | None:
    """The manifest of the training features of the experiment whose ``fold<k>/`` holds ``trials_path``."""
    fold = Path(trials_path).parent
    if not (fold.name.startswith("fold") and Experiment.is_experiment(fold.parent)):
        return None
    from fva.layout import manifest_path

    try:
        features = Experiment.open(fold.parent).info.train_features
    except FvaError:
        return None
    path = manifest_path(features) if features else None
    return path if path is not None and path.is_file() else None


def evaluate_report(scores_path: str | Path, labels_path: str | Path, *, trials_path: str | Path | None = None,
                    manifest: str | Path | None = None, calibration: str | Path | None = None,
                    points: Sequence[OperatingPoint] = DEFAULT_OPERATING_POINTS, bootstrap: int = 1000,
                    seed: int = 0, percentiles: tuple[float, float] = (2.5, 97.5)) -> dict:
    """Every metric of one score file against its labels, as a JSON-ready dict (see the module text).

    Keys: ``eer``, ``trials``, ``target``, ``nontarget``, ``threshold`` (as before), ``min_dcf``,
    ``min_cllr``, with a calibration ``act_dcf``, ``cllr`` and ``calibration`` (its map and source), with
    ``bootstrap`` > 0 ``eer_ci``, and ``by_gender`` / ``by_language`` where the manifest gives two groups or
    more (``operating_points`` lists the points' parameters)."""
    labels = read_labels(labels_path)
    scores = read_scores(scores_path)
    res = evaluate_labelled(scores, labels, name=scores_path, labels_name=labels_path)
    keys, y, d = align(scores, labels, name=scores_path)
    out: dict = {"eer": res.eer, "trials": res.n_trials, "target": res.n_target, "nontarget": res.n_nontarget,
                 "threshold": res.threshold,
                 "operating_points": {p.name: {"p_target": p.p_target, "c_miss": p.c_miss, "c_fa": p.c_fa}
                                      for p in points}}
    llrs = None
    if calibration is not None:
        from fva.evaluate.calibration import experiment_calibration

        cal = experiment_calibration(calibration)
        llrs = cal.llr(d)
        out["calibration"] = {"experiment": str(calibration), **cal.summary()}
    metrics = trial_metrics(y, d, llrs, points)
    for key in ("min_dcf", "act_dcf", "min_cllr", "cllr"):
        if key in metrics:
            out[key] = metrics[key]
    trials_path = Path(trials_path) if trials_path is not None else default_trials_path(labels_path)
    groups = None
    if trials_path is not None:
        trials = [t for t in read_trials(trials_path)]
        listed = {t.key for t in trials}
        missing = [k for k in keys if k not in listed]
        if missing:
            raise FvaError(f"{trials_path}: {len(missing)} labelled trial(s) are not in this trial list, first "
                           f"{missing[0]!r}; give the list the labels belong to (--trials)")
        manifest = manifest if manifest is not None else experiment_manifest(trials_path)
        records = None
        if manifest is not None:
            from fva.data.records import Manifest

            records = {r.key: r for r in Manifest.read(manifest).records}
        groups = trial_groups(trials, records)
        out["trial_list"] = str(trials_path)
        out["manifest"] = None if manifest is None else str(manifest)
    elif manifest is not None:
        raise FvaError(f"--manifest {manifest}: needs the trial list of the labels (--trials) to map trials to "
                       "records")
    if bootstrap > 0:
        grouping = None if groups is None else [groups.group[k] for k in keys]
        ci = bootstrap_eer(y, d, grouping, n_resamples=bootstrap, seed=seed, percentiles=percentiles,
                           unit="trials" if groups is None else groups.unit)
        out["eer_ci"] = ci.to_dict()
    if groups is not None:
        for name, mapping in (("by_gender", groups.gender), ("by_language", groups.language)):
            if len(set(mapping.values())) > 1:  # one group only would repeat the overall figures
                out[name] = breakdown(y, d, [mapping.get(k) for k in keys], llrs, points)
    return out


def _points_text(values: dict, points: dict) -> str:
    return ", ".join(f"{v:.4f} (P_target {points[name]['p_target']:g})" for name, v in values.items())


def report_lines(report: dict) -> list[str]:
    """The text of :func:`evaluate_report`: the EER line as it always was, then one line per metric.

    >>> rep = {"eer": 25.0, "trials": 8, "target": 4, "nontarget": 4, "threshold": 0.4,
    ...        "operating_points": {"p0.01": {"p_target": 0.01, "c_miss": 1.0, "c_fa": 1.0}},
    ...        "min_dcf": {"p0.01": 1.0}, "min_cllr": 0.5}
    >>> print("\\n".join(report_lines(rep)))
    EER 25.00% over 8 trials (4 same, 4 different); threshold 0.4000
    minDCF 1.0000 (P_target 0.01)
    min Cllr 0.5000 bits (Cllr and actDCF need LLRs: --calibration EXP)
    """
    pts = report["operating_points"]
    lines = [f"EER {report['eer']:.2f}% over {report['trials']} trials ({report['target']} same, "
             f"{report['nontarget']} different); threshold {report['threshold']:.4f}"]
    ci = report.get("eer_ci")
    if ci:
        lines.append(f"EER {ci['percentiles'][1] - ci['percentiles'][0]:g}% interval [{ci['low']:.2f}, "
                     f"{ci['high']:.2f}]% ({ci['n_resamples']} bootstrap resamples of {ci['n_groups']} "
                     f"{ci['unit']}, seed {ci['seed']}; std {ci['std']:.2f})")
    lines.append("minDCF " + _points_text(report["min_dcf"], pts))
    if "act_dcf" in report:
        lines.append("actDCF " + _points_text(report["act_dcf"], pts))
        lines.append(f"Cllr {report['cllr']:.4f} bits, min Cllr {report['min_cllr']:.4f} bits "
                     f"(calibration of {report['calibration']['experiment']})")
    else:
        lines.append(f"min Cllr {report['min_cllr']:.4f} bits (Cllr and actDCF need LLRs: --calibration EXP)")
    for kind in ("gender", "language"):
        for group, m in report.get(f"by_{kind}", {}).items():
            if "skipped" in m:
                lines.append(f"{kind} {group}: {m['trials']} trials, one class only: no metrics")
                continue
            first = next(iter(m["min_dcf"]))
            text = (f"{kind} {group}: EER {m['eer']:.2f}% over {m['trials']} trials, minDCF {m['min_dcf'][first]:.4f} "
                    f"(P_target {pts[first]['p_target']:g}), min Cllr {m['min_cllr']:.4f}")
            if "cllr" in m:
                text += f", Cllr {m['cllr']:.4f}"
            lines.append(text)
    return lines
