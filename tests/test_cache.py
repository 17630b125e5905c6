"""Feature caches: round trips, streaming reads, crash-safe resume (simulated and real SIGKILL), validation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from fva.data.records import Manifest, MediaRecord
from fva.errors import FvaError
from fva.extract.cache import (CACHE_FORMAT, ShardWriter, cache_info, group_rows_by_key, open_cache, row_frame,
                               shard_name, validate_cache)
from fva.synth.testing import write_feature_cache
from conftest import replayable_seed

REPO = Path(__file__).resolve().parents[1]
DIM = 12
EXTRAS = ("age", "p_female")
ATTRS = {"encoder": "toyface", "modality": "face", "weights": "hub/toyface", "weights_id": "toyface@1f2e3d",
         "dataset": "demo", "subset": "v1", "split": "train", "manifest": "/data/demo_train.jsonl",
         "config": {"frame_step": 25, "size": 112}}

# One deterministic record per index, shared by the tests and the SIGKILL child process (exec'd in both).
RECORD_SRC = '''
import numpy as np

def make_record(i, dim):
    """Record i: every third one a face track of 1-3 frames (frames 0, 25, ...), the others one image row
    with frame 7*i; every 13th (from 5) a failure."""
    rng = np.random.default_rng(1000 + i)
    key = f"faces/id{i % 7:04d}/vid{i % 5}/{i:05d}"
    if i % 13 == 5:
        return key, None, None, None, f"decode error #{i}"
    n = 1 + (i // 3) % 3 if i % 3 == 0 else 1
    frames = (np.arange(n) * 25).astype(np.int32) if i % 3 == 0 else np.array([7 * i], np.int32)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    extras = {"age": rng.uniform(10, 90, n).astype(np.float32),
              "p_female": rng.uniform(0, 1, n).astype(np.float32)}
    return key, frames, emb, extras, None

def add_record(writer, i, dim):
    key, frames, emb, extras, reason = make_record(i, dim)
    if reason is not None:
        writer.add_failure(key, reason)
    else:
        writer.add(key, frames, emb, extras)
    return key
'''
exec(RECORD_SRC)  # defines make_record, add_record


def write_shard(folder: Path, index: int, num: int, ids, *, dim: int = DIM, dtype: str = "float16",
                part_rows: int = 5, commit_every: int = 4, attrs: dict | None = None) -> ShardWriter:
    w = ShardWriter(folder, index, num, dim=dim, dtype=dtype, extras=EXTRAS, attrs=attrs or ATTRS,
                    part_rows=part_rows, fsync=False)
    for j, i in enumerate(ids):
        add_record(w, i, dim)
        if j % commit_every == commit_every - 1:
            w.commit()
    w.finalize()
    return w


def expected(ids, dim: int = DIM, dtype: str = "float16"):
    """keys, frames, embeddings (rounded to the storage dtype), extras, failures of records ``ids`` in order."""
    keys, frames, embs, ext, fails = [], [], [], {e: [] for e in EXTRAS}, []
    for i in ids:
        key, fr, emb, extras, reason = make_record(i, dim)
        if reason is not None:
            fails.append((key, reason))
            continue
        keys += [key] * len(fr)
        frames.append(fr)
        embs.append(emb.astype(dtype).astype(np.float32))
        for e in EXTRAS:
            ext[e].append(extras[e])
    return (np.array(keys, dtype=object), np.concatenate(frames), np.concatenate(embs),
            {e: np.concatenate(v) for e, v in ext.items()}, fails)


def snapshot(folder: Path) -> tuple[list, list]:
    """Order-free content of a cache: sorted (key, frame, embedding bytes, extras) rows and failures; asserts
    the (key, frame) rows are unique."""
    with open_cache(folder) as t:
        assert len(t.index()) == len(t)
        emb = t.load()
        rows = sorted((k, int(f), emb[i].tobytes(), tuple(float(t.extras[e][i]) for e in EXTRAS))
                      for i, (k, f) in enumerate(zip(t.keys, t.frames)))
        return rows, sorted(t.failures)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".part-" in p.name or ".tmp" in p.name)


# ----------------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_several_shards_and_commits(tmp_path, dtype):
    shards = [list(range(0, 23)), list(range(23, 40)), list(range(40, 61))]
    for s, ids in enumerate(shards):
        write_shard(tmp_path, s, 3, ids, dtype=dtype)
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [shard_name(s, 3) for s in range(3)]

    keys, frames, emb, extras, fails = expected(range(61), dtype=dtype)
    with open_cache(tmp_path) as t:
        assert len(t) == len(keys) and t.missing_shards == []
        np.testing.assert_array_equal(t.keys, keys)
        assert t.frames.dtype == np.int32
        np.testing.assert_array_equal(t.frames, frames)
        for e in EXTRAS:
            assert t.extras[e].dtype == np.float32
            np.testing.assert_array_equal(t.extras[e], extras[e])
        got = t.load()
        assert got.dtype == np.float32 and got.shape == (len(keys), DIM)
        np.testing.assert_array_equal(got, emb)  # exact: float16-rounded inputs, or the float32 inputs
        if dtype == "float16":  # really stored rounded
            raw = np.concatenate([expected(ids, dtype="float32")[2] for ids in shards])
            assert not np.array_equal(got, raw)
        assert sorted(t.failures) == sorted(fails) and fails
        assert t.attrs["encoder"] == "toyface" and t.attrs["dim"] == DIM and t.attrs["dtype"] == dtype
        assert t.attrs["extras"] == EXTRAS and t.attrs["config"] == ATTRS["config"]

    # One shard file alone describes itself.
    with h5py.File(tmp_path / shard_name(1, 3), "r") as f:
        a = f.attrs
        assert a["encoder"] == "toyface" and a["modality"] == "face" and a["weights"] == "hub/toyface"
        assert a["weights_id"] == "toyface@1f2e3d" and a["dataset"] == "demo" and a["split"] == "train"
        assert a["subset"] == "v1" and a["manifest"] == "/data/demo_train.jsonl"
        assert json.loads(a["config"]) == ATTRS["config"] and json.loads(a["extras"]) == list(EXTRAS)
        assert a["dim"] == DIM and a["dtype"] == dtype and a["cache_format"] == CACHE_FORMAT
        assert a["fva_version"] and a["shard_index"] == 1 and a["num_shards"] == 3
        assert a["rows"] == f["keys"].shape[0] == len(expected(shards[1])[0])
        assert a["failed"] == f["failed/keys"].shape[0] == len(expected(shards[1])[4])
        assert a["created"].endswith("+00:00")
        ds = f["embeddings"]
        assert ds.chunks is None and ds.compression is None and ds.dtype == np.dtype(dtype)
        assert ds.shape == (a["rows"], DIM)
        assert f["frames"].dtype == np.int32 and f["extras/age"].dtype == np.float32
        assert h5py.check_string_dtype(f["keys"].dtype) is not None


def test_parts_and_single_part_shards_have_the_shard_layout(tmp_path):
    w = ShardWriter(tmp_path, 0, 1, dim=DIM, extras=EXTRAS, attrs=ATTRS, fsync=True)  # the fsync path too
    for i in range(6):
        add_record(w, i, DIM)
    w.commit()
    part = tmp_path / "shard-00000-of-00001.part-000000.h5"
    for path in (part, None):
        if path is None:  # one part: finalize renames it into place
            path = w.finalize()
            assert not part.exists()
        with h5py.File(path, "r") as f:
            assert set(f) == {"keys", "frames", "embeddings", "extras", "failed"}
            assert set(f["extras"]) == set(EXTRAS) and set(f["failed"]) == {"keys", "reasons"}
            assert f["embeddings"].chunks is None and f["embeddings"].compression is None
            assert f.attrs["rows"] == f["embeddings"].shape[0] and f.attrs["failed"] == 1
            assert f.attrs["encoder"] == "toyface" and f.attrs["shard_index"] == 0
    keys, frames, emb, _, fails = expected(range(6))
    with open_cache(tmp_path) as t:
        np.testing.assert_array_equal(t.keys, keys)
        np.testing.assert_array_equal(t.load(), emb)
        assert t.failures == fails


def test_streaming_and_random_access_agree_with_load(tmp_path):
    write_shard(tmp_path, 0, 2, range(0, 30))
    write_shard(tmp_path, 1, 2, range(30, 70))
    with open_cache(tmp_path) as t:
        full = t.load()
        n = len(t)
        chunks = list(t.iter_chunks(rows_per_chunk=7))
        assert all(len(c) <= 7 for _, c in chunks)
        assert [s for s, _ in chunks] == list(np.cumsum([0] + [len(c) for _, c in chunks])[:-1])
        np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), full)
        np.testing.assert_array_equal(np.concatenate([c for _, c in t.iter_chunks()]), full)
        np.testing.assert_array_equal(t.rows(np.arange(n)), full)
        perm = np.random.default_rng(0).permutation(n)
        np.testing.assert_array_equal(t.rows(perm), full[perm])
        picks = np.array([n - 1, 0, 3, 3, n // 2, 1, n - 1])  # repeats, both shards, any order
        np.testing.assert_array_equal(t.rows(picks), full[picks])
        assert t.rows(np.array([], dtype=np.int64)).shape == (0, DIM)
        with pytest.raises(IndexError):
            t.rows(np.array([n]))

        index = t.index()
        assert len(index) == n
        for (key, frame), row in index.items():
            assert t.keys[row] == key and t.frames[row] == frame
        by_key = t.rows_by_key()
        track = make_record(3, DIM)  # a 2-frame face track
        rows = by_key[track[0]]
        np.testing.assert_array_equal(t.frames[rows], track[1])
        np.testing.assert_array_equal(full[rows], track[2].astype(np.float16).astype(np.float32))
        assert sum(len(r) for r in by_key.values()) == n


def test_group_rows_by_key_equals_a_python_loop():
    seed = replayable_seed(41301)
    rng = np.random.default_rng(seed)
    for n in (0, 1, 2, 57, 3000):
        keys = np.array([f"k{int(i)}" for i in rng.integers(0, max(1, n // 3), n)], dtype=object)
        reference: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            reference.setdefault(key, []).append(i)
        got = group_rows_by_key(keys)
        assert list(got) == list(reference), f"seed {seed}"
        for key, rows in got.items():
            assert rows.dtype == np.int64 and rows.tolist() == reference[key], f"seed {seed}"
            assert type(key) is str


def test_write_feature_cache_equals_a_hand_driven_writer(tmp_path):
    def records(ids):
        for i in ids:
            rng = np.random.default_rng(i)
            n = 1 + i % 3
            yield (f"k{i:03d}", np.arange(n, dtype=np.int32) * 25, rng.standard_normal((n, DIM)),
                   {e: rng.uniform(0, 1, n) for e in EXTRAS})

    shards = [range(0, 20), range(20, 31)]
    out = write_feature_cache(tmp_path / "built", "toyface", "face", DIM, [records(ids) for ids in shards],
                              extras=EXTRAS, weights_id="toyface@1f2e3d", config={"frame_step": 25})
    assert out == tmp_path / "built" / "toyface"
    assert sorted(p.name for p in out.iterdir()) == [shard_name(0, 2), shard_name(1, 2)]
    for s, ids in enumerate(shards):
        w = ShardWriter(tmp_path / "by_hand", s, 2, dim=DIM, extras=EXTRAS, fsync=False,
                        attrs={"encoder": "toyface", "modality": "face", "weights_id": "toyface@1f2e3d",
                               "config": {"frame_step": 25}})
        for key, frames, emb, extras in records(ids):
            w.add(key, frames, emb, extras)
        w.finalize()
    assert snapshot(out) == snapshot(tmp_path / "by_hand")
    with open_cache(out) as t:
        assert "weights" not in t.attrs and t.attrs["config"] == {"frame_step": 25}
        assert t.attrs["encoder"] == "toyface" and t.attrs["modality"] == "face"


# -------------------------------------------------------------------------------------------------- resume


def test_resume_after_a_dropped_writer(tmp_path):
    ids = list(range(50))
    ref = tmp_path / "ref"
    write_shard(ref, 0, 2, ids)

    run = tmp_path / "run"
    w = ShardWriter(run, 0, 2, dim=DIM, extras=EXTRAS, attrs=ATTRS, part_rows=1000, fsync=False)
    committed = set()
    for i in ids[:30]:
        committed.add(add_record(w, i, DIM))
        if i % 10 == 9:
            w.commit()
    for i in ids[30:36]:
        add_record(w, i, DIM)  # buffered, never committed: lost with the writer
    assert w.done_keys() == committed
    del w
    # temp files of a killed run: fva.atomic's names and the *.tmp-<pid> names of earlier fva versions
    garbage = [run / ".shard-00000-of-00002.part-000003.h5.99999.tmp", run / ".shard-00000-of-00002.h5.4242.tmp",
               run / "shard-00000-of-00002.part-000003.h5.tmp-99999", run / "shard-00000-of-00002.h5.tmp-4242"]
    for path in garbage:
        path.write_bytes(b"half a file")
    others = [run / ".shard-00001-of-00002.part-000000.h5.1.tmp",  # another shard's: not ours to delete
              run / "shard-00001-of-00002.part-000000.h5.tmp-1"]
    for path in others:
        path.write_bytes(b"x")

    w2 = ShardWriter(run, 0, 2, dim=DIM, extras=EXTRAS, attrs=ATTRS, part_rows=1000, fsync=False)
    assert w2.done_keys() == committed and len(committed) == 30
    assert not any(p.exists() for p in garbage) and all(p.exists() for p in others)
    assert not w2.is_complete()
    with pytest.raises(ValueError, match="already added"):
        add_record(w2, 0, DIM)
    for i in ids:
        if make_record(i, DIM)[0] not in w2.done_keys():
            add_record(w2, i, DIM)
    w2.finalize()
    for path in others:
        path.unlink()
    assert leftovers(run) == []
    assert snapshot(run) == snapshot(ref)


CHILD = RECORD_SRC + '''
import sys, time
from pathlib import Path
from fva.extract.cache import ShardWriter
folder, total, dim = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
w = ShardWriter(folder, 0, 1, dim=dim, extras=("age", "p_female"), attrs={"encoder": "toyface",
                "modality": "face", "weights_id": "toyface@1f2e3d"}, part_rows=8)
done = w.done_keys()
for i in range(total):
    if make_record(i, dim)[0] in done:
        continue
    add_record(w, i, dim)
    if i % 2 == 1:
        w.commit()
w.finalize()
print("finished", flush=True)
'''


def test_real_sigkill_then_resume_equals_uninterrupted(tmp_path):
    total = 600
    attrs = {"encoder": "toyface", "modality": "face", "weights_id": "toyface@1f2e3d"}
    ref = tmp_path / "ref"
    write_shard(ref, 0, 1, range(total), attrs=attrs, part_rows=10_000, commit_every=total)

    run = tmp_path / "run"
    seed = replayable_seed(41302)
    delays = np.random.default_rng(seed).uniform(0.02, 0.3, size=4)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    interrupted = []
    for delay in delays:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(run), str(total), str(DIM)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode in (-signal.SIGKILL, 0), err
        interrupted.append(not (run / shard_name(0, 1)).exists())
    assert interrupted[0], f"first kill (delay {delays[0]:.3f}s, seed {seed}) came after the run finished"

    w = ShardWriter(run, 0, 1, dim=DIM, extras=EXTRAS, attrs=attrs, part_rows=8, fsync=False)
    assert not [p for p in run.iterdir() if ".tmp" in p.name]
    done = w.done_keys()
    for i in range(total):
        if make_record(i, DIM)[0] not in done:
            add_record(w, i, DIM)
    w.finalize()
    assert leftovers(run) == [], f"seed {seed}"
    assert snapshot(run) == snapshot(ref), f"seed {seed}, delays {delays}"
    assert validate_cache(run) == []


def test_finalize_killed_between_rename_and_part_deletion(tmp_path):
    ids = list(range(40))
    w = ShardWriter(tmp_path, 0, 1, dim=DIM, extras=EXTRAS, attrs=ATTRS, part_rows=6, fsync=False)
    for i in ids:
        add_record(w, i, DIM)
    w.commit()
    saved = tmp_path / "saved"
    saved.mkdir()
    parts = sorted(p for p in tmp_path.iterdir() if ".part-" in p.name)
    assert len(parts) >= 3
    for p in parts:
        shutil.copy2(p, saved / p.name)
    w.finalize()
    for p in parts:  # the final file is there, the parts were never deleted
        shutil.copy2(saved / p.name, p)
    shutil.rmtree(saved)
    keys, frames, emb, _, fails = expected(ids)

    with open_cache(tmp_path) as t:
        assert len(t) == len(keys) and len(t.index()) == len(t)
        np.testing.assert_array_equal(t.load(), emb)
    assert validate_cache(tmp_path) == []

    w2 = ShardWriter(tmp_path, 0, 1, dim=DIM, extras=EXTRAS, attrs=ATTRS, fsync=False)
    assert w2.is_complete()
    assert leftovers(tmp_path) == []
    assert w2.done_keys() == set(keys) | {k for k, _ in fails}
    assert w2.finalize() == tmp_path / shard_name(0, 1)  # idempotent
    with pytest.raises(RuntimeError, match="complete"):
        add_record(w2, 1000, DIM)
    with open_cache(tmp_path) as t:
        np.testing.assert_array_equal(t.load(), emb)


def test_two_shard_writers_share_a_folder(tmp_path):
    w0 = ShardWriter(tmp_path, 0, 2, dim=DIM, extras=EXTRAS, attrs=ATTRS, part_rows=4, fsync=False)
    w1 = ShardWriter(tmp_path, 1, 2, dim=DIM, extras=EXTRAS, attrs=ATTRS, part_rows=4, fsync=False)
    for i in range(20):  # interleaved, both committing parts
        add_record(w0, i, DIM)
        add_record(w1, 100 + i, DIM)
    w0.commit()
    w1.commit()
    names0 = {p.name for p in tmp_path.iterdir() if p.name.startswith("shard-00000-of-00002.")}
    names1 = {p.name for p in tmp_path.iterdir() if p.name.startswith("shard-00001-of-00002.")}
    assert names0 and names1 and len(names0) + len(names1) == len(list(tmp_path.iterdir()))
    w0_garbage = {"shard-00000-of-00002.part-000777.h5.tmp-5", ".shard-00000-of-00002.part-000777.h5.5.tmp"}
    for name in w0_garbage:
        (tmp_path / name).write_bytes(b"w0 garbage")

    # A restarted writer 1 must leave writer 0's parts and temp files alone, and vice versa.
    w1 = ShardWriter(tmp_path, 1, 2, dim=DIM, extras=EXTRAS, attrs=ATTRS, part_rows=4, fsync=False)
    assert all((tmp_path / name).exists() for name in w0_garbage)
    assert names0 <= {p.name for p in tmp_path.iterdir()}
    w1.finalize()
    assert names0 <= {p.name for p in tmp_path.iterdir()}
    with open_cache(tmp_path) as t:
        assert t.missing_shards == [shard_name(0, 2)]
    w0.finalize()
    assert {p.name for p in tmp_path.iterdir()} == {shard_name(0, 2), shard_name(1, 2)} | w0_garbage

    keys0, _, emb0, _, _ = expected(range(20))
    keys1, _, emb1, _, _ = expected(range(100, 120))
    with open_cache(tmp_path) as t:
        assert t.missing_shards == [] and t.shard_names == [shard_name(0, 2), shard_name(1, 2)]
        np.testing.assert_array_equal(t.keys, np.concatenate([keys0, keys1]))
        np.testing.assert_array_equal(t.load(), np.concatenate([emb0, emb1]))


# --------------------------------------------------------------------------------------- checks and errors


def test_writer_checks_its_input_and_what_it_resumes(tmp_path):
    w = ShardWriter(tmp_path, 0, 1, dim=DIM, extras=EXTRAS, attrs=ATTRS, fsync=False)
    ext = {"age": np.ones(2), "p_female": np.ones(2)}
    with pytest.raises(ValueError, match="shape"):
        w.add("a", np.array([0, 25]), np.zeros((2, DIM + 1)), ext)  # wrong dim
    with pytest.raises(ValueError, match="shape"):
        w.add("a", np.array([0, 25, 50]), np.zeros((2, DIM)), {"age": np.ones(3), "p_female": np.ones(3)})
    with pytest.raises(ValueError, match="extras"):
        w.add("a", np.array([0, 25]), np.zeros((2, DIM)), {"age": np.ones(2)})
    with pytest.raises(ValueError, match="extra 'age'"):
        w.add("a", np.array([0, 25]), np.zeros((2, DIM)), {"age": np.ones(3), "p_female": np.ones(2)})
    with pytest.raises(ValueError, match="non-empty"):
        w.add("a", np.array([], np.int32), np.zeros((0, DIM)), {"age": [], "p_female": []})
    w.add("a", np.array([0, 25]), np.zeros((2, DIM)), ext)
    with pytest.raises(ValueError, match="already added"):
        w.add_failure("a", "twice")
    with pytest.raises(ValueError, match="set by the writer"):
        ShardWriter(tmp_path, 0, 1, dim=DIM, attrs={"dim": 3})
    w.commit()
    with pytest.raises(FvaError, match="weights_id"):
        ShardWriter(tmp_path, 0, 1, dim=DIM, extras=EXTRAS, attrs={**ATTRS, "weights_id": "other@999"})
    with pytest.raises(FvaError, match="dim"):
        ShardWriter(tmp_path, 0, 1, dim=DIM + 4, extras=EXTRAS, attrs=ATTRS)


def test_open_cache_errors(tmp_path):
    with pytest.raises(FvaError, match="not found"):
        open_cache(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FvaError, match="run fva extract"):
        open_cache(empty)
    unfinished = tmp_path / "unfinished"
    w = ShardWriter(unfinished, 0, 1, dim=DIM, extras=EXTRAS, attrs=ATTRS, fsync=False)
    add_record(w, 0, DIM)
    w.commit()
    with pytest.raises(FvaError, match="no complete cache shard .*1 part files"):
        open_cache(unfinished)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with h5py.File(foreign / shard_name(0, 1), "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(FvaError, match="not an fva feature cache"):
        open_cache(foreign)

    old = tmp_path / "old"
    write_shard(old, 0, 1, range(5))
    with h5py.File(old / shard_name(0, 1), "r+") as f:
        f.attrs["cache_format"] = CACHE_FORMAT + 1
    with pytest.raises(FvaError, match="cache format"):
        open_cache(old)

    mixed = tmp_path / "mixed"
    write_shard(mixed, 0, 3, range(5))
    write_shard(mixed, 2, 3, range(5, 9), attrs={**ATTRS, "weights_id": "toyface@other"})
    with pytest.raises(FvaError) as err:
        open_cache(mixed)
    msg = str(err.value)
    assert "weights_id" in msg and shard_name(0, 3) in msg and shard_name(2, 3) in msg and "\n" not in msg

    partial = tmp_path / "partial"
    write_shard(partial, 0, 4, range(5))
    write_shard(partial, 2, 4, range(5, 9))
    with open_cache(partial) as t:
        assert t.missing_shards == [shard_name(1, 4), shard_name(3, 4)]
        assert len(t) == len(expected(range(9))[0])


def test_cache_info_counts(tmp_path):
    write_shard(tmp_path, 0, 3, range(0, 20))
    write_shard(tmp_path, 1, 3, range(20, 33))
    info = cache_info(tmp_path)
    json.dumps(info)
    keys0, _, _, _, fails0 = expected(range(20))
    keys1, _, _, _, fails1 = expected(range(20, 33))
    assert info["rows"] == len(keys0) + len(keys1)
    assert info["keys"] == len(set(keys0) | set(keys1)) < info["rows"]
    assert info["failed"] == len(fails0) + len(fails1) > 0
    assert info["shards"] == [
        {"name": shard_name(0, 3), "rows": len(keys0), "failed": len(fails0),
         "size_bytes": (tmp_path / shard_name(0, 3)).stat().st_size},
        {"name": shard_name(1, 3), "rows": len(keys1), "failed": len(fails1),
         "size_bytes": (tmp_path / shard_name(1, 3)).stat().st_size}]
    assert info["missing_shards"] == [shard_name(2, 3)]
    assert info["size_bytes"] == sum(s["size_bytes"] for s in info["shards"])
    assert (info["dim"], info["dtype"], info["encoder"], info["modality"]) == (DIM, "float16", "toyface", "face")
    assert (info["weights"], info["weights_id"]) == ("hub/toyface", "toyface@1f2e3d")
    assert info["extras"] == list(EXTRAS) and info["fva_version"] and info["num_shards"] == 3


# ---------------------------------------------------------------------------------------------- validation


def face(key, path, frame=None):
    return MediaRecord(key=key, identity="id0001", language="English", modality="face", path=path, frame=frame)


def one(w, key, frame, value=0.5, dim=8):
    w.add(key, np.array([frame]), np.full((1, dim), value, np.float32),
          {"age": np.array([30.0]), "p_female": np.array([0.5])})


def validation_manifest() -> Manifest:
    records = [face(f"img{i}", f"faces/img{i}.jpg", frame=10 * i) for i in range(10)]
    records.append(face("track0", "faces/track0.mp4"))
    records.append(MediaRecord(key="v0", identity="id0001", language="English", modality="voice",
                               path="voices/v0.wav"))
    return Manifest(dataset="demo", root="/data", subset="v1", split="train", records=records)


def test_validate_clean_cache(tmp_path):
    man = validation_manifest()
    w = ShardWriter(tmp_path, 0, 2, dim=8, extras=EXTRAS, attrs=ATTRS, fsync=False)
    for i in range(6):
        one(w, f"img{i}", 10 * i)
    w.add("track0", np.array([0, 25, 50]), np.zeros((3, 8)),
          {"age": np.ones(3), "p_female": np.ones(3)})
    w.finalize()
    w = ShardWriter(tmp_path, 1, 2, dim=8, extras=EXTRAS, attrs=ATTRS, fsync=False)
    for i in range(6, 10):
        one(w, f"img{i}", 10 * i)
    w.finalize()
    assert validate_cache(tmp_path) == []
    assert validate_cache(tmp_path, man) == []
    assert row_frame(man.records[3]) == 30 and row_frame(man.records[10]) is None
    assert row_frame(man.records[11]) == -1


def test_validate_reports_every_problem_in_one_call(tmp_path):
    man = validation_manifest()
    w = ShardWriter(tmp_path, 0, 3, dim=8, extras=EXTRAS, attrs=ATTRS, fsync=False)
    for i in range(5):
        one(w, f"img{i}", 10 * i, value=np.nan if i == 2 else 0.5)  # img2: a NaN row
    w.add("track0", np.array([0, 25]), np.zeros((2, 8)), {"age": np.ones(2), "p_female": np.ones(2)})
    w.add_failure("img5", "decode error: truncated jpg")
    w.finalize()
    w = ShardWriter(tmp_path, 1, 3, dim=8, extras=EXTRAS, attrs=ATTRS, fsync=False)
    one(w, "img6", 60)
    one(w, "img0", 0)  # the same (key, frame) as in shard 0
    one(w, "stray", -1)  # not in the manifest
    w.finalize()
    w = ShardWriter(tmp_path, 2, 3, dim=6, extras=EXTRAS, attrs=ATTRS, fsync=False)
    one(w, "img7", -1, dim=6)  # another dim, and the wrong frame (manifest says 70)
    w.finalize()
    # img8, img9: missing entirely

    problems = validate_cache(tmp_path, man)
    assert all("\n" not in p for p in problems)
    text = "\n".join(problems)

    def line(*words):
        hits = [p for p in problems if all(w in p for w in words)]
        assert hits, f"no line with {words} in:\n{text}"
        return hits[0]

    line("dim", shard_name(0, 3), shard_name(2, 3))
    line("1 row(s) with NaN/inf", "img2")
    line("1 duplicate (key, frame)", "img0")
    line("2 manifest face key(s) missing", "img8", "img9")
    line("1 manifest key(s) failed", "img5: decode error: truncated jpg")
    line("not among the manifest", "stray")
    line("img0 (2 rows)")
    line("wrong frame", "img7")
    assert "img5" not in line("missing")  # the failed key is told apart from the missing ones
    assert "track0" not in text and "v0" not in text  # face tracks may have many rows; voices are another cache


# -------------------------------------------------------------------------------------------------- memory

# Peak RSS of this process. Linux carries ru_maxrss across exec (a child started from a big pytest process
# reports the parent's peak), so read the per-image high-water mark VmHWM where /proc has it.
MEMORY_CHILD = '''
import json, resource, sys
from fva.extract.cache import open_cache

def peak():
    try:
        with open("/proc/self/status") as fh:
            return int(fh.read().split("VmHWM:")[1].split()[0]) * 1024
    except (OSError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

t = open_cache(sys.argv[1])
base = peak()
total, rows = 0.0, 0
for start, block in t.iter_chunks(rows_per_chunk=4096):
    assert start == rows
    total += float(block[:, :4].sum())
    rows += len(block)
after_iter = peak()
everything = t.load()
after_load = peak()
print(json.dumps({"rows": rows, "n": len(t), "base": base, "iter": after_iter - base,
                  "load": after_load - after_iter}))
'''


def test_iter_chunks_memory_stays_bounded(tmp_path):
    dim, per_record, records = 2048, 100, 1000  # 100k rows x 2048 float16 = 410 MB
    base = np.random.default_rng(0).standard_normal((per_record, dim)).astype(np.float32)
    frames = np.arange(per_record, dtype=np.int32) * 25
    ext = {"age": np.zeros(per_record), "p_female": np.zeros(per_record)}
    for s, ids in enumerate((range(0, 600), range(600, records))):
        w = ShardWriter(tmp_path, s, 2, dim=dim, extras=EXTRAS, attrs=ATTRS, part_rows=16384, fsync=False)
        for i in ids:
            w.add(f"track{i:05d}", frames, base + i, ext)
        w.finalize()
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert size > 400e6
    try:
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tmp_path)], capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout)
        assert res["rows"] == res["n"] == per_record * records
        assert res["iter"] < 150e6, res
        assert res["load"] > 600e6, res  # the measurement does see a full load (float32: 820 MB)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


# ------------------------------------------------------------------------------- killed during finalize


class Killed(BaseException):
    """A simulated kill: not an Exception, so nothing on the way cleans up as it would on an error."""


def shard_content(path: Path) -> tuple[dict, dict]:
    """Every dataset's values and the attributes (but ``created``) of one shard file."""
    with h5py.File(path, "r") as f:
        data = {}
        f.visititems(lambda name, obj: data.__setitem__(name, obj[()].tolist()) if isinstance(obj, h5py.Dataset)
                     else None)
        assert f["embeddings"].chunks is None and f["embeddings"].compression is None
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items() if k != "created"}
        return data, attrs


