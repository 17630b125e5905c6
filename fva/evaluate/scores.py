"""FAME score files: one ``<key> <score>`` line per trial, key and score separated by exactly one space.

The score is a distance: lower means more likely the same person. The format is strict because the challenge
server parses it strictly: a tab, a second space, a third field, a carriage return, a blank line, a score
that is not a plain decimal number (``0.42``, ``-1.5e-3``), a NaN or infinite score and a repeated key are
all errors. :func:`check_score_line` judges one line and is shared with the submission validator, which
collects every problem; the readers here stop at the first and raise :class:`fva.errors.FvaError` naming
``file:line``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from fva.data.trials import read_labels
from fva.errors import FvaError, where
from fva.evaluate.eer import compute_eer, eer_threshold

__all__ = ["ScoreLine", "check_score_line", "parse_scores", "read_scores", "format_scores", "write_scores",
           "align", "EvalResult", "evaluate_labelled", "evaluate_files"]

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

# Problem kinds: the first part of each message, used to group repeated problems in reports.
CR = "line ends with a carriage return (Windows line ending)"
BLANK = "blank line"
TAB = "tab between fields"
SPACING = "fields not separated by exactly one space"
FIELDS = "wrong number of fields"
NOT_NUMBER = "score is not a number"
NOT_FINITE = "score is NaN or infinite"


@dataclass(frozen=True)
class ScoreLine:
    """One judged line: ``key`` is its first field (None for a blank line), ``score`` the parsed score when
    the score field is a finite number, and ``problems`` a list of ``(kind, "<problem>; <what to do>")``."""

    key: str | None
    score: float | None
    problems: list[tuple[str, str]] = field(default_factory=list)


def check_score_line(text: str) -> ScoreLine:
    """Judge one line of a score file (without its ``\\n``); every problem on the line is listed.

    >>> check_score_line("00017 0.4213")
    ScoreLine(key='00017', score=0.4213, problems=[])
    >>> [kind for kind, _ in check_score_line("00017\\tnan").problems]
    ['tab between fields', 'score is NaN or infinite']
    """
    problems: list[tuple[str, str]] = []
    if text.endswith("\r"):
        text = text[:-1]
        problems.append((CR, f"{CR}; save the file with '\\n' line endings"))
    fields = text.split()
    if not fields:
        problems.append((BLANK, f"{BLANK}; remove it"))
        return ScoreLine(None, None, problems)
    if "\t" in text:
        problems.append((TAB, f"{TAB}; separate key and score with exactly one space"))
    elif text != " ".join(fields):
        problems.append((SPACING, f"{SPACING} (double, leading or trailing space); write '<key> <score>' "
                                  "with exactly one space"))
    key = fields[0]
    if len(fields) != 2:
        problems.append((FIELDS, f"expected 2 fields '<key> <score>', found {len(fields)}; write one key and "
                                 "one score per line"))
        return ScoreLine(key, None, problems)
    score = _parse_score(fields[1])
    if score is None:
        problems.append((NOT_NUMBER, f"score {fields[1]!r} is not a number; write a decimal distance such as "
                                     "0.4213"))
    elif not math.isfinite(score):
        problems.append((NOT_FINITE, f"score {fields[1]!r} is NaN or infinite; every score must be a finite "
                                     "distance, check the model outputs"))
        score = None
    return ScoreLine(key, score, problems)


def _parse_score(text: str) -> float | None:
    """The value of a plain decimal number (or of a NaN/inf spelling float() accepts), else None."""
    if _NUMBER.fullmatch(text):
        return float(text)
    try:
        value = float(text)
    except ValueError:
        return None
    return value if not math.isfinite(value) else None  # '1_0' and the like are not plain numbers


def parse_scores(text: str, name: str | Path) -> dict[str, float]:
    """Parse the text of a score file; ``name`` is used in messages. Raises FvaError at the first problem."""
    scores: dict[str, float] = {}
    first_line: dict[str, int] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    for lineno, raw in enumerate(lines, 1):
        if lineno == 1 and raw.startswith("\ufeff"):
            raise FvaError(f"{where(name, 1)}: file starts with a byte-order mark; save it as UTF-8 without BOM")
        judged = check_score_line(raw)
        if judged.problems:
            raise FvaError(f"{where(name, lineno)}: {judged.problems[0][1]}")
        assert judged.key is not None and judged.score is not None
        if judged.key in first_line:
            raise FvaError(f"{where(name, lineno)}: key {judged.key!r} already scored on line "
                           f"{first_line[judged.key]}; keep one score per key")
        first_line[judged.key] = lineno
        scores[judged.key] = judged.score
    if not scores:
        raise FvaError(f"{name}: score file is empty; it needs one '<key> <score>' line per trial")
    return scores


def read_scores(path: str | Path) -> dict[str, float]:
    """Read a score file into ``{key: distance}`` in file order; any bad line is an FvaError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FvaError(f"{path}: file not found; check the path")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise FvaError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    return parse_scores(text, path)


