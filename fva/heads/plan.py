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
        - work/demo/exp/german-unheard-fop

An entry that lists several experiments gives the mean of their scores, each z-normalised over the trial list
(:func:`fva.heads.postprocess.znorm_fusion`); a single experiment's scores are used as they are.

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


def score_entry(name: str, entry: str | Path | list, trials_path: Path, cache: str | None) -> dict[str, float]:
    """key -> distance for one file of a plan: one experiment's scores, or the z-norm fusion of a list's."""
    if isinstance(entry, (str, Path)):
        return score_trial_list(entry, trials_path, cache)
    if not isinstance(entry, list) or not entry or not all(isinstance(e, (str, Path)) for e in entry):
        raise FvaError(f"plan: {name} must be an experiment folder or a non-empty list of them, got {entry!r}")
    try:
        return znorm_fusion([score_trial_list(exp, trials_path, cache) for exp in entry], [str(e) for e in entry])
    except FvaError as err:
        raise FvaError(f"plan: {name}: {err}") from None


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
