"""Stage 2 at VoxCeleb2's row counts: opening, joining and selecting caches, the epoch order's identity mix,
and streaming read throughput.

1. Scale: a synthetic VoxCeleb2-sized world at small dims (``--dim``, default 8): 6,000 identities,
   1.1 M voice clips and 1.1 M face tracks of 8 frames (8.8 M face rows), identity-sorted as extraction
   writes them; per modality two encoders written with :func:`fva.synth.testing.write_feature_cache` in different
   row orders, as real caches are (encoder a: 1 shard in manifest order; encoder b: 4 shards, the manifest
   split strided across workers as ``fva extract --num-shards 4`` does, with 0.1 % of records missing).
   In a fresh subprocess (so VmHWM is its own peak): ``FeatureTable`` of each modality (open + join),
   ``select_rows`` (6/7 of the identities, the fold's training share, German unheard), ``rows_by_key`` and
   one ``epoch_order`` over the selected face rows; wall seconds each and peak RSS. The manifest's records
   are built in memory (reading manifest.jsonl is not part of the figure). ``--scale 0.25`` writes a quarter
   of the rows (the figures scale about linearly).
2. Identity mix: mean distinct identities per batch of 256 over one epoch, for an identity-sorted row set of
   VoxCeleb2's voice (1.1 M rows, ~183 an identity) and face (8.8 M, ~1,470 an identity) sizes over 6,000
   identities: a uniform permutation, the default order (8-row blocks, 4,096-block windows) and the old
   default (4,096-row blocks, 8-block windows).
3. Streaming throughput: a float16 cache at real voice widths (speaker 6144 + age-gender 1536, the second
   encoder in 4 strided shards), ``--stream-rows`` rows (default 40,000, ~0.6 GB: in the page cache, so this
   measures read calls, not the disk): rows/s of :class:`StreamingRows` (block read-ahead) over one epoch of
   the default order, beside today's reading (each batch read directly from its positions) over the old
   order, and peak RSS of each in a fresh subprocess. ``--baseline CHECKOUT`` also times that checkout's code
   (e.g. the main branch: its per-row loops, its StreamingRows and order) on the same caches.

Prints the figures and writes bench/results/stage2-scale.json. Not a test: nothing here passes or fails.

    .venv/bin/python bench/bench_stage2_scale.py [--scale 0.25] [--dim 8] [--stream-rows 40000] [--baseline /work/main]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

IDENTITIES, CLIPS, FRAMES, BATCH = 6000, 1_100_000, 8, 256
LANGUAGES = ("English", "German", "Hindi")


def proc_status(field: str) -> float:
    """A /proc/self/status memory field in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def world_keys(clips: int, modality: str) -> tuple[list[str], np.ndarray]:
    """Identity-sorted keys of ``clips`` media items and their identity index."""
    identity = np.sort(np.random.default_rng(0).integers(0, IDENTITIES, clips))
    prefix = "voices" if modality == "voice" else "faces"
    return [f"{prefix}/id{identity[i]:05d}/vid{i // 8:07d}/{i % 8:05d}" for i in range(clips)], identity


