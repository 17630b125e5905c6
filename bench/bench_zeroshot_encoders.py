"""Throughput of the encoders of FLAG 2027's best documented system at their real sizes (seeded random weights:
the published files cannot be downloaded here; the work per item is the same).

* ``imagebind-face``: ImageBind-huge's vision tower (ViT-H/14, 1280 wide, 32 blocks), on 256 x 320 images;
* ``imagebind-voice``: its audio tower (768 wide, 12 blocks) on clips of ``--seconds`` (one 2 s clip per 2 s of
  audio, at least 3);
* ``face-age``: ViT-Base/16 age classifier (nateraw/vit-age-classifier's size), 256 x 320 images;
* ``voice-age``: wav2vec2-large-robust (24 layers, 1024 wide) with audeering's heads, on the same clips.

Per encoder: items/s of ``encode`` on preprocessed, collated batches (the device's share; decoding and
preprocessing run in data-loader workers during extraction), median of ``--repeats`` passes, and the
preprocessing's ms per item, on the device ``--device`` names (default: cuda when available, else cpu). Prints a
table and writes bench/results/zeroshot_encoders.json (``--quick``: a smoke run, nothing written). Not a test.

    .venv/bin/python bench/bench_zeroshot_encoders.py [--device cuda] [--items 64] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import encode_throughput, write_results  # noqa: E402

HUGE = dict(vision_dim=1280, vision_blocks=32, audio_dim=768, audio_blocks=12, out_dim=1024)


def full_size_encoders(folder: Path, device: str, names: list[str]) -> list:
    """Each named encoder loaded through its own loading code from a random checkpoint of the published size."""
    from transformers import ViTConfig, Wav2Vec2Config

    from fva.extract.encoders.base import get_encoder_class
    from fva.extract.encoders.face_age import AGE_BINS, save_face_age
    from fva.extract.encoders.imagebind import ImageBindSize, save_imagebind
    from fva.extract.encoders.voice_age import save_voice_age

    made = {}
    if {"imagebind-face", "imagebind-voice"} & set(names):
        made["imagebind"] = save_imagebind(folder / "imagebind_huge.pth", ImageBindSize(**HUGE))
    if "face-age" in names:
        made["face-age"] = save_face_age(folder / "face-age", ViTConfig(id2label=dict(enumerate(AGE_BINS)),
                                                                        label2id={b: i for i, b in enumerate(AGE_BINS)}))
    if "voice-age" in names:
        made["voice-age"] = save_voice_age(folder / "voice-age", Wav2Vec2Config(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, final_dropout=0.1))
    return [get_encoder_class(n)(made["imagebind" if n.startswith("imagebind") else n], device=device) for n in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--items", type=int, default=None, help="per encoder (default 64 on a GPU, 8 on a CPU; quick 2)")
    ap.add_argument("--seconds", type=float, default=8.0, help="clip length (VoxCeleb2's mean is about 8 s)")
    ap.add_argument("--repeats", type=int, default=None, help="timed passes (default 3; quick 1)")
    ap.add_argument("--encoders", default="imagebind-face,imagebind-voice,face-age,voice-age")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    items = args.items or (2 if args.quick else 64 if device.startswith("cuda") else 8)
    repeats = args.repeats or (1 if args.quick else 3)
    batch = min(args.batch_size, items)
    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(int(16000 * args.seconds))).astype(np.float32) for _ in range(items)]
    images = [rng.integers(0, 256, (320, 256, 3), dtype=np.uint8) for _ in range(items)]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        encoders = full_size_encoders(Path(tmp), device, names)
        print(f"wrote and loaded {len(encoders)} full-size random checkpoints in {time.perf_counter() - start:.0f} s")
        for encoder in encoders:
            raw = audio if encoder.modality == "voice" else images
            rows[encoder.name] = {**encode_throughput(encoder, raw, batch, device, repeats), "params_millions":
                                  round(sum(p.numel() for p in encoder.model.parameters()) / 1e6, 1)}
            print(f"{encoder.name}: {rows[encoder.name]}", flush=True)
    print(f"device {device}, {torch.get_num_threads()} threads, batch {batch}, {items} items per encoder, "
          f"{args.seconds:g} s clips, median of {repeats}")
    print(f"{'encoder':<18}{'items/s':>10}{'preprocess ms/item':>22}{'params (M)':>12}")
    for name, r in rows.items():
        print(f"{name:<18}{r['items_per_s']:>10.3f}{r['preprocess_ms_per_item']:>22.2f}{r['params_millions']:>12.1f}")
    if not args.quick:
        path = write_results("zeroshot_encoders", {"device": device, "torch_threads": torch.get_num_threads(),
                                                   "clip_seconds": args.seconds, "encoders": rows})
        print(path)


if __name__ == "__main__":
    main()
