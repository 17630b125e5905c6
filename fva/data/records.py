"""Manifests: typed media records written as JSONL and read back into the same types.

A manifest file starts with one header line ``{"manifest": {...}}`` that says which dataset, root, subset and
split it was built from (and, for MAV-Celeb, ``lists``: the folder its list files came from), followed by one
JSON object per :class:`MediaRecord`: one voice clip, one face image, or one face track (an mp4 whose every
25th frame is a face sample; ``frame`` is then ``None``).

Keys are stable: the media path relative to the dataset root without its extension, with the canonical
``voices``/``faces`` spelling, e.g. ``voices/id0001/English/A8Ch7gJalls/00000`` (VoxCeleb2: always
``<subset>/aac|mp4/...``, also when the subset was unpacked flat into the root). They are unique within a
manifest, and the feature caches of stage 1 are keyed by them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Iterator, Literal

from fva import __version__
from fva.atomic import atomic_write
from fva.errors import FvaError, where

Modality = Literal["voice", "face"]
MODALITIES: tuple[str, ...] = ("voice", "face")


@dataclass(frozen=True)
class MediaRecord:
    """One media item of a dataset.

    >>> r = MediaRecord(key="voices/id0001/English/vid/00000", identity="id0001", language="English",
    ...                 modality="voice", path="voices/id0001/English/vid/00000.wav", video="vid")
    >>> MediaRecord.from_json(r.to_json()) == r
    True
    """

    key: str
    identity: str | None
    language: str | None
    modality: Modality
    path: str  # relative to the manifest's root
    video: str | None = None
    frame: int | None = None  # frame number of a face image; None for voices and whole face tracks
    age: str | None = None  # decade label: teens, twenties, ..., nineties
    gender: str | None = None  # male, female or other

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "MediaRecord":
        data = json.loads(text)
        unknown = set(data) - _RECORD_FIELDS
        if unknown:
            raise ValueError(f"unknown record fields {sorted(unknown)}")
        data.setdefault("identity", None)  # to_json leaves out unknown fields
        data.setdefault("language", None)
        if data.get("modality") not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {data.get('modality')!r}")
        return cls(**data)


_RECORD_FIELDS = {f.name for f in fields(MediaRecord)}


@dataclass
class Manifest:
    """A dataset's records plus where they came from."""

    dataset: str
    root: str
    subset: str
    split: str
    records: list[MediaRecord] = field(default_factory=list)
    version: str = __version__
    lists: str | None = None  # the folder the dataset's list files were read from, where it has lists

    def header(self) -> dict:
        """The header line's fields; ``lists`` only when known (older manifests have none)."""
        head = {"dataset": self.dataset, "root": self.root, "subset": self.subset, "split": self.split}
        if self.lists is not None:
            head["lists"] = self.lists
        return {**head, "version": self.version, "records": len(self.records)}

    def write(self, path: str | Path) -> None:
        """Write the manifest atomically (temp file, then rename), checking keys are unique."""
        check_unique_keys(self.records)
        path = Path(path)
        with atomic_write(path) as fh:
            fh.write(json.dumps({"manifest": self.header()}) + "\n")
            for r in self.records:
                fh.write(r.to_json() + "\n")

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        """Read a manifest written by :meth:`write`; a malformed line is an error naming it."""
        path = Path(path)
        if not path.is_file():
            raise FvaError(f"{path}: manifest not found; build one with 'fva manifest'")
        with path.open() as fh:
            try:
                head = json.loads(fh.readline())["manifest"]
            except (ValueError, KeyError, TypeError):
                raise FvaError(f"{where(path, 1)}: not an fva manifest (no header line); "
                               "build one with 'fva manifest'") from None
            records = []
            for lineno, line in enumerate(fh, 2):
                if not line.strip():
                    continue
                try:
                    records.append(MediaRecord.from_json(line))
                except (ValueError, TypeError) as err:
                    raise FvaError(f"{where(path, lineno)}: bad manifest record ({err}); "
                                   "rebuild the manifest with 'fva manifest'") from None
        return cls(dataset=head["dataset"], root=head["root"], subset=head["subset"], split=head["split"],
                   records=records, version=head.get("version", "unknown"), lists=head.get("lists"))

    def by_modality(self, modality: str) -> list[MediaRecord]:
        return [r for r in self.records if r.modality == modality]

    def identities(self) -> list[str]:
        return sorted({r.identity for r in self.records if r.identity is not None})

    def languages(self) -> list[str]:
        return sorted({r.language for r in self.records if r.language is not None})

    def summary(self) -> dict:
        """Counts per modality and language, for printing and JSON."""
        counts: dict[str, dict[str, int]] = {}
        for r in self.records:
            per_lang = counts.setdefault(r.modality, {})
            lang = r.language or "unknown"
            per_lang[lang] = per_lang.get(lang, 0) + 1
        return {**self.header(), "identities": len(self.identities()), "counts": counts}


def check_unique_keys(records: Iterable[MediaRecord]) -> None:
    seen: set[str] = set()
    for r in records:
        if r.key in seen:
            raise FvaError(f"duplicate media key {r.key!r} ({r.path}); two files map to one key")
        seen.add(r.key)


def iter_files(root: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """All files under ``root`` with one of ``suffixes``, in sorted order (deterministic across filesystems)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(suffixes):
                yield Path(dirpath, name)
