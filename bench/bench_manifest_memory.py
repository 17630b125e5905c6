"""Peak memory of ``fva extract`` (the main process and its decoding workers together) against manifest size.

Writes VoxCeleb2-shaped manifests (half voice clips, half face tracks; ~5,994 identities, ~7.5 clips a video,
keys ``dev/aac/idNNNNN/<video>/NNNNN``) of each size, the first voice records pointing at a few tiny real wav
files, and runs ``fva extract --limit 8 --workers 8`` with the demo speaker ECAPA checkpoint
(:func:`fva.synth.checkpoints.write_demo_speaker_ecapa`) in a fresh process each; records beyond the limit
are never decoded. Measured in that process (``torch``'s worker loop wrapped, nothing of fva changed):

- ``main_vm_hwm``: the main process's peak resident set (VmHWM), reading the manifest included;
- ``workers_uss_sum``: each decoding worker's private pages (Private_Clean + Private_Dirty of
  ``/proc/self/smaps_rollup``) as it ends: what it allocated or copied from the main process (a forked worker
  touching a refcounted object copies its page); the pages it still shares are counted once, in the main's;
- ``peak_total``: their sum, an upper bound of the whole tree's peak (a worker's RSS also counts every page it
  shares with the main process, so summing RSS would count those nine times).

It also times reading each manifest (``Manifest.read``, fresh process, with its peak RSS). ``--fva DIR`` runs
the same against another checkout (e.g. main, for the figures before). Prints a table and writes
bench/results/manifest_memory.json (not with ``--quick`` or ``--fva``). Not a test.

    .venv/bin/python bench/bench_manifest_memory.py [--sizes 20000 2200000] [--fva /work/main] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

HERE = Path(__file__).resolve().parents[1]
LIMIT, WORKERS = 8, 8
LANGUAGES = ("English", "English", "English", "German", "French", "Spanish", "Hindi", "Urdu")


def write_media(root: Path, n_files: int = 4) -> list[str]:
    """Tiny real wav files (0.5-1 s of noise at 16 kHz) at the first voice records' paths."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    paths = []
    for i in range(LIMIT):
        rel = f"dev/aac/{_utterance(i)}.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, (0.1 * rng.standard_normal(8000 + 2000 * (i % n_files))).astype(np.float32), 16000)
        paths.append(rel)
    return paths


def _utterance(i: int) -> str:
    identity, video = i * 5994 // 1_100_000, i * 2 // 15  # ~5,994 identities over 1.1 M clips, ~7.5 a video
    return f"id{identity:05d}/{video:011x}/{i % 8:05d}"


def write_manifest(path: Path, root: Path, n: int) -> float:
    """A VoxCeleb2-shaped manifest of ``n`` records, streamed as ``Manifest.write`` writes it; seconds taken."""
    from fva.data.records import MediaRecord

    start = time.perf_counter()
    half = n // 2
    with path.open("w") as fh:
        head = {"dataset": "voxceleb2", "root": str(root), "subset": "dev", "split": "full", "version": "bench",
                "records": n}
        fh.write(json.dumps({"manifest": head}) + "\n")
        for i in range(n):
            voice = i < half
            j = i if voice else i - half
            folder, suffix = ("aac", ".wav") if voice else ("mp4", ".mp4")
            utt = _utterance(j)
            identity, video, _ = utt.split("/")
            fh.write(MediaRecord(key=f"dev/{folder}/{utt}", identity=identity, language=LANGUAGES[j % len(LANGUAGES)],
                                 modality="voice" if voice else "face", path=f"dev/{folder}/{utt}{suffix}",
                                 video=video).to_json() + "\n")
    return time.perf_counter() - start


def _rollup(path: str = "/proc/self/smaps_rollup") -> dict[str, int]:
    fields = {}
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return fields


EXTRACT_CHILD = """
import atexit, json, os, sys
import torch.utils.data._utils.worker as worker
sys.path.insert(0, os.environ["FVA_BENCH_DIR"])
from bench_manifest_memory import _rollup

report = os.environ["FVA_BENCH_REPORT"]
loop = worker._worker_loop


def measured_loop(*args, **kwargs):  # a decoding worker's memory as it ends (its private pages are then most)
    try:
        return loop(*args, **kwargs)
    finally:
        with open(os.path.join(report, f"worker-{os.getpid()}.json"), "w") as fh:
            json.dump(_rollup(), fh)


def main_report():
    hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    with open(os.path.join(report, "main.json"), "w") as fh:
        json.dump({"vm_hwm": hwm, **_rollup()}, fh)


worker._worker_loop = measured_loop
atexit.register(main_report)
from fva.cli import cli
cli(sys.argv[1:], prog_name="fva")
"""


