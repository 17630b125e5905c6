"""Stage-2 head training on CPU: the default system on a MAV-Celeb-V3-sized cache, streaming memory, determinism.

1. All folds of the DEFAULT config (``train_head(load_config(), cache, exp, None, workers=2)``, i.e.
   ``fva train-head --fold all --workers 2``: two folds at once, one thread each; 100 epochs at most,
   patience 10) on a synthetic stage-1 cache of MAV-Celeb V3's size and real feature widths: 50 identities,
   English and German, 3,812 voice clips cut into videos of ~8 clips (~477 videos), 20 face
   images per video; voice = speaker-ecapa 6144 + voice-age-gender-ecapa 1536, face = vggface 4096 +
   vit-age-gender 768, float16. Features carry an identity signal: a latent per identity (shared by voice
   and face) plus a per-modality identity latent, a per-video and a per-language shift, through a random
   linear map per encoder, plus unit noise. Reported: total and per-fold wall time, epochs run, dev EER,
   peak resident memory (VmHWM of a fresh subprocess, and the largest worker's). The same run in one
   process (``workers=1``, torch's two threads) is timed beside it. Over the 60 s target, one fold is
   profiled (cProfile, top 15 by cumulative time).
2. Streaming: a ~2.5 GB float16 cache (100,000 voice rows x 7680 + 100,000 face rows x 4864) trained with
   ``in_memory_limit_gb: 0.5`` (so both modalities stream), ``rows_per_epoch`` = 40,000 (~1 GB of feature
   bytes read per epoch), 2 epochs, fold 0: peak RSS (VmHWM, fresh subprocess) and seconds per epoch; plus
   a sanity line: the first batches of :class:`InMemoryRows` and :class:`StreamingRows` over the same rows
   and positions are identical arrays.
3. Determinism: fold 0 of the one-process run trained again in another process with the same seed gives
   byte-identical ``dev_scores_<Lang>.txt`` files; and the largest difference between the two-worker and
   the one-process runs' dev scores.

Before each timed measurement the 1-minute load average is read; above 1.5 the benchmark waits (20 s steps,
up to 8 minutes) and records the load it started at. Every timed run is a fresh subprocess (so VmHWM is its
own peak, not the parent's). The temporary caches are deleted at the end.

Prints a table and writes bench/results/heads.json (``--quick``: heads-quick.json: 2 folds of 20 epochs,
a 0.3 GB streaming cache). Not a test: nothing here passes or fails.

    .venv/bin/python bench/bench_heads.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

DATASET = "mavceleb-v3"
LANGUAGES = ("English", "German")
VOICE_ENCODERS = {"speaker-ecapa": 6144, "voice-age-gender-ecapa": 1536}
FACE_ENCODERS = {"vggface": 4096, "vit-age-gender": 768}
AGE_GENDER = ("voice-age-gender-ecapa", "vit-age-gender")
SHARED, OWN = 16, 16  # latent dims: identity shared by voice and face; identity seen by one modality only
OWN_STD, VIDEO_STD, LANG_STD = 0.5, 1.0, 0.3  # (shared identity latent: 1) in latent units
GAIN = 0.25  # signal amplitude per feature over unit noise: dev EER ~12-13%, best epoch ~20 on fold 0

LOAD_LIMIT, LOAD_STEP_S, LOAD_MAX_WAIT_S = 1.5, 20, 480
TARGET_FOLDS_S, TARGET_RSS = 60.0, 2 * 2**30
PROFILE_EPOCHS = 20  # the profiled fold is cut at this many epochs (every epoch does the same work)
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------- helpers
def load1() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def wait_for_load(label: str) -> dict:
    """Wait (20 s steps, 8 minutes at most) until the 1-minute load is at most 1.5; the load measured at."""
    start = time.perf_counter()
    load = load1()
    while load > LOAD_LIMIT and time.perf_counter() - start < LOAD_MAX_WAIT_S:
        print(f"  [{label}] load {load:.2f} > {LOAD_LIMIT}: waiting {LOAD_STEP_S} s", flush=True)
        time.sleep(LOAD_STEP_S)
        load = load1()
    return {"load1": load, "waited_s": round(time.perf_counter() - start, 1),
            "over_limit": load > LOAD_LIMIT}


def proc_status(field: str) -> int:
    """A /proc/self/status memory field in bytes (VmHWM: peak resident set of this process)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def child(task: dict, label: str) -> dict:
    """Run ``task`` in a fresh interpreter (after the load check); its JSON result plus the load."""
    load = wait_for_load(label)
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    try:
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", json.dumps({**task, "out": str(out)})], check=True)
        result = json.loads(out.read_text())
        result["process_s"] = time.perf_counter() - start
    finally:
        out.unlink(missing_ok=True)
    return {**result, **load, "load1_end": load1()}