def parts_of(ids, folder: Path, part_rows: int = 6) -> ShardWriter:
    w = ShardWriter(folder, 0, 1, dim=DIM, extras=EXTRAS, attrs=ATTRS, part_rows=part_rows, fsync=False)
    for i in ids:
        add_record(w, i, DIM)
    w.commit()
    return w


@pytest.mark.parametrize("delete", [False, True])
@pytest.mark.parametrize("k", [0, 1, 4, -1])
def test_finalize_killed_after_k_parts_merged_resumes_to_the_same_shard(tmp_path, monkeypatch, k, delete):
    """Killed after k parts were copied into the merging file (the k-th deleted or not): the next writer
    finishes the merge, and the shard equals an uninterrupted finalize's, byte for byte in every dataset."""
    ids = list(range(60))
    ref = parts_of(ids, tmp_path / "ref").finalize()
    run = tmp_path / "run"
    w = parts_of(ids, run)
    parts = sorted(p for p in run.iterdir() if ".part-" in p.name)
    assert len(parts) >= 8
    k = k % len(parts)  # -1: the last part
    calls = []
    real = ShardWriter._merged

    def merged(self, part):
        calls.append(part)
        if len(calls) == k + 1:
            if delete:
                real(self, part)
            raise Killed
        real(self, part)

    monkeypatch.setattr(ShardWriter, "_merged", merged)
    with pytest.raises(Killed):
        w.finalize()
    monkeypatch.undo()
    merging = run / "shard-00000-of-00001.merging.h5"
    assert merging.is_file() and not (run / shard_name(0, 1)).exists()
    assert len([p for p in run.iterdir() if ".part-" in p.name]) == len(parts) - k - delete
    with pytest.raises(FvaError, match="no complete cache shard"):
        open_cache(run)  # the merging file is never read

    w2 = ShardWriter(run, 0, 1, dim=DIM, extras=EXTRAS, attrs=ATTRS, part_rows=6, fsync=False)
    assert w2.is_complete() and leftovers(run) == [] and not merging.exists()
    keys, _, _, _, fails = expected(ids)
    assert w2.done_keys() == set(keys) | {key for key, _ in fails}
    assert w2.finalize() == run / shard_name(0, 1)
    assert shard_content(run / shard_name(0, 1)) == shard_content(ref)
    assert snapshot(run) == snapshot(tmp_path / "ref") and validate_cache(run) == []


