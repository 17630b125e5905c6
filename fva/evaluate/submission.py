"""FAME submission zips: write, validate and score them.

A submission is one zip holding, flat (no folders), one score file per test language and condition, named by
the TEST language: ``sub_score_<Lang>_heard.txt`` (scores of the model trained on that language) and
``sub_score_<Lang>_unheard.txt`` (scores of the model trained on the other language). Each file scores every
trial of ``<Lang>_test.txt`` once, as ``<key> <distance>`` lines (see :mod:`fva.evaluate.scores`).

:func:`validate_submission` reports every problem it finds as one line
``"<file inside zip>:<line>: <problem>; <what to do>"`` (no ``:<line>`` part for problems of a whole file),
and returns ``[]`` for a valid zip. The test languages are taken from the trial lists' file names.

Two layouts, each owned here (:func:`submission_files`, chosen from the trial folder by :func:`detect_layout`):
FAME 2026 (``fame2026``), the four flat files above; and FLAG 2027 (``flag2027``, MAV-Celeb v4), one folder
per track (``no_gender/``, ``gender/``), each holding ``sub_score_v4_<Lang>_<heard|unheard>.txt`` for every
``<track>/<Lang>_test.txt``: training is English only, so English is heard and every other language (Bangla)
unheard. FLAG ground truth is the organisers' ``<Lang>_test_<track>.txt`` (``<key> <0|1>``).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from fva.atomic import atomic_path
from fva.data import mavceleb_v4
from fva.data.languages import canonical_language
from fva.data.trials import labels_path, read_labels, read_trials
from fva.errors import FvaError, where
from fva.evaluate.scores import (EvalResult, check_score_line, evaluate_labelled, format_scores,
                                 parse_scores)

__all__ = ["CONDITIONS", "LAYOUTS", "submission_name", "flag_submission_name", "submission_languages",
           "SubmissionFile", "detect_layout", "submission_files", "write_submission", "validate_submission",
           "ConditionResult", "SubmissionResult", "evaluate_submission"]

CONDITIONS = ("heard", "unheard")
TRIALS_SUFFIX = "_test.txt"
LABELS_SUFFIX = "_test_labels.txt"
MAX_PER_KIND = 10  # validate_submission: lines listed per file and kind of problem before summarising the rest

FAME_2026, FLAG_2027 = "fame2026", "flag2027"
LAYOUTS = (FAME_2026, FLAG_2027)
FLAG_HEARD = "English"  # FLAG 2027 trains on English only: its files are heard, every other language's unheard

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


def flag_submission_name(track: str, language: str, condition: str) -> str:
    """FLAG 2027 file name inside the zip, as the organisers' scorer reads it.

    >>> flag_submission_name("gender", "Bangla", "unheard")
    'gender/sub_score_v4_Bangla_unheard.txt'
    """
    if track not in mavceleb_v4.TRACKS:
        raise FvaError(f"unknown FLAG track {track!r}; use one of {', '.join(mavceleb_v4.TRACKS)}")
    return f"{track}/{submission_name(language, condition).replace('sub_score_', 'sub_score_v4_', 1)}"


def flag_condition(language: str) -> str:
    """``heard`` for English (the FLAG training language), else ``unheard``."""
    return "heard" if canonical_language(language) == FLAG_HEARD else "unheard"


@dataclass(frozen=True)
class SubmissionFile:
    """One file a submission must hold: its name in the zip, what it scores and the trial list it scores."""

    name: str
    language: str  # as the trial list's file name spells it
    condition: str
    trials: Path
    track: str | None = None  # FLAG 2027 only

    @property
    def list_name(self) -> str:
        """The trial list as messages name it: ``English_test.txt`` or ``gender/English_test.txt``."""
        return f"{self.track}/{self.trials.name}" if self.track else self.trials.name


def detect_layout(trials_dir: str | Path) -> str:
    """``flag2027`` when ``trials_dir`` holds track folders with ``<Lang>_test.txt`` lists, else ``fame2026``."""
    return FLAG_2027 if mavceleb_v4.is_track_dir(Path(trials_dir)) else FAME_2026


def submission_files(trials_dir: str | Path, layout: str | None = None) -> list[SubmissionFile]:
    """Every file a submission for the trial lists of ``trials_dir`` holds, in table order (``layout``:
    one of :data:`LAYOUTS`, default :func:`detect_layout`)."""
    trials_dir = Path(trials_dir)
    layout = layout or detect_layout(trials_dir)
    if layout == FAME_2026:
        return [SubmissionFile(submission_name(lang, cond), lang, cond, trials_dir / f"{lang}{TRIALS_SUFFIX}")
                for lang in submission_languages(trials_dir) for cond in CONDITIONS]
    if layout != FLAG_2027:
        raise FvaError(f"unknown submission layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    tracks = mavceleb_v4.tracks_of(trials_dir)
    if not tracks:
        raise FvaError(f"{trials_dir}: no {'/ or '.join(mavceleb_v4.TRACKS)}/ folder with <Lang>{TRIALS_SUFFIX} "
                       "lists; give the folder holding the FLAG track folders")
    return [SubmissionFile(flag_submission_name(track, lang, flag_condition(lang)), lang, flag_condition(lang),
                           trials_dir / track / f"{lang}{TRIALS_SUFFIX}", track)
            for track in tracks for lang in mavceleb_v4.test_languages(trials_dir / track)]


def _entry_name(item) -> str:
    """The zip name of a scores entry: ``(language, condition)`` (FAME 2026) or ``(track, language,
    condition)`` (FLAG 2027)."""
    if isinstance(item, tuple) and len(item) == 2:
        return submission_name(*item)
    if isinstance(item, tuple) and len(item) == 3:
        return flag_submission_name(*item)
    raise FvaError(f"submission entry {item!r} is not a (language, condition) or (track, language, condition) tuple")


def write_submission(zip_path: str | Path, scores: Mapping[tuple, Mapping[str, float]]) -> Path:
    """Write ``{(language, 'heard'|'unheard'): {key: distance}}`` as a flat submission zip; returns its path.
    FLAG 2027: keys ``(track, language, condition)``, each file in its track's folder.

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
        name = _entry_name(item)
        if not values:
            raise FvaError(f"{name}: no scores; every trial of {item[-2]}{TRIALS_SUFFIX} needs one")
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
    """Every problem of a submission zip against the trial lists in ``trials_dir``; [] if valid.

    Checked: the zip opens; each expected file of :func:`submission_files` is there, at its place (FAME 2026:
    the top level; FLAG 2027: its track's folder) and once; no other files or folders; and in each file every
    line is ``<key> <score>`` with one space, a finite decimal score and a key of the trial list that no earlier
    line has, and every trial of the list is scored. After ``max_per_kind`` lines with the same kind of problem
    in one file, the rest are counted in a summary line (``None`` lists them all). A missing or unreadable
    trials folder or list raises FvaError.
    """
    layout = detect_layout(trials_dir)
    flat = layout == FAME_2026
    expected = {f.name: f for f in submission_files(trials_dir, layout)}
    trial_keys = {name: [t.key for t in read_trials(f.trials)] for name, f in expected.items()}
    expected_text = ", ".join(expected)
    where_text = "at the top level" if flat else "in their track folders"

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
            if name in expected:
                to_check[name] = (name, info)
            elif flat and _nested(name):
                if base in expected and base not in top and base not in to_check:
                    report.lines.append(f"{name}: file is inside a folder; the zip must be flat, put {base} at "
                                        "the top level")
                    to_check[base] = (name, info)
                else:
                    report.lines.append(f"{name}: unexpected file inside a folder; remove it (the zip must hold "
                                        f"only {expected_text}, at the top level)")
            else:
                near = [e for e in expected if e.lower() == name.lower()]
                hint = f" (names are case-sensitive: did you mean {near[0]}?)" if near else ""
                placed = [e for e in expected if e.rsplit("/", 1)[-1] == base and not near]
                if placed and not flat:
                    hint = f" (a FLAG 2027 file belongs in its track folder, e.g. {placed[0]})"
                report.lines.append(f"{name}: unexpected file{hint}; remove it (the zip must hold only "
                                    f"{expected_text}, {where_text})")
        for info in infos:
            if info.is_dir() and not any(f.filename.startswith(info.filename) for f in files):
                report.lines.append(f"{info.filename}: folder in the zip; "
                                    f"{'the zip must be flat, remove it' if flat else 'remove the empty folder'}")
        for exp, sub in expected.items():
            if exp not in to_check:
                report.lines.append(f"{exp}: expected file missing; add the {sub.condition} scores of every trial of "
                                    f"{sub.list_name}")
                continue
            name, info = to_check[exp]
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, NotImplementedError) as err:
                report.lines.append(f"{name}: cannot be read from the zip ({err}); re-create the zip")
                continue
            _check_file(name, data, sub.list_name, trial_keys[exp], report)
    return report.lines


