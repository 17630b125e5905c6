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

FLAG 2027 (MAV-Celeb v4; the trials folder holds the track folders ``no_gender/`` and ``gender/``): the plan's
files are named ``<track>/<TestLang>_<heard|unheard>`` after the zip's ``<track>/sub_score_v4_...`` files, and
the default maps every one of them to the model trained on the allowed data, ``full``: training is English
only, so English is heard and Bengali (``Bangla``) unheard by that same model, in both tracks. The track's
trial list is scored with its media paths qualified by the track folder, as the v4 test manifest keys them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from fva.data import mavceleb_v4
from fva.data.trials import write_trials
from fva.errors import FvaError
from fva.evaluate.submission import (FLAG_2027, SubmissionFile, detect_layout, submission_files,
                                     submission_languages, write_valid_submission)
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


def plan_name(sub: SubmissionFile) -> str:
    """A plan's name for a submission file: ``<TestLang>_<cond>``, FLAG 2027 ``<track>/<TestLang>_<cond>``."""
    name = f"{sub.language}_{sub.condition}"
    return f"{sub.track}/{name}" if sub.track else name


def flag_default_files(trials: str | Path, exp_root: str | Path) -> dict[str, str]:
    """FLAG 2027's mapping: every file of every track scored by the model trained on English, ``full``."""
    return {plan_name(sub): str(Path(exp_root) / "full") for sub in submission_files(trials, FLAG_2027)}


def write_default_plan(path: str | Path, trials: str | Path, exp_root: str | Path, cache: str | Path | None) -> dict:
    """The published mapping for the test languages of ``trials``, written as a plan file."""
    files = (flag_default_files(trials, exp_root) if detect_layout(trials) == FLAG_2027
             else default_files(submission_languages(trials), exp_root))
    plan = {"trials": str(trials), **({"cache": str(cache)} if cache else {}), "files": files}
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
    track, _, file = name.rpartition("/")
    lang, cond = file.rsplit("_", 1)
    out = []
    if track:  # FLAG 2027: heads trained on English only, with the public encoders; no language to keep unheard
        if cond == "unheard" and lang in info.get("heard", []):
            out.append(f"heads trained on {lang}")
    elif cond == "unheard":
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
            head, _, cond = name.rpartition("_")
            lines.append(f"{head.replace('/', ' ')} {cond} scored with " + "; ".join(unmet))
    return lines


def make_submission(plan: dict, out: str | Path) -> Path:
    """Score every file of the plan, write the zip and validate it against the trial lists."""
    trials_dir = Path(plan["trials"])
    subs = submission_files(trials_dir)
    expected = [plan_name(sub) for sub in subs]
    files = plan["files"]
    missing = [name for name in expected if name not in files]
    if missing:
        raise FvaError(f"plan: no experiment for {missing[0]}; give one for each of {', '.join(expected)}")
    scores = {}
    with tempfile.TemporaryDirectory(prefix="fva-plan-") as tmp:
        for sub, name in zip(subs, expected):
            if sub.track:  # FLAG 2027: the track-qualified paths the test manifest keys media by
                path = Path(tmp) / sub.track / sub.trials.name
                path.parent.mkdir(exist_ok=True)
                write_trials(path, mavceleb_v4.track_trials(trials_dir, sub.track, sub.language))
                scores[(sub.track, sub.language, sub.condition)] = score_entry(name, files[name], path,
                                                                               plan.get("cache"))
            else:
                scores[(sub.language, sub.condition)] = score_entry(name, files[name], sub.trials, plan.get("cache"))
    return write_valid_submission(out, scores, trials_dir)
