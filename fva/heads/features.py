"""Stage-2 data: one modality's features joined across encoder caches, with identities and languages.

A :class:`FeatureTable` concatenates, row by row, the caches of several encoders of one modality (e.g.
speaker ECAPA 6144 + voice age-gender 1536) joined on (key, frame); dimensions come from the caches.
Identities and languages come from the manifest kept beside the caches (:mod:`fva.layout`).

Training reads rows in a block-shuffled order (:func:`epoch_order`): small blocks of consecutive rows in a
seeded random order, shuffled within windows of many blocks. Caches are written in identity order, so a block
holds one identity; with thousands of blocks per window a batch sees about as many identities as a uniform
permutation's. :class:`InMemoryRows` indexes a loaded array with it; :class:`StreamingRows` reads whole blocks
from disk into a read-ahead buffer of one window, so peak memory does not grow with the cache. Both give
identical batches for the same seed.

Joins and selections are vectorised over integer key codes (:func:`~fva.extract.cache.reader.key_codes`):
opening a VoxCeleb2-sized cache (9 M face rows) costs seconds, not a Python loop per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fva.data.records import MediaRecord
from fva.errors import FvaError
from fva.extract.cache import open_cache
from fva.extract.cache.memory import EncoderRows
from fva.extract.cache.reader import decode_keys, group_rows_by_code, join_rows, key_codes

BLOCK_ROWS = 8  # rows read together; a block is (almost always) one identity in an identity-sorted cache
BUFFER_BLOCKS = 4096  # blocks shuffled together: many more than a batch's rows, so a batch meets ~as many
# identities as uniform sampling (measured: bench/bench_stage2_scale.py); the streaming read-ahead buffer
# holds BLOCK_ROWS x BUFFER_BLOCKS rows


class FeatureTable:
    """Rows of one modality present in every given encoder cache, features concatenated in that order."""

    def __init__(self, folder: Path | str, encoders: list[str], tables: list[EncoderRows] | None = None) -> None:
        """The caches of ``encoders`` in ``folder``, or the given ``tables`` (any :class:`EncoderRows`, e.g.
        rows in memory; ``folder`` then only names them in messages)."""
        self.folder = Path(folder) if tables is None else folder
        if tables is None:
            missing = [e for e in encoders if not (self.folder / e).is_dir()]
            if missing:
                raise FvaError(f"{self.folder}: no {missing[0]} cache; extract it with "
                               f"'fva extract --encoders {missing[0]}' or change features in the config")
        self.encoders = list(encoders)
        self.tables: list[EncoderRows] = tables if tables is not None else [open_cache(self.folder / e)
                                                                            for e in encoders]
        for name, table in zip(encoders, self.tables):
            made_by = table.attrs.get("encoder")
            if made_by and made_by != name:
                self.close()
                raise FvaError(f"{table.folder}: holds features of encoder {made_by}, not {name}; extract {name} "
                               f"with 'fva extract --encoders {name}' (never rename a cache folder)")
        base = self.tables[0]
        modalities = {t.attrs.get("modality") for t in self.tables}
        if len(modalities) != 1:
            raise FvaError(f"{self.folder}: encoders {', '.join(encoders)} mix modalities {sorted(modalities)}")
        self.modality = modalities.pop()
        codes, vocabulary = key_codes(base.key_bytes)
        columns = [np.arange(len(base))]
        for table in self.tables[1:]:
            other, _ = key_codes(table.key_bytes, vocabulary)
            columns.append(join_rows(codes, base.frames, other, table.frames, table.folder))
        keep = np.all(np.stack(columns) >= 0, axis=0)
        self.incomplete = int((~keep).sum())  # rows missing from some encoder's cache (failed there)
        self.key_codes = codes[keep]  # per row: its key's index in ``vocabulary``
        self.vocabulary = vocabulary  # sorted distinct keys of the first encoder's cache, as UTF-8 bytes
        self.frames = base.frames[keep]
        self.columns = [c[keep] for c in columns]
        self._keys: np.ndarray | None = None
        self._names: list[str] | None = None
        self.dims = [t.dim for t in self.tables]
        self.dim = int(sum(self.dims))
        self.extras = {name: t.extras[name][col] for t, col in zip(self.tables, self.columns) for name in t.extras}
        self.weights_ids = {e: t.attrs.get("weights_id", "") for e, t in zip(encoders, self.tables)}
        self.preloaded: np.ndarray | None = None  # every row as float32, once :meth:`preload` found room

    def preload(self, limit_gb: float) -> bool:
        """Keep every row in memory as float32 when that takes at most ``limit_gb``: every later read (each
        fold's training rows, dev features) is then an in-memory copy instead of a disk read."""
        if self.preloaded is None and self.nbytes(itemsize=4) <= limit_gb * 2**30:
            self.preloaded = self.load(dtype="float32")
        return self.preloaded is not None

    def __len__(self) -> int:
        return len(self.key_codes)

    def rows(self, indices: np.ndarray, dtype: str = "float32") -> np.ndarray:
        """(len(indices), dim) of ``dtype``: the concatenated features of these rows, read from disk."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.preloaded is not None:
            return self.preloaded[indices].astype(dtype, copy=False)
        out = np.empty((len(indices), self.dim), dtype=dtype)
        start = 0
        for table, col, dim in zip(self.tables, self.columns, self.dims):
            out[:, start:start + dim] = table.rows(col[indices], dtype)
            start += dim
        return out

    def load(self, indices: np.ndarray | None = None, dtype: str = "float16") -> np.ndarray:
        """The rows (all, or ``indices``) in memory as one array of ``dtype``."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.preloaded is not None:
            return self.preloaded[indices].astype(dtype, copy=False)
        out = np.empty((len(indices), self.dim), dtype=dtype)
        start = 0
        for table, col, dim in zip(self.tables, self.columns, self.dims):
            for lo in range(0, len(indices), 65536):
                part = indices[lo:lo + 65536]
                out[lo:lo + len(part), start:start + dim] = table.rows(col[part])
            start += dim
        return out

    @property
    def keys(self) -> np.ndarray:
        """Row keys as ``str`` (object array), built on first use."""
        if self._keys is None:
            self._keys = np.array(self.key_names(), dtype=object)[self.key_codes]
        return self._keys

    def key_names(self) -> list[str]:
        """The vocabulary's keys as ``str``: ``key_names()[key_codes[i]]`` is row i's key."""
        if self._names is None:
            self._names = decode_keys(self.vocabulary)
        return self._names

    def rows_by_key(self) -> dict[str, np.ndarray]:
        """key -> its row indices (in row order), keys in the order they first appear."""
        return group_rows_by_code(self.key_codes, self.key_names())

    def nbytes(self, rows: int | None = None, itemsize: int = 2) -> int:
        return (len(self) if rows is None else rows) * self.dim * itemsize

    def close(self) -> None:
        for t in self.tables:
            t.close()


@dataclass
class Labelled:
    """Rows of a table chosen for training, with integer identity labels."""

    rows: np.ndarray  # row indices into the table, ascending
    labels: np.ndarray  # class index per row


def select_rows(table: FeatureTable, records: dict[str, MediaRecord], identities: set[str],
                unheard: str | None, classes: dict[str, int]) -> Labelled:
    """Rows whose identity is in ``identities``, without the ``unheard`` language: with an unheard language,
    rows of unknown language are left out too (they could be in it), as the language splits do."""
    label_of_key = np.full(len(table.vocabulary), -1, dtype=np.int64)  # per distinct key, not per row
    for j, key in enumerate(table.key_names()):
        record = records.get(key)
        if record is None or record.identity not in identities:
            continue
        if unheard is not None and (record.language is None or record.language == unheard):
            continue
        label_of_key[j] = classes[record.identity]
    labels = label_of_key[table.key_codes]
    rows = np.flatnonzero(labels >= 0).astype(np.int64)
    return Labelled(rows, labels[rows])


def epoch_order(n: int, seed: int | list[int], epoch: int, block_rows: int = BLOCK_ROWS,
                buffer_blocks: int = BUFFER_BLOCKS, rows: int = 0) -> np.ndarray:
    """Positions 0..n-1 for one epoch, block-shuffled: blocks of ``block_rows`` consecutive positions in a
    seeded order, shuffled within windows of ``buffer_blocks`` blocks; ``rows`` > 0 keeps the first blocks
    covering that many rows (a seeded sample of the data per epoch).

    >>> sorted(epoch_order(10, seed=0, epoch=0, block_rows=3, buffer_blocks=2).tolist()) == list(range(10))
    True
    """
    rng = np.random.default_rng([*(seed if isinstance(seed, list) else [seed]), epoch])
    n_blocks = math.ceil(n / block_rows)
    blocks = rng.permutation(n_blocks)
    if rows:  # enough blocks to cover ``rows`` (the last block of the data may be short)
        sizes = np.minimum(block_rows, n - blocks * block_rows)
        blocks = blocks[: int(np.searchsorted(np.cumsum(sizes), min(rows, n))) + 1]
    positions = (blocks[:, None] * block_rows + np.arange(block_rows)).reshape(-1)
    valid = positions < n  # only the data's last block is short
    ends = np.cumsum(valid.reshape(len(blocks), block_rows).sum(axis=1)) if len(blocks) else np.zeros(0, int)
    positions = positions[valid]
    parts = []
    for g in range(0, len(blocks), buffer_blocks):  # the same draws, in the same order, as one block at a time
        lo = int(ends[g - 1]) if g else 0
        parts.append(rng.permutation(positions[lo:int(ends[min(g + buffer_blocks, len(blocks)) - 1])]))
    order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return order[:rows] if rows else order


class InMemoryRows:
    """Training rows loaded once, as float32 (batches need no conversion) or, to halve the memory, in the
    cache's float16 (each batch converted)."""

    def __init__(self, table: FeatureTable, selected: Labelled, dtype: str = "float16") -> None:
        self.data = table.load(selected.rows, dtype=dtype)
        self.labels = selected.labels

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.data[positions].astype(np.float32, copy=False), self.labels[positions]


class StreamingRows:
    """Training rows read from disk in whole blocks of ``block_rows`` positions (as :func:`epoch_order` makes
    them) into a read-ahead buffer of ``buffer_blocks`` blocks, oldest replaced first: one read per block,
    memory flat at the buffer whatever the cache's size. Any positions work (a batch needing more blocks than
    the buffer holds is read directly); the values are the cache's either way."""

    def __init__(self, table: FeatureTable, selected: Labelled, block_rows: int = BLOCK_ROWS,
                 buffer_blocks: int = BUFFER_BLOCKS) -> None:
        self.table, self.selected = table, selected
        self.block_rows, self.capacity = int(block_rows), int(buffer_blocks)
        n_blocks = math.ceil(len(selected.rows) / self.block_rows)
        self._slot = np.full(n_blocks, -1, dtype=np.int64)  # block -> buffer slot
        self._owner = np.full(self.capacity, -1, dtype=np.int64)  # slot -> block
        self._next = 0  # the oldest slot, replaced next
        exact = all(t.dtype == "float16" for t in table.tables)  # float16 keeps a float16 cache's values
        self._dtype = np.float16 if exact else np.float32
        self._buffer: np.ndarray | None = None
        self.blocks_read = 0

    @property
    def labels(self) -> np.ndarray:
        return self.selected.labels

    def __len__(self) -> int:
        return len(self.selected.labels)

    def batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        positions = np.asarray(positions, dtype=np.int64)
        labels = self.selected.labels[positions]
        br = self.block_rows
        blocks = positions // br
        slots = self._slot[blocks]
        new = np.unique(blocks[slots < 0])
        if len(new) > self.capacity:
            return self.table.rows(self.selected.rows[positions]), labels
        if self._buffer is None:
            self._buffer = np.empty((self.capacity * br, self.table.dim), dtype=self._dtype)
        if not len(new):
            return self._buffer[slots * br + positions % br].astype(np.float32), labels
        out = np.empty((len(positions), self.table.dim), dtype=np.float32)
        have = slots >= 0  # gathered before new blocks replace old ones (gather, then convert: a casting
        out[have] = self._buffer[slots[have] * br + positions[have] % br].astype(np.float32)  # scatter is slow)
        self._read(new)
        rest = ~have
        out[rest] = self._buffer[self._slot[blocks[rest]] * br + positions[rest] % br].astype(np.float32)
        return out, labels

    def _read(self, blocks: np.ndarray) -> None:
        """Read whole ``blocks`` (ascending) into the oldest slots, in one sorted pass over the cache."""
        br, n = self.block_rows, len(self.selected.rows)
        slots = (self._next + np.arange(len(blocks))) % self.capacity
        self._next = int((self._next + len(blocks)) % self.capacity)
        evicted = self._owner[slots]
        self._slot[evicted[evicted >= 0]] = -1
        self._owner[slots], self._slot[blocks] = blocks, slots
        positions = (blocks[:, None] * br + np.arange(br)).reshape(-1)
        dest = (slots[:, None] * br + np.arange(br)).reshape(-1)
        valid = positions < n
        self._buffer[dest[valid]] = self.table.rows(self.selected.rows[positions[valid]], self._dtype)
        self.blocks_read += len(blocks)


def make_rows(table: FeatureTable, selected: Labelled, limit_gb: float, block_rows: int = BLOCK_ROWS,
              buffer_blocks: int = BUFFER_BLOCKS) -> InMemoryRows | StreamingRows:
    """In memory when the selected rows fit in ``limit_gb`` (as float32 when that fits too, else float16),
    else streaming (``block_rows`` x ``buffer_blocks`` rows buffered: as :func:`epoch_order`'s)."""
    if table.nbytes(len(selected.rows), itemsize=4) <= limit_gb * 2**30:
        return InMemoryRows(table, selected, dtype="float32")
    if table.nbytes(len(selected.rows)) <= limit_gb * 2**30:
        return InMemoryRows(table, selected)
    return StreamingRows(table, selected, block_rows, buffer_blocks)


class ConcatRows:
    """Several row sources as one (joint training): positions index their concatenation, labels offset."""

    def __init__(self, sources: list, label_offsets: list[int]) -> None:
        self.sources, self.offsets = sources, label_offsets
        self.starts = np.cumsum([0] + [len(s) for s in sources])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([s.labels + offset for s, offset in zip(self.sources, self.offsets)])

    def batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        positions = np.asarray(positions)
        which = np.searchsorted(self.starts, positions, side="right") - 1
        x = y = None
        for s, (source, offset) in enumerate(zip(self.sources, self.offsets)):
            mask = which == s
            if not mask.any():
                continue
            xs, ys = source.batch(positions[mask] - self.starts[s])
            if x is None:
                x = np.empty((len(positions), xs.shape[1]), dtype=np.float32)
                y = np.empty(len(positions), dtype=np.int64)
            x[mask], y[mask] = xs, ys + offset
        return x, y


class MappedRows:
    """A row source seen through a fixed map of its features (e.g. a fitted reduction): computed once for every
    row, in chunks, when the source is held in memory; else per batch, as the rows stream."""

    def __init__(self, source, fn, chunk: int = 16384) -> None:
        self.source, self.fn = source, fn
        self.data = None
        if isinstance(source, InMemoryRows):  # slices of the loaded rows: no copy before the map
            self.data = np.concatenate([fn(source.data[lo:lo + chunk].astype(np.float32, copy=False))
                                        for lo in range(0, len(source), chunk)])

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.data is not None:
            return self.data[positions], self.source.labels[positions]
        x, y = self.source.batch(positions)
        return self.fn(x), y


def row_statistics(rows, seed: list[int], max_rows: int = 65536, block_rows: int = 4096,
                   chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of training rows (any row source: in memory, streaming,
    concatenated): all of them up to ``max_rows``, else a seeded sample of whole blocks of that size, read in
    ascending order, accumulated in float64 so the result does not depend on the chunking."""
    n = len(rows)
    if n == 0:
        raise FvaError("no training rows to standardise the features with")
    positions = np.sort(epoch_order(n, seed=seed, epoch=0, block_rows=block_rows, rows=min(n, max_rows)))
    total = squares = None
    for lo in range(0, len(positions), chunk):
        x = rows.batch(positions[lo:lo + chunk])[0].astype(np.float64)
        if total is None:
            total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        total += x.sum(axis=0)
        squares += np.square(x).sum(axis=0)
    mean = total / len(positions)
    return mean, np.sqrt(np.maximum(squares / len(positions) - np.square(mean), 0.0))
