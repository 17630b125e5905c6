"""Feature caches: sharded, resumable HDF5 tables of embeddings keyed by (manifest key, frame).

One cache is one folder per dataset/split/encoder holding one file per worker shard,
``shard-00003-of-00008.h5``. Every file (a committed part or a final shard) has the same layout::

    keys            (N,)      variable-length UTF-8 manifest keys
    frames          (N,)      int32 frame index of a video-frame face, -1 otherwise
    embeddings      (N, dim)  float16 (or float32), contiguous, uncompressed
    extras/<name>   (N,)      float32 per-row scalars (e.g. age, p_female)
    failed/keys     (M,)      media that could not be encoded ...
    failed/reasons  (M,)      ... and why

plus attributes that make it self-describing (encoder, weights_id, dim, dtype, fva_version, ...). A record
yields one row, or several for a face track (one per sampled frame); a failed record yields no row and one
``failed`` entry, so it commits atomically with the rows around it.

Writing is crash-safe: :class:`ShardWriter` commits its buffer as numbered part files beside the shard
(``shard-00003-of-00008.part-000012.h5``), each written under a ``*.tmp*`` name, fsynced and renamed, so a
part either exists whole or not at all. A run killed at any point and run again skips the keys already in
committed parts (:meth:`ShardWriter.done_keys`), deletes ``*.tmp*`` garbage, and :meth:`ShardWriter.finalize`
streams the parts in order into the shard file (again temp name + rename) and then deletes them. Readers only
ever look at final shard files, so leftover parts (a kill between that rename and the deletes) are never read
twice; the next writer removes them.

Reading: :func:`open_cache` joins a folder's complete shards into one :class:`CacheTable` whose keys, frames
and extras are in memory and whose embeddings stay on disk until asked for (:meth:`CacheTable.rows`,
:meth:`CacheTable.iter_chunks`, :meth:`CacheTable.load`). :func:`validate_cache` lists every problem of a
cache, optionally against its manifest; :func:`cache_info` summarises one.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from fva import __version__
from fva.data.records import Manifest, MediaRecord
from fva.errors import FvaError

CACHE_FORMAT = 1  # bump on any layout change; readers refuse other formats

DTYPES = ("float16", "float32")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
NO_FRAME = -1  # the frame of a row that is not a video frame (voices, images without a frame number)

# Attributes the writer sets itself; callers may not pass them in ``attrs``.
WRITER_ATTRS = ("dim", "dtype", "extras", "fva_version", "cache_format", "shard_index", "num_shards", "rows",
                "failed", "created", "json_attrs")
# Per-file attributes: they legitimately differ between the shards of one cache.
PER_FILE_ATTRS = ("shard_index", "rows", "failed", "created")
# Attributes that must agree between the shards of one cache (and between a writer and the files it resumes).
MUST_AGREE = ("cache_format", "encoder", "modality", "dim", "dtype", "extras", "weights_id")
# Further attributes a resuming writer must agree on with the files already there, when both state them.
RESUME_MUST_AGREE = MUST_AGREE + ("dataset", "subset", "split")
# Attributes compared across shards by validate_cache (reported, not fatal).
VALIDATE_AGREE = MUST_AGREE + ("weights", "dataset", "subset", "split", "num_shards")

_SHARD_RE = re.compile(r"^shard-(\d{5})-of-(\d{5})\.h5$")
_COPY_BYTES = 64 << 20  # bytes per slice when merging parts
_READ_BYTES = 16 << 20  # bytes per raw read when converting to float32


def shard_name(shard_index: int, num_shards: int) -> str:
    """File name of one shard.

    >>> shard_name(3, 8)
    'shard-00003-of-00008.h5'
    """
    if not (0 <= shard_index < num_shards <= 99999):
        raise ValueError(f"bad shard {shard_index} of {num_shards}")
    return f"shard-{shard_index:05d}-of-{num_shards:05d}.h5"


def row_frame(record: MediaRecord) -> int | None:
    """The ``frame`` a record's single row must carry, or None for a face track (several rows, one per
    sampled frame, each with its own frame index).

    >>> row_frame(MediaRecord(key="v", identity=None, language=None, modality="voice", path="v.wav"))
    -1
    >>> row_frame(MediaRecord(key="f", identity=None, language=None, modality="face", path="f.jpg", frame=75))
    75
    >>> row_frame(MediaRecord(key="t", identity=None, language=None, modality="face", path="t.mp4")) is None
    True
    """
    if record.frame is not None:
        return int(record.frame)
    if record.modality == "face" and Path(record.path).suffix.lower() in VIDEO_SUFFIXES:
        return None
    return NO_FRAME


# ----------------------------------------------------------------------------------------------- file helpers


def _open(path: Path, mode: str = "r") -> h5py.File:
    # h5py's default locking: HDF5 itself ignores locks where the filesystem has none (NFS), and mixing
    # locking flags on one file within a process makes HDF5 refuse the second open.
    return h5py.File(path, mode)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _encode_attrs(attrs: dict) -> dict:
    """Caller attrs -> HDF5-storable values: dicts/lists/tuples become JSON strings (named in json_attrs);
    None values are dropped."""
    out: dict[str, Any] = {}
    json_names = []
    for name, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, (dict, list, tuple)):
            out[name] = json.dumps(value, sort_keys=True, default=str)
            json_names.append(name)
        elif isinstance(value, (str, bool, int, float, np.integer, np.floating)):
            out[name] = value
        else:
            raise TypeError(f"attr {name!r}: cannot store a {type(value).__name__} (use str, number or dict)")
    out["json_attrs"] = json.dumps(sorted(json_names))
    return out


def _decode_attrs(raw: Mapping[str, Any]) -> dict:
    """Stored attrs (a file's, or what _encode_attrs made) -> Python values, JSON attrs parsed."""
    attrs: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        attrs[name] = value
    try:
        json_names = json.loads(attrs.pop("json_attrs", "[]"))
    except (TypeError, ValueError):
        json_names = []
    for name in json_names:
        if isinstance(attrs.get(name), str):
            try:
                attrs[name] = json.loads(attrs[name])
            except ValueError:
                pass
    if isinstance(attrs.get("extras"), list):
        attrs["extras"] = tuple(attrs["extras"])
    return attrs


def _str_dataset(group: h5py.Group, name: str, values) -> None:
    group.create_dataset(name, data=np.asarray(values, dtype=object).reshape(-1), dtype=h5py.string_dtype())


def _read_strs(ds: h5py.Dataset) -> np.ndarray:
    if ds.shape[0] == 0:
        return np.empty(0, dtype=object)
    return ds.asstr()[()].astype(object, copy=False)


def _failures(f: h5py.File) -> tuple[np.ndarray, np.ndarray]:
    if "failed" not in f:
        return np.empty(0, dtype=object), np.empty(0, dtype=object)
    return _read_strs(f["failed/keys"]), _read_strs(f["failed/reasons"])


def _read_f32(ds: h5py.Dataset, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows [start, stop) of an embeddings dataset as float32, converting in bounded slices (no full-size
    float16 temporary)."""
    n, dim = stop - start, ds.shape[1]
    if out is None:
        out = np.empty((n, dim), dtype=np.float32)
    if n == 0:
        return out
    if ds.dtype == np.float32:
        ds.read_direct(out, np.s_[start:stop], np.s_[0:n])
        return out
    step = max(1, _READ_BYTES // max(1, dim * ds.dtype.itemsize))
    for a in range(start, stop, step):
        b = min(stop, a + step)
        out[a - start:b - start] = ds[a:b]
    return out


def _dir_fsync(folder: Path) -> None:
    try:
        _fsync_path(folder)
    except OSError:  # some filesystems refuse fsync on a directory; the rename is still atomic
        pass


# ----------------------------------------------------------------------------------------------------- writer


class ShardWriter:
    """Writes one shard of a cache, resumably.

    Usage for one worker::

        w = ShardWriter(folder, shard_index, num_shards, dim=enc.dim, extras=enc.extras, attrs={...})
        if not w.is_complete():
            done = w.done_keys()
            for record in my_records:
                if record.key in done: continue
                ...  w.add(key, frames, embeddings, extras)  or  w.add_failure(key, reason)
            w.finalize()

    ``add`` takes all rows of one record at once; the buffer is committed as a part file every
    ``part_rows`` rows (and on :meth:`commit`). A key may be added (as rows or as a failure) only once.
    ``fsync=False`` skips the fsyncs (tests, scratch caches): still safe against a killed process, not against
    a power cut.
    """

    def __init__(self, folder: Path, shard_index: int, num_shards: int, *, dim: int, dtype: str = "float16",
                 extras: tuple[str, ...] = (), attrs: dict | None = None, part_rows: int = 4096,
                 fsync: bool = True) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if int(dim) < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if part_rows < 1:
            raise ValueError(f"part_rows must be positive, got {part_rows}")
        extras = tuple(extras)
        if len(set(extras)) != len(extras) or not all(isinstance(e, str) and e and "/" not in e for e in extras):
            raise ValueError(f"extras must be distinct names without '/', got {extras!r}")
        attrs = dict(attrs or {})
        reserved = sorted(set(attrs) & set(WRITER_ATTRS))
        if reserved:
            raise ValueError(f"attrs {reserved} are set by the writer")
        self.folder = Path(folder)
        self.shard_index, self.num_shards = int(shard_index), int(num_shards)
        self.name = shard_name(self.shard_index, self.num_shards)
        self.path = self.folder / self.name
        self.stem = self.name[:-len(".h5")]
        self.dim, self.dtype, self.extras = int(dim), dtype, extras
        self.part_rows = int(part_rows)
        self.fsync = fsync
        self._attrs = _encode_attrs({
            **attrs, "dim": self.dim, "dtype": dtype, "extras": list(extras), "fva_version": __version__,
            "cache_format": CACHE_FORMAT, "shard_index": self.shard_index, "num_shards": self.num_shards,
        })
        self._part_re = re.compile(rf"^{re.escape(self.stem)}\.part-(\d{{6,}})\.h5$")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._clear_buffer()
        self._clean_temp()
        self._done: set[str] = set()
        if self.is_complete():
            self._check_resume(self.path)
            self._remove_parts()  # a kill between finalize's rename and its deletes
            with _open(self.path) as f:
                self._done.update(_read_strs(f["keys"]).tolist())
                self._done.update(_failures(f)[0].tolist())
            self._next_part = 0
        else:
            parts = self._parts()
            for _, part in parts:
                self._check_resume(part)
                try:
                    with _open(part) as f:
                        self._done.update(_read_strs(f["keys"]).tolist())
                        self._done.update(_failures(f)[0].tolist())
                except (OSError, KeyError) as err:
                    raise FvaError(f"{part}: unreadable part file ({err}); delete it and rerun "
                                   "(its records will be extracted again)") from None
            self._next_part = parts[-1][0] + 1 if parts else 0

    # -- state

    def is_complete(self) -> bool:
        """True when the final shard file exists (finalize has run)."""
        return self.path.is_file()

    def done_keys(self) -> set[str]:
        """Keys already committed (as rows or failures) in the final file or committed parts; buffered keys
        are not included."""
        return set(self._done)

    def _clear_buffer(self) -> None:
        self._keys: list[str] = []
        self._frames: list[np.ndarray] = []
        self._emb: list[np.ndarray] = []
        self._ext: dict[str, list[np.ndarray]] = {e: [] for e in self.extras}
        self._fkeys: list[str] = []
        self._freasons: list[str] = []
        self._buffered_rows = 0
        self._buffered_keys: set[str] = set()

    def _parts(self) -> list[tuple[int, Path]]:
        found = []
        for p in self.folder.iterdir():
            m = self._part_re.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def _clean_temp(self) -> None:
        for p in self.folder.glob(f"{self.stem}.*"):
            if ".tmp" in p.name[len(self.stem):]:
                p.unlink(missing_ok=True)

    def _remove_parts(self) -> None:
        for _, p in self._parts():
            p.unlink(missing_ok=True)

    def _check_resume(self, path: Path) -> None:
        try:
            with _open(path) as f:
                theirs = _decode_attrs(f.attrs)
        except OSError as err:
            raise FvaError(f"{path}: unreadable ({err}); delete it and rerun fva extract") from None
        ours = _decode_attrs(self._attrs)
        for name in RESUME_MUST_AGREE:
            if name in theirs and name in ours and theirs[name] != ours[name]:
                raise FvaError(f"{path} was written with {name}={theirs[name]!r} but this run has "
                               f"{name}={ours[name]!r}; extract into a new folder or delete {self.folder}")

    # -- adding

    def add(self, key: str, frames: np.ndarray, embeddings: np.ndarray,
            extras: dict[str, np.ndarray] | None = None) -> None:
        """Buffer all rows of one record: ``frames`` (n,) ints, ``embeddings`` (n, dim), ``extras`` one (n,)
        array per extra name. Commits a part when the buffer reaches ``part_rows`` rows."""
        self._check_new_key(key)
        frames = np.asarray(frames)
        embeddings = np.asarray(embeddings)
        if frames.ndim != 1 or frames.shape[0] < 1:
            raise ValueError(f"{key}: frames must be a non-empty 1-D array, got shape {frames.shape} "
                             "(record a record without rows with add_failure)")
        n = frames.shape[0]
        if embeddings.ndim != 2 or embeddings.shape != (n, self.dim):
            raise ValueError(f"{key}: embeddings must have shape ({n}, {self.dim}), got {embeddings.shape}")
        if not np.issubdtype(frames.dtype, np.integer):
            raise ValueError(f"{key}: frames must be integers, got {frames.dtype}")
        extras = dict(extras or {})
        if set(extras) != set(self.extras):
            raise ValueError(f"{key}: extras must be exactly {sorted(self.extras)}, got {sorted(extras)}")
        ext = {}
        for name in self.extras:
            value = np.asarray(extras[name], dtype=np.float32).reshape(-1)
            if value.shape != (n,):
                raise ValueError(f"{key}: extra {name!r} must have shape ({n},), got {np.shape(extras[name])}")
            ext[name] = value
        self._keys.extend([key] * n)
        self._frames.append(frames.astype(np.int32))
        self._emb.append(embeddings.astype(self.dtype))
        for name in self.extras:
            self._ext[name].append(ext[name])
        self._buffered_rows += n
        self._buffered_keys.add(key)
        if self._buffered_rows >= self.part_rows:
            self.commit()

    def add_failure(self, key: str, reason: str) -> None:
        """Record that ``key`` could not be encoded (it gets no row and is not retried on resume)."""
        self._check_new_key(key)
        self._fkeys.append(key)
        self._freasons.append(" ".join(str(reason).split()) or "unknown")
        self._buffered_keys.add(key)

    def _check_new_key(self, key: str) -> None:
        if self.is_complete():
            raise RuntimeError(f"{self.path} is already complete; check is_complete() before adding")
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty str, got {key!r}")
        if key in self._done or key in self._buffered_keys:
            raise ValueError(f"{key}: already added to shard {self.name}; skip done_keys() on resume")

    # -- committing

    def commit(self) -> None:
        """Write the buffer as the next part file (temp name, fsync, rename); nothing when it is empty."""
        if not self._keys and not self._fkeys:
            return
        part = self.folder / f"{self.stem}.part-{self._next_part:06d}.h5"
        n = self._buffered_rows
        emb = np.concatenate(self._emb) if self._emb else np.empty((0, self.dim), self.dtype)
        frames = np.concatenate(self._frames) if self._frames else np.empty(0, np.int32)
        extras = {e: (np.concatenate(v) if v else np.empty(0, np.float32)) for e, v in self._ext.items()}
        tmp = part.with_name(f"{part.name}.tmp-{os.getpid()}")
        try:
            with _open(tmp, "w") as f:
                f.attrs.update(self._attrs)
                f.attrs.update({"rows": n, "failed": len(self._fkeys), "created": _now()})
                _str_dataset(f, "keys", self._keys)
                f.create_dataset("frames", data=frames)
                f.create_dataset("embeddings", data=emb)
                g = f.create_group("extras")
                for name, value in extras.items():
                    g.create_dataset(name, data=value)
                fg = f.create_group("failed")
                _str_dataset(fg, "keys", self._fkeys)
                _str_dataset(fg, "reasons", self._freasons)
            if self.fsync:
                _fsync_path(tmp)
            os.replace(tmp, part)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self.fsync:
            _dir_fsync(self.folder)
        self._done.update(self._buffered_keys)
        self._next_part += 1
        self._clear_buffer()

    def finalize(self) -> Path:
        """Commit, merge all parts in order into the shard file (temp name + rename), delete the parts.
        Idempotent: on a complete shard it only removes leftover parts."""
        if self.is_complete():
            self._remove_parts()
            return self.path
        self.commit()
        parts = [p for _, p in self._parts()]
        if len(parts) == 1:
            # A part has the shard's full layout and attrs (its rows/failed are the shard's): rename it.
            os.replace(parts[0], self.path)
        else:
            tmp = self.path.with_name(f"{self.name}.tmp-{os.getpid()}")
            try:
                self._merge(parts, tmp)
                if self.fsync:
                    _fsync_path(tmp)
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        if self.fsync:
            _dir_fsync(self.folder)
        self._remove_parts()
        return self.path

    def _merge(self, parts: list[Path], tmp: Path) -> None:
        sizes = []
        for p in parts:
            with _open(p) as f:
                sizes.append((f["embeddings"].shape[0], f["failed/keys"].shape[0]))
        n = sum(s[0] for s in sizes)
        m = sum(s[1] for s in sizes)
        step = max(1, _COPY_BYTES // (self.dim * np.dtype(self.dtype).itemsize))
        with _open(tmp, "w") as out:
            out.attrs.update(self._attrs)
            out.attrs.update({"rows": n, "failed": m, "created": _now()})
            keys = out.create_dataset("keys", shape=(n,), dtype=h5py.string_dtype())
            frames = out.create_dataset("frames", shape=(n,), dtype=np.int32)
            emb = out.create_dataset("embeddings", shape=(n, self.dim), dtype=self.dtype)
            g = out.create_group("extras")
            ext = {e: g.create_dataset(e, shape=(n,), dtype=np.float32) for e in self.extras}
            fg = out.create_group("failed")
            fkeys = fg.create_dataset("keys", shape=(m,), dtype=h5py.string_dtype())
            freasons = fg.create_dataset("reasons", shape=(m,), dtype=h5py.string_dtype())
            row = fail = 0
            for p, (pn, pm) in zip(parts, sizes):
                with _open(p) as f:
                    if pn:
                        keys[row:row + pn] = _read_strs(f["keys"])
                        frames[row:row + pn] = f["frames"][()]
                        for e in self.extras:
                            ext[e][row:row + pn] = f["extras"][e][()]
                        src = f["embeddings"]
                        for a in range(0, pn, step):
                            b = min(pn, a + step)
                            emb[row + a:row + b] = src[a:b]
                    if pm:
                        fkeys[fail:fail + pm] = _read_strs(f["failed/keys"])
                        freasons[fail:fail + pm] = _read_strs(f["failed/reasons"])
                row += pn
                fail += pm


# ----------------------------------------------------------------------------------------------------- reading


def _scan(folder: Path) -> list[tuple[int, int, Path]]:
    """(shard_index, num_shards, path) of every final shard file in ``folder``, sorted."""
    found = []
    for p in folder.iterdir():
        m = _SHARD_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(2)), int(m.group(1)), p))
    return [(i, n, p) for n, i, p in sorted(found)]


def _missing(shards: list[tuple[int, int, Path]]) -> list[str]:
    present = {(i, n) for i, n, _ in shards}
    return [shard_name(i, n) for n in sorted({n for _, n, _ in shards}) for i in range(n) if (i, n) not in present]


def _unfinished_note(folder: Path) -> str:
    parts = [p for p in folder.glob("shard-*.part-*.h5")]
    return f" ({len(parts)} part files of an unfinished run are there)" if parts else ""


def _file_attrs(path: Path, f: h5py.File) -> dict:
    attrs = _decode_attrs(f.attrs)
    if "cache_format" not in attrs or "keys" not in f or "embeddings" not in f:
        raise FvaError(f"{path}: not an fva feature cache; remove it from the folder or point at a cache "
                       "written by 'fva extract'")
    if attrs["cache_format"] != CACHE_FORMAT:
        raise FvaError(f"{path}: cache format {attrs['cache_format']}, but this fva ({__version__}) reads "
                       f"format {CACHE_FORMAT}; re-run fva extract into a new folder")
    return attrs


def _shape_problem(path: Path, f: h5py.File, attrs: dict) -> str | None:
    n = f["keys"].shape[0]
    emb = f["embeddings"]
    sizes = {"frames": f["frames"].shape[0] if "frames" in f else None, "embeddings": emb.shape[0]}
    for e in attrs.get("extras", ()):
        sizes[f"extras/{e}"] = f["extras"][e].shape[0] if f"extras/{e}" in f else None
    bad = [f"{k} has {v}" for k, v in sizes.items() if v != n]
    if emb.ndim != 2 or emb.shape[1] != attrs.get("dim"):
        bad.append(f"embeddings are {emb.shape[1:]} wide but dim={attrs.get('dim')}")
    if str(emb.dtype) != attrs.get("dtype"):
        bad.append(f"embeddings are {emb.dtype} but dtype={attrs.get('dtype')}")
    if attrs.get("rows") != n:
        bad.append(f"rows attr {attrs.get('rows')}")
    if "failed" in f and f["failed/keys"].shape != f["failed/reasons"].shape:
        bad.append("failed keys and reasons differ in length")
    if bad:
        return f"{path}: damaged shard ({n} keys but {'; '.join(bad)}); delete it and rerun fva extract"
    return None


class CacheTable:
    """All complete shards of a cache folder as one table (shards in name order).

    ``keys``, ``frames`` and ``extras`` are in memory; embeddings stay on disk and come back as float32.
    ``missing_shards`` names the shards of the run that are not (yet) complete.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._files: list[h5py.File] = []
        if not self.folder.is_dir():
            raise FvaError(f"{self.folder}: cache folder not found; run fva extract or check the path")
        shards = _scan(self.folder)
        if not shards:
            raise FvaError(f"{self.folder}: no complete cache shard{_unfinished_note(self.folder)}; "
                           "run fva extract")
        counts = sorted({n for _, n, _ in shards})
        if len(counts) > 1:
            raise FvaError(f"{self.folder}: holds shards of runs with {' and '.join(map(str, counts))} shards; "
                           "keep one set (delete the others) or extract into an empty folder")
        self.missing_shards: list[str] = _missing(shards)
        try:
            self._load(shards)
        except BaseException:
            self.close()
            raise

    def _load(self, shards) -> None:
        self.shard_names: list[str] = []
        self.shard_rows: list[int] = []
        first: tuple[Path, dict] | None = None
        keys, frames, extras = [], [], []
        self.failures: list[tuple[str, str]] = []
        for _, _, path in shards:
            try:
                f = _open(path)
            except OSError as err:
                raise FvaError(f"{path}: unreadable ({err}); delete it and rerun fva extract") from None
            self._files.append(f)
            attrs = _file_attrs(path, f)
            problem = _shape_problem(path, f, attrs)
            if problem:
                raise FvaError(problem)
            if first is None:
                first = (path, attrs)
            else:
                for name in MUST_AGREE:
                    if first[1].get(name) != attrs.get(name):
                        raise FvaError(f"shards disagree on {name}: {first[0].name} has {first[1].get(name)!r}, "
                                       f"{path.name} has {attrs.get(name)!r} (in {self.folder}); delete the "
                                       "stale shards and rerun fva extract")
            self.shard_names.append(path.name)
            self.shard_rows.append(f["keys"].shape[0])
            keys.append(_read_strs(f["keys"]))
            frames.append(f["frames"][()].astype(np.int32, copy=False))
            extras.append({e: f["extras"][e][()].astype(np.float32, copy=False) for e in attrs["extras"]})
            fk, fr = _failures(f)
            self.failures.extend(zip(fk.tolist(), fr.tolist()))
        assert first is not None
        self.attrs: dict = {k: v for k, v in first[1].items() if k not in PER_FILE_ATTRS}
        self.dim: int = int(self.attrs["dim"])
        self.dtype: str = self.attrs["dtype"]
        self.keys: np.ndarray = np.concatenate(keys) if keys else np.empty(0, object)
        self.frames: np.ndarray = np.concatenate(frames)
        self.extras: dict[str, np.ndarray] = {e: np.concatenate([x[e] for x in extras])
                                              for e in self.attrs["extras"]}
        self._offsets = np.concatenate([[0], np.cumsum(self.shard_rows)]).astype(np.int64)
        self._datasets = [f["embeddings"] for f in self._files]

    # -- size

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return (f"CacheTable({str(self.folder)!r}, rows={len(self)}, dim={self.dim}, "
                f"encoder={self.attrs.get('encoder')!r}, shards={len(self.shard_names)})")

    # -- embeddings

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Embeddings of the given rows (any order, repeats allowed) as float32 (len(indices), dim); reads
        only those rows, in contiguous runs."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
            raise ValueError(f"indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64, copy=False)
        out = np.empty((idx.shape[0], self.dim), dtype=np.float32)
        if idx.size == 0:
            return out
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"row index out of range for a table of {len(self)} rows")
        shard_of = np.searchsorted(self._offsets, idx, side="right") - 1
        for s in np.unique(shard_of):
            where = np.flatnonzero(shard_of == s)
            local = idx[where] - self._offsets[s]
            order = np.argsort(local, kind="stable")
            self._read_sorted(self._datasets[s], local[order], where[order], out)
        return out

    def _read_sorted(self, ds: h5py.Dataset, local: np.ndarray, dest: np.ndarray, out: np.ndarray) -> None:
        """``out[dest[i]] = ds[local[i]]`` for sorted ``local`` (repeats allowed): nearby rows are read as one
        slice of at most ~16 MB and scattered straight into ``out``."""
        max_run = max(1, _READ_BYTES // max(1, self.dim * ds.dtype.itemsize))
        gap = 8
        breaks = np.flatnonzero(np.diff(local) > gap) + 1
        for lo_run, hi_run in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [local.shape[0]]])):
            lo = int(lo_run)
            while lo < hi_run:
                hi = lo_run + int(np.searchsorted(local[lo_run:hi_run], local[lo] + max_run, side="left"))
                a, b = int(local[lo]), int(local[hi - 1]) + 1
                # gather, convert, then scatter float32 rows (a casting scatter is several times slower)
                out[dest[lo:hi]] = ds[a:b][local[lo:hi] - a].astype(np.float32, copy=False)
                lo = hi

    def load(self) -> np.ndarray:
        """All embeddings as one float32 (len, dim) array (callers decide whether it fits in memory)."""
        out = np.empty((len(self), self.dim), dtype=np.float32)
        for s, ds in enumerate(self._datasets):
            a, b = int(self._offsets[s]), int(self._offsets[s + 1])
            _read_f32(ds, 0, b - a, out[a:b])
        return out

    def iter_chunks(self, rows_per_chunk: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_row, embeddings float32)`` blocks of at most ``rows_per_chunk`` rows in row order,
        each a fresh array; blocks do not span shards. Memory stays at about one block."""
        if rows_per_chunk < 1:
            raise ValueError("rows_per_chunk must be positive")
        for s, ds in enumerate(self._datasets):
            base, n = int(self._offsets[s]), self.shard_rows[s]
            for a in range(0, n, rows_per_chunk):
                b = min(n, a + rows_per_chunk)
                yield base + a, _read_f32(ds, a, b)

    # -- lookups

    def index(self) -> dict[tuple[str, int], int]:
        """(key, frame) -> row. A cache with duplicate (key, frame) rows is an error (validate it)."""
        out = {(k, int(fr)): i for i, (k, fr) in enumerate(zip(self.keys.tolist(), self.frames.tolist()))}
        if len(out) != len(self):
            raise FvaError(f"{self.folder}: {len(self) - len(out)} duplicate (key, frame) rows; run "
                           "'fva validate' on the cache, delete it and re-extract")
        return out

    def rows_by_key(self) -> dict[str, np.ndarray]:
        """key -> its row indices (int64, in row order: the frames of a face track as they were added)."""
        if len(self) == 0:
            return {}
        uniq, inverse = np.unique(self.keys, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(uniq)))[:-1]
        return {k: rows for k, rows in zip(uniq.tolist(), np.split(order.astype(np.int64), bounds))}

    # -- lifetime

    def close(self) -> None:
        for f in self._files:
            try:
                f.close()
            except Exception:  # already closed / interpreter shutdown
                pass
        self._files = []

    def __enter__(self) -> "CacheTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_cache(folder: Path) -> CacheTable:
    """Open a cache folder's complete shards as one table; FvaError for anything the user must fix."""
    return CacheTable(Path(folder))


