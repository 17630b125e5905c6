"""FAME submission zips: write, validate and score them.

A submission is one zip holding, flat (no folders), one score file per test language and condition, named by
the TEST language: ``sub_score_<Lang>_heard.txt`` (scores of the model trained on that language) and
``sub_score_<Lang>_unheard.txt`` (scores of the model trained on the other language). Each file scores every
trial of ``<Lang>_test.txt`` once, as ``<key> <distance>`` lines (see :mod:`fva.evaluate.scores`).

:func:`validate_submission` reports every problem it finds as one line
``"<file inside zip>:<line>: <problem>; <what to do>"`` (no ``:<line>`` part for problems of a whole file),
and returns ``[]`` for a valid zip. The test languages are taken from the trial lists' file names.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from fva.atomic import atomic_path
from fva.data.trials import labels_path, read_labels, read_trials
from fva.errors import FvaError, where
from fva.evaluate.scores import (EvalResult, check_score_line, evaluate_labelled, format_scores,
                                 parse_scores)

__all__ = ["CONDITIONS", "submission_name", "submission_languages", "write_submission",
           "validate_submission", "ConditionResult", "SubmissionResult", "evaluate_submission"]

CONDITIONS = ("heard", "unheard")
TRIALS_SUFFIX = "_test.txt"
LABELS_SUFFIX = "_test_labels.txt"
MAX_PER_KIND = 10  # validate_submission: lines listed per file and kind of problem before summarising the rest

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same scores always give the same zip bytes


def submission_name(language: str, condition: str) -> str:
    """File name inside the zip for a test language and condition.

    >>> submission_name("English", "unheard")
    'sub_score_English_unheard.txt'
    """
    if condition not in CONDITIONS:
        raise FvaError(f"unknown condition {condition!r}; use one of {', '.join(CONDITIONS)}")
    if not language or any(c in language for c in "/\\") or language != "".join(language.split()):
        raise FvaError(f"bad language name {language!r}; use a single word such as 'English'")
    return f"sub_score_{language}_{condition}.txt"


def submission_languages(trials_dir: str | Path) -> list[str]:
    """Test languages of a folder of FAME trial lists: ``X`` for each ``X_test.txt``, sorted."""
    trials_dir = Path(trials_dir)
    if not trials_dir.is_dir():
        raise FvaError(f"{trials_dir}: folder not found; give the folder holding the <Lang>_test.txt trial lists")
    langs = sorted(p.name[:-len(TRIALS_SUFFIX)] for p in trials_dir.glob(f"*{TRIALS_SUFFIX}")
                   if p.is_file() and len(p.name) > len(TRIALS_SUFFIX))
    if not langs:
        raise FvaError(f"{trials_dir}: no <Lang>{TRIALS_SUFFIX} trial lists; give the folder holding them")
    return langs


def write_submission(zip_path: str | Path, scores: Mapping[tuple[str, str], Mapping[str, float]]) -> Path:
    """Write ``{(language, 'heard'|'unheard'): {key: distance}}`` as a flat submission zip; returns its path.

    Each entry becomes ``sub_score_<language>_<condition>.txt`` with sorted ``<key> <score>`` lines, the score
    written as ``repr(float(distance))`` (exact round trip of float32 and float64; see
    :func:`fva.evaluate.scores.format_scores`). The zip is written under a temporary name in the same folder
    and renamed into place, so an existing zip is only replaced by a complete one. Completeness (both
    conditions of every test language) is not enforced here; :func:`validate_submission` checks it.
    """
    zip_path = Path(zip_path)
    if not scores:
        raise FvaError(f"{zip_path}: nothing to write; give the scores of each (language, condition)")
    files: dict[str, str] = {}
    for item, values in scores.items():
        if not (isinstance(item, tuple) and len(item) == 2):
            raise FvaError(f"submission entry {item!r} is not a (language, condition) pair")
        name = submission_name(*item)
        if not values:
            raise FvaError(f"{name}: no scores; every trial of {item[0]}{TRIALS_SUFFIX} needs one")
        try:
            files[name] = format_scores(values)
        except FvaError as err:
            raise FvaError(f"{name}: {err}") from None
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, files[name])
    return zip_path


class _Report:
    """Collects problem lines; past ``limit`` lines of one kind in one file, counts them instead."""

    def __init__(self, limit: int | None) -> None:
        self.lines: list[str] = []
        self.limit = limit
        self._seen: dict[tuple[str, str], int] = {}

    def add(self, name: str, kind: str, text: str) -> None:
        n = self._seen[(name, kind)] = self._seen.get((name, kind), 0) + 1
        if self.limit is None or n <= self.limit:
            self.lines.append(text)

    def summarise(self, name: str) -> None:
        for (file, kind), n in self._seen.items():
            if file == name and self.limit is not None and n > self.limit:
                self.lines.append(f"{name}: {n - self.limit} more line(s) with the same problem ({kind}); "
                                  "fix them the same way")


def validate_submission(zip_path: str | Path, trials_dir: str | Path, *,
                        max_per_kind: int | None = MAX_PER_KIND) -> list[str]:
    """Every problem of a submission zip against the ``<Lang>_test.txt`` lists in ``trials_dir``; [] if valid.

    Checked: the zip opens; each expected ``sub_score_<Lang>_<heard|unheard>.txt`` is there, at the top level
    and once; no other files or folders; and in each file every line is ``<key> <score>`` with one space, a
    finite decimal score and a key of the trial list that no earlier line has, and every trial of the list is
    scored. After ``max_per_kind`` lines with the same kind of problem in one file, the rest are counted in a
    summary line (``None`` lists them all). A missing or unreadable trials folder or list raises FvaError.
    """
    langs = submission_languages(trials_dir)
    trial_keys = {lang: [t.key for t in read_trials(Path(trials_dir) / f"{lang}{TRIALS_SUFFIX}")]
                  for lang in langs}
    expected = {submission_name(lang, cond): lang for lang in langs for cond in CONDITIONS}
    expected_text = ", ".join(expected)

    zip_path = Path(zip_path)
    if not zip_path.is_file():
        return [f"{zip_path}: file not found; check the path"]
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        return [f"{zip_path}: not a readable zip file ({err}); pack the score files into a zip "
                "(fva submission pack)"]

    report = _Report(max_per_kind)
    with zf:
        infos = zf.infolist()
        files = [i for i in infos if not i.is_dir()]
        counts: dict[str, int] = {}
        for info in files:
            counts[info.filename] = counts.get(info.filename, 0) + 1
        top = {i.filename for i in files if not _nested(i.filename)}
        to_check: dict[str, tuple[str, zipfile.ZipInfo]] = {}  # expected name -> (name in zip, entry)
        reported: set[str] = set()
        for info in files:
            name = info.filename
            if name in reported:
                continue
            reported.add(name)
            if counts[name] > 1:
                report.lines.append(f"{name}: appears {counts[name]} times in the zip; keep one copy")
            base = name.replace("\\", "/").rsplit("/", 1)[-1]
            if _nested(name):
                if base in expected and base not in top and base not in to_check:
                    report.lines.append(f"{name}: file is inside a folder; the zip must be flat, put {base} at "
                                        "the top level")
                    to_check[base] = (name, info)
                else:
                    report.lines.append(f"{name}: unexpected file inside a folder; remove it (the zip must hold "
                                        f"only {expected_text}, at the top level)")
            elif name in expected:
                to_check[name] = (name, info)
            else:
                near = [e for e in expected if e.lower() == name.lower()]
                hint = f" (names are case-sensitive: did you mean {near[0]}?)" if near else ""
                report.lines.append(f"{name}: unexpected file{hint}; remove it (the zip must hold only "
                                    f"{expected_text})")
        for info in infos:
            if info.is_dir() and not any(f.filename.startswith(info.filename) for f in files):
                report.lines.append(f"{info.filename}: folder in the zip; the zip must be flat, remove it")
        for exp, lang in expected.items():
            if exp not in to_check:
                cond = exp[:-len(".txt")].rsplit("_", 1)[1]
                report.lines.append(f"{exp}: expected file missing; add the {cond} scores of every trial of "
                                    f"{lang}{TRIALS_SUFFIX}")
                continue
            name, info = to_check[exp]
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, NotImplementedError) as err:
                report.lines.append(f"{name}: cannot be read from the zip ({err}); re-create the zip")
                continue
            _check_file(name, data, lang, trial_keys[lang], report)
    return report.lines


def write_valid_submission(zip_path: str | Path, scores: Mapping[tuple[str, str], Mapping[str, float]],
                           trials_dir: str | Path) -> Path:
    """:func:`write_submission`, then :func:`validate_submission` against ``trials_dir``; a problem is an
    error naming the first one and their count."""
    write_submission(zip_path, scores)
    problems = validate_submission(zip_path, trials_dir)
    if problems:
        raise FvaError(f"{zip_path}: written but invalid: {problems[0]} ({len(problems)} problem(s); "
                       "run 'fva submission validate' for all)")
    return Path(zip_path)


def _nested(name: str) -> bool:
    return "/" in name or "\\" in name


def _check_file(name: str, data: bytes, lang: str, keys: list[str], report: _Report) -> None:
    """Add the problems of one score file's bytes against the trial keys of its language."""
    list_name = f"{lang}{TRIALS_SUFFIX}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        report.lines.append(f"{name}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8")
        return
    if text.startswith("\ufeff"):
        report.lines.append(f"{where(name, 1)}: file starts with a byte-order mark; save it as UTF-8 without BOM")
        text = text[1:]
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline
    if not lines:
        report.lines.append(f"{name}: file is empty; write one '<key> <score>' line per trial of {list_name}")
        return
    trial_set = set(keys)
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(lines, 1):
        judged = check_score_line(raw)
        for kind, message in judged.problems:
            report.add(name, kind, f"{where(name, lineno)}: {message}")
        key = judged.key
        if key is None:
            continue
        if key in first_line:
            report.add(name, "duplicate key", f"{where(name, lineno)}: key {key!r} also on line {first_line[key]}; "
                                              "keep one score per key")
            continue
        first_line[key] = lineno
        if key not in trial_set:
            report.add(name, "key not in the trial list", f"{where(name, lineno)}: key {key!r} is not in "
                                                          f"{list_name}; score only the trials of that list")
    report.summarise(name)
    missing = [k for k in keys if k not in first_line]
    if missing:
        shown = ", ".join(repr(k) for k in missing[:5]) + (", ..." if len(missing) > 5 else "")
        report.lines.append(f"{name}: {len(missing)} of {len(keys)} trial(s) of {list_name} have no score "
                            f"(first: {shown}); add a '<key> <score>' line for every trial of the list")


