"""Stage-2 data: one modality's features joined across encoder caches, with identities and languages.

A :class:`FeatureTable` concatenates, row by row, the caches of several encoders of one modality (e.g.
speaker ECAPA 6144 + voice age-gender 1536) joined on (key, frame); dimensions come from the caches.
Identities and languages come from the manifest kept beside the caches (:mod:`fva.layout`).

Training reads rows in a block-shuffled order (:func:`epoch_order`): contiguous blocks of rows in a seeded
random order, shuffled within a buffer of a few blocks. :class:`InMemoryRows` indexes a loaded array with it;
:class:`StreamingRows` reads the same rows from disk, one batch at a time, so peak memory does not grow with
the cache. Both give identical batches for the same seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fva.data.records import MediaRecord
from fva.errors import FvaError
from fva.extract.cache import CacheTable, group_rows_by_key, open_cache


class FeatureTable:
    """Rows of one modality present in every given encoder cache, features concatenated in that order."""

    def __init__(self, folder: Path, encoders: list[str]) -> None:
        self.folder = Path(folder)
        missing = [e for e in encoders if not (self.folder / e).is_dir()]
        if missing:
            raise FvaError(f"{self.folder}: no {missing[0]} cache; extract it with "
                           f"'fva extract --encoders {missing[0]}' or change features in the config")
        self.encoders = list(encoders)
        self.tables: list[CacheTable] = [open_cache(self.folder / e) for e in encoders]
        base = self.tables[0]
        modalities = {t.attrs.get("modality") for t in self.tables}
        if len(modalities) != 1:
            raise FvaError(f"{self.folder}: encoders {', '.join(encoders)} mix modalities {sorted(modalities)}")
        self.modality = modalities.pop()
        columns = [np.arange(len(base))]
        for table in self.tables[1:]:
            index = table.index()
            columns.append(np.array([index.get((k, int(f)), -1) for k, f in zip(base.keys, base.frames)],
                                    dtype=np.int64))
        keep = np.all(np.stack(columns) >= 0, axis=0)
        self.incomplete = int((~keep).sum())  # rows missing from some encoder's cache (failed there)
        self.keys = base.keys[keep]
        self.frames = base.frames[keep]
        self.columns = [c[keep] for c in columns]
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
        return len(self.keys)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """float32 (len(indices), dim): the concatenated features of these rows, read from disk."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.preloaded is not None:
            return self.preloaded[indices]
        return np.concatenate([t.rows(col[indices]) for t, col in zip(self.tables, self.columns)], axis=1)

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

    def rows_by_key(self) -> dict[str, np.ndarray]:
        return group_rows_by_key(self.keys)

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
    rows, labels = [], []
    for i, key in enumerate(table.keys):
        record = records.get(key)
        if record is None or record.identity not in identities:
            continue
        if unheard is not None and (record.language is None or record.language == unheard):
            continue
        rows.append(i)
        labels.append(classes[record.identity])
    return Labelled(np.asarray(rows, dtype=np.int64), np.asarray(labels, dtype=np.int64))


def epoch_order(n: int, seed: int | list[int], epoch: int, block_rows: int = 4096, buffer_blocks: int = 8,
                rows: int = 0) -> np.ndarray:
    """Positions 0..n-1 for one epoch, block-shuffled: blocks of ``block_rows`` consecutive positions in a
    seeded order, shuffled within groups of ``buffer_blocks`` blocks; ``rows`` > 0 keeps the first blocks
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
    parts = []
    for g in range(0, len(blocks), buffer_blocks):
        group = np.concatenate([np.arange(b * block_rows, min(n, (b + 1) * block_rows))
                                for b in blocks[g:g + buffer_blocks]])
        parts.append(rng.permutation(group))
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
    """Training rows read from disk per batch: memory stays at a batch whatever the cache's size."""

    def __init__(self, table: FeatureTable, selected: Labelled) -> None:
        self.table, self.selected = table, selected

    @property
    def labels(self) -> np.ndarray:
        return self.selected.labels

    def __len__(self) -> int:
        return len(self.selected.labels)

    def batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.table.rows(self.selected.rows[positions]), self.selected.labels[positions]


def make_rows(table: FeatureTable, selected: Labelled, limit_gb: float) -> InMemoryRows | StreamingRows:
    """In memory when the selected rows fit in ``limit_gb`` (as float32 when that fits too, else float16),
    else streaming."""
    if table.nbytes(len(selected.rows), itemsize=4) <= limit_gb * 2**30:
        return InMemoryRows(table, selected, dtype="float32")
    if table.nbytes(len(selected.rows)) <= limit_gb * 2**30:
        return InMemoryRows(table, selected)
    return StreamingRows(table, selected)


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
