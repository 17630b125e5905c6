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
(:func:`fva.heads.postprocess.znorm_fusion`); a single experiment's scores are used as they are. Fusion
(:func:`fusion_weights`)::

      English_heard: work/exp/full-seeds          # trained with --seeds: its seed<k>/ experiments, z-norm mean
      German_heard:                               # a weighted sum of the z-normalised scores
        fuse: [work/exp/a, work/exp/b-seeds, {exp: work/other/exp/c, cache: work/other/cache}]
        weights: logistic                         # or a list of numbers, one per experiment after expansion

* an experiment folder written by ``fva train-head --seeds`` (``seed<k>/`` experiments, no experiment of its
  own) stands for its seeds, in seed order, wherever it is named (:func:`expand_seeds`);
* ``max_level`` (optional, 0-3): the highest scoring level a file may use (:data:`fva.heads.postprocess.LEVELS`;
  ``fva submission make --pairwise``: 0); ``<zip>.levels.json`` records each file's level;
* weights: one per listed item (a seeds folder's weight shared by its seeds) or one per experiment;
* ``weights: logistic`` fits the weights when the submission is made (nothing is stored): scikit-learn's
  logistic regression of same/different over the experiments' dev distances, every fold's
  ``fold<k>/dev_scores_<Lang>.txt`` with ``dev_<Lang>_labels.txt``, each dev list z-normalised on its own as
  the test lists are (:func:`dev_fusion_trials`, :func:`fva.heads.postprocess.fit_fusion_weights`). That
  needs the same dev trials in every experiment (the same folds file and seed): other dev trials are refused.
  Fixed weights (e.g. ones fitted earlier with :func:`fusion_weights`) are a list in the plan instead.

An experiment
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

import numpy as np
import yaml

from fva.data import mavceleb_v4
from fva.data.trials import write_trials
from fva.errors import FvaError
from fva.evaluate.submission import (FLAG_2027, SubmissionFile, detect_layout, submission_files,
                                     submission_languages, write_valid_submission)
from fva.experiment import DevList, Experiment, ExperimentInfo, experiment_folds, seed_experiments, write_json
from fva.heads.postprocess import znorm_fusion
from fva.heads.scoring import score_trial_list
from fva.yamlio import read_yaml_mapping

PLAN_KEYS = {"trials", "cache", "files", "max_level"}
LEVELS_SUFFIX = ".levels.json"  # beside a submission zip: the scoring level of each of its files


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
FUSION_KEYS = {"fuse", "weights"}


def entry_experiments(name: str, entry, cache: str | None) -> list[tuple[str, str | None]]:
    """``(experiment, cache)`` of each experiment a plan's file names: a folder, ``{exp, cache}``, a non-empty
    list of those, or ``{fuse: LIST, weights: ...}``; seed folders expanded (:func:`expand_seeds`)."""
    return [exp for group in entry_groups(name, entry, cache) for exp in group]


def entry_groups(name: str, entry, cache: str | None) -> list[list[tuple[str, str | None]]]:
    """Per item a plan's file lists, its ``(experiment, cache)`` pairs: one, or a seeds folder's seeds."""
    items = fusion_items(name, entry)
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
    return [expand_seeds([item]) for item in out]


def entry_level(name: str, entry, cache: str | None) -> int:
    """The scoring level of a plan's file (:data:`fva.heads.postprocess.LEVELS`): the highest of its experiments'
    (each experiment's config says what its scores read)."""
    return max(experiment_level(exp) for exp, _ in entry_experiments(name, entry, cache))


def experiment_level(exp: str | Path) -> int:
    """An experiment's scoring level, from the config its scores follow."""
    from fva.heads.config import load_config

    return load_config(Experiment.open(exp).config_path).score.level


# ---------------------------------------------------------------------------------------------------- fusion
def fusion_items(name: str, entry) -> list:
    """The experiments an entry lists: those of ``{fuse: LIST, weights: ...}``, else the entry itself."""
    if isinstance(entry, dict) and "fuse" in entry:
        unknown = sorted(set(entry) - FUSION_KEYS)
        if unknown:
            raise FvaError(f"plan: {name}: unknown key '{unknown[0]}'; a fusion has fuse (experiments) and weights")
        fuse = entry["fuse"]
        return fuse if isinstance(fuse, list) else [fuse]
    return entry if isinstance(entry, list) else [entry]


def is_fusion(entry, exps: list) -> bool:
    """Whether an entry fuses scores: a list, a ``fuse`` mapping, or an experiment that stands for its seeds."""
    return isinstance(entry, list) or (isinstance(entry, dict) and "fuse" in entry) or len(exps) > 1


def expand_seeds(exps: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """Each ``(experiment, cache)`` with a seeds folder replaced by its seeds' experiments (the same cache)."""
    out = []
    for exp, cache in exps:
        seeds = seed_experiments(exp)
        out += [(str(s), cache) for s in seeds] if seeds else [(exp, cache)]
    return out


def fusion_weights(name: str, entry, exps: list[str], sizes: list[int] | None = None) -> list[float] | None:
    """The weights of an entry's fusion, one per experiment of ``exps``: None for the plain z-norm mean, the
    plan's list, or (``logistic``) weights fitted on the experiments' shared dev trials.

    ``sizes``: how many of ``exps`` each listed item stands for (a seeds folder: its seeds). A list with one
    weight per listed item gives a seeds folder's weight to the mean of its seeds' z-scores (each seed
    weight / seeds: FLAG 2027's 0.75 x mean over seeds + 0.25 x CCA is ``weights: [0.75, 0.25]``); so does
    ``logistic``, which then fits one weight per item on the items' mean z-scores. A list with one weight per
    experiment weighs each seed on its own."""
    spec = entry.get("weights") if isinstance(entry, dict) and "fuse" in entry else None
    if spec is None:
        return None
    sizes = sizes or [1] * len(exps)
    if spec == "logistic":
        from fva.heads.postprocess import fit_fusion_weights

        z, labels = dev_fusion_trials(exps)
        starts = np.cumsum([0] + sizes[:-1])
        grouped = np.add.reduceat(z, starts, axis=1) / np.asarray(sizes)  # each item's mean z-score
        return expand_weights(fit_fusion_weights(grouped, labels), sizes)
    if not isinstance(spec, list) or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in spec):
        raise FvaError(f"plan: {name}: weights must be 'logistic' or a list of numbers, got {spec!r}")
    if len(spec) == len(sizes):
        return expand_weights(spec, sizes)
    if len(spec) != len(exps):
        raise FvaError(f"plan: {name}: {len(spec)} weights for {len(sizes)} listed items ({len(exps)} experiments "
                       "with each seed); give one weight per item or one per experiment")
    return [float(w) for w in spec]


def expand_weights(weights, sizes: list[int]) -> list[float]:
    """One weight per experiment from one per item: an item of n seeds gives each weight / n.

    >>> expand_weights([0.75, 0.25], [3, 1])
    [0.25, 0.25, 0.25, 0.25]
    """
    return [float(w) / n for w, n in zip(weights, sizes) for _ in range(n)]


def _dev_lists(exp: Path) -> dict[tuple[str, str], DevList]:
    """(fold folder name, list name) -> each scored dev list of an experiment with impostors of any identity
    (the same-gender lists repeat their voices)."""
    return {(fold.folder.name, d.name): d for fold in experiment_folds(exp) for d in fold.dev_lists(negatives="any")}


def dev_fusion_trials(exps: list[str]):
    """``(z, labels)`` over every fold's and language's dev trials: (n_trials, n_experiments) distances, each
    dev list z-normalised on its own per experiment, and 1/0 same-person labels. The experiments must hold the
    same dev lists with the same trials (the same folds and seed); else one line naming the first difference."""
    from fva.data.trials import read_labels
    from fva.evaluate.scores import read_scores
    from fva.heads.postprocess import znorm_matrix

    if len(exps) < 2:
        raise FvaError("fusion weights: name at least two experiments")
    paths = [Path(e) for e in exps]
    lists = [_dev_lists(p) for p in paths]
    if not lists[0]:
        raise FvaError(f"{paths[0]}: no dev scores (fold<k>/dev_scores_<Lang>.txt with dev_<Lang>_labels.txt) to "
                       "fit fusion weights on; an experiment trained with 'fva train-head' has them")
    refuse = ("; logistic fusion needs the same dev trials in every experiment (train them on the same folds "
              "with the same seed)")
    for path, found in zip(paths[1:], lists[1:]):
        differ = sorted(set(found) ^ set(lists[0]))
        if differ:
            listed = (found.get(differ[0]) or lists[0][differ[0]]).scores_path
            raise FvaError(f"{path}: dev list {listed.parent.name}/{listed.name} is in only one of it and "
                           f"{paths[0]}" + refuse)
        for key, first in lists[0].items():
            other = found[key]
            for a, b in ((first.trials_path, other.trials_path), (first.labels_path, other.labels_path)):
                if not b.is_file() or not a.is_file() or a.read_bytes() != b.read_bytes():
                    raise FvaError(f"{b}: other dev trials than {a}" + refuse)
    zs, ys = [], []
    for key, first in lists[0].items():
        labels = read_labels(first.labels_path)
        scores = [read_scores(found[key].scores_path) for found in lists]
        for found, sc in zip(lists, scores):
            if set(sc) != set(labels):
                raise FvaError(f"{found[key].scores_path}: does not score exactly the trials of "
                               f"{first.labels_path.name}; train the experiment again")
        keys, z = znorm_matrix([{k: sc[k] for k in labels} for sc in scores], [str(p) for p in paths])
        zs.append(z)
        ys.append(np.array([labels[k] for k in keys]))
    return np.concatenate(zs), np.concatenate(ys)


def score_entry(name: str, entry, trials_path: Path, cache: str | None, max_level: int = 3) -> dict[str, float]:
    """key -> distance for one file of a plan: one experiment's scores, or the fusion of several (the z-norm
    mean, or the weighted sum of :func:`fusion_weights`); experiments scoring above ``max_level`` are refused."""
    groups = entry_groups(name, entry, cache)
    exps = [exp for group in groups for exp in group]
    if not is_fusion(entry, exps):
        return score_trial_list(exps[0][0], trials_path, exps[0][1], max_level=max_level)
    from fva.heads.postprocess import weighted_znorm_fusion

    names = [exp for exp, _ in exps]
    try:
        weights = fusion_weights(name, entry, names, [len(group) for group in groups])
        scores = [score_trial_list(exp, trials_path, c, max_level=max_level) for exp, c in exps]
        return znorm_fusion(scores, names) if weights is None else weighted_znorm_fusion(scores, weights, names)
    except FvaError as err:
        text = str(err)
        raise FvaError(text if text.startswith("plan: ") else f"plan: {name}: {text}") from None


def unmet_conditions(name: str, info: ExperimentInfo) -> list[str]:
    """What keeps an experiment (its ``experiment.json``) from the published condition of the plan file ``name``
    (``<TestLang>_<heard|unheard>``): an unheard file scored by heads or encoders that heard its language, and
    the published system's parts it lacks (voice age-gender features, VoxCeleb2 pretraining)."""
    track, _, file = name.rpartition("/")
    lang, cond = file.rsplit("_", 1)
    out = []
    if track:  # FLAG 2027: heads trained on English only, with the public encoders; no language to keep unheard
        if cond == "unheard" and lang in info.heard:
            out.append(f"heads trained on {lang}")
    elif cond == "unheard":
        if lang in info.heard:
            out.append(f"heads trained on {lang}")
        if info.encoders_unheard != lang:
            out.append(f"encoders that heard {lang} (weight set {info.weight_set})")
    if "voice-age-gender-ecapa" not in info.voice.encoders:
        out.append("no voice age-gender features")
    if not info.pretrained_on:
        out.append("heads not pretrained on VoxCeleb2")
    return out


PUBLISHED_DATASET = "mavceleb-v3"  # the dataset of the published system (the FAME 2026 winner)


def plan_conditions(plan: dict) -> list[str]:
    """One line per file of the plan that does not meet the published condition, saying what it lacks. The
    published system is the FAME 2026 winner's on MAV-Celeb V3 (``PUBLISHED_DATASET``); experiments of other
    datasets (FAME 2024's V1/V2, FLAG 2027's v4) have no published condition to meet here."""
    lines = []
    for name, entry in plan["files"].items():
        unmet: list[str] = []
        for exp, _ in entry_experiments(name, entry, plan.get("cache")):
            info = Experiment.open(exp).info
            if (info.dataset or PUBLISHED_DATASET) != PUBLISHED_DATASET:
                continue
            unmet += [u for u in unmet_conditions(name, info) if u not in unmet]
        if unmet:
            head, _, cond = name.rpartition("_")
            lines.append(f"{head.replace('/', ' ')} {cond} scored with " + "; ".join(unmet))
    return lines


def plan_max_level(plan: dict, max_level: int | None = None) -> int:
    """The highest scoring level a plan allows: its ``max_level`` (default 3), lowered by ``max_level``
    (``--pairwise``: 0)."""
    from fva.heads.postprocess import LEVELS

    value = plan.get("max_level", 3)
    if value not in LEVELS or isinstance(value, bool):
        raise FvaError(f"plan: max_level must be one of {', '.join(map(str, LEVELS))}, got {value!r}")
    return value if max_level is None else min(value, max_level)


def make_submission(plan: dict, out: str | Path, max_level: int | None = None) -> Path:
    """Score every file of the plan, write the zip and validate it against the trial lists; beside it,
    ``<zip>.levels.json`` records each file's scoring level. A file scored above the plan's allowed level
    (:func:`plan_max_level`) is refused before anything is scored."""
    from fva.heads.postprocess import LEVELS, check_level

    trials_dir = Path(plan["trials"])
    subs = submission_files(trials_dir)
    expected = [plan_name(sub) for sub in subs]
    files = plan["files"]
    missing = [name for name in expected if name not in files]
    if missing:
        raise FvaError(f"plan: no experiment for {missing[0]}; give one for each of {', '.join(expected)}")
    allowed = plan_max_level(plan, max_level)
    levels = {name: entry_level(name, files[name], plan.get("cache")) for name in expected}
    for name, level in levels.items():
        check_level(level, allowed, f"plan: {name}")
    scores = {}
    with tempfile.TemporaryDirectory(prefix="fva-plan-") as tmp:
        for sub, name in zip(subs, expected):
            if sub.track:  # FLAG 2027: the track-qualified paths the test manifest keys media by
                path = Path(tmp) / sub.track / sub.trials.name
                path.parent.mkdir(exist_ok=True)
                write_trials(path, mavceleb_v4.track_trials(trials_dir, sub.track, sub.language))
                scores[(sub.track, sub.language, sub.condition)] = score_entry(name, files[name], path,
                                                                               plan.get("cache"), allowed)
            else:
                scores[(sub.language, sub.condition)] = score_entry(name, files[name], sub.trials, plan.get("cache"),
                                                                    allowed)
    zip_path = write_valid_submission(out, scores, trials_dir)
    level = max(levels.values())
    write_json(levels_path(zip_path), {"level": level, "meaning": LEVELS[level], "allowed": allowed, "files": levels})
    return zip_path


def levels_path(zip_path: str | Path) -> Path:
    """``<zip>.levels.json``: the scoring levels of a submission's files."""
    return Path(str(zip_path) + LEVELS_SUFFIX)