def write_valid_submission(zip_path: str | Path, scores: Mapping[tuple, Mapping[str, float]],
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


def _check_file(name: str, data: bytes, list_name: str, keys: list[str], report: _Report) -> None:
    """Add the problems of one score file's bytes against the trial keys of its list."""
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
    track: str | None = None  # FLAG 2027: no_gender or gender


@dataclass(frozen=True)
class SubmissionResult:
    """EER of each (language, condition) of a submission, in language then heard/unheard order."""

    rows: tuple[ConditionResult, ...]

    @property
    def mean_eer(self) -> float:
        """Unweighted mean of the per-file EERs (the challenge's overall number)."""
        return sum(r.eer for r in self.rows) / len(self.rows)

    def get(self, language: str, condition: str, track: str | None = None) -> ConditionResult:
        for row in self.rows:
            if (row.language, row.condition, row.track) == (language, condition, track):
                return row
        raise KeyError((language, condition) if track is None else (track, language, condition))

    def table(self) -> str:
        """Aligned text table: (Track,) Language, Condition, Trials, EER %, then a Mean row."""
        tracked = any(r.track for r in self.rows)
        head = ("Track",) * tracked + ("Language", "Condition", "Trials", "EER %")
        body = [(r.track or "",) * tracked + (r.language, r.condition, str(r.n_trials), f"{r.eer:.2f}")
                for r in self.rows]
        body.append(("Mean",) + ("",) * (len(head) - 2) + (f"{self.mean_eer:.2f}",))
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

        def fmt(row: tuple[str, ...]) -> str:
            cells = [c.rjust(w) if i >= len(head) - 2 else c.ljust(w)
                     for i, (c, w) in enumerate(zip(row, widths))]
            return "  ".join(cells).rstrip()

        return "\n".join([fmt(head), *(fmt(r) for r in body)])

    def to_dict(self) -> dict:
        """JSON-ready: ``{"conditions": [{language, condition, eer, n_trials, ...}, ...], "mean_eer": x}``."""
        return {"conditions": [asdict(r) for r in self.rows], "mean_eer": self.mean_eer}


def ground_truth_files(ground_truth_dir: str | Path) -> list[tuple[SubmissionFile, Path]]:
    """Each labelled submission file and its labels: FLAG 2027's ``<Lang>_test_<track>.txt`` when the folder
    has any, else FAME 2026's ``<Lang>_test_labels.txt``."""
    gt = Path(ground_truth_dir)
    if not gt.is_dir():
        raise FvaError(f"{gt}: folder not found; give the folder holding the <Lang>{LABELS_SUFFIX} files "
                       "(FLAG 2027: <Lang>_test_<track>.txt)")
    flag = []
    for track in mavceleb_v4.TRACKS:
        suffix = f"_test_{track}.txt"
        for p in sorted(gt.glob(f"*{suffix}")):
            lang = p.name[:-len(suffix)]
            if p.is_file() and lang:
                sub = SubmissionFile(flag_submission_name(track, lang, flag_condition(lang)), lang,
                                     flag_condition(lang), gt / track / f"{lang}{TRIALS_SUFFIX}", track)
                flag.append((sub, p))
    if flag:
        return flag
    langs = sorted(p.name[:-len(LABELS_SUFFIX)] for p in gt.glob(f"*{LABELS_SUFFIX}")
                   if p.is_file() and len(p.name) > len(LABELS_SUFFIX))
    if not langs:
        raise FvaError(f"{gt}: no <Lang>{LABELS_SUFFIX} ground-truth files (FLAG 2027: <Lang>_test_<track>.txt); "
                       "give the folder holding them")
    return [(SubmissionFile(submission_name(lang, cond), lang, cond, gt / f"{lang}{TRIALS_SUFFIX}"),
             labels_path(gt / f"{lang}{TRIALS_SUFFIX}")) for lang in langs for cond in CONDITIONS]


def evaluate_submission(zip_path: str | Path, ground_truth_dir: str | Path) -> SubmissionResult:
    """EERs of a submission zip against the ground truth in ``ground_truth_dir`` (:func:`ground_truth_files`:
    the layout follows the files there).

    Every labelled file must be in the zip at its place; a missing file, a bad line or a labelled key without
    a score raises FvaError (``fva submission validate`` lists all problems at once). Extra files and scores
    of unlabelled keys are ignored.
    """
    expected = ground_truth_files(ground_truth_dir)
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise FvaError(f"{zip_path}: file not found; check the path")
    rows = []
    read: dict[Path, dict[str, int]] = {}
    try:
        with zipfile.ZipFile(zip_path) as zf:
            entries = {i.filename: i for i in zf.infolist() if not i.is_dir()}
            for sub, lpath in expected:
                if lpath not in read:
                    read[lpath] = read_labels(lpath)
                labels = read[lpath]
                name = sub.name
                shown = f"{zip_path}/{name}"
                if name not in entries:
                    raise FvaError(f"{zip_path}: {name} is missing from the zip; check the zip with "
                                   "'fva submission validate'")
                try:
                    text = zf.read(entries[name]).decode("utf-8")
                except UnicodeDecodeError as err:
                    raise FvaError(f"{shown}: not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                                   "UTF-8") from None
                res: EvalResult = evaluate_labelled(parse_scores(text, shown), labels, name=shown,
                                                    labels_name=lpath)
                rows.append(ConditionResult(language=sub.language, condition=sub.condition, **asdict(res),
                                            track=sub.track))
    except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, NotImplementedError) as err:
        raise FvaError(f"{zip_path}: not a readable zip file ({err}); check it with 'fva submission validate'"
                       ) from None
    return SubmissionResult(tuple(rows))
