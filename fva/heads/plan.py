"""Submission plans: which experiment scores which of the four FAME files.

A plan is a small YAML file::

    trials: data/demo                 # folder with <Lang>_test.txt (and, for evaluation, <Lang>_test_labels.txt)
    cache: work/demo/cache            # features of the test media (default: each experiment's cache)
    files:                            # <TestLang>_<heard|unheard>: experiment folder
      English_heard: work/demo/exp/full
      German_heard: work/demo/exp/english-unheard
      English_unheard: work/demo/exp/english-unheard
      German_unheard:                 # a list: each experiment scores the file, fused by z-norm
        - work/demo/exp/german-unheard
        - {exp: work/other/exp/german-unheard, cache: work/other/cache}   # an entry with its own cache

An entry that lists several experiments gives the mean of their scores, each z-normalised over the trial list
(:func:`fva.heads.postprocess.znorm_fusion`); a single experiment's scores are used as they are. An experiment
is scored with the test features of the weight set it was trained on (features of other weights are refused),
from the entry's own ``cache``, else the plan's, else the experiment's own cache root.

The default mapping is the published one: <first language> heard by the model trained on all data, every
other file by the model trained without a language — without the test language for the unheard files,
without the first language for the other heard file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from fva.errors import FvaError
from fva.evaluate.submission import CONDITIONS, submission_languages, write_valid_submission
from fva.heads.postprocess import znorm_fusion
from fva.heads.scoring import score_trial_list
from fva.yamlio import read_yaml_mapping

PLAN_KEYS = {"trials", "cache", "files"}


def default_files(languages: list[str], exp_root: str | Path, first: str = "English") -> dict[str, str]:
    """The published mapping for a two-language test set, with experiments named by their split."""
    root = Path(exp_root)
    files = {}
    for lang in languages:
        files[f"{lang}_unheard"] = str(root / f"{lang.lower()}-unheard")
        files[f"{lang}_heard"] = str(root / ("full" if lang == first else f"{first.lower()}-unheard"))
    return files


def write_default_plan(path: str | Path, trials: str | Path, exp_root: str | Path, cache: str | Path | None) -> dict:
    """The published mapping for the test languages of ``trials``, written as a plan file."""
    plan = {"trials": str(trials), **({"cache": str(cache)} if cache else {}),
            "files": default_files(submission_languages(trials), exp_root)}
    Path(path).write_text(yaml.safe_dump(plan, sort_keys=False))
    return plan


def read_plan(path: str | Path) -> dict:
    plan = read_yaml_mapping(path, "submission plan")
    unknown = sorted(set(plan) - PLAN_KEYS)
    if unknown:
        raise FvaError(f"{path}: unknown key '{unknown[0]}'; a plan has {', '.join(sorted(PLAN_KEYS))}")
    if "trials" not in plan or "files" not in plan:
        raise FvaError(f"{path}: a plan needs 'trials' (folder of <Lang>_test.txt) and 'files'")
    return plan


ENTRY_KEYS = {"exp", "cache"}


def entry_experiments(name: str, entry, cache: str | None) -> list[tuple[str, str | None]]:
    """``(experiment, cache)`` of each experiment a plan's file names: a folder, ``{exp, cache}``, or a
    non-empty list of those."""
    items = entry if isinstance(entry, list) else [entry]
    out = []
    for item in items:
        if isinstance(item, (str, Path)):
            out.append((str(item), cache))
        elif isinstance(item, dict) and "exp" in item and set(item) <= ENTRY_KEYS:
            out.append((str(item["exp"]), str(item["cache"]) if item.get("cache") else cache))
        else:
            out = []
            break
    if not out:
        raise FvaError(f"plan: {name} must be an experiment folder, {{exp: FOLDER, cache: FOLDER}} or a non-empty "
                       f"list of them, got {entry!r}")
    return out


def score_entry(name: str, entry, trials_path: Path, cache: str | None) -> dict[str, float]:
    """key -> distance for one file of a plan: one experiment's scores, or the z-norm fusion of a list's."""
    exps = entry_experiments(name, entry, cache)
    if not isinstance(entry, list):
        return score_trial_list(exps[0][0], trials_path, exps[0][1])
    try:
        return znorm_fusion([score_trial_list(exp, trials_path, c) for exp, c in exps], [exp for exp, _ in exps])
    except FvaError as err:
        raise FvaError(f"plan: {name}: {err}") from None


def unmet_conditions(name: str, info: dict) -> list[str]:
    """What keeps an experiment (its ``experiment.json``) from the published condition of the plan file ``name``
    (``<TestLang>_<heard|unheard>``): an unheard file scored by heads or encoders that heard its language, and
    the published system's parts it lacks (voice age-gender features, VoxCeleb2 pretraining)."""
    lang, cond = name.rsplit("_", 1)
    out = []
    if cond == "unheard":
        if lang in info.get("heard", []):
            out.append(f"heads trained on {lang}")
        if info.get("encoders_unheard") != lang:
            out.append(f"encoders that heard {lang} (weight set {info.get('weight_set', 'full')})")
    voice = info.get("features", {}).get("voice", {}).get("encoders", [])
    if "voice-age-gender-ecapa" not in voice:
        out.append("no voice age-gender features")
    pretrained = info.get("pretrain") or (info.get("init") or {}).get("pretrain")
    if not pretrained:
        out.append("heads not pretrained on VoxCeleb2")
    return out


def plan_conditions(plan: dict) -> list[str]:
    """One line per file of the plan that does not meet the published condition, saying what it lacks."""
    from fva.heads.experiment import read_experiment

    lines = []
    for name, entry in plan["files"].items():
        unmet: list[str] = []
        for exp, _ in entry_experiments(name, entry, plan.get("cache")):
            unmet += [u for u in unmet_conditions(name, read_experiment(Path(exp))[1]) if u not in unmet]
        if unmet:
            lines.append(f"{name.replace('_', ' ')} scored with " + "; ".join(unmet))
    return lines


def make_submission(plan: dict, out: str | Path) -> Path:
    """Score every file of the plan, write the zip and validate it against the trial lists."""
    trials_dir = Path(plan["trials"])
    expected = [f"{lang}_{cond}" for lang in submission_languages(trials_dir) for cond in CONDITIONS]
    files = plan["files"]
    missing = [name for name in expected if name not in files]
    if missing:
        raise FvaError(f"plan: no experiment for {missing[0]}; give one for each of {', '.join(expected)}")
    scores = {}
    for name in expected:
        lang, cond = name.rsplit("_", 1)
        scores[(lang, cond)] = score_entry(name, files[name], trials_dir / f"{lang}_test.txt", plan.get("cache"))
    return write_valid_submission(out, scores, trials_dir)
