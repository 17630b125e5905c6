"""Encoder training speed on this machine's CPU at the real default sizes, through the real CLI.

- speaker ECAPA: C = 1024 (blocks 1024 x 4 + 3072, 192-d, ~20.8 M parameters with its classifier), 3 s crops,
  batch 32 (the default), AAM-softmax over the generated speakers;
- voice age-gender ECAPA: C = 256 (256 x 4 + 768), heads with 1536 hidden units (6.48 M parameters), 3 s crops,
  batch 64 (the default).

Each runs a few optimiser steps on generated VoxCeleb2 / CommonVoice layouts (3-5 s clips) in a fresh
``python -m fva.cli`` process; steps per second are taken from the training log's per-step clock, leaving out
the first step (warm-up): the median time between consecutive steps (epoch-end checkpoints are outliers). ``--quick``: batch 8 and 3 steps. Prints a table and writes
bench/results/train_encoders.json (train_encoders-quick.json with --quick). Not a test.

    .venv/bin/python bench/bench_train_encoders.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run_trainer(name: str, args: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "fva.cli", "train-encoder", name, *args, "--out", str(out), "--workers", "1",
           "--no-progress", "--ckpt-minutes", "0"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [e for e in steps if "loss" in e]
    # median time between consecutive steps: leaves out the first (warm-up) and epoch-end checkpoints
    step_seconds = statistics.median(b["seconds"] - a["seconds"] for a, b in zip(steps, steps[1:]))
    return {"steps": len(steps), "steps_per_second": round(1 / step_seconds, 4),
            "seconds_per_step": round(step_seconds, 3), "first_step_seconds": steps[0]["seconds"],
            "wall_seconds_with_startup": round(wall, 1), "losses": [e["loss"] for e in steps]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    a = parser.parse_args()
    batch, steps = (8, 3) if a.quick else (None, 4)
    from fva.synth.world import write_commonvoice, write_voxceleb2

    figures: dict = {"cpu_threads": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="fva-bench-train-") as tmp:
        tmp = Path(tmp)
        vox, cv = tmp / "vox2", tmp / "cv"
        write_voxceleb2(vox, identities=16, videos=2, clips=4, segments=2)
        write_commonvoice(cv, locales=("en", "de"), speakers=16, clips=4, segments=2)
        runs = {
            "speaker": (["--dataset", "voxceleb2", "--root", str(vox), "--channels", "1024",
                         "--batch-size", str(batch or 32)], batch or 32),
            "age-gender": (["--dataset", "commonvoice", "--root", str(cv), "--channels", "256",
                            "--head-hidden", "1536", "--valid-fraction", "0", "--batch-size", str(batch or 64)], batch or 64),
        }
        for name, (args, bs) in runs.items():
            result = run_trainer(name, [*args, "--steps", str(steps)], tmp / f"out-{name}")
            figures[name] = {"batch_size": bs, "crop_seconds": 3.0, **result}
            print(f"{name:11s} batch {bs:3d}: {result['steps_per_second']:.3f} steps/s "
                  f"({result['seconds_per_step']:.1f} s/step, {result['steps']} steps, first step "
                  f"{result['first_step_seconds']:.1f} s)")
    path = write_results("train_encoders-quick" if a.quick else "train_encoders", figures)
    print(path)


if __name__ == "__main__":
    main()