# ------------------------------------------------------------------------------------------ synthetic cache
@dataclass
class Layout:
    """Train records of a synthetic MAV-Celeb cache and, per row, its identity, language and video."""

    voice: list
    face: list
    voice_ilv: np.ndarray  # (n, 3) identity, language, video index per voice row
    face_ilv: np.ndarray
    n_ids: int
    n_videos: int


def make_layout(rng: np.random.Generator, n_ids: int, n_voice: int, clips_mean: float,
                frames_per_video: int) -> Layout:
    """``n_voice`` clips spread at random (multinomial) over identity x language, each cell's clips cut into
    round(clips / clips_mean) videos of near-equal size; ``frames_per_video`` face images per video
    (MAV-Celeb's layout of keys)."""
    from fva.data.records import MediaRecord

    cells = [(i, li) for i in range(n_ids) for li in range(len(LANGUAGES))]
    counts = rng.multinomial(n_voice, [1 / len(cells)] * len(cells))
    voice, face, v_ilv, f_ilv = [], [], [], []
    video = 0
    for (i, li), count in zip(cells, counts):
        identity, lang = f"id{i + 1:04d}", LANGUAGES[li]
        n_videos = max(1, round(int(count) / clips_mean)) if count else 0
        for clips in (len(part) for part in np.array_split(np.arange(count), n_videos) if len(part)):
            name = f"v{video:06d}{lang[:2]}"
            for c in range(clips):
                key = f"voices/{identity}/{lang}/{name}/{c:05d}"
                voice.append(MediaRecord(key=key, identity=identity, language=lang, modality="voice",
                                         path=key + ".wav", video=name))
                v_ilv.append((i, li, video))
            for fr in range(frames_per_video):
                key = f"faces/{identity}/{lang}/{name}/{fr:05d}"
                face.append(MediaRecord(key=key, identity=identity, language=lang, modality="face",
                                        path=key + ".jpg", video=name, frame=fr))
                f_ilv.append((i, li, video))
            video += 1
    return Layout(voice, face, np.array(v_ilv, dtype=np.int64), np.array(f_ilv, dtype=np.int64), n_ids, video)


class Signal:
    """Latents and per-encoder maps: row features = [shared id + video + language, modality's own id]
    @ map * GAIN + N(0, 1)."""

    def __init__(self, rng: np.random.Generator, n_ids: int, n_videos: int) -> None:
        self.rng = rng
        self.shared = rng.standard_normal((n_ids, SHARED), dtype=np.float32)
        self.own = {m: OWN_STD * rng.standard_normal((n_ids, OWN), dtype=np.float32) for m in ("voice", "face")}
        self.video = rng.normal(0, VIDEO_STD, (n_videos, SHARED)).astype(np.float32)
        self.lang = rng.normal(0, LANG_STD, (len(LANGUAGES), SHARED)).astype(np.float32)
        self.maps: dict[str, np.ndarray] = {}

    def rows(self, encoder: str, modality: str, dim: int, ilv: np.ndarray) -> np.ndarray:
        if encoder not in self.maps:
            self.maps[encoder] = (self.rng.standard_normal((SHARED + OWN, dim), dtype=np.float32)
                                  * np.float32(GAIN / np.sqrt(SHARED + OWN)))
        i, li, v = ilv[:, 0], ilv[:, 1], ilv[:, 2]
        latent = np.concatenate([self.shared[i] + self.video[v] + self.lang[li], self.own[modality][i]], axis=1)
        x = latent @ self.maps[encoder]
        x += self.rng.standard_normal(x.shape, dtype=np.float32)
        return x.astype(np.float16)


