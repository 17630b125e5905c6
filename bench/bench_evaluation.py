"""Evaluation and manifest throughput: EER on challenge-sized and large trial sets, manifest JSONL I/O.

Prints a table and writes bench/results/evaluation.json. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_seconds, write_results  # noqa: E402

from fva.data.records import Manifest, MediaRecord  # noqa: E402
from fva.evaluate.eer import compute_eer  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    figures: dict = {"eer": [], "manifest": {}}
    print(f"{'trials':>10} {'EER s (median of 5)':>20}")
    for n in (2_000, 100_000, 1_000_000):
        labels = rng.integers(0, 2, n)
        dist = rng.normal(size=n) + 0.8 * (1 - labels)
        sec = median_seconds(lambda: compute_eer(labels, dist))
        figures["eer"].append({"trials": n, "seconds": sec})
        print(f"{n:>10} {sec:>20.4f}")

    n = 200_000
    records = [MediaRecord(key=f"dev/aac/id{i // 200:05d}/vid{i // 20:07d}/{i % 20:05d}", identity=f"id{i // 200:05d}",
                           language="English", modality="voice", path=f"dev/aac/id{i // 200:05d}/vid{i // 20:07d}/"
                           f"{i % 20:05d}.m4a", video=f"vid{i // 20:07d}") for i in range(n)]
    man = Manifest("voxceleb2", "/data/vox2", "dev", "full", records)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.jsonl"
        write_s = median_seconds(lambda: man.write(path), repeats=3)
        read_s = median_seconds(lambda: Manifest.read(path), repeats=3)
        size = path.stat().st_size
    figures["manifest"] = {"records": n, "write_records_per_s": n / write_s, "read_records_per_s": n / read_s,
                           "bytes_per_record": size / n}
    print(f"manifest of {n} records: write {n / write_s:,.0f} rec/s, read {n / read_s:,.0f} rec/s, "
          f"{size / n:.0f} B/record")
    print(f"-> {write_results('evaluation', figures)}")


if __name__ == "__main__":
    main()
