"""Reading a cache: :func:`open_cache` joins a folder's complete shards into one :class:`CacheTable` whose keys,
frames and extras are in memory and whose embeddings stay on disk until asked for (:meth:`CacheTable.rows`,
:meth:`CacheTable.iter_chunks`, :meth:`CacheTable.load`)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from fva.errors import FvaError
from fva.extract.cache.format import (MUST_AGREE, PER_FILE_ATTRS, _READ_BYTES, _failures, _missing, _open,
                                      _read_f32, _unreadable, check_folder, check_shard,
                                      disagreement)


def key_bytes(keys) -> np.ndarray:
    """Keys as fixed-width UTF-8 bytes (numpy ``S``), the form the vectorised lookups sort and compare.

    >>> key_bytes(["b", "é"])
    array([b'b', b'\\xc3\\xa9'], dtype='|S2')
    """
    keys = np.asarray(keys)
    if keys.dtype.kind == "S":
        return keys
    if keys.size == 0:
        return np.empty(0, dtype="S1")
    return np.array([str(k).encode("utf-8") for k in keys.reshape(-1).tolist()], dtype="S")


def decode_keys(keys: np.ndarray) -> list[str]:
    """Fixed-width UTF-8 key bytes back to ``str``."""
    return [k.decode("utf-8") for k in keys.tolist()]


def key_codes(keys, vocabulary: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, vocabulary)``: each key's index (int64) in ``vocabulary``, the sorted distinct keys as bytes;
    with a given sorted ``vocabulary``, keys not in it get -1. Runs of equal keys (a face track's frames) are
    looked up once, so the sort is over distinct runs, not rows.

    >>> codes, vocab = key_codes(["b", "b", "a", "c", "a"])
    >>> codes.tolist(), vocab.tolist()
    ([1, 1, 0, 2, 0], [b'a', b'b', b'c'])
    >>> key_codes(["c", "z"], vocab)[0].tolist()
    [2, -1]
    """
    keys = key_bytes(keys)
    n = len(keys)
    if n == 0:
        return np.empty(0, np.int64), (np.empty(0, "S1") if vocabulary is None else vocabulary)
    heads = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    head_keys = keys[heads]
    if vocabulary is None:
        vocabulary, head_codes = np.unique(head_keys, return_inverse=True)
    elif len(vocabulary) == 0:
        head_codes = np.full(len(heads), -1)
    else:
        pos = np.minimum(np.searchsorted(vocabulary, head_keys), len(vocabulary) - 1)
        head_codes = np.where(vocabulary[pos] == head_keys, pos, -1)
    codes = np.repeat(head_codes.reshape(-1).astype(np.int64), np.diff(np.append(heads, n)))
    return codes, vocabulary