def write_cache(root: Path, layout: Layout, seed: int, shards: int = 1, bank_per_id: int = 0) -> dict:
    """The four encoder caches and manifest.jsonl of ``<root>/mavceleb-v3/train-full`` as ``fva extract``
    lays them out (:func:`fva.synth.testing.write_feature_cache`). ``bank_per_id`` > 0 (big caches): each row is one
    of that many precomputed rows of its identity and language, made unique by its row number in the first
    two columns, which is far cheaper than drawing noise for gigabytes of rows. Returns the sizes written."""
    from fva.data.records import Manifest
    from fva.layout import features_folder, write_manifest
    from fva.synth.testing import write_feature_cache

    rng = np.random.default_rng(seed)
    signal = Signal(rng, layout.n_ids, layout.n_videos)
    folder = features_folder(root, DATASET, "train")
    kept = write_manifest(root, Manifest(dataset=DATASET, root="/data/mavceleb_v3", subset="train", split="full",
                                         records=layout.voice + layout.face))
    nbytes = 0
    for modality, encoders, records, ilv in (("voice", VOICE_ENCODERS, layout.voice, layout.voice_ilv),
                                             ("face", FACE_ENCODERS, layout.face, layout.face_ilv)):
        frames = np.array([-1 if r.frame is None else r.frame for r in records], dtype=np.int64)
        for e_index, (encoder, dim) in enumerate(encoders.items()):
            extras = ("age", "p_female") if encoder in AGE_GENDER else ()
            if bank_per_id:  # rows of identity i, language l: bank[(i * L + l) * bank_per_id + j]
                cells = layout.n_ids * len(LANGUAGES)
                bank_ilv = np.repeat(np.stack([np.arange(cells) // len(LANGUAGES), np.arange(cells) % len(LANGUAGES),
                                               np.zeros(cells, np.int64)], axis=1), bank_per_id, axis=0)
                bank_ilv[:, 2] = rng.integers(0, layout.n_videos, len(bank_ilv))
                bank = signal.rows(encoder, modality, dim, bank_ilv)

            def shard_rows(lo: int, hi: int):
                """Records lo..hi of this encoder, drawn 8192 at a time as the writer asks for them."""
                for c0 in range(lo, hi, 8192):
                    c1 = min(hi, c0 + 8192)
                    if bank_per_id:
                        pick = ((ilv[c0:c1, 0] * len(LANGUAGES) + ilv[c0:c1, 1]) * bank_per_id
                                + rng.integers(0, bank_per_id, c1 - c0))
                        emb = bank[pick]
                        row = np.arange(c0, c1)
                        emb[:, 0], emb[:, 1] = row // 2048, row % 2048  # exact in float16
                    else:
                        emb = signal.rows(encoder, modality, dim, ilv[c0:c1])
                    ext = {"age": rng.uniform(20, 70, c1 - c0), "p_female": rng.uniform(0, 1, c1 - c0)}
                    for j in range(c1 - c0):
                        yield (records[c0 + j].key, frames[c0 + j:c0 + j + 1], emb[j:j + 1],
                               {k: ext[k][j:j + 1] for k in extras})

            bounds = np.linspace(0, len(records), shards + 1).astype(int)
            write_feature_cache(folder, encoder, modality, dim,
                                [shard_rows(int(bounds[s]), int(bounds[s + 1])) for s in range(shards)],
                                extras=extras, weights=f"synthetic/{encoder}", weights_id=f"{encoder}@synthetic{seed}",
                                dataset=DATASET, subset="train", split="full", manifest=kept,
                                config={"synthetic": True})  # one part per shard: no merge copy
            nbytes += len(records) * dim * 2
    return {"voice_rows": len(layout.voice), "face_rows": len(layout.face), "videos": layout.n_videos,
            "identities": layout.n_ids, "feature_bytes": nbytes}


# ----------------------------------------------------------------------------------------- child processes
def fold_summary(exp: Path, fold: int) -> dict:
    log = [json.loads(line) for line in (exp / f"fold{fold}" / "train_log.jsonl").read_text().splitlines()]
    metrics = json.loads((exp / f"fold{fold}" / "metrics.json").read_text())
    return {"fold": fold, "epochs_run": len(log), "selected_epoch": metrics["epoch"],
            "dev_eer_heard": float(np.mean(list(metrics["heard"].values()))),
            "epoch_s_mean": float(np.mean([e["seconds"] for e in log])),
            "epoch_s_median": float(np.median([e["seconds"] for e in log])),
            "epoch_s": [e["seconds"] for e in log] if len(log) <= 5 else None}


