"""Stage 2 at VoxCeleb2 scale: the vectorised join, selection and grouping against plain per-row loops (the
implementation they replaced), the epoch order against its old one-block-at-a-time form, streaming's block
buffer against in-memory rows, and the order's identity mix against a uniform shuffle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fva.data.records import MediaRecord
from fva.errors import FvaError
from fva.extract.cache import open_cache
from fva.extract.cache.reader import group_rows_by_key, join_rows, key_codes
from fva.heads.features import (BLOCK_ROWS, BUFFER_BLOCKS, FeatureTable, InMemoryRows, Labelled, StreamingRows,
                                epoch_order, make_rows, select_rows)
from fva.synth.testing import write_feature_cache
from conftest import replayable_seed

# ------------------------------------------------------------------------------ plain references (the old loops)


def reference_join(folder, encoders):
    """(keys, frames, columns) of rows present in every encoder: a dict index per other encoder, row by row."""
    tables = [open_cache(folder / e) for e in encoders]
    try:
        base = tables[0]
        keys, frames = base.keys.tolist(), base.frames.tolist()
        columns = [list(range(len(base)))]
        for table in tables[1:]:
            index = {(k, int(f)): i for i, (k, f) in enumerate(zip(table.keys.tolist(), table.frames.tolist()))}
            columns.append([index.get((k, int(f)), -1) for k, f in zip(keys, frames)])
        keep = [i for i in range(len(base)) if all(c[i] >= 0 for c in columns)]
        return [keys[i] for i in keep], [frames[i] for i in keep], [[c[i] for i in keep] for c in columns]
    finally:
        for t in tables:
            t.close()


def reference_select(keys, records, identities, unheard, classes):
    rows, labels = [], []
    for i, key in enumerate(keys):
        record = records.get(key)
        if record is None or record.identity not in identities:
            continue
        if unheard is not None and (record.language is None or record.language == unheard):
            continue
        rows.append(i)
        labels.append(classes[record.identity])
    return rows, labels


def reference_groups(keys):
    out: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        out.setdefault(key, []).append(i)
    return out


def reference_epoch_order(n, seed, epoch, block_rows, buffer_blocks, rows=0):
    """The epoch order as it was first written: one block at a time."""
    rng = np.random.default_rng([*(seed if isinstance(seed, list) else [seed]), epoch])
    n_blocks = math.ceil(n / block_rows)
    blocks = rng.permutation(n_blocks)
    if rows:
        sizes = np.minimum(block_rows, n - blocks * block_rows)
        blocks = blocks[: int(np.searchsorted(np.cumsum(sizes), min(rows, n))) + 1]
    parts = []
    for g in range(0, len(blocks), buffer_blocks):
        group = np.concatenate([np.arange(b * block_rows, min(n, (b + 1) * block_rows))
                                for b in blocks[g:g + buffer_blocks]])
        parts.append(rng.permutation(group))
    order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return order[:rows] if rows else order


# ------------------------------------------------------------------------------------------ random caches


def random_world(tmp_path, seed: int, modality: str):
    """Two encoders of one modality in different row orders and shardings: the second misses some records
    and some frames of face tracks and holds keys the first lacks; the manifest misses some keys."""
    rng = np.random.default_rng(seed)
    n_ids, n_records = 23, 400
    identity = rng.integers(0, n_ids, n_records)
    order = np.argsort(identity, kind="stable")  # extraction order: identity-sorted, as real manifests are
    names = [f"{modality}s/id{identity[r]:05d}/clip{r:04d}/{'é' if r % 7 == 0 else ''}{r:05d}" for r in order]
    frames = {}
    for name in names:
        if modality == "face" and rng.random() < 0.6:  # a track: several frames
            frames[name] = np.sort(rng.choice(np.arange(0, 500, 25), size=int(rng.integers(2, 6)), replace=False))
        elif modality == "face":
            frames[name] = np.array([int(rng.integers(0, 400))])
        else:
            frames[name] = np.array([-1])
    dims = {"a": 5, "b": 3}

    def records_of(keys, dim, drop_frames):
        for key in keys:
            f = frames[key]
            if drop_frames and len(f) > 1 and rng.random() < 0.3:
                f = f[rng.random(len(f)) < 0.6] if len(f) > 2 else f[:1]
                f = f if len(f) else frames[key][:1]
            yield key, f, rng.standard_normal((len(f), dim)).astype(np.float32), {}

    write_feature_cache(tmp_path, f"{modality}-a", modality, dims["a"], [records_of(names, dims["a"], False)])
    kept = [k for k in names if rng.random() > 0.1] + [f"{modality}s/extra/{i:03d}" for i in range(9)]
    for k in kept[-9:]:
        frames[k] = np.array([-1 if modality == "voice" else 0])
    rng.shuffle(kept)
    half = len(kept) // 2
    write_feature_cache(tmp_path, f"{modality}-b", modality, dims["b"],
                        [records_of(kept[:half], dims["b"], True), records_of(kept[half:], dims["b"], True)])
    languages = ["English", "German", None]
    records = {}
    for r, name in zip(order, names):
        if rng.random() < 0.08:
            continue  # keys absent from the manifest
        records[name] = MediaRecord(key=name, identity=f"id{identity[r]:05d}", language=languages[r % 3],
                                    modality=modality, path=name)
    return [f"{modality}-a", f"{modality}-b"], records, [f"id{i:05d}" for i in range(n_ids)]


@pytest.mark.parametrize("modality", ["voice", "face"])
def test_join_select_and_groups_equal_the_per_row_loops(tmp_path, modality):
    seed = replayable_seed(31201)
    encoders, records, ids = random_world(tmp_path, seed, modality)
    keys, frames, columns = reference_join(tmp_path, encoders)
    table = FeatureTable(tmp_path, encoders)
    try:
        assert table.keys.tolist() == keys, f"seed {seed}"
        assert table.frames.tolist() == frames, f"seed {seed}"
        assert [c.tolist() for c in table.columns] == columns, f"seed {seed}"
        with open_cache(tmp_path / encoders[0]) as base:
            assert table.incomplete == len(base) - len(keys) > 0, f"seed {seed}"
        assert len(set(keys)) < len(keys) or modality == "voice"
        got = table.rows_by_key()
        want = reference_groups(keys)
        assert list(got) == list(want), f"seed {seed}"
        assert all(got[k].dtype == np.int64 and got[k].tolist() == want[k] for k in want), f"seed {seed}"
        rng = np.random.default_rng(seed)
        for unheard in (None, "German"):
            chosen = set(rng.choice(ids, size=9, replace=False).tolist())
            classes = {identity: n for n, identity in enumerate(sorted(chosen))}
            sel = select_rows(table, records, chosen, unheard, classes)
            rows, labels = reference_select(keys, records, chosen, unheard, classes)
            assert sel.rows.dtype == sel.labels.dtype == np.int64
            assert sel.rows.tolist() == rows and sel.labels.tolist() == labels, f"seed {seed}"
            assert len(rows) > 0
    finally:
        table.close()


def test_group_rows_by_key_and_key_codes_equal_loops():
    seed = replayable_seed(31202)
    rng = np.random.default_rng(seed)
    for n in (0, 1, 5, 300, 5000):
        keys = [f"k{int(i)}{'ü' if i % 5 == 0 else ''}" for i in np.repeat(rng.integers(0, max(1, n // 4), n), 1)]
        got = group_rows_by_key(np.array(keys, dtype=object))
        want = reference_groups(keys)
        assert list(got) == list(want) and all(got[k].tolist() == want[k] for k in want), f"seed {seed}"
        codes, vocabulary = key_codes(keys)
        names = [v.decode() for v in vocabulary.tolist()]
        assert names == sorted(set(names), key=lambda s: s.encode()) and [names[c] for c in codes] == keys
        probe = keys[: n // 2] + ["absent", "k"]
        other, _ = key_codes(probe, vocabulary)
        assert [names[c] if c >= 0 else None for c in other] == [k if k in want else None for k in probe]


def test_join_rows_refuses_duplicate_rows_in_the_other_table(tmp_path):
    codes, frames = np.array([0, 1, 1]), np.array([-1, 0, 25])
    assert join_rows(codes, frames, np.array([1, 0, -1, 1]), np.array([25, -1, 0, 0]), tmp_path).tolist() == [1, 3, 0]
    with pytest.raises(FvaError, match="1 duplicate"):
        join_rows(codes, frames, np.array([1, 1]), np.array([0, 0]), tmp_path)


# ------------------------------------------------------------------------------------------------ item 4


def test_epoch_order_equals_the_block_at_a_time_form():
    for n in (0, 1, 7, 8, 103, 1000):
        for block_rows, buffer_blocks in ((1, 1), (3, 2), (8, 3), (8, 4096), (4096, 8)):
            for rows in (0, 1, 20, 999):
                for seed in ([3, 1], 5):
                    got = epoch_order(n, seed=seed, epoch=2, block_rows=block_rows, buffer_blocks=buffer_blocks,
                                      rows=rows)
                    want = reference_epoch_order(n, seed, 2, block_rows, buffer_blocks, rows)
                    np.testing.assert_array_equal(got, want)


def mean_distinct(labels: np.ndarray, order: np.ndarray, batch: int) -> float:
    steps = len(order) // batch
    return float(np.mean([len(np.unique(labels[order[s * batch:(s + 1) * batch]])) for s in range(steps)]))


def test_default_order_mixes_identities_like_a_uniform_shuffle():
    """On an identity-sorted cache of 6,000 identities, batches of 256 meet within 5 % as many identities as a
    uniform permutation's; the old defaults (4,096-row blocks, 8 per window) met a third of that here (400 rows
    an identity; about a ninth at VoxCeleb2's 1,500 face rows an identity: bench/bench_stage2_scale.py)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6000), rng.integers(200, 600, 6000))  # identity order, uneven sizes
    n = len(labels)
    uniform = mean_distinct(labels, rng.permutation(n), 256)
    ours = mean_distinct(labels, epoch_order(n, seed=[0], epoch=0), 256)
    old = mean_distinct(labels, epoch_order(n, seed=[0], epoch=0, block_rows=4096, buffer_blocks=8), 256)
    assert ours >= 0.95 * uniform, (ours, uniform)
    assert old < 0.4 * uniform, (old, uniform)


