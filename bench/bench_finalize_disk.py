"""Disk peak of ``ShardWriter.finalize``: the old merge (the whole shard written, then the parts deleted) against
the current one (part by part into the shard's allocated storage, each part deleted once copied).

For each embedding width: a shard of N rows (one row per key, float16) committed in parts of ``--part-rows``
rows, written once per way into a fresh folder; then ``finalize`` is timed while a thread samples the folder's
disk use (the sum of ``st_blocks`` * 512 over ``os.scandir``, so sparse storage counts as what it takes), plus
one exact sample just before parts are deleted. Prints peak / final-shard ratio and seconds per way, and writes
bench/results/finalize_disk.json. The old way is ``fva/extract/cache/writer.py`` as of ``--old-rev`` (read from
git), run against today's format helpers. Not a test: nothing here passes or fails.

    .venv/bin/python bench/bench_finalize_disk.py [--rows 200000] [--dims 512,192] [--no-fsync] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results  # noqa: E402

from fva.extract.cache import writer as new_writer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OLD_REV = "4d8b464"  # the last commit whose finalize wrote the merged shard before deleting the parts


def old_writer_module(rev: str) -> types.ModuleType:
    """fva's writer module as of ``rev``."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:fva/extract/cache/writer.py"], check=True,
                         capture_output=True, text=True).stdout
    module = types.ModuleType("fva.extract.cache._writer_old")
    exec(compile(src, f"{rev}:fva/extract/cache/writer.py", "exec"), module.__dict__)
    return module


def disk_used(folder: Path) -> int:
    total = 0
    for entry in os.scandir(folder):
        try:
            total += entry.stat(follow_symlinks=False).st_blocks * 512
        except FileNotFoundError:
            pass
    return total


class Sampler:
    """Polls a folder's disk use in a thread; ``peak`` is the largest sample (``sample`` adds one by hand)."""

    def __init__(self, folder: Path, every_s: float = 0.002) -> None:
        self.folder, self.every_s, self.peak, self.samples = folder, every_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        self.peak = max(self.peak, disk_used(self.folder))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.every_s)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def write_parts(cls, folder: Path, rows: int, dim: int, part_rows: int, fsync: bool):
    w = cls(folder, 0, 1, dim=dim, extras=("age",), part_rows=part_rows, fsync=fsync,
            attrs={"encoder": "bench", "modality": "voice", "weights_id": "bench@0"})
    rng = np.random.default_rng(0)
    for start in range(0, rows, part_rows):
        n = min(part_rows, rows - start)
        emb = rng.standard_normal((n, dim), dtype=np.float32).astype(np.float16)
        for j in range(n):
            i = start + j
            w.add(f"voxceleb2/id{i % 6000:05d}/{i // 6000:08x}/{i:06d}", np.array([-1], np.int32), emb[j:j + 1],
                  {"age": np.array([float(i % 90)])})
    w.commit()
    return w


def measure(way: str, module: types.ModuleType, root: Path, rows: int, dim: int, part_rows: int,
            fsync: bool) -> dict:
    folder = root / f"{way}-{dim}"
    cls = module.ShardWriter
    w = write_parts(cls, folder, rows, dim, part_rows, fsync)
    parts = len(list(folder.iterdir()))
    before = disk_used(folder)
    with Sampler(folder) as sampler:
        # exact samples where each way peaks: before the new way deletes a part, before the old one deletes all
        hook = "_merged" if hasattr(cls, "_merged") else "_remove_parts"
        real = getattr(cls, hook)

        def sampled(self, *args):
            sampler.sample()
            return real(self, *args)

        setattr(cls, hook, sampled)
        try:
            start = time.perf_counter()
            path = w.finalize()
            seconds = time.perf_counter() - start
        finally:
            setattr(cls, hook, real)
    final = path.stat().st_blocks * 512
    shutil.rmtree(folder)
    return {"way": way, "dim": dim, "rows": rows, "parts": parts, "parts_bytes": before, "final_bytes": final,
            "peak_bytes": sampler.peak, "peak_over_final": round(sampler.peak / final, 4),
            "seconds": round(seconds, 3), "samples": sampler.samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dims", default="512,192", help="embedding widths, comma separated")
    ap.add_argument("--part-rows", type=int, default=4096)
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--old-rev", default=OLD_REV)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    ap.add_argument("--quick", action="store_true", help="20k rows, writes no JSON")
    args = ap.parse_args()
    rows = 20_000 if args.quick else args.rows
    fsync = not args.no_fsync
    ways = {"old": old_writer_module(args.old_rev), "new": new_writer}
    root = Path(tempfile.mkdtemp(prefix="fva-bench-finalize-", dir=args.dir))
    results = []
    try:
        for dim in [int(d) for d in args.dims.split(",")]:
            for way, module in ways.items():
                r = measure(way, module, root, rows, dim, args.part_rows, fsync)
                results.append(r)
                print(f"{way:>3} dim {dim:4d}: {r['parts']:3d} parts, final {r['final_bytes'] / 1e6:7.1f} MB, peak "
                      f"{r['peak_bytes'] / 1e6:7.1f} MB = {r['peak_over_final']:.3f} x final, {r['seconds']:.2f} s",
                      flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not args.quick:
        path = write_results("finalize_disk", {"rows": rows, "part_rows": args.part_rows, "fsync": fsync,
                                               "dtype": "float16", "old_rev": args.old_rev, "results": results})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