def run_child(task: dict) -> None:
    """In this fresh process: train as ``task`` says, write the result (VmHWM included) to task['out']."""
    import resource

    import speechbrain.nnet.losses  # noqa: F401  (imported by the model: counted in the import RSS below)
    import torch

    from fva.heads.config import load_config
    from fva.heads.trainer import train_head

    cfg = load_config(None, task.get("overrides") or {})
    exp, folds, workers = Path(task["exp"]), task.get("folds"), task.get("workers", 1)
    stamps: list[float] = []
    result: dict = {"torch_threads": torch.get_num_threads(), "rss_after_imports": proc_status("VmRSS")}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if task.get("profile"):
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        train_head(cfg, Path(task["cache"]), exp, folds, log=stamps.append)
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(15)
        result["profile"] = text.getvalue()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(10)
        result["profile_tottime"] = text.getvalue()
    else:
        train_head(cfg, Path(task["cache"]), exp, folds, workers=workers, log=stamps.append)
    total = time.perf_counter() - start
    result["workers"] = workers
    result["workers_max_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    # fold seconds as train_head logs them ("fold 3: ... (12.3 s)"): in a worker, from its start on that fold
    seconds = {int(m.group(1)): float(m.group(2)) for m in (re.match(r"fold (\d+):.*\(([\d.]+) s\)$", line)
                                                              for line in stamps) if m}
    result.update(total_s=total, folds=[{**fold_summary(exp, f), "seconds": seconds[f]} for f in sorted(seconds)],
                  vm_hwm=proc_status("VmHWM"), vm_rss_end=proc_status("VmRSS"))
    Path(task["out"]).write_text(json.dumps(result))


def batches_equal(cache: Path, fold: int, n_batches: int, identities: int | None = None) -> dict:
    """InMemoryRows vs StreamingRows over fold ``fold``'s training rows (at most ``identities`` of them):
    the first ``n_batches`` batches of epoch 0's block-shuffled order, per modality."""
    from fva.data.folds import Folds
    from fva.heads.config import load_config
    from fva.heads.features import FeatureTable, InMemoryRows, StreamingRows, epoch_order, select_rows
    from fva.layout import features_folder, folds_path, manifest_records

    cfg = load_config()
    tc = cfg.train
    folder = features_folder(cache, DATASET, "train")
    records = manifest_records(folder)
    ids = Folds.load(folds_path(cache, DATASET)).train_identities(fold)[:identities]
    classes = {i: n for n, i in enumerate(ids)}
    out = {}
    for stream, (modality, encoders) in enumerate((("voice", cfg.features.voice_encoders),
                                                   ("face", cfg.features.face_encoders))):
        table = FeatureTable(folder, encoders)
        try:
            sel = select_rows(table, records, set(ids), None, classes)
            mem, disk = InMemoryRows(table, sel), StreamingRows(table, sel)
            order = epoch_order(len(sel.rows), seed=[cfg.seed, fold, stream], epoch=0, block_rows=tc.block_rows,
                                buffer_blocks=tc.buffer_blocks)
            same = True
            for b in range(n_batches):
                pos = order[b * tc.batch_size:(b + 1) * tc.batch_size]
                (xm, ym), (xd, yd) = mem.batch(pos), disk.batch(pos)
                same &= xm.dtype == xd.dtype and np.array_equal(xm, xd) and np.array_equal(ym, yd)
            out[modality] = {"rows": len(sel.rows), "batches": n_batches, "identical": bool(same)}
        finally:
            table.close()
    return out


# -------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 folds of 20 epochs, a small streaming cache")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(json.loads(args.child))
        return
    quick = args.quick
    tmp = Path(tempfile.mkdtemp(prefix="fva-bench-heads-"))
    figures: dict = {"quick": quick, "cpu_cores": os.cpu_count()}
    try:
        figures.update(bench(tmp, quick))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"-> {write_results('heads-quick' if quick else 'heads', figures)}")


