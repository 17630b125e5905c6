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
from array import array
from collections.abc import Container, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator, Literal

import numpy as np

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
_STRING_FIELDS = ("key", "identity", "language", "modality", "path", "video", "age", "gender")
_OPTIONAL = ("identity", "language", "video", "age", "gender")  # categorical columns; absent = code -1
_ITER_CHUNK = 65536  # rows decoded together when iterating a table
_MAX_PATH_SHAPES = 1024  # distinct (head, drop, tail) path shapes before paths are kept whole


def _index_dtype(n: int) -> np.dtype:
    """The smallest signed integer type holding ``-1 .. n``."""
    for dtype in (np.int8, np.int16, np.int32):
        if n < np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


class StringColumn:
    """Strings as one UTF-8 buffer plus offsets: two arrays, no per-string Python objects, so forked workers
    that read them copy no pages (nothing is refcount-touched)."""

    __slots__ = ("data", "offsets")

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self.data, self.offsets = data, offsets

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> "StringColumn":
        builder = _StringBuilder()
        for s in strings:
            builder.add(s)
        return builder.finish()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return str(memoryview(self.data)[int(self.offsets[i]):int(self.offsets[i + 1])], "utf-8", "surrogatepass")

    def tolist(self, rows: np.ndarray | None = None) -> list[str]:
        """Every string, or those of ``rows``, decoded."""
        view = memoryview(self.data)
        if rows is None:
            ends = self.offsets.tolist()
            return [str(view[a:b], "utf-8", "surrogatepass") for a, b in zip(ends, ends[1:])]
        return [str(view[a:b], "utf-8", "surrogatepass")
                for a, b in zip(self.offsets[rows].tolist(), self.offsets[rows + 1].tolist())]

    def take(self, rows: np.ndarray) -> "StringColumn":
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = (ends - starts).astype(np.int64)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # each output byte's source position: its row's start plus its place within the row
        source = np.repeat(starts.astype(np.int64) - offsets[:-1], lengths) + np.arange(offsets[-1])
        return StringColumn(self.data[source], offsets.astype(_offset_dtype(int(offsets[-1]))))

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.offsets.nbytes


def _offset_dtype(size: int) -> np.dtype:
    return np.dtype(np.uint32 if size < 2 ** 32 else np.int64)


class _StringBuilder:
    __slots__ = ("buf", "ends")

    def __init__(self) -> None:
        self.buf, self.ends = bytearray(), array("q")

    def add(self, s: str) -> None:
        self.buf += s.encode("utf-8", "surrogatepass")
        self.ends.append(len(self.buf))

    def finish(self) -> StringColumn:
        offsets = np.zeros(len(self.ends) + 1, dtype=_offset_dtype(len(self.buf)))
        offsets[1:] = np.frombuffer(self.ends, dtype=np.int64) if self.ends else []
        data = np.frombuffer(self.buf, dtype=np.uint8).copy()
        self.buf, self.ends = bytearray(), array("q")
        return StringColumn(data, offsets)


class _CategoryBuilder:
    __slots__ = ("index", "codes")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.codes = array("q")

    def add(self, value: str | None) -> None:
        if value is None:
            self.codes.append(-1)
            return
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.index)
        self.codes.append(code)

    def finish(self) -> tuple[np.ndarray, StringColumn]:
        codes = np.frombuffer(self.codes, dtype=np.int64).astype(_index_dtype(len(self.index)))
        values = StringColumn.from_strings(self.index)  # dicts keep insertion order: code order
        self.index, self.codes = {}, array("q")
        return codes, values