def test_finalize_killed_while_writing_the_merging_file(tmp_path):
    """A kill before the merging file is renamed into place leaves its temporary file: removed, finalize
    starts again from the parts; a failures-only shard of several parts merges too."""
    ids = list(range(40))
    ref = parts_of(ids, tmp_path / "ref").finalize()
    run = tmp_path / "run"
    parts_of(ids, run)
    garbage = run / ".shard-00000-of-00001.merging.h5.99999.tmp"
    garbage.write_bytes(b"half a file")
    w = ShardWriter(run, 0, 1, dim=DIM, extras=EXTRAS, attrs=ATTRS, part_rows=6, fsync=True)
    assert not garbage.exists() and not w.is_complete()
    w.finalize()
    assert leftovers(run) == [] and shard_content(run / shard_name(0, 1)) == shard_content(ref)

    only_failures = tmp_path / "failures"
    w = ShardWriter(only_failures, 0, 1, dim=DIM, extras=EXTRAS, attrs=ATTRS, fsync=False)
    for i in range(3):
        w.add_failure(f"bad{i}", f"reason {i}")
        w.commit()
    w.finalize()
    assert leftovers(only_failures) == []
    with open_cache(only_failures) as t:
        assert len(t) == 0 and t.failures == [(f"bad{i}", f"reason {i}") for i in range(3)]


