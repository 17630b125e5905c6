"""FAME trial lists and their ground truth.

A trial list has one trial per line, ``<key> <voice path> <face path>``; a labels file has ``<key> <label>``
with label 1 for the same person and 0 otherwise. Both are whitespace-separated text. Readers check every
line and raise :class:`fva.errors.FvaError` naming the file and line of the first bad one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from fva.errors import FvaError, where


@dataclass(frozen=True)
class Trial:
    """One face-voice verification trial as written in a FAME list."""

    key: str
    voice: str
    face: str
    line: int = field(default=0, compare=False)  # line number in the list it was read from, for messages


def read_trials(path: str | Path) -> list[Trial]:
    """Read a FAME trial list; duplicate keys and lines without exactly three fields are errors."""
    path = Path(path)
    trials: list[Trial] = []
    seen: set[str] = set()
    for lineno, fields in _lines(path):
        if len(fields) != 3:
            raise FvaError(
                f"{where(path, lineno)}: expected 3 fields '<key> <voice path> <face path>', found "
                f"{len(fields)}; fix or remove that line"
            )
        key = fields[0]
        if key in seen:
            raise FvaError(f"{where(path, lineno)}: trial key {key!r} appears twice; keys must be unique")
        seen.add(key)
        trials.append(Trial(*fields, line=lineno))
    return trials


def write_trials(path: str | Path, trials: Iterable[Trial]) -> None:
    """Write a FAME trial list, one ``<key> <voice> <face>`` line per trial."""
    Path(path).write_text("".join(f"{t.key} {t.voice} {t.face}\n" for t in trials))


def read_labels(path: str | Path) -> dict[str, int]:
    """Read ground truth ``<key> <0|1>``; an empty file, a bad label or a repeated key is an error."""
    path = Path(path)
    labels: dict[str, int] = {}
    for lineno, fields in _lines(path):
        if len(fields) != 2 or fields[1] not in ("0", "1"):
            raise FvaError(
                f"{where(path, lineno)}: expected '<key> <label>' with label 1 (same person) or 0, "
                f"found {' '.join(fields)!r}"
            )
        if fields[0] in labels:
            raise FvaError(f"{where(path, lineno)}: key {fields[0]!r} is labelled twice")
        labels[fields[0]] = int(fields[1])
    if not labels:
        raise FvaError(f"{path}: labels file is empty; it needs one '<key> <0|1>' line per trial")
    return labels


def write_labels(path: str | Path, labels: dict[str, int]) -> None:
    """Write ground truth as ``<key> <label>`` lines in the dict's order."""
    Path(path).write_text("".join(f"{k} {int(v)}\n" for k, v in labels.items()))


def labels_path(trials_path: str | Path) -> Path:
    """The ground-truth file that goes with a trial list: ``X.txt`` -> ``X_labels.txt``.

    >>> labels_path("demo/English_test.txt").as_posix()
    'demo/English_test_labels.txt'
    """
    p = Path(trials_path)
    return p.with_name(f"{p.stem}_labels{p.suffix or '.txt'}")


def _lines(path: Path) -> Iterable[tuple[int, list[str]]]:
    """Yield (1-based line number, fields) for each non-blank line; a missing file is a user error."""
    if not path.is_file():
        raise FvaError(f"{path}: file not found; check the path")
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.split()
            if fields:
                yield lineno, fields
