"""Extraction throughput on a CPU: fva's batched pipeline against one-item-at-a-time library use, cache write
speed, and peak memory against manifest size.

On the same demo utterances and face images (``generate_demo(tmp, seed=0)``, first N train voices / faces of
the ``mavceleb-v3`` manifest):

1. audio, the public speechbrain ``spkrec-ecapa-voxceleb`` (``shared/models`` beside the checkout, skipped when absent):
   speechbrain's ``encode_batch`` one clip at a time (6144-d ``asp_bn`` output off a forward hook) against
   ``run_extraction(SpeakerEcapa)`` at a few (batch, workers) settings; items/s, ratio, max relative
   difference of the embeddings;
2. images, deepface VGG-Face (full size, seeded random weights: the real ones cannot be downloaded here):
   ``DeepFace.represent`` per image against ``run_extraction(VggFace)``;
3. images, ViT-Base age-gender (full-size config, random init): transformers' ``ViTImageProcessorPil`` +
   ``ViTModel`` per image against ``run_extraction(ViTAgeGender)``;
4. ``ShardWriter`` write speed (rows of 6144 float16, with and without fsync);
5. peak resident memory (VmHWM, fresh subprocess each) of ``run_extraction`` over synthetic manifests of two
   sizes with the small demo speaker checkpoint.

Before each timed measurement the 1-minute load average is checked; above 1.5 the benchmark waits (30 s
steps, up to 10 minutes) unless the user CPU time of other processes is negligible (then the load is this
benchmark's own). Each figure records the load and the CPU used by other processes while it was measured; a
pass during which they used more than a quarter of a core is measured again (at most twice).

Prints a table and writes bench/results/extract.json (``--quick``, a smoke run with fewer items and passes,
writes nothing). Not a test: nothing here passes or fails.

    .venv/bin/python bench/bench_extract.py [--quick]
"""

from __future__ import annotations

import argparse
import json
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

SPEAKER_MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "spkrec-ecapa-voxceleb"  # shared/ beside the checkout
LOAD_LIMIT = 1.5  # 1-minute load average above which a measurement waits
QUIET_CORES = 0.15  # cores busy in other processes below which a high load average is our own residue
FOREIGN_LIMIT = 0.25  # cores used by other processes during a pass above which the pass is measured again
MAX_RETRIES = 2
MAX_WAIT_S = 600
TARGETS = {"audio": (3.0, 1e-4), "vggface": (1.5, 1e-4), "vit": (None, 1e-4)}