def bench(tmp: Path, quick: bool) -> dict:
    figures: dict = {}
    # ---- 1. the default system, all folds, MAV-Celeb-V3-sized cache
    cache = tmp / "mav"
    t = time.perf_counter()
    layout = make_layout(np.random.default_rng(0), n_ids=50, n_voice=3812, clips_mean=8, frames_per_video=20)
    sizes = write_cache(cache, layout, seed=0)
    sizes["write_s"] = time.perf_counter() - t
    del layout
    figures["mav_cache"] = sizes
    print(f"MAV-Celeb-V3-sized cache: {sizes['identities']} identities, {sizes['voice_rows']} voice rows "
          f"(7680-d), {sizes['videos']} videos, {sizes['face_rows']} face rows (4864-d), "
          f"{sizes['feature_bytes'] / 2**20:.0f} MiB float16, written in {sizes['write_s']:.1f} s", flush=True)
    overrides = {"train": {"epochs": 20}} if quick else {}
    folds = [0, 1] if quick else None
    one = child({"cache": str(cache), "exp": str(tmp / "exp_one"), "folds": folds, "overrides": overrides},
                "all folds, one process")
    figures["default_all_folds_one_process"] = one
    run = child({"cache": str(cache), "exp": str(tmp / "exp_all"), "folds": folds, "overrides": overrides,
                 "workers": 2}, "all folds, two workers")
    figures["default_all_folds"] = run
    print(f"\n1. default config{' (quick: 20 epochs)' if quick else ''}, {len(run['folds'])} folds, two worker "
          f"processes of one thread each (load {run['load1']:.2f} at start, {run['load1_end']:.2f} at end)")
    print(f"{'fold':>5} {'seconds':>8} {'epochs':>7} {'selected':>9} {'s/epoch mean':>13} {'median':>7} "
          f"{'dev EER heard %':>16}")
    for f in run["folds"]:
        print(f"{f['fold']:>5} {f['seconds']:>8.1f} {f['epochs_run']:>7} {f['selected_epoch']:>9} "
              f"{f['epoch_s_mean']:>13.3f} {f['epoch_s_median']:>7.3f} {f['dev_eer_heard']:>16.2f}")
    epochs = sum(f["epochs_run"] for f in run["folds"])
    print(f"total {run['total_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU for {len(run['folds'])} folds, {epochs} epochs "
          f"({run['total_s'] / epochs:.3f} s/epoch all in; target < {TARGET_FOLDS_S:.0f} s for 7 folds); "
          f"peak RSS {run['vm_hwm'] / 2**20:.0f} MiB in the parent, {run['workers_max_rss'] / 2**20:.0f} MiB in "
          "the largest worker", flush=True)
    print(f"one process, torch's {one['torch_threads']} threads (load {one['load1']:.2f}): {one['total_s']:.1f} s wall "
          f"for {sum(f['epochs_run'] for f in one['folds'])} epochs, peak RSS {one['vm_hwm'] / 2**20:.0f} MiB; "
          f"two workers / one process: {run['total_s'] / one['total_s']:.2f}x the time", flush=True)
    if run["total_s"] * 7 / len(run["folds"]) > TARGET_FOLDS_S:
        prof = child({"cache": str(cache), "exp": str(tmp / "exp_profile"), "folds": [0],
                      "overrides": {"train": {"epochs": PROFILE_EPOCHS}}, "profile": True}, "profile")
        figures["profile_fold0"] = {"epochs": PROFILE_EPOCHS, "load1": prof["load1"], "load1_end": prof["load1_end"],
                                    "total_s": prof["total_s"], "cumulative": prof["profile"],
                                    "tottime": prof["profile_tottime"]}
        print(f"\nprofile of fold 0, first {PROFILE_EPOCHS} epochs (cProfile; load {prof['load1']:.2f}):")
        for key in ("profile", "profile_tottime"):
            lines = [line for line in prof[key].splitlines() if line.strip() and "function calls" not in line
                     and "List reduced" not in line]
            print("\n".join(line.replace(str(Path(sys.prefix)), "<venv>").replace(str(ROOT), "") for line in lines))

    # ---- 3. determinism: fold 0 again in another process, same seed
    from fva.evaluate.scores import read_scores

    again = child({"cache": str(cache), "exp": str(tmp / "exp_again"), "folds": [0], "overrides": overrides},
                  "determinism")
    files = sorted(p.name for p in (tmp / "exp_one" / "fold0").glob("dev_scores_*.txt"))
    same = bool(files) and all((tmp / "exp_one" / "fold0" / n).read_bytes() == (tmp / "exp_again" / "fold0" / n)
                               .read_bytes() for n in files)
    worker_diff = 0.0
    for path in sorted((tmp / "exp_one").glob("fold*/dev_scores_*.txt")):
        ours, theirs = read_scores(path), read_scores(tmp / "exp_all" / path.relative_to(tmp / "exp_one"))
        worker_diff = max([worker_diff] + [abs(v - theirs[k]) for k, v in ours.items()])
    figures["determinism"] = {"files": files, "identical": same, "fold0_again_s": again["folds"][0]["seconds"],
                              "load1": again["load1"], "load1_end": again["load1_end"],
                              "max_abs_score_diff_two_workers_vs_one_process": worker_diff}
    print(f"\n3. determinism: fold 0 retrained in a fresh process ({again['folds'][0]['seconds']:.1f} s): "
          f"{', '.join(files)} byte-identical: {'yes' if same else 'NO'}; two workers vs one process: dev scores "
          f"differ by at most {worker_diff:.2g}")
    eq_small = batches_equal(cache, 0, 5)
    figures["batches_equal_mav"] = eq_small
    shutil.rmtree(cache)

    # ---- 2. streaming: a cache ~5x the in-memory limit
    big = tmp / "big"
    n_rows = 12_000 if quick else 100_000
    limit_gb = 0.06 if quick else 0.5
    rows_per_epoch = n_rows * 2 // 5
    t = time.perf_counter()
    layout = make_layout(np.random.default_rng(1), n_ids=100 if quick else 1000, n_voice=n_rows, clips_mean=8,
                         frames_per_video=8)
    sizes = write_cache(big, layout, seed=1, shards=2 if quick else 8, bank_per_id=4)
    sizes["write_s"] = time.perf_counter() - t
    del layout
    on_disk = sum(p.stat().st_size for p in big.rglob("*.h5"))
    sizes["on_disk_bytes"] = on_disk
    per_row = sum(VOICE_ENCODERS.values()) * 2 + sum(FACE_ENCODERS.values()) * 2
    read_per_epoch = rows_per_epoch * per_row
    print(f"\n2. streaming: cache of {sizes['voice_rows']} voice + {sizes['face_rows']} face rows, "
          f"{on_disk / 2**30:.2f} GiB on disk (written in {sizes['write_s']:.0f} s); in_memory_limit_gb "
          f"{limit_gb}, rows_per_epoch {rows_per_epoch} (~{read_per_epoch / 2**30:.2f} GiB of features read "
          "per epoch), 2 epochs, fold 0", flush=True)
    stream = child({"cache": str(big), "exp": str(tmp / "exp_stream"), "folds": [0],
                    "overrides": {"train": {"epochs": 2, "in_memory_limit_gb": limit_gb,
                                            "rows_per_epoch": rows_per_epoch}}}, "streaming")
    f0 = stream["folds"][0]
    eq_big = batches_equal(big, 0, 5, identities=40 if not quick else 10)
    figures["streaming"] = {"cache": sizes, "in_memory_limit_gb": limit_gb, "rows_per_epoch": rows_per_epoch,
                            "feature_bytes_read_per_epoch": read_per_epoch, "vm_hwm": stream["vm_hwm"],
                            "epoch_s": f0["epoch_s"], "fold_s": f0["seconds"], "process_s": stream["process_s"],
                            "load1": stream["load1"], "load1_end": stream["load1_end"],
                            "rss_after_imports": stream["rss_after_imports"], "target_rss": TARGET_RSS}
    figures["batches_equal_big"] = eq_big
    print(f"   peak RSS {stream['vm_hwm'] / 2**20:.0f} MiB (target < {TARGET_RSS / 2**30:.0f} GiB; "
          f"{stream['rss_after_imports'] / 2**20:.0f} MiB after imports), "
          f"seconds per epoch {', '.join(f'{s:.1f}' for s in f0['epoch_s'])}, fold {f0['seconds']:.1f} s "
          f"(load {stream['load1']:.2f})")
    for name, eq in (("MAV-sized", eq_small), ("streaming", eq_big)):
        print(f"   in-memory vs streaming batches ({name} cache, fold 0, epoch 0): "
              + "; ".join(f"{m} first {v['batches']} batches of {v['rows']} rows identical: "
                          f"{'yes' if v['identical'] else 'NO'}" for m, v in eq.items()))
    return figures


if __name__ == "__main__":
    main()