class ArrayTable:
    """The part of a FeatureTable that StreamingRows reads, over an array (rows counted)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.dim, self.reads = data, data.shape[1], 0

        class T:
            dtype = "float16"

        self.tables = [T()]

    def rows(self, indices, dtype="float32"):
        self.reads += 1
        return self.data[np.asarray(indices)].astype(dtype)


def test_streaming_block_buffer_equals_in_memory_rows():
    rng = np.random.default_rng(1)
    n, dim = 1003, 4
    data = rng.standard_normal((n + 50, dim)).astype(np.float16)
    selected = Labelled(np.sort(rng.choice(n + 50, n, replace=False)), rng.integers(0, 30, n))
    want = data[selected.rows].astype(np.float32)
    for block_rows, buffer_blocks, batch in ((8, 64, 32), (4, 3, 16), (1, 2, 5), (16, 8, 64)):
        table = ArrayTable(data)
        stream = StreamingRows(table, selected, block_rows, buffer_blocks)
        orders = [epoch_order(n, seed=[2], epoch=e, block_rows=block_rows, buffer_blocks=buffer_blocks)
                  for e in range(2)]
        orders.append(rng.integers(0, n, 300))  # any positions: paired faces, cycled orders
        for order in orders:
            for lo in range(0, len(order), batch):
                x, y = stream.batch(order[lo:lo + batch])
                assert x.dtype == np.float32
                np.testing.assert_array_equal(x, want[order[lo:lo + batch]])
                np.testing.assert_array_equal(y, selected.labels[order[lo:lo + batch]])
        if block_rows * buffer_blocks >= 4 * batch:  # the order's windows fit: each block read once an epoch
            blocks = math.ceil(n / block_rows)
            assert 2 * blocks <= stream.blocks_read <= 2 * blocks + 300


def test_make_rows_streams_with_the_order_block_size(tmp_path):
    encoders, records, ids = random_world(tmp_path, 0, "voice")
    table = FeatureTable(tmp_path, encoders)
    try:
        sel = select_rows(table, records, set(ids), None, {i: n for n, i in enumerate(ids)})
        rows = make_rows(table, sel, 1e-9, block_rows=4, buffer_blocks=16)
        assert isinstance(rows, StreamingRows) and (rows.block_rows, rows.capacity) == (4, 16)
        memory = InMemoryRows(table, sel, dtype="float32")
        order = epoch_order(len(sel.rows), seed=[1], epoch=0, block_rows=4, buffer_blocks=16)
        for lo in range(0, len(order), 10):
            np.testing.assert_array_equal(rows.batch(order[lo:lo + 10])[0], memory.batch(order[lo:lo + 10])[0])
        assert (BLOCK_ROWS, BUFFER_BLOCKS) == (8, 4096)
    finally:
        table.close()