# ---------------------------------------------------------------------------------------- load / CPU accounting
def _user_ticks() -> int:
    """User-mode jiffies (user + nice) of all CPUs from /proc/stat."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    return f[0] + f[1]


class CpuWindow:
    """User CPU time of other processes (the machine's user time minus this process's and its reaped
    children's) over a window, as an average number of busy cores.

    Only user time counts: the kernel's own work after this benchmark's writes (page writeback, the
    filesystem journal) is system time in kernel threads and would otherwise read as another process's load.
    """

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")
        self.t0, self.u0, self.o0 = time.perf_counter(), _user_ticks(), self._own()

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.children_user

    def foreign_cores(self) -> float:
        wall = time.perf_counter() - self.t0
        busy = (_user_ticks() - self.u0) / self.hz
        return max(0.0, busy - (self._own() - self.o0)) / max(wall, 1e-9)


def load1() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def wait_for_quiet(label: str) -> dict:
    """Wait until the machine is quiet enough to time ``label``; returns the load it was started at."""
    waited = 0
    while True:
        load = load1()
        if load <= LOAD_LIMIT:
            return {"load1": load, "waited_s": waited}
        probe = CpuWindow()
        time.sleep(5)
        foreign = probe.foreign_cores()
        if foreign < QUIET_CORES:  # the load average still carries this benchmark's own last measurement
            return {"load1": load, "foreign_cores_before": round(foreign, 3), "waited_s": waited}
        if waited >= MAX_WAIT_S:
            print(f"  ! {label}: load {load:.2f} (other processes {foreign:.2f} cores) after {waited} s of "
                  "waiting; measuring anyway, figures may be polluted", flush=True)
            return {"load1": load, "foreign_cores_before": round(foreign, 3), "waited_s": waited,
                    "polluted": True}
        print(f"  ({label}: 1-min load {load:.2f}, other processes {foreign:.2f} cores; waiting 30 s)",
              flush=True)
        time.sleep(30)
        waited += 30


def timed(label: str, fn, passes: int, budget_s: float | None = None) -> dict:
    """Run ``fn`` up to ``passes`` times; median seconds of the kept passes and the conditions of each.

    No further pass is started when it would take the total past ``budget_s`` (so a long measurement gets
    fewer passes, at least one). A pass during which other processes used more than ``FOREIGN_LIMIT``
    cores is discarded and run again after waiting for quiet (at most ``MAX_RETRIES`` times per figure).
    """
    times: list[float] = []
    conds: list[dict] = []
    discarded: list[dict] = []
    while len(times) < passes:
        cond = wait_for_quiet(label)
        window = CpuWindow()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        cond["foreign_cores_during"] = round(window.foreign_cores(), 3)
        cond["seconds"] = round(elapsed, 3)
        if cond["foreign_cores_during"] > FOREIGN_LIMIT and len(discarded) < MAX_RETRIES:
            discarded.append(cond)
            print(f"  ({label}: other processes used {cond['foreign_cores_during']:.2f} cores during the pass; "
                  "discarded, measuring again)", flush=True)
            continue
        times.append(elapsed)
        conds.append(cond)
        if budget_s is not None and sum(times) + elapsed > budget_s:
            break
    return {"seconds": statistics.median(times), "passes": len(times), "pass_seconds": [round(t, 3) for t in times],
            "conditions": {"load1": conds[0]["load1"], "load1_max": max(c["load1"] for c in conds),
                           "foreign_cores_during_max": max(c["foreign_cores_during"] for c in conds),
                           "per_pass": conds, "discarded_passes": discarded}}


# ------------------------------------------------------------------------------------------------ helpers
def rel_diffs(fva_folder: Path, plain: dict[str, np.ndarray]) -> dict:
    """Max and median ``|a - b| / |b|`` between fva's cache rows (a) and the plain embeddings (b), by key."""
    from fva.extract.cache import open_cache

    with open_cache(fva_folder) as table:
        emb = table.load()
        keys = table.keys.tolist()
    if set(keys) != set(plain):
        raise RuntimeError(f"cache keys differ from the plain run's ({len(set(keys) ^ set(plain))} differ)")
    rel = np.array([np.linalg.norm(emb[i] - plain[k]) / np.linalg.norm(plain[k]) for i, k in enumerate(keys)])
    return {"max_rel_diff": float(rel.max()), "median_rel_diff": float(np.median(rel)), "compared": len(rel)}


def run_fva(manifest, encoder, work: Path, batch: int, workers: int, tag: str):
    """One run_extraction into a fresh cache folder; returns (summary, cache folder)."""
    from fva.extract.runner import run_extraction

    cache = work / f"cache-{tag}"
    shutil.rmtree(cache, ignore_errors=True)
    summary = run_extraction(manifest, encoder, cache, dtype="float32", batch_size=batch, workers=workers,
                             progress=False)
    if summary.failed or summary.extracted != sum(r.modality == encoder.modality for r in manifest.records):
        raise RuntimeError(f"fva run {tag}: {summary.line()}")
    return summary, summary.folder


def subset_manifest(manifest, modality: str, n: int):
    from fva.data.records import Manifest

    records = [r for r in manifest.records if r.modality == modality][:n]
    return Manifest(manifest.dataset, manifest.root, manifest.subset, manifest.split, records)


def batched_settings(label: str, manifest, encoder, work: Path, settings, passes: int, budget_s: float,
                     n: int) -> tuple[list[dict], Path]:
    """Time run_extraction at each (batch, workers); returns the rows and the best setting's cache folder."""
    rows, best_folder, best = [], None, -1.0
    # one short untimed run: one-time costs (worker start code paths, first kernels) out of the figures
    run_fva(subset_manifest(manifest, encoder.modality, settings[0][0]), encoder, work, settings[0][0],
            settings[0][1], "warmup")
    for batch, workers in settings:
        tag = f"b{batch}-w{workers}"
        folder_holder: list[Path] = []
        t = timed(f"{label} fva {tag}", lambda: folder_holder.append(
            run_fva(manifest, encoder, work, batch, workers, tag)[1]), passes, budget_s)
        row = {"batch_size": batch, "workers": workers, "items_per_s": n / t["seconds"], **t}
        rows.append(row)
        print(f"  fva run_extraction B={batch:<3} W={workers}: {row['items_per_s']:7.2f} items/s "
              f"({t['passes']} pass(es), median {t['seconds']:.2f} s, load {t['conditions']['load1']:.2f})",
              flush=True)
        if row["items_per_s"] > best:
            best, best_folder = row["items_per_s"], folder_holder[-1]
    return rows, best_folder


def summarise(name: str, plain: dict, rows: list[dict], diff: dict, target: tuple) -> dict:
    best = max(rows, key=lambda r: r["items_per_s"])
    ratio = best["items_per_s"] / plain["items_per_s"]
    out = {"plain": plain, "fva": rows, "best_setting": {"batch_size": best["batch_size"], "workers": best["workers"]},
           "fva_items_per_s": best["items_per_s"], "ratio": ratio, **diff,
           "target_ratio": target[0], "target_rel_diff": target[1]}
    return out


# ------------------------------------------------------------------------------------------------ 1. audio
def bench_audio(manifest, work: Path, n: int, passes: int, settings, budget_s: float) -> dict:
    import soundfile as sf
    import torch
    from speechbrain.inference.speaker import EncoderClassifier

    from fva.extract.encoders.speaker_ecapa import SpeakerEcapa

    root = Path(manifest.root)
    records = [r for r in manifest.records if r.modality == "voice"][:n]
    seconds_audio = sum(sf.info(str(root / r.path)).duration for r in records)

    # plain: speechbrain's own API, one clip at a time
    savedir = work / "sb-plain"
    savedir.mkdir()
    shutil.copyfile(SPEAKER_MODEL / "label_encoder.ckpt", savedir / "label_encoder.txt")
    start = time.perf_counter()
    classifier = EncoderClassifier.from_hparams(source=str(SPEAKER_MODEL), savedir=str(savedir),
                                                overrides={"pretrained_path": str(SPEAKER_MODEL)})
    load_plain = time.perf_counter() - start
    grabbed: list[torch.Tensor] = []
    classifier.mods.embedding_model.asp_bn.register_forward_hook(lambda m, a, out: grabbed.append(out))
    plain_emb: dict[str, np.ndarray] = {}

    def plain_pass() -> None:
        for r in records:
            wav, rate = sf.read(str(root / r.path), dtype="float32")
            assert rate == 16000
            grabbed.clear()
            classifier.encode_batch(torch.from_numpy(wav)[None])
            plain_emb[r.key] = grabbed[0].reshape(-1).detach().numpy().copy()

    classifier.encode_batch(torch.from_numpy(sf.read(str(root / records[0].path), dtype="float32")[0])[None])
    t = timed("audio plain", plain_pass, passes, budget_s)
    plain = {"what": "speechbrain EncoderClassifier.encode_batch(wav[None]) per clip, soundfile read, asp_bn "
             "forward hook", "items_per_s": n / t["seconds"], "model_load_s": load_plain, **t}
    print(f"  speechbrain one-at-a-time:      {plain['items_per_s']:7.2f} items/s ({t['passes']} pass(es), median "
          f"{t['seconds']:.2f} s, load {t['conditions']['load1']:.2f})", flush=True)
    del classifier

    start = time.perf_counter()
    encoder = SpeakerEcapa(str(SPEAKER_MODEL), savedir=work / "sb-fva")
    load_fva = time.perf_counter() - start
    rows, folder = batched_settings("audio", subset_manifest(manifest, "voice", n), encoder, work, settings,
                                    passes, budget_s, n)
    out = summarise("audio", plain, rows, rel_diffs(folder, plain_emb), TARGETS["audio"])
    out.update(model="spkrec-ecapa-voxceleb (public weights)", items=n, audio_seconds=seconds_audio,
               fva_model_load_s=load_fva, dim=encoder.dim)
    out["splits"] = audio_splits(encoder, records[:64], root, 64)
    return out


def audio_splits(encoder, records, root: Path, batch: int) -> dict:
    """Where a batched pass spends its time: decoding, Fbank + sentence norm, the ECAPA model with and
    without fva's reflect-padding hooks (one length-sorted pass over the given clips, single process)."""
    import torch

    from fva.extract.encoders.ecapa import EXTRA_FRAMES, HOP, collate_audio
    from fva.extract.media import load_audio

    runner = encoder.runner
    cond = wait_for_quiet("audio splits")
    start = time.perf_counter()
    clips = sorted((load_audio(root / r.path) for r in records), key=len)
    decode = time.perf_counter() - start
    fbank = model_hooked = model_plain = 0.0
    with torch.inference_mode():
        for a in range(0, len(clips), batch):
            wavs, n = collate_audio(clips[a:a + batch])
            t0 = time.perf_counter()
            feats = runner.compute_features(wavs)
            frames = 1 + n // HOP
            feats = torch.nn.functional.pad(feats, (0, 0, 0, EXTRA_FRAMES))
            rel = (frames.float() - 0.25) / feats.shape[1]
            feats = runner.mean_var_norm(feats, rel)
            t1 = time.perf_counter()
            runner._frames = frames
            try:
                runner.model(feats, rel)
            finally:
                runner._frames = None
            t2 = time.perf_counter()
            runner.model(feats, rel)  # hooks see no frames: they return at once
            t3 = time.perf_counter()
            fbank, model_hooked, model_plain = fbank + t1 - t0, model_hooked + t2 - t1, model_plain + t3 - t2
    out = {"clips": len(clips), "batch_size": batch, "decode_s": decode, "fbank_and_norm_s": fbank,
           "model_with_hooks_s": model_hooked, "model_without_hooks_s": model_plain, "conditions": cond}
    print(f"  splits ({len(clips)} clips, B={batch}, one process): decode {decode:.2f} s, Fbank+norm {fbank:.2f} s, ECAPA "
          f"{model_hooked:.2f} s with fva's padding hooks / {model_plain:.2f} s without", flush=True)
    return out


# ------------------------------------------------------------------------------------------------ 2. VGG-Face
def bench_vggface(manifest, work: Path, n: int, passes: int, settings, budget_s: float) -> dict:
    import cv2
    from deepface import DeepFace

    from fva.synth.checkpoints import write_demo_vggface
    from fva.extract.encoders.vggface import VggFace
    from fva.extract.media import load_image

    home = Path(os.environ["DEEPFACE_HOME"])
    write_demo_vggface(home)
    root = Path(manifest.root)
    records = [r for r in manifest.records if r.modality == "face"][:n]
    kw = dict(model_name="VGG-Face", detector_backend="skip", enforce_detection=False, align=False)
    start = time.perf_counter()
    DeepFace.represent(str(root / records[0].path), **kw)  # builds and caches the model
    warm = time.perf_counter() - start
    plain_emb: dict[str, np.ndarray] = {}

    def plain_pass() -> None:
        for r in records:
            plain_emb[r.key] = np.asarray(DeepFace.represent(str(root / r.path), **kw)[0]["embedding"], np.float32)

    t = timed("vggface plain", plain_pass, passes, budget_s)
    plain = {"what": "DeepFace.represent(path, VGG-Face, detector skip, no alignment) per image",
             "items_per_s": n / t["seconds"], "first_call_s": warm, **t}
    print(f"  DeepFace.represent per image:   {plain['items_per_s']:7.2f} items/s ({t['passes']} pass(es), median "
          f"{t['seconds']:.2f} s, load {t['conditions']['load1']:.2f})", flush=True)

    start = time.perf_counter()
    encoder = VggFace(str(home))
    load_fva = time.perf_counter() - start
    rows, folder = batched_settings("vggface", subset_manifest(manifest, "face", n), encoder, work, settings,
                                    passes, budget_s, n)
    out = summarise("vggface", plain, rows, rel_diffs(folder, plain_emb), TARGETS["vggface"])
    # deepface decodes with cv2.imread, fva with Pillow: are the pixels the same?
    pix = max(int(np.abs(cv2.imread(str(root / r.path)).astype(np.int16)
                         - load_image(root / r.path)[:, :, ::-1].astype(np.int16)).max()) for r in records)
    out.update(model="deepface VGG-Face, full size, seeded random weights (write_demo_vggface; the published "
               "weights cannot be downloaded here)", items=n, fva_model_load_s=load_fva, dim=encoder.dim,
               max_pixel_diff_cv2_vs_pillow=pix)
    return out


# ------------------------------------------------------------------------------------------------ 3. ViT
def bench_vit(manifest, work: Path, n: int, passes: int, settings, budget_s: float) -> dict:
    import torch
    import transformers
    from PIL import Image
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    from fva.extract.encoders.vit_age_gender import ViTAgeGender, save_vit_age_gender

    transformers.logging.set_verbosity_error()
    folder = save_vit_age_gender(work / "vit-base", ViTConfig(), seed=0)  # ViTConfig() = ViT-Base/16 at 224
    root = Path(manifest.root)
    records = [r for r in manifest.records if r.modality == "face"][:n]
    start = time.perf_counter()
    # the saved preprocessor_config.json (as published) has do_center_crop: true without a crop_size, which
    # transformers 5's ViT image processors refuse at call time; it has no effect on ViT, so switch it off
    processor = ViTImageProcessorPil.from_pretrained(folder, do_center_crop=False)
    model = ViTModel.from_pretrained(folder, add_pooling_layer=False).eval()
    load_plain = time.perf_counter() - start
    plain_emb: dict[str, np.ndarray] = {}

    def one(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            x = processor(images=im.convert("RGB"), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            return model(pixel_values=x).last_hidden_state[0, 0].numpy().copy()

    one(root / records[0].path)

    def plain_pass() -> None:
        for r in records:
            plain_emb[r.key] = one(root / r.path)

    t = timed("vit plain", plain_pass, passes, budget_s)
    plain = {"what": "transformers ViTImageProcessorPil + ViTModel.from_pretrained (no pooler) per image, CLS "
             "token (the age/gender heads are not run)", "items_per_s": n / t["seconds"], "model_load_s": load_plain,
             **t}
    print(f"  transformers ViT per image:     {plain['items_per_s']:7.2f} items/s ({t['passes']} pass(es), median "
          f"{t['seconds']:.2f} s, load {t['conditions']['load1']:.2f})", flush=True)
    del model

    start = time.perf_counter()
    encoder = ViTAgeGender(str(folder))
    load_fva = time.perf_counter() - start
    rows, cache = batched_settings("vit", subset_manifest(manifest, "face", n), encoder, work, settings, passes,
                                   budget_s, n)
    out = summarise("vit", plain, rows, rel_diffs(cache, plain_emb), TARGETS["vit"])
    out.update(model="ViT-Base/16 224 age-gender (ViTConfig() defaults, random init, save_vit_age_gender)", items=n,
               fva_model_load_s=load_fva, dim=encoder.dim)
    return out


# ------------------------------------------------------------------------------------------------ 4. cache write
def bench_cache_write(work: Path, rows: int, passes: int) -> dict:
    from fva.extract.cache import ShardWriter

    dim = 6144
    data = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32).astype(np.float16)
    frames = np.array([-1], dtype=np.int32)
    keys = [f"voices/id{i // 100:05d}/English/vid{i // 10:07d}/{i:06d}" for i in range(rows)]
    mb = data.nbytes / 1e6
    out = {"rows": rows, "dim": dim, "dtype": "float16", "embedding_mb": mb, "part_rows": 4096}
    for fsync in (True, False):
        folder = work / f"write-{fsync}"

        splits: list[dict] = []

        def write() -> None:
            shutil.rmtree(folder, ignore_errors=True)  # (inside the timed call: a few ms, the same for both)
            start = time.perf_counter()
            w = ShardWriter(folder, 0, 1, dim=dim, dtype="float16", fsync=fsync)
            for i in range(rows):
                w.add(keys[i], frames, data[i:i + 1])
            added = time.perf_counter()
            w.finalize()
            splits.append({"add_and_part_commits_s": round(added - start, 3),
                           "finalize_merge_s": round(time.perf_counter() - added, 3)})

        t = timed(f"cache write fsync={fsync}", write, passes)
        size = (folder / "shard-00000-of-00001.h5").stat().st_size
        shutil.rmtree(folder, ignore_errors=True)
        out[f"fsync_{fsync}"] = {"mb_per_s": mb / t["seconds"], "file_mb": size / 1e6, **t,
                                 "splits_per_pass_incl_discarded": splits}
        add_s = statistics.median(x["add_and_part_commits_s"] for x in splits)
        merge_s = statistics.median(x["finalize_merge_s"] for x in splits)
        print(f"  ShardWriter {rows} x {dim} float16, fsync={fsync!s:5}: {mb / t['seconds']:7.1f} MB/s "
              f"({t['passes']} passes, median {t['seconds']:.2f} s: add + part commits {add_s:.2f} s, finalize's "
              f"merge {merge_s:.2f} s; load {t['conditions']['load1']:.2f})", flush=True)
    out["target_mb_per_s"] = 200
    return out


# ------------------------------------------------------------------------------------------------ 5. memory
def rss_child(args) -> None:
    """In a fresh process: run_extraction over a synthetic manifest of ``args.rss_items`` voice records;
    print one JSON line with VmHWM (peak RSS of this process; the data-loader worker is another process)."""
    from fva.data.records import Manifest, MediaRecord
    from fva.extract.encoders.speaker_ecapa import SpeakerEcapa
    from fva.extract.runner import run_extraction

    def status(field: str) -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    wavs = json.loads(args.rss_wavs)
    encoder = SpeakerEcapa(args.rss_weights, savedir=Path(args.rss_work) / "savedir")
    records = [MediaRecord(key=f"voices/id{i // 200:05d}/English/v{i // 10:07d}/{i:06d}", identity=f"id{i // 200:05d}",
                           language="English", modality="voice", path=wavs[i % len(wavs)]) for i in range(args.rss_items)]
    manifest = Manifest("mavceleb-v3", args.rss_root, "train", "full", records)
    before = status("VmRSS")
    hwm_before = status("VmHWM")
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:  # RSS over the run: does it level off or keep growing?
        while not stop.wait(0.2):
            samples.append(status("VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    summary = run_extraction(manifest, encoder, Path(args.rss_work) / "cache", batch_size=64, workers=1,
                             progress=False)
    stop.set()
    sampler.join()
    quarters = [max(q, default=0) for q in np.array_split(np.array(samples, dtype=np.int64), 4)] if samples else []
    print(json.dumps({"items": args.rss_items, "extracted": summary.extracted, "failed": summary.failed,
                      "seconds": summary.seconds, "rss_before_extraction": before, "hwm_before_extraction": hwm_before,
                      "vm_hwm": status("VmHWM"), "rss_end": status("VmRSS"),
                      "rss_max_per_quarter_of_run": [int(q) for q in quarters]}))


def bench_memory(manifest, work: Path, sizes: tuple[int, ...]) -> dict:
    import soundfile as sf

    from fva.synth.checkpoints import write_demo_speaker_ecapa

    weights = write_demo_speaker_ecapa(work / "demo-speaker")
    root = Path(manifest.root)
    voices = [r for r in manifest.records if r.modality == "voice"]
    wavs = [r.path for r in sorted(voices, key=lambda r: sf.info(str(root / r.path)).frames)[:4]]
    seconds = [sf.info(str(root / p)).duration for p in wavs]
    out: dict = {"encoder": "speaker-ecapa demo checkpoint (write_demo_speaker_ecapa, channels 128..384, dim 768)",
                 "wav_files": len(wavs), "wav_seconds": [round(s, 3) for s in seconds], "batch_size": 64,
                 "workers": 1, "runs": []}
    for n in sizes:
        run_work = work / f"rss-{n}"
        run_work.mkdir()
        cmd = [sys.executable, __file__, "--rss-items", str(n), "--rss-weights", str(weights), "--rss-root", str(root),
               "--rss-work", str(run_work), "--rss-wavs", json.dumps(wavs)]
        got: list[dict] = []

        def child() -> None:
            shutil.rmtree(run_work / "cache", ignore_errors=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise RuntimeError(f"memory child failed:\n{proc.stderr[-3000:]}")
            got.append(json.loads(proc.stdout.strip().splitlines()[-1]))

        t = timed(f"memory {n}", child, 1)
        res = got[-1]
        cond = t["conditions"]
        res.update(items_per_s=res["extracted"] / res["seconds"], process_seconds=t["seconds"], conditions=cond)
        out["runs"].append(res)
        shutil.rmtree(run_work, ignore_errors=True)
        q = " / ".join(f"{v / 2**20:.0f}" for v in res["rss_max_per_quarter_of_run"])
        print(f"  {n:>6} items: peak RSS (VmHWM) {res['vm_hwm'] / 2**20:7.1f} MiB, RSS before extraction "
              f"{res['rss_before_extraction'] / 2**20:7.1f} MiB, max RSS per quarter of the run {q} MiB, "
              f"{res['items_per_s']:7.1f} items/s (load {cond['load1']:.2f})", flush=True)
    a, b = out["runs"][0], out["runs"][-1]
    out["hwm_growth_mib"] = (b["vm_hwm"] - a["vm_hwm"]) / 2**20
    out["extraction_growth_mib"] = ((b["vm_hwm"] - b["rss_before_extraction"])
                                    - (a["vm_hwm"] - a["rss_before_extraction"])) / 2**20
    return out


# ------------------------------------------------------------------------------------------------ main
def _mark(t: dict) -> str:
    """'*' after a figure measured while other processes used more than FOREIGN_LIMIT cores."""
    return "*" if t["conditions"]["foreign_cores_during_max"] > FOREIGN_LIMIT else " "


def print_table(fig: dict) -> None:
    print("\n" + "=" * 100)
    print(f"{'measurement':<44} {'plain it/s':>10} {'fva it/s':>9} {'best B,W':>9} {'ratio':>7} {'target':>7} "
          f"{'max rel diff':>13}")
    names = {"audio": "audio: spkrec-ecapa-voxceleb (real)", "vggface": "image: VGG-Face (full, random weights)",
             "vit": "image: ViT-Base age-gender (random init)"}
    for key, label in names.items():
        f = fig.get(key)
        if f is None:
            continue
        if not isinstance(f, dict):
            print(f"{label:<44} {f}")
            continue
        bw = f"{f['best_setting']['batch_size']},{f['best_setting']['workers']}"
        tr = f">={f['target_ratio']}x" if f["target_ratio"] else "-"
        best = next(r for r in f["fva"] if r["items_per_s"] == f["fva_items_per_s"])
        print(f"{label:<44} {f['plain']['items_per_s']:>9.2f}{_mark(f['plain'])} {f['fva_items_per_s']:>8.2f}"
              f"{_mark(best)} {bw:>9} {f['ratio']:>6.2f}x {tr:>7} {f['max_rel_diff']:>13.2e}")
        for row in f["fva"]:
            print(f"{'   fva B=' + str(row['batch_size']) + ' W=' + str(row['workers']):<44} {'':>10} "
                  f"{row['items_per_s']:>8.2f}{_mark(row)}  ({row['passes']} pass(es))")
        load_plain = f["plain"].get("model_load_s", f["plain"].get("first_call_s"))
        print(f"   plain: {f['plain']['passes']} pass(es); model load (not in items/s): plain {load_plain:.1f} s, "
              f"fva {f['fva_model_load_s']:.1f} s")
    c = fig.get("cache_write")
    for fs in (True, False) if c else ():
        print(f"{'cache write ' + str(c['rows']) + 'x6144 f16 fsync=' + str(fs):<44} "
              f"{c[f'fsync_{fs}']['mb_per_s']:>9.1f}{_mark(c[f'fsync_{fs}'])} MB/s of embeddings "
              f"(target > 200 MB/s)")
    m = fig.get("memory")
    for r in m["runs"] if m else ():
        print(f"{'peak RSS, ' + str(r['items']) + ' voice items (B=64, W=1)':<44} "
              f"{r['vm_hwm'] / 2**20:>9.1f}{_mark(r)} MiB  ({r['items_per_s']:.1f} items/s, RSS before extraction "
              f"{r['rss_before_extraction'] / 2**20:.1f} MiB)")
    if m:
        print(f"{'peak RSS growth ' + str(m['runs'][0]['items']) + ' -> ' + str(m['runs'][-1]['items']):<44} "
              f"{m['hwm_growth_mib']:>10.1f} MiB  (of which in extraction: {m['extraction_growth_mib']:.1f} MiB)")
    loads = _loads(fig)
    if not loads:
        return
    print(f"1-min load at the start of the timed measurements: min {min(loads):.2f}, max {max(loads):.2f}; "
          f"other processes' CPU during them: max {max(_foreign(fig)):.2f} cores")
    print(f"(* = other processes used more than {FOREIGN_LIMIT} cores during that figure even after "
          f"{MAX_RETRIES} re-measurements: polluted)")


def _walk(obj):
    """Every kept measurement's conditions (dicts with the load and other processes' CPU during it)."""
    if isinstance(obj, dict):
        if "foreign_cores_during" in obj:
            yield obj
        for k, v in obj.items():
            if k != "discarded_passes":
                yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _loads(fig):
    return [c["load1"] for c in _walk(fig)]


def _foreign(fig):
    return [c["foreign_cores_during"] for c in _walk(fig)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer items and passes")
    ap.add_argument("--only", nargs="*", choices=("audio", "vggface", "vit", "write", "memory"),
                    help="run only these parts (for development)")
    for name in ("items", "weights", "root", "work", "wavs"):
        ap.add_argument(f"--rss-{name}", type=int if name == "items" else str, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_items:
        rss_child(args)
        return

    import torch

    from fva.data.datasets import build_manifest
    from fva.synth.demo import generate_demo

    quick = args.quick
    n = 40 if quick else 200
    passes = 1 if quick else 3
    budget = 0.0 if quick else 120.0  # no further pass of a figure once it would take the total past this
    only = set(args.only or ("audio", "vggface", "vit", "write", "memory"))
    fig: dict = {"quick": quick, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                 "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="fva-bench-extract-") as tmp:
        work = Path(tmp)
        os.environ["DEEPFACE_HOME"] = str(work / "deepface-home")
        os.environ["DEEPFACE_BACKEND_ENGINE"] = "pytorch"
        generate_demo(work / "demo", seed=0)
        manifest, _ = build_manifest("mavceleb-v3", work / "demo")
        fig["data"] = {"generate_demo_seed": 0, "voice_items": n, "face_items": n,
                       "image_size": "96x96 jpg", "manifest": "mavceleb-v3 train full, first items"}
        if "audio" in only:
            print("audio: speechbrain spkrec-ecapa-voxceleb", flush=True)
            if SPEAKER_MODEL.is_dir():
                settings = [(16, 1), (64, 1)] if quick else [(16, 1), (64, 1), (64, 0)]
                fig["audio"] = bench_audio(manifest, work, n, passes, settings, budget)
            else:
                print(f"  {SPEAKER_MODEL} not found: audio part skipped", flush=True)
                fig["audio"] = f"skipped: {SPEAKER_MODEL} not found"
        if "vggface" in only:
            print("images: deepface VGG-Face (full size; SEEDED RANDOM weights -- the published weights cannot be "
                  "downloaded here)", flush=True)
            fig["vggface"] = bench_vggface(manifest, work, n, passes, [(32, 1)], budget)
        if "vit" in only:
            print("images: ViT-Base/16 age-gender (full-size config, random init)", flush=True)
            fig["vit"] = bench_vit(manifest, work, n, passes, [(32, 1)], budget)
        if "write" in only:
            print("cache write: ShardWriter", flush=True)
            fig["cache_write"] = bench_cache_write(work, 8_000 if quick else 40_000, 1 if quick else 3)
        if "memory" in only:
            print("peak memory vs manifest size (fresh subprocess each)", flush=True)
            fig["memory"] = bench_memory(manifest, work, (500, 5_000) if quick else (2_000, 20_000))
    print_table(fig)
    if args.only or quick:
        print("(--quick / --only: smoke run, no results file written)")
        return
    path = write_results("extract", fig)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
