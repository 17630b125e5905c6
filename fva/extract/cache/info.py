"""A JSON-ready summary of a cache (:func:`cache_info`, ``fva cache info``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fva.extract.cache.reader import open_cache


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