@dataclass(frozen=True)
class _Columns:
    """Every field of every record, columnar. A path is ``head + key[drop:] + tail`` for its shape code
    (``path_shape >= 0``: e.g. ``key + ".m4a"``), else kept whole in ``path_raw``."""

    keys: StringColumn
    modality: np.ndarray  # int8 index into MODALITIES
    path_shape: np.ndarray
    path_shapes: tuple[tuple[str, int, str], ...]
    path_raw: StringColumn  # "" where the shape gives the path
    frame: np.ndarray  # FRAME_ABSENT where None
    categories: dict[str, tuple[np.ndarray, StringColumn]]  # field -> (codes, -1 = None; values)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return (self.keys.nbytes + self.modality.nbytes + self.path_shape.nbytes + self.path_raw.nbytes
                + self.frame.nbytes + sum(c.nbytes + v.nbytes for c, v in self.categories.values()))

    def take(self, rows: np.ndarray) -> "_Columns":
        """These rows only, in this order; categories keep their values."""
        return _Columns(self.keys.take(rows), self.modality[rows], self.path_shape[rows], self.path_shapes,
                        self.path_raw.take(rows), self.frame[rows],
                        {name: (codes[rows], values) for name, (codes, values) in self.categories.items()})


FRAME_ABSENT = np.iinfo(np.int64).min


class _TableBuilder:
    """Records streamed in one at a time (dicts of their JSON fields), columns out."""

    def __init__(self) -> None:
        self.keys, self.path_raw = _StringBuilder(), _StringBuilder()
        self.modality, self.path_shape, self.frame = array("b"), array("q"), array("q")
        self.shapes: dict[tuple[str, int, str], int] = {}
        self.categories = {name: _CategoryBuilder() for name in _OPTIONAL}

    def add(self, data: dict) -> None:
        """Add one record's fields; ValueError names what is wrong (nothing is added then)."""
        unknown = data.keys() - _RECORD_FIELDS
        if unknown:
            raise ValueError(f"unknown record fields {sorted(unknown)}")
        for name in _STRING_FIELDS:
            value = data.get(name)
            if value is None:
                if name in ("key", "path"):
                    raise ValueError(f"missing field {name!r}")
            elif not isinstance(value, str):
                raise ValueError(f"{name} must be a string, got {value!r}")
        if data.get("modality") not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {data.get('modality')!r}")
        frame = data.get("frame")
        if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int)
                                  or not FRAME_ABSENT < frame < 2 ** 63):
            raise ValueError(f"frame must be an integer, got {frame!r}")
        key, path = data["key"], data["path"]
        self.keys.add(key)
        shape = self._shape(key, path)
        self.path_shape.append(shape)
        self.path_raw.add("" if shape >= 0 else path)
        self.modality.append(MODALITIES.index(data["modality"]))
        self.frame.append(FRAME_ABSENT if frame is None else frame)
        for name, builder in self.categories.items():
            builder.add(data.get(name))

    def _shape(self, key: str, path: str) -> int:
        """The code of the shape that rebuilds ``path`` from ``key``, or -1 (kept whole)."""
        dot, slash = path.rfind("."), path.rfind("/")
        stem, tail = (path[:dot], path[dot:]) if dot > slash else (path, "")
        if stem.endswith(key):
            common = len(key)
        else:
            common = len(os.path.commonprefix([stem[::-1], key[::-1]]))
            if not common:
                return -1
        shape = (stem[:len(stem) - common], len(key) - common, tail)
        code = self.shapes.get(shape)
        if code is None:
            if len(self.shapes) >= _MAX_PATH_SHAPES:
                return -1
            code = self.shapes[shape] = len(self.shapes)
        return code

    def finish(self) -> _Columns:
        frame = np.frombuffer(self.frame, dtype=np.int64).copy()
        columns = _Columns(
            keys=self.keys.finish(), modality=np.frombuffer(self.modality, dtype=np.int8).copy(),
            path_shape=np.frombuffer(self.path_shape, dtype=np.int64).astype(_index_dtype(len(self.shapes))),
            path_shapes=tuple(self.shapes), path_raw=self.path_raw.finish(), frame=frame,
            categories={name: builder.finish() for name, builder in self.categories.items()})
        self.__init__()
        return columns