def cache_info(folder: Path) -> dict:
    """A JSON-ready summary of a cache: counts, encoder, shards, size."""
    with open_cache(folder) as t:
        a = t.attrs
        shards = []
        size = 0
        for name, rows, f in zip(t.shard_names, t.shard_rows, t._files):
            nbytes = (t.folder / name).stat().st_size
            size += nbytes
            shards.append({"name": name, "rows": int(rows), "failed": int(f["failed/keys"].shape[0])
                           if "failed" in f else 0, "size_bytes": nbytes})
        return {
            "folder": str(t.folder),
            "rows": len(t),
            "keys": int(len(np.unique(t.keys))) if len(t) else 0,
            "failed": len(t.failures),
            "dim": t.dim, "dtype": t.dtype,
            "encoder": a.get("encoder"), "modality": a.get("modality"),
            "weights": a.get("weights"), "weights_id": a.get("weights_id"),
            "dataset": a.get("dataset"), "subset": a.get("subset"), "split": a.get("split"),
            "extras": list(a.get("extras", ())),
            "fva_version": a.get("fva_version"), "cache_format": a.get("cache_format"),
            "num_shards": a.get("num_shards"),
            "shards": shards, "missing_shards": list(t.missing_shards),
            "size_bytes": size,
        }


# -------------------------------------------------------------------------------------------------- validation