@dataclass(frozen=True)
class ConditionResult:
    """EER (percent) of one submission file: a test language under the heard or unheard condition."""

    language: str
    condition: str
    eer: float
    n_trials: int
    n_target: int
    n_nontarget: int
    threshold: float


@dataclass(frozen=True)
class SubmissionResult:
    """EER of each (language, condition) of a submission, in language then heard/unheard order."""

    rows: tuple[ConditionResult, ...]

    @property
    def mean_eer(self) -> float:
        """Unweighted mean of the per-file EERs (the challenge's overall number)."""
        return sum(r.eer for r in self.rows) / len(self.rows)

    def get(self, language: str, condition: str) -> ConditionResult:
        for row in self.rows:
            if (row.language, row.condition) == (language, condition):
                return row
        raise KeyError((language, condition))

    def table(self) -> str:
        """Aligned text table: Language, Condition, Trials, EER %, then a Mean row."""
        head = ("Language", "Condition", "Trials", "EER %")
        body = [(r.language, r.condition, str(r.n_trials), f"{r.eer:.2f}") for r in self.rows]
        body.append(("Mean", "", "", f"{self.mean_eer:.2f}"))
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(4)]

        def fmt(row: tuple[str, ...]) -> str:
            return "  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                              row[2].rjust(widths[2]), row[3].rjust(widths[3])]).rstrip()

        return "\n".join([fmt(head), *(fmt(r) for r in body)])

    def to_dict(self) -> dict:
        """JSON-ready: ``{"conditions": [{language, condition, eer, n_trials, ...}, ...], "mean_eer": x}``."""
        return {"conditions": [asdict(r) for r in self.rows], "mean_eer": self.mean_eer}


