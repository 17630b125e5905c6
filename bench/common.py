"""Shared helpers for benchmarks: timing medians and writing results to bench/results/<name>.json."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_results(name: str, figures: dict) -> Path:
    """Write figures with the machine they were measured on; returns the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": platform.platform(),
                                "python": platform.python_version(), **figures}, indent=1) + "\n")
    return path


def encode_throughput(encoder, raw: list, batch: int, device: str, repeats: int) -> dict:
    """An fva encoder's share of extraction on ``raw`` media (decoded audio or RGB images): the preprocessing's ms
    per item (once over every item), then items/s of ``encode`` on the collated batches, median of ``repeats``
    passes after one warm-up pass (CUDA synchronised at the end of each)."""
    import torch

    start = time.perf_counter()
    prepared = [encoder.preprocess(x) for x in raw]
    prep = (time.perf_counter() - start) / len(raw)
    batches = [encoder.collate(prepared[i:i + batch]) for i in range(0, len(raw), batch)]

    def run() -> None:
        for b in batches:
            encoder.encode(b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    run()  # warm-up (cuDNN autotuning, allocator)
    seconds = median_seconds(run, repeats)
    return {"items": len(raw), "batch_size": batch, "seconds": round(seconds, 3),
            "items_per_s": round(len(raw) / seconds, 3), "preprocess_ms_per_item": round(1e3 * prep, 2),
            "dim": encoder.dim}