def run_extract(fva_src: Path, manifest: Path, root: Path, cache: Path, weights: Path, report: Path) -> dict:
    """``fva extract`` in a fresh process; the main process's peak RSS (VmHWM) plus each decoding worker's
    private pages (USS: what it copied or allocated) as it ends: an upper bound of the tree's peak."""
    args = ["extract", "--manifest", str(manifest), "--root", str(root), "--cache", str(cache),
            "--encoders", "speaker-ecapa", "--weights", f"speaker-ecapa={weights}", "--device", "cpu",
            "--limit", str(LIMIT), "--workers", str(WORKERS), "--no-progress"]
    report.mkdir()
    env = {**os.environ, "PYTHONPATH": str(fva_src), "FVA_BENCH_DIR": str(Path(__file__).resolve().parent),
           "FVA_BENCH_REPORT": str(report)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", EXTRACT_CHILD, *args], cwd=fva_src, capture_output=True,
                          text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"fva extract failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    main = json.loads((report / "main.json").read_text())
    workers = [json.loads(p.read_text()) for p in sorted(report.glob("worker-*.json"))]
    uss = [w["Private_Clean"] + w["Private_Dirty"] for w in workers]
    return {"peak_total": main["vm_hwm"] + sum(uss), "main_vm_hwm": main["vm_hwm"], "workers": len(workers),
            "workers_uss_sum": sum(uss), "workers_uss_max": max(uss, default=0),
            "workers_rss_max": max((w["Rss"] for w in workers), default=0), "seconds": seconds,
            "line": proc.stdout.strip().splitlines()[-1]}


READ_CHILD = """
import json, sys, time
from fva.data.records import Manifest
start = time.perf_counter()
man = Manifest.read(sys.argv[1])
seconds = time.perf_counter() - start
n = len(man.table) if hasattr(man, "table") else len(man.records)
hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"records": n, "seconds": seconds, "vm_hwm": hwm}))
"""


def time_read(fva_src: Path, manifest: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", READ_CHILD, str(manifest)], cwd=fva_src, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(fva_src)}, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 2_200_000])
    ap.add_argument("--fva", type=Path, default=HERE, help="the checkout whose fva runs (default: this one)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2,000 and 20,000 records")
    args = ap.parse_args()
    sizes = [2_000, 20_000] if args.quick else args.sizes
    from fva.synth.checkpoints import write_demo_speaker_ecapa

    fig: dict = {"fva": str(args.fva.resolve()), "limit": LIMIT, "workers": WORKERS,
                 "encoder": "speaker-ecapa demo checkpoint (write_demo_speaker_ecapa)", "runs": []}
    with tempfile.TemporaryDirectory(prefix="fva-bench-manifest-") as tmp:
        work = Path(tmp)
        root = work / "vox"
        write_media(root)
        weights = write_demo_speaker_ecapa(work / "demo-speaker")
        for n in sizes:
            manifest = work / f"m{n}.jsonl"
            write_s = write_manifest(manifest, root, n)
            read = time_read(args.fva, manifest)
            run = run_extract(args.fva, manifest, root, work / f"cache{n}", weights, work / f"report{n}")
            fig["runs"].append({"records": n, "manifest_bytes": manifest.stat().st_size, "write_seconds": write_s,
                                "read": read, "extract": run})
            print(f"{n:>9} records: read {read['seconds']:6.1f} s (peak RSS {read['vm_hwm'] / 2**20:6.0f} MiB); "
                  f"extract {run['seconds']:5.1f} s: peak {run['peak_total'] / 2**20:6.0f} MiB = main "
                  f"{run['main_vm_hwm'] / 2**20:6.0f} MiB + {run['workers']} workers' private "
                  f"{run['workers_uss_sum'] / 2**20:5.0f} MiB (each at most {run['workers_uss_max'] / 2**20:.0f} "
                  f"MiB; RSS {run['workers_rss_max'] / 2**20:.0f} MiB with the pages shared with main)", flush=True)
            manifest.unlink()
    a, b = fig["runs"][0]["extract"], fig["runs"][-1]["extract"]
    fig["difference_mb"] = {k: (b[k] - a[k]) / 1e6 for k in ("peak_total", "main_vm_hwm", "workers_uss_sum")}
    print("difference " + ", ".join(f"{k} {v:+.0f} MB" for k, v in fig["difference_mb"].items()))
    if args.quick or args.fva.resolve() != HERE:
        print("(--quick / --fva: no results file written)")
        print(json.dumps(fig))
        return
    print(f"-> {write_results('manifest_memory', fig)}")


if __name__ == "__main__":
    main()