class RecordTable(Sequence[MediaRecord]):
    """A manifest's records held columnar (about 50 bytes a VoxCeleb2 record, against ~550 as dataclasses):
    a sequence of :class:`MediaRecord` made one at a time when indexed or iterated. Slicing and selecting give
    views over the same columns (no copy), so extraction selects and shards 2 M records without building them.

    >>> table = RecordTable.from_records([MediaRecord("voices/a/0", "a", None, "voice", "voices/a/0.wav"),
    ...                                   MediaRecord("faces/a/0", "a", None, "face", "faces/a/0.jpg", frame=3)])
    >>> table.where_modality("face")[0].frame, table[0].path
    (3, 'voices/a/0.wav')
    """

    __slots__ = ("columns", "rows")

    def __init__(self, columns: _Columns, rows: range | np.ndarray | None = None) -> None:
        self.columns = columns
        self.rows = range(len(columns)) if rows is None else rows

    @classmethod
    def from_records(cls, records: Iterable[MediaRecord]) -> "RecordTable":
        builder = _TableBuilder()
        for r in records:
            builder.add(vars(r))
        return cls(builder.finish())

    @classmethod
    def read_jsonl(cls, lines: Iterable[tuple[int, str]]) -> "RecordTable":
        """Records from ``(line number, JSON text)`` pairs, streamed (blank lines skipped); ValueError is
        re-raised as ``(line number, error)`` in its args by :meth:`Manifest.read`."""
        builder = _TableBuilder()
        for lineno, line in lines:
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                builder.add(data)
            except (ValueError, TypeError) as err:
                raise _BadLine(lineno, str(err)) from None
        return cls(builder.finish())

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return RecordTable(self.columns, self.rows[i])
        return self.record(int(self.rows[i]))

    def __iter__(self) -> Iterator[MediaRecord]:
        for values in self._fields():
            yield MediaRecord(**values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (RecordTable, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"RecordTable({len(self)} records)"

    def __getstate__(self) -> _Columns:  # pickled (spawned workers): only this view's rows travel
        return self.columns if isinstance(self.rows, range) and self.rows == range(len(self.columns)) \
            else self.columns.take(self._row_array())

    def __setstate__(self, columns: _Columns) -> None:
        self.columns, self.rows = columns, range(len(columns))

    @property
    def nbytes(self) -> int:
        """Bytes of the columns (shared by views) plus this view's row index."""
        return self.columns.nbytes + (0 if isinstance(self.rows, range) else self.rows.nbytes)

    def _row_array(self) -> np.ndarray:
        return _as_array(self.rows)

    def record(self, row: int) -> MediaRecord:
        """The record of column row ``row`` (not a position in this view)."""
        c = self.columns
        key = c.keys[row]
        values = {name: (values[int(codes[row])] if codes[row] >= 0 else None)
                  for name, (codes, values) in c.categories.items()}
        frame = int(c.frame[row])
        return MediaRecord(key=key, modality=MODALITIES[c.modality[row]], path=self._path(row, key),
                           frame=None if frame == FRAME_ABSENT else frame, **values)

    def _path(self, row: int, key: str) -> str:
        code = int(self.columns.path_shape[row])
        if code < 0:
            return self.columns.path_raw[row]
        head, drop, tail = self.columns.path_shapes[code]
        return head + key[drop:] + tail

    def key(self, i: int) -> str:
        """The key of the ``i``-th record of this view, without building the record."""
        return self.columns.keys[int(self.rows[i])]

    def keys(self) -> Iterator[str]:
        keys = self.columns.keys
        for row in self.rows:
            yield keys[row]

    def _fields(self) -> Iterator[dict]:
        """Each record's fields (in :class:`MediaRecord` order), decoded a column and a chunk of rows at a time."""
        c = self.columns
        cats = {name: values.tolist() + [None] for name, (_, values) in c.categories.items()}  # code -1: None
        shapes = c.path_shapes
        for start in range(0, len(self.rows), _ITER_CHUNK):
            rows = _as_array(self.rows[start:start + _ITER_CHUNK])
            ids, langs, videos, ages, genders = (cats[name] for name in _OPTIONAL)
            for key, modality, shape, frame, path, i, la, v, ag, g in zip(
                    c.keys.tolist(rows), c.modality[rows].tolist(), c.path_shape[rows].tolist(),
                    c.frame[rows].tolist(), c.path_raw.tolist(rows),
                    *(codes[rows].tolist() for codes, _ in (c.categories[name] for name in _OPTIONAL))):
                if shape >= 0:
                    head, drop, tail = shapes[shape]
                    path = head + key[drop:] + tail
                yield {"key": key, "identity": ids[i], "language": langs[la], "modality": MODALITIES[modality],
                       "path": path, "video": videos[v], "frame": None if frame == FRAME_ABSENT else frame,
                       "age": ages[ag], "gender": genders[g]}

    def values(self, name: str) -> set[str]:
        """The distinct values of an optional string field (identity, language, video, age, gender) in this view."""
        codes, values = self.columns.categories[name]
        present = np.unique(_take(codes, self.rows))
        return {values[int(code)] for code in present if code >= 0}

    def json_lines(self) -> Iterator[str]:
        """Each record as :meth:`MediaRecord.to_json` writes it, without building the records."""
        for values in self._fields():
            yield json.dumps({k: v for k, v in values.items() if v is not None}, ensure_ascii=False)

    def where_modality(self, modality: str) -> "RecordTable":
        """The records of one modality, in order (a view)."""
        rows = self.rows
        hits = np.flatnonzero(_take(self.columns.modality, rows) == MODALITIES.index(modality))
        if len(hits) == len(rows):
            return self
        return RecordTable(self.columns, rows.start + hits * rows.step if isinstance(rows, range) else rows[hits])

    def without_keys(self, keys: Container[str]) -> "RecordTable":
        """The records whose key is not in ``keys``, in order (a view; itself when ``keys`` is empty)."""
        if not keys:
            return self
        kept = np.fromiter((row for row, key in zip(self.rows, self.keys()) if key not in keys), dtype=np.int64)
        return RecordTable(self.columns, kept)

    def check_unique_keys(self) -> None:
        """FvaError naming a key that two records share (hashes sorted, then equal hashes compared)."""
        hashes = np.fromiter((hash(k) for k in self.keys()), dtype=np.int64, count=len(self))
        order = np.argsort(hashes, kind="stable")
        same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
        if len(same):
            check_unique_keys(self[int(p)] for p in np.unique(np.concatenate([order[same], order[same + 1]])))


def _take(column: np.ndarray, rows: range | np.ndarray) -> np.ndarray:
    """``column[rows]``; a view when ``rows`` is an ascending range."""
    if isinstance(rows, range) and rows.step > 0:
        return column[rows.start:rows.stop:rows.step]
    return column[_as_array(rows)]


def _as_array(rows: range | np.ndarray) -> np.ndarray:
    return np.arange(rows.start, rows.stop, rows.step, dtype=np.int64) if isinstance(rows, range) else rows


class _BadLine(ValueError):
    def __init__(self, lineno: int, reason: str) -> None:
        super().__init__(lineno, reason)
        self.lineno, self.reason = lineno, reason


class Manifest:
    """A dataset's records plus where they came from.

    ``records`` may be a list of :class:`MediaRecord` or a :class:`RecordTable` (what :meth:`read` gives:
    columnar, ~10x smaller). Reading :attr:`records` makes the list (once; the list is then the records);
    :attr:`table` is the columnar form, which extraction uses so that millions of records stay small.
    """

    def __init__(self, dataset: str, root: str, subset: str, split: str,
                 records: Iterable[MediaRecord] | RecordTable = (), version: str = __version__,
                 lists: str | None = None) -> None:
        self.dataset, self.root, self.subset, self.split = dataset, root, subset, split
        self.version = version
        self.lists = lists  # the folder the dataset's list files were read from, where it has lists
        self.records = records

    @property
    def records(self) -> list[MediaRecord]:
        if self._records is None:
            self._records, self._table = list(self._table), None
        return self._records

    @records.setter
    def records(self, records: Iterable[MediaRecord] | RecordTable) -> None:
        if isinstance(records, RecordTable):
            self._table, self._records = records, None
        else:
            self._table, self._records = None, records if isinstance(records, list) else list(records)

    @property
    def table(self) -> RecordTable:
        """The records columnar: the table itself when read from a file, else built from the list (not kept:
        the list stays the one owner of the records)."""
        return self._table if self._table is not None else RecordTable.from_records(self._records)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return (self.header() == other.header() and
                (self._table if self._table is not None else self._records) ==
                (other._table if other._table is not None else other._records))

    def __repr__(self) -> str:
        return (f"Manifest(dataset={self.dataset!r}, root={self.root!r}, subset={self.subset!r}, "
                f"split={self.split!r}, records={len(self._iter())}, version={self.version!r}, lists={self.lists!r})")

    def header(self) -> dict:
        """The header line's fields; ``lists`` only when known (older manifests have none)."""
        head = {"dataset": self.dataset, "root": self.root, "subset": self.subset, "split": self.split}
        if self.lists is not None:
            head["lists"] = self.lists
        return {**head, "version": self.version, "records": len(self._iter())}

    def write(self, path: str | Path) -> None:
        """Write the manifest atomically (temp file, then rename), checking keys are unique."""
        if self._table is not None:
            self._table.check_unique_keys()
            lines = self._table.json_lines()
        else:
            check_unique_keys(self._records)
            lines = (r.to_json() for r in self._records)
        path = Path(path)
        with atomic_write(path) as fh:
            fh.write(json.dumps({"manifest": self.header()}) + "\n")
            for line in lines:
                fh.write(line + "\n")

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        """Read a manifest written by :meth:`write`, streamed into a :class:`RecordTable`; a malformed line is
        an error naming it."""
        path = Path(path)
        if not path.is_file():
            raise FvaError(f"{path}: manifest not found; build one with 'fva manifest'")
        with path.open() as fh:
            try:
                head = json.loads(fh.readline())["manifest"]
            except (ValueError, KeyError, TypeError):
                raise FvaError(f"{where(path, 1)}: not an fva manifest (no header line); "
                               "build one with 'fva manifest'") from None
            try:
                table = RecordTable.read_jsonl(enumerate(fh, 2))
            except _BadLine as err:
                raise FvaError(f"{where(path, err.lineno)}: bad manifest record ({err.reason}); "
                               "rebuild the manifest with 'fva manifest'") from None
        return cls(dataset=head["dataset"], root=head["root"], subset=head["subset"], split=head["split"],
                   records=table, version=head.get("version", "unknown"), lists=head.get("lists"))

    def by_modality(self, modality: str) -> list[MediaRecord]:
        if self._table is not None:
            return list(self._table.where_modality(modality))
        return [r for r in self._records if r.modality == modality]

    def identities(self) -> list[str]:
        if self._table is not None:
            return sorted(self._table.values("identity"))
        return sorted({r.identity for r in self._records if r.identity is not None})

    def languages(self) -> list[str]:
        if self._table is not None:
            return sorted(self._table.values("language"))
        return sorted({r.language for r in self._records if r.language is not None})

    def _iter(self) -> Sequence[MediaRecord]:
        return self._table if self._table is not None else self._records

    def summary(self) -> dict:
        """Counts per modality and language, for printing and JSON."""
        counts: dict[str, dict[str, int]] = {}
        for r in self._iter():
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