def format_scores(scores: Mapping[str, float]) -> str:
    """Score-file text: ``<key> <score>`` lines in sorted key order, each score as ``repr(float(score))``.

    ``repr`` is the shortest text that reads back as the same float64, so float32 and float64 scores both
    round-trip exactly and a file evaluates to the same EER as the scores in memory. Keys must be non-empty
    and free of whitespace, scores finite; otherwise FvaError.

    >>> print(format_scores({"b": 0.5, "a": np.float32(0.1)}), end="")
    a 0.10000000149011612
    b 0.5
    """
    out = []
    for key in sorted(scores):
        if not isinstance(key, str) or not key or key != "".join(key.split()):
            raise FvaError(f"trial key {key!r} is empty or contains whitespace; keys must be single words")
        value = float(scores[key])
        if not math.isfinite(value):
            raise FvaError(f"score of key {key!r} is {value}; every score must be a finite distance, check the "
                           "model outputs")
        out.append(f"{key} {value!r}\n")
    return "".join(out)


def write_scores(path: str | Path, scores: Mapping[str, float]) -> None:
    """Write a score file (see :func:`format_scores`: sorted keys, exact scores)."""
    Path(path).write_text(format_scores(scores))


def align(scores: Mapping[str, float], labels: Mapping[str, int], *, name: str | Path | None = None,
          ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(keys, labels, scores)`` in label order; every labelled key needs a score, extra scores are ignored.

    ``name`` (the score file) prefixes the error message.

    >>> keys, y, d = align({"b": 0.9, "a": 0.1, "x": 0.5}, {"a": 1, "b": 0})
    >>> keys, y.tolist(), d.tolist()
    (['a', 'b'], [1, 0], [0.1, 0.9])
    """
    missing = [k for k in labels if k not in scores]
    if missing:
        prefix = f"{name}: " if name is not None else ""
        raise FvaError(f"{prefix}{len(missing)} of {len(labels)} labelled trial(s) have no score, first "
                       f"{missing[0]!r}; score every trial of the list")
    keys = list(labels)
    return (keys, np.fromiter((labels[k] for k in keys), dtype=np.int64, count=len(keys)),
            np.fromiter((scores[k] for k in keys), dtype=np.float64, count=len(keys)))


@dataclass(frozen=True)
class EvalResult:
    """EER (percent) of one score file against its ground truth, and the distance threshold at the EER
    (decide "same person" when ``distance <= threshold``)."""

    eer: float
    n_trials: int
    n_target: int
    n_nontarget: int
    threshold: float

    def to_dict(self) -> dict:
        return asdict(self)



def read_scored(scores_path: str | Path, labels_path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(keys, labels, distances) of a score file against its labels file, aligned (:func:`align`)."""
    return align(read_scores(scores_path), read_labels(labels_path), name=scores_path)

def evaluate_labelled(scores: Mapping[str, float], labels: Mapping[str, int], *,
                      name: str | Path | None = None, labels_name: str | Path | None = None) -> EvalResult:
    """:class:`EvalResult` of in-memory scores against labels (see :func:`align`); ``name`` (the score
    file) prefixes a missing-score error, ``labels_name`` an error about the labels (e.g. only one class)."""
    _, y, d = align(scores, labels, name=name)
    try:
        eer, threshold = compute_eer(y, d), eer_threshold(y, d)
    except FvaError as err:
        raise FvaError(f"{labels_name}: {err}" if labels_name is not None else str(err)) from None
    n_target = int(y.sum())
    return EvalResult(eer=eer, n_trials=len(y), n_target=n_target, n_nontarget=len(y) - n_target,
                      threshold=threshold)


def evaluate_files(scores_path: str | Path, labels_path: str | Path) -> EvalResult:
    """EER of a score file against a ``<key> <0|1>`` labels file (see :mod:`fva.data.trials`)."""
    labels = read_labels(labels_path)
    scores = read_scores(scores_path)
    return evaluate_labelled(scores, labels, name=scores_path, labels_name=labels_path)