def evaluate_submission(zip_path: str | Path, ground_truth_dir: str | Path) -> SubmissionResult:
    """EERs of a submission zip against ``<Lang>_test_labels.txt`` files in ``ground_truth_dir``.

    Every language with a labels file must have both files at the top level of the zip; a missing file, a
    bad line or a labelled key without a score raises FvaError (``fva submission validate`` lists all
    problems at once). Extra files and scores of unlabelled keys are ignored.
    """
    gt = Path(ground_truth_dir)
    if not gt.is_dir():
        raise FvaError(f"{gt}: folder not found; give the folder holding the <Lang>{LABELS_SUFFIX} files")
    langs = sorted(p.name[:-len(LABELS_SUFFIX)] for p in gt.glob(f"*{LABELS_SUFFIX}")
                   if p.is_file() and len(p.name) > len(LABELS_SUFFIX))
    if not langs:
        raise FvaError(f"{gt}: no <Lang>{LABELS_SUFFIX} ground-truth files; give the folder holding them")
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise FvaError(f"{zip_path}: file not found; check the path")
    rows = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            entries = {i.filename: i for i in zf.infolist() if not i.is_dir()}
            for lang in langs:
                lpath = labels_path(gt / f"{lang}{TRIALS_SUFFIX}")
                labels = read_labels(lpath)
                for cond in CONDITIONS:
                    name = submission_name(lang, cond)
                    shown = f"{zip_path}/{name}"
                    if name not in entries:
                        raise FvaError(f"{zip_path}: {name} is missing from the top level of the zip; check the "
                                       "zip with 'fva submission validate'")
                    try:
                        text = zf.read(entries[name]).decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise FvaError(f"{shown}: not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                                       "UTF-8") from None
                    res: EvalResult = evaluate_labelled(parse_scores(text, shown), labels, name=shown,
                                                        labels_name=lpath)
                    rows.append(ConditionResult(language=lang, condition=cond, **asdict(res)))
    except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, NotImplementedError) as err:
        raise FvaError(f"{zip_path}: not a readable zip file ({err}); check it with 'fva submission validate'"
                       ) from None
    return SubmissionResult(tuple(rows))