def _examples(items: list[str], k: int = 3) -> str:
    shown = ", ".join(items[:k])
    return shown + (", ..." if len(items) > k else "")


def validate_cache(folder: Path, manifest: Manifest | None = None) -> list[str]:
    """Every problem of a cache, one line each; [] when it is valid.

    Checks each shard file (an fva cache of this format, consistent shapes), that the shards agree on their
    attributes and none is missing, that no row has NaN/inf, that no (key, frame) row repeats and no key is
    both rows and a failure; with a manifest, that every manifest key of the cache's modality has rows
    (missing and failed ones listed), no cache key is outside the manifest, and every record that is not a
    face track has exactly one row with its frame (see :func:`row_frame`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: cache folder not found; run fva extract or check the path"]
    shards = _scan(folder)
    if not shards:
        return [f"{folder}: no complete cache shard{_unfinished_note(folder)}; run fva extract"]
    problems: list[str] = []
    counts = sorted({n for _, n, _ in shards})
    if len(counts) > 1:
        problems.append(f"{folder}: holds shards of runs with {' and '.join(map(str, counts))} shards; keep one "
                        "set (delete the others) or extract into an empty folder")
    missing = _missing(shards)
    if missing:
        problems.append(f"{len(missing)} shard(s) missing or unfinished: {_examples(missing)}; rerun fva extract "
                        "to complete them")

    good: list[tuple[Path, dict]] = []
    keys_all, frames_all, src_all = [], [], []
    fail_keys: dict[str, str] = {}
    fail_dups: list[str] = []
    nonfinite = 0
    first_bad: str | None = None
    for _, _, path in shards:
        try:
            with _open(path) as f:
                attrs = _file_attrs(path, f)
                problem = _shape_problem(path, f, attrs)
                if problem:
                    problems.append(problem)
                    continue
                keys = _read_strs(f["keys"])
                keys_all.append(keys)
                frames_all.append(f["frames"][()].astype(np.int32))
                src_all.append(np.full(keys.shape[0], len(good), dtype=np.int32))
                for k, r in zip(*(x.tolist() for x in _failures(f))):
                    if k in fail_keys:
                        fail_dups.append(k)
                    fail_keys[k] = r
                ds = f["embeddings"]
                step = max(1, (64 << 20) // max(1, 4 * ds.shape[1]))
                for a in range(0, ds.shape[0], step):
                    block = _read_f32(ds, a, min(ds.shape[0], a + step))
                    bad = ~np.isfinite(block).all(axis=1)
                    if bad.any():
                        if first_bad is None:
                            i = a + int(np.flatnonzero(bad)[0])
                            first_bad = f"{keys[i]} frame {int(f['frames'][i])} in {path.name}"
                        nonfinite += int(bad.sum())
                good.append((path, attrs))
        except FvaError as err:
            problems.append(str(err))
        except (OSError, KeyError) as err:
            problems.append(f"{path}: unreadable ({err}); delete it and rerun fva extract")

    if good:
        ref_path, ref = good[0]
        for name in VALIDATE_AGREE:
            for path, attrs in good[1:]:
                if attrs.get(name) != ref.get(name):
                    problems.append(f"shards disagree on {name}: {ref_path.name} has {ref.get(name)!r}, "
                                    f"{path.name} has {attrs.get(name)!r}")
                    break
    if nonfinite:
        problems.append(f"{nonfinite} row(s) with NaN/inf embeddings, first: {first_bad}; re-extract them")

    keys = np.concatenate(keys_all) if keys_all else np.empty(0, object)
    frames = np.concatenate(frames_all) if frames_all else np.empty(0, np.int32)
    if keys.size:
        uniq, code = np.unique(keys, return_inverse=True)
        pair = code.astype(np.int64) << 32 | (frames.astype(np.int64) & 0xFFFFFFFF)
        pu, pinv, pc = np.unique(pair, return_inverse=True, return_counts=True)
        dup = pc[pinv] > 1
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            extra_rows = int((pc[pc > 1] - 1).sum())
            problems.append(f"{extra_rows} duplicate (key, frame) row(s), first: {keys[i]} frame {int(frames[i])}; "
                            "delete the cache and re-extract")
        key_set = set(uniq.tolist())
    else:
        key_set = set()
    if fail_dups:
        problems.append(f"{len(fail_dups)} key(s) recorded as failed twice, e.g. {_examples(fail_dups)}")
    both = sorted(key_set & set(fail_keys))
    if both:
        problems.append(f"{len(both)} key(s) have rows and are also recorded as failed, e.g. {_examples(both)}")

    if manifest is not None and good:
        problems.extend(_check_manifest(manifest, good[0][1], keys, frames, key_set, fail_keys))
    return problems


def _check_manifest(manifest: Manifest, attrs: dict, keys: np.ndarray, frames: np.ndarray, key_set: set[str],
                    fail_keys: dict[str, str]) -> list[str]:
    problems = []
    for name in ("dataset", "split"):
        ours, theirs = attrs.get(name), getattr(manifest, name)
        if ours is not None and theirs and ours != theirs:
            problems.append(f"cache is for {name} {ours!r} but the manifest is for {theirs!r}; pass the manifest "
                            "the cache was extracted from")
    modality = attrs.get("modality")
    records = manifest.by_modality(modality) if modality else manifest.records
    wanted = {r.key: r for r in records}
    missing = [k for k in wanted if k not in key_set and k not in fail_keys]
    failed = [k for k in wanted if k not in key_set and k in fail_keys]
    if missing:
        problems.append(f"{len(missing)} manifest {modality or ''} key(s) missing from the cache: "
                        f"{_examples(missing)}; rerun fva extract".replace("  ", " "))
    if failed:
        shown = "; ".join(f"{k}: {fail_keys[k]}" for k in failed[:3]) + ("; ..." if len(failed) > 3 else "")
        problems.append(f"{len(failed)} manifest key(s) failed extraction (recorded failures): {shown}")
    all_manifest = {r.key for r in manifest.records}
    extra = sorted((key_set | set(fail_keys)) - set(wanted))
    if extra:
        other = [k for k in extra if k in all_manifest]
        what = (f"{len(extra)} cache key(s) not among the manifest's {modality or ''} records"
                + (f" ({len(other)} of another modality)" if other else ""))
        problems.append(f"{what.replace('  ', ' ')}: {_examples(extra)}; was the cache built from another "
                        "manifest?")
    if keys.size:
        counts: dict[str, int] = {}
        first_frame: dict[str, int] = {}
        for k, fr in zip(keys.tolist(), frames.tolist()):
            counts[k] = counts.get(k, 0) + 1
            first_frame.setdefault(k, fr)
        not_once, wrong_frame = [], []
        for k, r in wanted.items():
            expected = row_frame(r)
            if expected is None or k not in counts:
                continue
            if counts[k] != 1:
                not_once.append(f"{k} ({counts[k]} rows)")
            elif first_frame[k] != expected:
                wrong_frame.append(f"{k} (frame {first_frame[k]}, expected {expected})")
        if not_once:
            problems.append(f"{len(not_once)} single-item record(s) (not face tracks) with more than one row: "
                            f"{_examples(not_once)}")
        if wrong_frame:
            problems.append(f"{len(wrong_frame)} row(s) with the wrong frame: {_examples(wrong_frame)}")
    return problems


__all__ = ["CACHE_FORMAT", "CacheTable", "ShardWriter", "cache_info", "open_cache", "row_frame", "shard_name",
           "validate_cache"]
