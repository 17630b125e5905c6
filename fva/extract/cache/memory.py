"""Rows kept in memory, as the cache's interfaces describe them: :class:`RowSink` is what extraction writes to
(:class:`~fva.extract.cache.writer.ShardWriter` on disk, :class:`MemoryWriter` here), :class:`EncoderRows` is
one encoder's rows as stage 2 reads them (:class:`~fva.extract.cache.reader.CacheTable` on disk,
:class:`MemoryRows` here). The Python API encodes media into a :class:`MemoryWriter` and joins its
:class:`MemoryRows` with stage 2's own :class:`~fva.heads.features.FeatureTable`, so files and memory take the
same vectorised (key, frame) join."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from fva.extract.cache.reader import key_bytes


class RowSink(Protocol):
    """Where extraction puts each record's rows (a face track: one per frame) or its failure."""

    def add(self, key: str, frames: np.ndarray, embeddings: np.ndarray, extras: dict | None = None) -> None: ...

    def add_failure(self, key: str, reason: str) -> None: ...


class EncoderRows(Protocol):
    """One encoder's rows as stage 2 joins them: keys (UTF-8 bytes) and frames per row, extras per row, the
    attributes a cache carries (``modality``, ``encoder``, ``weights_id``), and the embeddings on request."""

    folder: Path | str
    key_bytes: np.ndarray
    frames: np.ndarray
    extras: dict[str, np.ndarray]
    attrs: dict
    dim: int

    def __len__(self) -> int: ...

    def rows(self, indices: np.ndarray, dtype: str = "float32") -> np.ndarray: ...

    def close(self) -> None: ...


class MemoryWriter:
    """A :class:`RowSink` in memory, embeddings rounded to the cache ``dtype`` as a shard stores them."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.keys: list[str] = []
        self.frames: list[np.ndarray] = []
        self.embeddings: list[np.ndarray] = []
        self.extras: list[dict[str, np.ndarray]] = []
        self.failures: dict[str, str] = {}

    def add(self, key: str, frames: np.ndarray, embeddings: np.ndarray, extras: dict | None = None) -> None:
        frames = np.asarray(frames, dtype=np.int32).reshape(-1)
        self.keys += [key] * len(frames)
        self.frames.append(frames)
        self.embeddings.append(np.asarray(embeddings).astype(self.dtype).astype(np.float32))
        self.extras.append({k: np.asarray(v, dtype=np.float32).reshape(-1) for k, v in (extras or {}).items()})

    def add_failure(self, key: str, reason: str) -> None:
        self.failures[key] = " ".join(str(reason).split()) or "unknown"

    def table(self, encoder: str, modality: str, where: str) -> "MemoryRows":
        """What was written, as one encoder's :class:`EncoderRows`."""
        dim = self.embeddings[0].shape[1] if self.embeddings else 0
        names = sorted({name for e in self.extras for name in e})
        return MemoryRows(
            folder=where, key_bytes=key_bytes(self.keys),
            frames=np.concatenate(self.frames) if self.frames else np.zeros(0, np.int32),
            embeddings=np.concatenate(self.embeddings) if self.embeddings else np.zeros((0, dim), np.float32),
            extras={n: np.concatenate([e[n] for e in self.extras]) for n in names},
            attrs={"encoder": encoder, "modality": modality, "dim": dim})


class MemoryRows:
    """:class:`EncoderRows` held in memory."""

    def __init__(self, folder: Path | str, key_bytes: np.ndarray, frames: np.ndarray, embeddings: np.ndarray,
                 extras: dict[str, np.ndarray], attrs: dict) -> None:
        self.folder, self.key_bytes, self.frames, self.extras, self.attrs = folder, key_bytes, frames, extras, attrs
        self._embeddings = embeddings
        self.dim = int(embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.frames)

    def rows(self, indices: np.ndarray, dtype: str = "float32") -> np.ndarray:
        return self._embeddings[np.asarray(indices, dtype=np.int64)].astype(dtype, copy=False)

    def close(self) -> None:
        pass
