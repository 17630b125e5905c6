"""Throughput of the FLAG 2027 organisers' two encoders at their real sizes, batch 64 by default.

* ``ecapa-embedding``: an ECAPA-TDNN of the organisers' model's size (channels 512, ``yangwang825/ecapa-tdnn-vox2``'s
  layout, seeded random weights: the real ones cannot be downloaded here), on synthetic 16 kHz clips of
  ``--seconds`` mean length (uniform 0.5x-1.5x);
* ``vggface-keras``: deepface's full VGG-Face (its only size), seeded random weights, on 256 x 256 images.

Per encoder: items/s of ``encode`` on preprocessed, collated batches (the device's share; decoding and
preprocessing run in data-loader workers during extraction), median of ``--repeats`` passes, on the device
``--device`` names (default: cuda when available, else cpu). Prints a table and writes
bench/results/flag_encoders.json (``--quick``: a smoke run, nothing written). Not a test.

    .venv/bin/python bench/bench_flag_encoders.py [--device cuda] [--items 256] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DEEPFACE_BACKEND_ENGINE", "pytorch")

from common import encode_throughput, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--items", type=int, default=None, help="per encoder (default 256 on a GPU, 64 on a CPU; quick 8)")
    ap.add_argument("--seconds", type=float, default=8.0, help="mean clip length")
    ap.add_argument("--repeats", type=int, default=None, help="timed passes (default 3; quick 1)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    items = args.items or (8 if args.quick else 256 if device.startswith("cuda") else 64)
    repeats = args.repeats or (1 if args.quick else 3)
    batch = min(args.batch_size, items)

    from fva.synth.checkpoints import write_demo_vggface, write_organiser_ecapa
    from fva.extract.encoders.ecapa_embedding import EcapaEmbedding
    from fva.extract.encoders.vggface import VggFaceKeras

    rng = np.random.default_rng(0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("FVA_MODELS", str(Path(tmp) / "models"))
        voice = EcapaEmbedding(write_organiser_ecapa(Path(tmp) / "ecapa", channels=(512, 512, 512, 512, 1536),
                                                     attention=128, n_classes=5994), device=device)
        face = VggFaceKeras(write_demo_vggface(Path(tmp) / "deepface"), device=device)
        media = {
            voice: [rng.standard_normal(int(16000 * args.seconds * rng.uniform(0.5, 1.5))).astype(np.float32) * 0.1
                    for _ in range(items)],
            face: [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(items)],
        }
        for encoder, raw in media.items():
            rows[encoder.name] = encode_throughput(encoder, raw, batch, device, repeats)
    print(f"device {device}, batch {batch}, {items} items per encoder, median of {repeats}")
    print(f"{'encoder':<18}{'items/s':>10}{'preprocess ms/item':>22}")
    for name, r in rows.items():
        print(f"{name:<18}{r['items_per_s']:>10.1f}{r['preprocess_ms_per_item']:>22.2f}")
    if not args.quick:
        path = write_results("flag_encoders", {"device": device, "torch_threads": torch.get_num_threads(),
                                               "clip_seconds_mean": args.seconds, "encoders": rows})
        print(path)


if __name__ == "__main__":
    main()
