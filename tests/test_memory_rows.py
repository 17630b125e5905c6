"""The in-memory writer and table (fva.extract.cache.memory) implement the cache's interfaces: written the same
rows, a MemoryWriter's table joins in stage 2's FeatureTable exactly as the shards on disk do."""

from __future__ import annotations

import numpy as np

from fva.extract.cache import ShardWriter
from fva.extract.cache.memory import MemoryWriter
from fva.heads.features import FeatureTable
from conftest import replayable_seed


def test_memory_and_disk_tables_join_alike(tmp_path):
    rng = np.random.default_rng(replayable_seed(51_001))
    encoders = {"fa": 5, "fb": 3}
    memory = {}
    for name, dim in encoders.items():
        disk = ShardWriter(tmp_path / name, 0, 1, dim=dim, dtype="float16", extras=("age",),
                           attrs={"encoder": name, "modality": "face", "weights_id": f"{name}@1"})
        mem = MemoryWriter("float16")
        keys = [f"k{i}" for i in rng.permutation(12)]
        for key in keys:
            if name == "fb" and key == "k3":  # failed in one encoder: the join drops it
                disk.add_failure(key, "bad")
                mem.add_failure(key, "bad")
                continue
            frames = np.sort(rng.choice(10, size=int(rng.integers(1, 4)), replace=False))
            if name == "fb":
                frames = frames[:1]  # a frame the other encoder may lack: joined on (key, frame)
            emb = rng.normal(size=(len(frames), dim))
            extras = {"age": rng.normal(size=len(frames))}
            disk.add(key, frames, emb, extras)
            mem.add(key, frames, emb, extras)
        disk.finalize()
        memory[name] = mem.table(name, "face", "memory")
    on_disk = FeatureTable(tmp_path, list(encoders))
    in_memory = FeatureTable("memory", list(encoders), [memory[n] for n in encoders])
    assert len(on_disk) == len(in_memory) > 0 and "k3" not in set(in_memory.keys.tolist())
    disk_rows = {(k, int(f)): i for i, (k, f) in enumerate(zip(on_disk.keys, on_disk.frames))}
    mem_rows = {(k, int(f)): i for i, (k, f) in enumerate(zip(in_memory.keys, in_memory.frames))}
    assert disk_rows.keys() == mem_rows.keys()
    order = [disk_rows[k] for k in mem_rows]
    np.testing.assert_array_equal(in_memory.rows(np.arange(len(in_memory))), on_disk.rows(np.array(order)))
    np.testing.assert_array_equal(in_memory.extras["age"], on_disk.extras["age"][order])
