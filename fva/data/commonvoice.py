"""Mozilla CommonVoice: one folder per locale with ``validated.tsv`` (and train/dev/test.tsv) and ``clips/``.

Identity = ``client_id``. Age and gender are normalised: age to a decade label (``fourties`` is read as
``forties``), gender to male / female / other across both vocabularies (up to release 16: male, female,
other; later: male_masculine, female_feminine, transgender, non-binary, intersex, do_not_wish_to_say).
A record without a usable label keeps the record and drops only the label. A row that cannot be used at all
(a malformed row, no clip path or speaker, a clip missing on disk, a clip listed twice) is skipped and counted
by reason (:func:`records` returns the count as a note), or stops the build with ``strict``.
"""

from __future__ import annotations

import csv
import os
import sys
from collections import Counter
from pathlib import Path

from fva.data.languages import canonical_language
from fva.data.records import MediaRecord
from fva.errors import FvaError, where

AGES = ("teens", "twenties", "thirties", "forties", "fifties", "sixties", "seventies", "eighties", "nineties")
AGE_YEARS = dict(zip(AGES, (16.0, 25.0, 35.0, 45.0, 55.0, 65.0, 75.0, 85.0, 95.0)))  # decade centres
_AGE_ALIASES = {"fourties": "forties"}
_GENDERS = {
    "male": "male", "male_masculine": "male", "female": "female", "female_feminine": "female",
    "other": "other", "transgender": "other", "non-binary": "other", "intersex": "other",
}
REQUIRED_COLUMNS = ("client_id", "path", "age", "gender")

csv.field_size_limit(sys.maxsize)  # sentences are free text


def normalise_age(value: str) -> str | None:
    """Decade label, or None when empty or unknown.

    >>> normalise_age("fourties"), normalise_age(""), normalise_age("twenties")
    ('forties', None, 'twenties')
    """
    value = _AGE_ALIASES.get(value.strip().lower(), value.strip().lower())
    return value if value in AGES else None


def normalise_gender(value: str) -> str | None:
    """male, female, other, or None (empty, do_not_wish_to_say, unknown).

    >>> normalise_gender("female_feminine"), normalise_gender("do_not_wish_to_say"), normalise_gender("male")
    ('female', None, 'male')
    """
    return _GENDERS.get(value.strip().lower())


def locale_dirs(root: Path, subset: str) -> list[Path]:
    """The locale folders under ``root`` (or ``root`` itself when it is one) that have ``<subset>.tsv``."""
    if not root.is_dir():
        raise FvaError(f"dataset root {root} not found; pass --root the CommonVoice folder holding one "
                       "folder per locale (each with validated.tsv and clips/)")
    if (root / f"{subset}.tsv").is_file():
        return [root]
    found = sorted(d for d in root.iterdir() if (d / f"{subset}.tsv").is_file())
    if not found:
        raise FvaError(f"no locale folder with {subset}.tsv under {root}; pass --root the CommonVoice folder "
                       "(e.g. cv-corpus-17.0/ holding de/, en/, ...)")
    return found


class _Skips:
    """Rows left out, counted by reason; with ``strict`` the first one is an error instead."""

    def __init__(self, root: Path, strict: bool) -> None:
        self.root, self.strict = root, strict
        self.reasons: Counter[str] = Counter()
        self.first: str | None = None
        self.rows = 0

    def skip(self, tsv: Path, lineno: int, reason: str, detail: str) -> None:
        """Count the row under ``reason``, or raise with ``detail`` (what is wrong, what to do) under strict."""
        if self.strict:
            raise FvaError(f"{where(tsv, lineno)}: {detail} (without --strict such rows are skipped and counted)")
        self.reasons[reason] += 1
        if self.first is None:
            self.first = where(tsv.relative_to(self.root).as_posix(), lineno)

    def note(self) -> str | None:
        if not self.reasons:
            return None
        total = sum(self.reasons.values())
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.reasons.items(), key=lambda x: (-x[1], x[0])))
        return (f"commonvoice: skipped {total} row{'s' if total > 1 else ''} of {self.rows} "
                f"({counts}; first: {self.first})")


def records(root: Path, subset: str = "validated", strict: bool = False) -> tuple[list[MediaRecord], list[str]]:
    """One voice record per usable row of ``<locale>/<subset>.tsv`` in every locale folder, and notes.

    Unusable rows are skipped and counted in a note; ``strict`` stops at the first one instead.
    """
    out: list[MediaRecord] = []
    skips = _Skips(root, strict)
    seen: set[str] = set()
    for locale_dir in locale_dirs(root, subset):
        language = canonical_language(locale_dir.name)
        clips = locale_dir / "clips"
        on_disk = set(os.listdir(clips)) if clips.is_dir() else set()
        tsv = locale_dir / f"{subset}.tsv"
        with tsv.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None) or []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise FvaError(f"{where(tsv, 1)}: header lacks column(s) {', '.join(missing)}; "
                               "is this a CommonVoice TSV?")
            col = {name: header.index(name) for name in REQUIRED_COLUMNS}
            for lineno, row in enumerate(reader, 2):
                if not row:
                    continue
                skips.rows += 1
                if len(row) != len(header):
                    skips.skip(tsv, lineno, "malformed row", f"{len(row)} fields where the header has "
                               f"{len(header)}; the file is damaged, re-extract it")
                    continue
                name, client = row[col["path"]].strip(), row[col["client_id"]].strip()
                if not name:
                    skips.skip(tsv, lineno, "no clip path", "the path field is empty; fix or remove that row")
                    continue
                if not client:
                    skips.skip(tsv, lineno, "no client_id", "the client_id field is empty (no speaker); "
                               "fix or remove that row")
                    continue
                if name not in on_disk:
                    skips.skip(tsv, lineno, "clip missing", f"clip {clips / name} does not exist; "
                               "the download is incomplete or --root is wrong")
                    continue
                rel = (locale_dir / "clips" / name).relative_to(root)
                key = rel.with_suffix("").as_posix()
                if key in seen:
                    skips.skip(tsv, lineno, "duplicate clip", f"clip {name} is listed twice; remove one row")
                    continue
                seen.add(key)
                out.append(MediaRecord(
                    key=key, identity=client, language=language, modality="voice", path=rel.as_posix(),
                    age=normalise_age(row[col["age"]]), gender=normalise_gender(row[col["gender"]]),
                ))
    note = skips.note()
    if not out:
        raise FvaError(f"no usable row in the {subset}.tsv files under {root}"
                       + (f" ({note.removeprefix('commonvoice: ')})" if note else "")
                       + "; check --root and --subset")
    return out, [note] if note else []