def test_finalize_merges_in_place_of_its_parts(tmp_path, monkeypatch):
    """While merging, the folder holds little more than the final shard: the merging file takes disk only for
    the rows already copied, whose parts are gone (st_blocks, sparse storage)."""
    dim = 256
    w = ShardWriter(tmp_path, 0, 1, dim=dim, extras=EXTRAS, attrs=ATTRS, part_rows=500, fsync=False)
    rng = np.random.default_rng(0)
    for i in range(40):
        w.add(f"k{i:03d}", np.arange(100, dtype=np.int32), rng.standard_normal((100, dim)),
              {e: np.zeros(100) for e in EXTRAS})
    w.commit()
    used = []
    real = ShardWriter._merged

    def merged(self, part):
        real(self, part)
        used.append(sum(p.stat().st_blocks * 512 for p in tmp_path.iterdir()))

    monkeypatch.setattr(ShardWriter, "_merged", merged)
    path = w.finalize()
    final = path.stat().st_blocks * 512
    assert len(used) == 8 and max(used) < 1.2 * final, (used, final)


SIGKILL_FINALIZE_CHILD = RECORD_SRC + '''
import sys, time
from pathlib import Path
from fva.extract.cache import ShardWriter
folder, total, dim, k = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
w = ShardWriter(folder, 0, 1, dim=dim, extras=("age", "p_female"), attrs={"encoder": "toyface",
                "modality": "face", "weights_id": "toyface@1f2e3d"}, part_rows=8)
for i in range(total):
    add_record(w, i, dim)
real, calls = ShardWriter._merged, []
def merged(self, part):
    real(self, part)
    calls.append(part)
    if len(calls) == k:
        print("merged", flush=True)
    time.sleep(0.005)
ShardWriter._merged = merged
w.finalize()
print("finished", flush=True)
'''