def write_world(root: Path, clips: int, dim: int) -> dict:
    from fva.synth.testing import write_feature_cache

    seconds = {}
    for modality in ("voice", "face"):
        keys, _ = world_keys(clips, modality)
        frames = np.array([-1]) if modality == "voice" else np.arange(FRAMES) * 25
        rows = np.zeros((len(frames), dim), dtype=np.float32)
        rng = np.random.default_rng(1)
        missing = set(rng.choice(clips, clips // 1000, replace=False).tolist())

        def records(idx):
            for i in idx:
                yield keys[i], frames, rows + i % 97, {}

        start = time.perf_counter()
        write_feature_cache(root, f"{modality}-a", modality, dim, [records(range(clips))])
        kept = [i for i in range(clips) if i not in missing]
        write_feature_cache(root, f"{modality}-b", modality, dim, [records(kept[s::4]) for s in range(4)])
        seconds[modality] = round(time.perf_counter() - start, 1)
    return seconds


def scale_child(task: dict) -> dict:
    """Open, join, select, group and order in this (fresh) process."""
    from fva.data.records import MediaRecord
    from fva.heads.features import FeatureTable, epoch_order, select_rows

    root, clips = Path(task["root"]), task["clips"]
    out: dict = {}
    start = time.perf_counter()
    records = {}
    for modality in ("voice", "face"):
        keys, identity = world_keys(clips, modality)
        for i, key in enumerate(keys):
            records[key] = MediaRecord(key=key, identity=f"id{identity[i]:05d}", language=LANGUAGES[i % 3],
                                       modality=modality, path=key)
    out["records_s"] = round(time.perf_counter() - start, 2)
    out["rss_after_records_mib"] = round(proc_status("VmRSS"))
    ids = sorted({r.identity for r in records.values()})
    train = ids[: len(ids) * 6 // 7]
    classes = {identity: n for n, identity in enumerate(train)}
    chosen = set(train)
    total = 0.0
    for modality in ("voice", "face"):
        fig: dict = {}
        t = time.perf_counter()
        table = FeatureTable(root, [f"{modality}-a", f"{modality}-b"])
        fig["open_join_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        sel = select_rows(table, records, chosen, "German", classes)
        fig["select_rows_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        order = epoch_order(len(sel.rows), seed=[0, 1], epoch=0)
        fig["epoch_order_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        by_key = table.rows_by_key()
        fig["rows_by_key_s"] = round(time.perf_counter() - t, 2)
        fig.update(rows=len(table), incomplete=table.incomplete, selected=len(sel.rows), keys=len(by_key),
                   order=len(order))
        total += fig["open_join_s"] + fig["select_rows_s"] + fig["epoch_order_s"]
        out[modality] = fig
        del by_key, order, sel
        table.close()
    out["open_join_select_order_s"] = round(total, 2)
    out["vm_hwm_mib"] = round(proc_status("VmHWM"))
    return out


def identity_mix() -> dict:
    from fva.heads.features import epoch_order

    def mean_distinct(labels, order):
        steps = len(order) // BATCH
        return round(float(np.mean([len(np.unique(labels[order[s * BATCH:(s + 1) * BATCH]]))
                                    for s in range(steps)])), 1)

    out = {}
    for modality, rows in (("voice", CLIPS), ("face", CLIPS * FRAMES)):
        labels = np.sort(np.random.default_rng(2).integers(0, IDENTITIES, rows))
        fig = {"rows": rows, "uniform": mean_distinct(labels, np.random.default_rng(3).permutation(rows)),
               "default_8x4096": mean_distinct(labels, epoch_order(rows, seed=[0], epoch=0)),
               "old_4096x8": mean_distinct(labels, epoch_order(rows, seed=[0], epoch=0, block_rows=4096,
                                                               buffer_blocks=8))}
        fig["default_vs_uniform"] = round(fig["default_8x4096"] / fig["uniform"] - 1, 4)
        out[modality] = fig
    return out


def write_stream_cache(root: Path, n: int) -> None:
    from fva.synth.testing import write_feature_cache

    keys, _ = world_keys(n, "voice")
    rng = np.random.default_rng(4)

    def records(idx, dim):
        for i in idx:
            yield keys[i], np.array([-1]), rng.standard_normal((1, dim), dtype=np.float32), {}

    write_feature_cache(root, "speaker", "voice", 6144, [records(range(n), 6144)])
    write_feature_cache(root, "age-gender", "voice", 1536, [records(range(n)[s::4], 1536) for s in range(4)])


class DirectRows:
    """Today's streaming: each batch read directly from its positions."""

    def __init__(self, table, selected) -> None:
        self.table, self.selected = table, selected

    def batch(self, positions):
        return self.table.rows(self.selected.rows[positions]), self.selected.labels[positions]


def stream_child(task: dict) -> dict:
    from fva.heads.features import FeatureTable, Labelled, StreamingRows, epoch_order

    table = FeatureTable(Path(task["root"]), ["speaker", "age-gender"])
    n = len(table)
    sel = Labelled(np.arange(n), np.zeros(n, dtype=np.int64))
    if task["kind"] == "block-buffer":
        rows, order = StreamingRows(table, sel), epoch_order(n, seed=[0], epoch=0)
    else:
        rows, order = DirectRows(table, sel), epoch_order(n, seed=[0], epoch=0, block_rows=4096, buffer_blocks=8)
    order = order[: task["batches"] * BATCH]
    start = time.perf_counter()
    for lo in range(0, len(order), BATCH):
        rows.batch(order[lo:lo + BATCH])
    seconds = time.perf_counter() - start
    table.close()
    return {"rows": len(order), "seconds": round(seconds, 2), "rows_per_s": round(len(order) / seconds),
            "vm_hwm_mib": round(proc_status("VmHWM"))}


def child(task: dict, fva_path: str | None = None) -> dict:
    """Run ``task`` in a fresh process, importing fva from ``fva_path`` (a checkout) or this checkout."""
    args = [sys.executable, __file__, "--child", json.dumps(task)]
    env = {**os.environ, "PYTHONPATH": fva_path or str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(args, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of VoxCeleb2's rows to write")
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--stream-rows", type=int, default=40_000)
    parser.add_argument("--skip-scale", action="store_true", help="only the identity mix and streaming")
    parser.add_argument("--baseline", help="a checkout of fva before this change (e.g. /work/main): its code is "
                        "timed on the same caches beside this one's")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task = json.loads(args.child)
        result = {"scale": scale_child, "stream": stream_child}[task["what"]](task)
        print(json.dumps(result))
        return
    tmp = Path(tempfile.mkdtemp(prefix="fva-bench-stage2-"))
    figures: dict = {"scale": args.scale, "dim": args.dim}
    try:
        if not args.skip_scale:
            clips = int(CLIPS * args.scale)
            figures["write_s"] = write_world(tmp / "world", clips, args.dim)
            task = {"what": "scale", "root": str(tmp / "world"), "clips": clips}
            figures["stage2"] = child(task)
            print("stage 2 at scale:", json.dumps(figures["stage2"]), flush=True)
            if args.baseline:
                figures["stage2_baseline"] = child(task, args.baseline)
                print("baseline:", json.dumps(figures["stage2_baseline"]), flush=True)
            shutil.rmtree(tmp / "world")
        figures["identity_mix"] = identity_mix()
        print("distinct identities per batch of 256:", json.dumps(figures["identity_mix"]), flush=True)
        write_stream_cache(tmp / "stream", args.stream_rows)
        batches = args.stream_rows // BATCH
        task = {"what": "stream", "root": str(tmp / "stream"), "batches": batches}
        figures["streaming"] = {kind: child({**task, "kind": kind}) for kind in ("block-buffer", "direct-old-order")}
        if args.baseline:  # the baseline's own StreamingRows and default order
            figures["streaming"]["baseline"] = child({**task, "kind": "block-buffer"}, args.baseline)
        print("streaming (7680-d float16):", json.dumps(figures["streaming"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"-> {write_results('stage2-scale' if args.scale == 1 else f'stage2-scale-{args.scale:g}', figures)}")


if __name__ == "__main__":
    main()
