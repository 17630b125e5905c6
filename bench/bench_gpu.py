"""Extraction on GPUs at the real model sizes: per encoder items/s, where the time goes (decoding vs the
device), GPU utilisation during the run, one decode for the encoders of a modality, and two GPUs against one.

Synthetic media in a temporary folder: noise clips of VoxCeleb2 length (``--seconds``, 8 s) as 16 kHz wav,
and 224 x 224 mp4 face tracks (``--frames`` frames, every 25th sampled). Real-size random weights in each
source's real format, loaded through fva's loading code: speaker ECAPA at C = 1024 (6144-d;
``write_demo_speaker_ecapa`` with ``fva.train.speaker.ecapa_sizes(1024)``, attention 64 where the public
model has 128), the voice age-gender ECAPA at its default channels (1536-d), VGG-Face (full size, always),
ViT-Base (``transformers.ViTConfig()``).

Per encoder, alone:
  decode   main-process seconds per item to decode and preprocess (what the data-loader workers do);
  device   seconds per item for collate + pinned non-blocking copy + encode (synchronised) on the device;
  e2e      items/s of ``run_extraction`` with the default workers, and the mean / max GPU utilisation
           sampled every 0.2 s during it (``torch.cuda.utilization``, else ``nvidia-smi``).
Per modality, its encoders together (``run_extraction_many``: one decode per medium) against the sum of
the one-at-a-time runs. With two GPUs or more: wall time of ``torchrun --nproc-per-node K -m fva.cli
extract`` (all four encoders, K = 1 and 2), and the speed-up.

``--quick`` (tiny models except VGG-Face, a few short items; the multi-process run on CPU processes when
there is no second GPU) checks the script on a CPU. Prints a table; writes bench/results/gpu.json
(``--quick``: gpu-quick.json). Not a test.

    .venv/bin/python bench/bench_gpu.py [--quick] [--items N] [--precision bf16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's fva, also when another is installed
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

VOICE = ("speaker-ecapa", "voice-age-gender-ecapa")
FACE = ("vggface", "vit-age-gender")


# ------------------------------------------------------------------------------------------------ media, weights

def write_media(folder: Path, voices: int, faces: int, seconds: float, frames: int, size: int):
    """Synthetic wav clips and mp4 face tracks; returns the manifest over them."""
    import av
    import soundfile as sf

    from fva.data.records import Manifest, MediaRecord

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(voices):  # lengths within +-25 % of the mean, as utterances vary
        n = int(seconds * 16000 * rng.uniform(0.75, 1.25))
        sf.write(folder / f"v{i:05d}.wav", (rng.standard_normal(n) * 0.1).astype(np.float32), 16000)
        records.append(MediaRecord(key=f"v{i:05d}", identity=f"id{i % 10}", language="English", modality="voice",
                                   path=f"v{i:05d}.wav"))
    for i in range(faces):
        with av.open(str(folder / f"f{i:05d}.mp4"), "w") as container:
            stream = container.add_stream("mpeg4", rate=25)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for t in range(frames):
                img = np.roll(base, t, axis=1)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        records.append(MediaRecord(key=f"f{i:05d}", identity=f"id{i % 10}", language=None, modality="face",
                                   path=f"f{i:05d}.mp4"))
    return Manifest("bench-gpu", str(folder), "train", "full", records)


def write_weights(folder: Path, quick: bool) -> dict[str, Path]:
    """Random weights of the real sizes (``quick``: tiny, but VGG-Face has one size) in their real formats."""
    from transformers import ViTConfig

    from fva.synth.checkpoints import write_demo_speaker_ecapa, write_demo_vggface
    from fva.extract.encoders.vit_age_gender import save_vit_age_gender, tiny_config
    from fva.extract.encoders.voice_age_gender import DEFAULT_CHANNELS, init_voice_age_gender, save_voice_age_gender
    from fva.train.speaker import ecapa_sizes

    speaker = (32, 32, 32, 32, 96) if quick else tuple(ecapa_sizes(1024)[0])
    vag, hidden, attention = ((32, 32, 32, 32, 96), 16, 8) if quick else (DEFAULT_CHANNELS, 256, 32)
    write_demo_vggface(folder / "deepface")
    return {
        "speaker-ecapa": write_demo_speaker_ecapa(folder / "speaker", channels=speaker),
        "voice-age-gender-ecapa": save_voice_age_gender(folder / "vag", init_voice_age_gender(vag, hidden, attention),
                                                        channels=vag, hidden=hidden, attention=attention),
        "vggface": folder / "deepface",
        "vit-age-gender": save_vit_age_gender(folder / "vit", tiny_config() if quick else ViTConfig()),
    }


# ------------------------------------------------------------------------------------------------ GPU utilisation

class UtilisationSampler:
    """GPU utilisation (percent) of one device every ``interval`` seconds in a thread, while in a ``with``."""

    def __init__(self, device, interval: float = 0.2) -> None:
        import torch

        self.device, self.interval, self.samples = torch.device(device), interval, []
        self.read = None
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            try:
                torch.cuda.utilization(index)
                self.read, self.source = (lambda: float(torch.cuda.utilization(index))), "torch.cuda.utilization"
            except Exception:  # pynvml missing: nvidia-smi
                if shutil.which("nvidia-smi"):
                    cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i",
                           str(index)]
                    self.read = lambda: float(subprocess.run(cmd, capture_output=True, text=True).stdout.strip())
                    self.source = "nvidia-smi"
        self._stop = threading.Event()

    def __enter__(self) -> "UtilisationSampler":
        if self.read is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self.read())
            except Exception:
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.read is not None:
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None}
        return {"gpu_util_mean": round(statistics.fmean(self.samples), 1), "gpu_util_max": max(self.samples),
                "gpu_util_source": self.source}


# ------------------------------------------------------------------------------------------------ measurements

def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def split_times(encoder, manifest, root: Path, batch_size: int, precision: str) -> dict:
    """Seconds per item decoding + preprocessing (main process) and on the device (collate, copy, encode)."""
    from fva.extract.runner import DecodedRecords, _autocast, _to_device

    records = [r for r in manifest.records if r.modality == encoder.modality]
    dataset = DecodedRecords(records, root, encoder.preprocess, getattr(encoder, "min_samples", 0))
    start = time.perf_counter()
    items = [x for i in range(len(dataset)) for _, x in dataset[i][1]]
    decode = time.perf_counter() - start

    def encode_all() -> None:
        for lo in range(0, len(items), batch_size):
            batch = _to_device(encoder.collate(items[lo:lo + batch_size]), encoder.device)
            with _autocast(encoder.device, precision):
                encoder.encode(batch)
        _sync(encoder.device)

    encode_all()  # warm-up (kernels, allocator)
    start = time.perf_counter()
    encode_all()
    device = time.perf_counter() - start
    n = len(records)
    return {"records": n, "rows": len(items), "decode_s_per_item": decode / n, "device_s_per_item": device / n,
            "decode_share": decode / (decode + device)}


def end_to_end(encoders, manifest, root: Path, cache: Path, batch_size: int, workers: int, precision: str) -> dict:
    """One ``run_extraction_many`` pass (fresh cache) with GPU utilisation sampled during it."""
    from fva.extract.runner import run_extraction_many

    shutil.rmtree(cache, ignore_errors=True)
    with UtilisationSampler(encoders[0].device) as sampler:
        start = time.perf_counter()
        summaries = run_extraction_many(manifest, encoders, cache, root=root, batch_size=batch_size, workers=workers,
                                        dtype="float16", progress=False, precision=precision)
        seconds = time.perf_counter() - start
    extracted = summaries[0].extracted
    return {"seconds": seconds, "items_per_s": extracted / seconds, "failed": sum(s.failed for s in summaries),
            **sampler.summary()}


def scaling(manifest_path: Path, weights: dict[str, Path], work: Path, processes: int, batch_size: int,
            precision: str, device: str | None) -> float:
    """Wall seconds of ``torchrun --nproc-per-node processes -m fva.cli extract`` over all four encoders."""
    cache = work / f"cache-{processes}"
    shutil.rmtree(cache, ignore_errors=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
           "-m", "fva.cli", "extract", "--manifest", str(manifest_path), "--cache", str(cache), "--no-progress",
           "--batch-size", str(batch_size), "--precision", precision,
           "--encoders", ",".join(weights), *[a for n, p in weights.items() for a in ("--weights", f"{n}={p}")]]
    if device:
        cmd += ["--device", device]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"torchrun with {processes} processes failed:\n{done.stderr[-3000:]}")
    return seconds


# ------------------------------------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models (VGG-Face aside), a few short items; CPU")
    ap.add_argument("--items", type=int, default=None, help="voice clips and face tracks each (default 512; quick 4)")
    ap.add_argument("--seconds", type=float, default=None, help="mean clip length (default 8; quick 1)")
    ap.add_argument("--frames", type=int, default=None, help="frames per face track (default 100; quick 30)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="decoding processes (default: fva's default)")
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    ap.add_argument("--device", default=None, help="default: fva's choice (cuda when available)")
    ap.add_argument("--no-scaling", action="store_true", help="skip the torchrun runs")
    args = ap.parse_args()

    import torch

    from fva.extract.encoders.base import get_encoder_class
    from fva.extract.runner import default_device, default_workers

    quick = args.quick
    if not quick and not torch.cuda.is_available() and args.device in (None, "cpu"):
        print("bench_gpu: no CUDA device here, so the --quick run (the real sizes on a CPU would take hours)")
        quick = True
    items = args.items or (4 if quick else 512)
    seconds = args.seconds or (1.0 if quick else 8.0)
    frames = args.frames or (30 if quick else 100)
    device = default_device(args.device)
    workers = default_workers() if args.workers is None else args.workers
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    work = Path(tempfile.mkdtemp(prefix="fva-bench-gpu-"))
    try:
        manifest = write_media(work / "media", items, items, seconds, frames, 224)
        manifest_path = work / "manifest.jsonl"
        manifest.write(manifest_path)
        weights = write_weights(work / "weights", quick)
        root = Path(manifest.root)
        results: dict = {"quick": quick, "device": device, "gpus": gpus, "items": items, "clip_seconds": seconds,
                         "track_frames": frames, "batch_size": args.batch_size, "workers": workers,
                         "precision": args.precision, "cpus": len(os.sched_getaffinity(0)), "encoders": {},
                         "modalities": {}}
        if device.startswith("cuda"):
            results["gpu_name"] = torch.cuda.get_device_name(torch.device(device))
        for group in (VOICE, FACE):
            built = [get_encoder_class(n)(str(weights[n]), device=device) for n in group]
            alone_seconds = 0.0
            for encoder in built:
                row = {"dim": encoder.dim,
                       **split_times(encoder, manifest, root, args.batch_size, args.precision),
                       **end_to_end([encoder], manifest, root, work / "cache", args.batch_size, workers,
                                    args.precision)}
                alone_seconds += row["seconds"]
                results["encoders"][encoder.name] = row
            together = end_to_end(built, manifest, root, work / "cache", args.batch_size, workers, args.precision)
            results["modalities"][built[0].modality] = {
                "encoders": list(group), "one_at_a_time_s": alone_seconds, "together_s": together["seconds"],
                "speedup": alone_seconds / together["seconds"], **{k: together[k] for k in together if "util" in k}}
            del built
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        if not args.no_scaling and (gpus >= 2 or quick):
            on = None if gpus >= 2 else "cpu"  # quick without two GPUs: CPU processes, to check the path
            one = scaling(manifest_path, weights, work, 1, args.batch_size, args.precision, on)
            two = scaling(manifest_path, weights, work, 2, args.batch_size, args.precision, on)
            results["scaling"] = {"on": "gpus" if on is None else "cpu processes", "one_s": one, "two_s": two,
                                  "speedup": one / two}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"device {device} ({results.get('gpu_name', 'no GPU')}), {gpus} GPU(s), {results['cpus']} CPUs, "
          f"workers {workers}, batch {args.batch_size}, precision {args.precision}, {items} clips of ~{seconds:g} s "
          f"and {items} tracks of {frames} frames")
    print(f"{'encoder':24} {'dim':>5} {'decode ms/it':>12} {'device ms/it':>12} {'decode %':>8} {'e2e it/s':>9} "
          f"{'GPU % mean/max':>15}")
    for name, r in results["encoders"].items():
        util = "-" if r["gpu_util_mean"] is None else f"{r['gpu_util_mean']:.0f}/{r['gpu_util_max']:.0f}"
        print(f"{name:24} {r['dim']:5d} {1e3 * r['decode_s_per_item']:12.2f} {1e3 * r['device_s_per_item']:12.2f} "
              f"{100 * r['decode_share']:8.1f} {r['items_per_s']:9.2f} {util:>15}")
    for modality, m in results["modalities"].items():
        print(f"{modality}: {'+'.join(m['encoders'])} together {m['together_s']:.2f} s, one at a time "
              f"{m['one_at_a_time_s']:.2f} s (x{m['speedup']:.2f})")
    if "scaling" in results:
        s = results["scaling"]
        print(f"torchrun ({s['on']}): 1 process {s['one_s']:.1f} s, 2 processes {s['two_s']:.1f} s "
              f"(x{s['speedup']:.2f}, start-up included)")
    print(f"wrote {write_results('gpu-quick' if quick else 'gpu', results)}")


if __name__ == "__main__":
    main()