def test_real_sigkill_during_finalize_then_resume_equals_uninterrupted(tmp_path):
    total = 600
    attrs = {"encoder": "toyface", "modality": "face", "weights_id": "toyface@1f2e3d"}
    ref = tmp_path / "ref"
    write_shard(ref, 0, 1, range(total), attrs=attrs, part_rows=8, commit_every=total)

    run = tmp_path / "run"
    seed = replayable_seed(41303)
    rng = np.random.default_rng(seed)
    k, delay = int(rng.integers(1, 60)), float(rng.uniform(0, 0.05))
    proc = subprocess.Popen([sys.executable, "-c", SIGKILL_FINALIZE_CHILD, str(run), str(total), str(DIM), str(k)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "merged", proc.stderr.read()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    assert (run / "shard-00000-of-00001.merging.h5").is_file(), f"seed {seed}"
    assert not (run / shard_name(0, 1)).exists(), f"seed {seed}"

    w = ShardWriter(run, 0, 1, dim=DIM, extras=EXTRAS, attrs=attrs, part_rows=8, fsync=False)
    assert w.is_complete() and leftovers(run) == [], f"seed {seed}"
    w.finalize()
    assert shard_content(run / shard_name(0, 1)) == shard_content(ref / shard_name(0, 1)), f"seed {seed}"
    assert snapshot(run) == snapshot(ref) and validate_cache(run) == [], f"seed {seed}"
