"""Writing one shard of a cache, crash-safely and resumably (:class:`ShardWriter`).

:class:`ShardWriter` commits its buffer as numbered part files beside the shard
(``shard-00003-of-00008.part-000012.h5``), each written under a temporary name (``.<name>.<pid>.tmp``,
:mod:`fva.atomic`), fsynced and renamed, so a part either exists whole or not at all. A run killed at any
point and run again skips the keys already in committed parts (:meth:`ShardWriter.done_keys`), deletes its
shard's temporary garbage (also the ``*.tmp-<pid>`` names of earlier versions), and
:meth:`ShardWriter.finalize` merges the parts in order into the shard file.

Merging needs little more disk than the shard itself: finalize first writes the whole shard but its embeddings
(keys, frames, extras, failures, attributes; the embeddings' storage allocated, not written, so it takes no
disk on filesystems with sparse files) under a temporary name and renames it to ``<stem>.merging.h5``; then it
copies each part's embeddings into that storage with raw writes (the HDF5 structure is never modified again, so
a kill leaves a readable file), fsyncs and deletes the part, and renames the file to the shard when no part is
left. The parts still there are always the last ones, so where their rows go follows from their sizes; a
writer that finds a merging file finishes that merge before anything else (a part copied but not deleted is
copied again). Readers only ever look at final shard files, so leftover parts (a kill between that rename and
the deletes) are never read twice; the next writer removes them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import h5py
import numpy as np

from fva import __version__
from fva.atomic import atomic_path, fsync_folder
from fva.errors import FvaError
from fva.extract import COMMIT_ROWS
from fva.extract.cache.format import (CACHE_FORMAT, DTYPES, MERGING_SUFFIX, RESUME_MUST_AGREE, WRITER_ATTRS,
                                      _decode_attrs, _encode_attrs, _failures, _now, _open, _read_strs,
                                      _str_dataset, _unreadable, is_temp_of, shard_name)

_COPY_BYTES = 64 << 20  # bytes per slice when merging parts


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
                 extras: tuple[str, ...] = (), attrs: dict | None = None, part_rows: int = COMMIT_ROWS,
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
        self.merging = self.folder / f"{self.stem}{MERGING_SUFFIX}"
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
        if self.merging.is_file() and not self.is_complete():
            self._check_resume(self.merging)
            self._finish_merge()  # a finalize killed mid-merge: the shard's rows were all decided
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
        for p in self.folder.iterdir():
            if is_temp_of(p.name, self.stem):
                p.unlink(missing_ok=True)

    def _remove_parts(self) -> None:
        for _, p in self._parts():
            p.unlink(missing_ok=True)

    def _check_resume(self, path: Path) -> None:
        try:
            with _open(path) as f:
                theirs = _decode_attrs(f.attrs)
        except OSError as err:
            raise FvaError(_unreadable(path, err)) from None
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
        with atomic_path(part, fsync=self.fsync) as tmp, _open(tmp, "w") as f:
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
        self._done.update(self._buffered_keys)
        self._next_part += 1
        self._clear_buffer()

    def finalize(self) -> Path:
        """Commit and merge all parts in order into the shard file, deleting each part once its rows are in
        (see the module docstring). Idempotent: on a complete shard it only removes leftover parts."""
        if self.is_complete():
            self._remove_parts()
            return self.path
        self.commit()
        parts = [p for _, p in self._parts()]
        if len(parts) == 1:
            # A part has the shard's full layout and attrs (its rows/failed are the shard's): rename it.
            os.replace(parts[0], self.path)
            if self.fsync:
                fsync_folder(self.folder)
        else:
            with atomic_path(self.merging, fsync=self.fsync) as tmp:
                self._start_merge(parts, tmp)
            self._finish_merge()
        self._remove_parts()
        return self.path

    def _start_merge(self, parts: list[Path], tmp: Path) -> None:
        """Write the shard of ``parts`` to ``tmp``: everything but the embeddings, whose storage is allocated
        (contiguous, never filled) for :meth:`_finish_merge`."""
        keys, frames, fkeys, freasons = [], [], [], []
        ext: dict[str, list[np.ndarray]] = {e: [] for e in self.extras}
        for p in parts:
            with _open(p) as f:
                keys.append(_read_strs(f["keys"]))
                frames.append(f["frames"][()])
                for e in self.extras:
                    ext[e].append(f["extras"][e][()])
                failed = _failures(f)
                fkeys.append(failed[0])
                freasons.append(failed[1])
        n = sum(len(k) for k in keys)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        with _open(tmp, "w") as out:
            out.attrs.update(self._attrs)
            out.attrs.update({"rows": n, "failed": sum(len(k) for k in fkeys), "created": _now()})
            _str_dataset(out, "keys", np.concatenate(keys))
            out.create_dataset("frames", data=np.concatenate(frames).astype(np.int32, copy=False))
            out.create_dataset("embeddings", shape=(n, self.dim), dtype=self.dtype, dcpl=dcpl)
            g = out.create_group("extras")
            for e in self.extras:
                g.create_dataset(e, data=np.concatenate(ext[e]).astype(np.float32, copy=False))
            fg = out.create_group("failed")
            _str_dataset(fg, "keys", np.concatenate(fkeys))
            _str_dataset(fg, "reasons", np.concatenate(freasons))

    def _finish_merge(self) -> None:
        """Copy the embeddings of the parts still there into the merging file (they are its last rows, in
        order), deleting each part once its rows are on disk; then rename the file to the shard."""
        try:
            with _open(self.merging) as f:
                keys = _read_strs(f["keys"])
                emb = f["embeddings"]
                n, dtype, offset = emb.shape[0], emb.dtype, emb.id.get_offset()
        except (OSError, KeyError) as err:
            raise FvaError(_unreadable(self.merging, err)) from None
        parts = [p for _, p in self._parts()]
        sizes = []
        for p in parts:
            with _open(p) as f:
                sizes.append(f["keys"].shape[0])
        row = n - sum(sizes)
        if row < 0 or (n and offset is None):
            raise FvaError(f"{self.merging}: its parts do not match it; delete it and rerun fva extract (the "
                           "records of parts already merged will be extracted again)")
        row_bytes = self.dim * dtype.itemsize
        step = max(1, _COPY_BYTES // row_bytes)
        fd = os.open(self.merging, os.O_WRONLY)
        try:
            for p, pn in zip(parts, sizes):
                with _open(p) as f:
                    if pn and not np.array_equal(_read_strs(f["keys"]), keys[row:row + pn]):
                        raise FvaError(f"{p}: its keys are not the rows {row}-{row + pn} of {self.merging}; "
                                       "delete both and rerun fva extract")
                    src = f["embeddings"]
                    for a in range(0, pn, step):
                        block = np.ascontiguousarray(src[a:min(pn, a + step)], dtype=dtype)
                        _pwrite_all(fd, memoryview(block).cast("B"), offset + (row + a) * row_bytes)
                if self.fsync:
                    os.fsync(fd)
                self._merged(p)
                row += pn
        finally:
            os.close(fd)
        os.replace(self.merging, self.path)
        if self.fsync:
            fsync_folder(self.folder)

    def _merged(self, part: Path) -> None:
        """Delete a part whose rows are in the merging file."""
        part.unlink()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written