def group_rows_by_code(codes: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """``names[code]`` -> the indices of its rows (int64, in row order), in the order codes first appear
    (codes < 0 are left out)."""
    codes = np.asarray(codes, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]
    if order.size == 0:
        return {}
    present, first, counts = np.unique(codes[order], return_index=True, return_counts=True)
    groups = np.split(order, np.cumsum(counts)[:-1])
    return {names[int(present[g])]: groups[g] for g in np.argsort(order[first], kind="stable").tolist()}


def group_rows_by_key(keys) -> dict[str, np.ndarray]:
    """key -> the indices of its rows (int64, in row order), keys in the order they first appear.

    >>> group_rows_by_key(["b", "a", "b", "c", "a"])
    {'b': array([0, 2]), 'a': array([1, 4]), 'c': array([3])}
    >>> group_rows_by_key([])
    {}
    """
    codes, vocabulary = key_codes(keys)
    return group_rows_by_code(codes, decode_keys(vocabulary))


def join_rows(codes: np.ndarray, frames: np.ndarray, other_codes: np.ndarray, other_frames: np.ndarray,
              where: Path) -> np.ndarray:
    """For each (code, frame) row, the row of another table with the same (code, frame), -1 where it has none
    (codes of both in one vocabulary; rows of ``other`` with code -1 are never matched). Duplicate (key, frame)
    rows in the other table are an error naming ``where``."""
    def composite(c, f):
        return (np.asarray(c, np.int64) << 32) | (np.asarray(f, np.int64) + 1)

    known = np.flatnonzero(other_codes >= 0)
    keyed = composite(other_codes[known], other_frames[known])
    order = np.argsort(keyed, kind="stable")
    keyed = keyed[order]
    duplicates = int(np.count_nonzero(keyed[1:] == keyed[:-1]))
    if duplicates:
        raise FvaError(f"{where}: {duplicates} duplicate (key, frame) rows; run 'fva validate' on the cache, "
                       "delete it and re-extract")
    out = np.full(len(codes), -1, dtype=np.int64)
    if keyed.size == 0:
        return out
    wanted = composite(codes, frames)
    pos = np.minimum(np.searchsorted(keyed, wanted), len(keyed) - 1)
    hit = (keyed[pos] == wanted) & (np.asarray(codes) >= 0)
    out[hit] = known[order[pos[hit]]]
    return out


class CacheTable:
    """All complete shards of a cache folder as one table (shards in name order).

    ``keys``, ``frames`` and ``extras`` are in memory; embeddings stay on disk and come back as float32.
    ``missing_shards`` names the shards of the run that are not (yet) complete.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._files: list[h5py.File] = []
        shards, problems = check_folder(self.folder)
        if problems:
            raise FvaError(problems[0])
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
                raise FvaError(_unreadable(path, err)) from None
            self._files.append(f)
            attrs, problem = check_shard(path, f)
            if problem:
                raise FvaError(problem)
            if first is None:
                first = (path, attrs)
            else:
                for name in MUST_AGREE:
                    problem = disagreement(first, (path, attrs), name)
                    if problem:
                        raise FvaError(f"{problem} (in {self.folder}); delete the stale shards and rerun "
                                       "fva extract")
            self.shard_names.append(path.name)
            self.shard_rows.append(f["keys"].shape[0])
            keys.append(_read_key_bytes(f["keys"]))
            frames.append(f["frames"][()].astype(np.int32, copy=False))
            extras.append({e: f["extras"][e][()].astype(np.float32, copy=False) for e in attrs["extras"]})
            fk, fr = _failures(f)
            self.failures.extend(zip(fk.tolist(), fr.tolist()))
        assert first is not None
        self.attrs: dict = {k: v for k, v in first[1].items() if k not in PER_FILE_ATTRS}
        self.dim: int = int(self.attrs["dim"])
        self.dtype: str = self.attrs["dtype"]
        self.key_bytes: np.ndarray = _concat_bytes(keys)  # fixed-width UTF-8: what lookups sort and compare
        self._keys: np.ndarray | None = None
        self.frames: np.ndarray = np.concatenate(frames)
        self.extras: dict[str, np.ndarray] = {e: np.concatenate([x[e] for x in extras])
                                              for e in self.attrs["extras"]}
        self._offsets = np.concatenate([[0], np.cumsum(self.shard_rows)]).astype(np.int64)
        self._datasets = [f["embeddings"] for f in self._files]

    @property
    def keys(self) -> np.ndarray:
        """Row keys as ``str`` (object array), decoded from :attr:`key_bytes` on first use."""
        if self._keys is None:
            self._keys = np.array(decode_keys(self.key_bytes), dtype=object)
        return self._keys

    # -- size

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return (f"CacheTable({str(self.folder)!r}, rows={len(self)}, dim={self.dim}, "
                f"encoder={self.attrs.get('encoder')!r}, shards={len(self.shard_names)})")

    # -- embeddings

    def rows(self, indices: np.ndarray, dtype: str = "float32") -> np.ndarray:
        """Embeddings of the given rows (any order, repeats allowed) as ``dtype`` (len(indices), dim); reads
        only those rows, in contiguous runs."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
            raise ValueError(f"indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64, copy=False)
        out = np.empty((idx.shape[0], self.dim), dtype=dtype)
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
                out[dest[lo:hi]] = ds[a:b][local[lo:hi] - a].astype(out.dtype, copy=False)
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
        codes, vocabulary = key_codes(self.key_bytes)
        return group_rows_by_code(codes, decode_keys(vocabulary))

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


def _read_key_bytes(ds: h5py.Dataset, chunk: int = 1 << 20) -> np.ndarray:
    """A variable-length string dataset as fixed-width bytes, converted by HDF5 (no Python string per row):
    read at a width that doubles until no key fills it, then trimmed to the longest key."""
    parts, width = [], 64
    for a in range(0, ds.shape[0], chunk):
        while True:
            part = ds.astype(f"S{width}")[a:a + chunk]
            if not (part.view(np.uint8).reshape(len(part), width)[:, -1] != 0).any():
                break
            width *= 2
        parts.append(part)
    return _concat_bytes(parts)


def _concat_bytes(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.empty(0, dtype="S1")
    width = max(1, max(int(np.strings.str_len(p).max()) for p in parts))
    return np.concatenate([p.astype(f"S{width}") for p in parts])


def open_cache(folder: Path) -> CacheTable:
    """Open a cache folder's complete shards as one table; FvaError for anything the user must fix."""
    return CacheTable(Path(folder))

