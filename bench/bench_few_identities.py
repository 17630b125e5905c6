"""Stage 2 for few identities on CPU: closed-form CCA over the folds of a MAV-Celeb-V3-sized cache, and the InfoNCE
bridge (15 seeds) on a MAV-Celeb-v4-sized one.

1. ``cca`` (fva/configs/systems/cca.yaml, its 5 x 4 grid of k x reg selected on each fold's dev trials) over all 7
   folds of bench_heads.py's synthetic MAV-Celeb-V3-sized cache (50 identities, 3,812 voice clips of 7680-d,
   ~9,500 face images of 4864-d, float16), in one process (torch's threads): wall seconds, median of 3 runs,
   per-fold seconds of the last run. Target: under 10 s for the 7 folds, grid included.
2. ``bridge`` (fva/configs/systems/bridge.yaml: face input reduced to 256 axes, 40 epochs, batch 256) on a
   v4-sized cache: 70 identities, 6,500 English voice clips (192-d, the organisers' ECAPA embedding) in videos of
   ~8 clips, 8 face images per video (4096-d, VGG-Face fc7), the same synthetic identity signal as bench_heads.py.
   a. 15 seeds x 7 folds, ``fva train-head --seeds ... --workers 2`` (each fold selects its best epoch on its
      dev trials): wall seconds. Target: under 10 minutes.
   b. 15 seeds on all 70 identities, 40 epochs each, no dev trials (the published final fit; fva's one epoch
      loop, FoldTrainer.fit, as pretraining runs it), one process: wall seconds and seconds per epoch.
      Target: under 2 minutes.

Before each timed part the 1-minute load average is read (bench_heads.wait_for_load). Prints a table and writes
bench/results/few_identities.json (``--quick``: few_identities-quick.json: 3 seeds, 2 folds). Not a test.

    .venv/bin/python bench/bench_few_identities.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_heads  # noqa: E402
from common import write_results  # noqa: E402

TARGET_CCA_S, TARGET_BRIDGE_FOLDS_S, TARGET_BRIDGE_ALL_S = 10.0, 600.0, 120.0
SEEDS = [1 + 100 * i for i in range(15)]  # the published seeds 1 + 100 i
V4 = {"n_ids": 70, "n_voice": 6500, "clips_mean": 8, "frames_per_video": 8}


def v4_cache(root: Path) -> dict:
    """bench_heads' synthetic cache with v4's shape: English only, the organisers' two encoders."""
    saved = bench_heads.LANGUAGES, bench_heads.VOICE_ENCODERS, bench_heads.FACE_ENCODERS
    bench_heads.LANGUAGES = ("English",)
    bench_heads.VOICE_ENCODERS, bench_heads.FACE_ENCODERS = {"ecapa-embedding": 192}, {"vggface-keras": 4096}
    try:
        layout = bench_heads.make_layout(np.random.default_rng(4), **V4)
        return bench_heads.write_cache(root, layout, seed=4)
    finally:
        bench_heads.LANGUAGES, bench_heads.VOICE_ENCODERS, bench_heads.FACE_ENCODERS = saved


def config(system: str, features: dict | None = None, **train):
    from fva.heads.compare import system_config

    overrides = {"train": train} if train else {}
    if features:
        overrides["features"] = features
    return system_config(system, None, overrides)


def bench_cca(tmp: Path, runs: int) -> dict:
    from fva.heads.trainer import train_head

    cache = tmp / "v3"
    layout = bench_heads.make_layout(np.random.default_rng(0), n_ids=50, n_voice=3812, clips_mean=8,
                                     frames_per_video=20)
    sizes = bench_heads.write_cache(cache, layout, seed=0)
    cfg = config("cca")
    load = bench_heads.wait_for_load("cca")
    times, per_fold = [], []
    for r in range(runs):
        lines: list[str] = []
        start = time.perf_counter()
        metrics = train_head(cfg, cache, tmp / f"cca{r}", None, log=lines.append)
        times.append(time.perf_counter() - start)
        per_fold = [float(line.rsplit("(", 1)[1].split(" s)")[0]) for line in lines if line.startswith("fold ")]
    heard = [float(np.mean(list(m["heard"].values()))) for m in metrics["folds"].values()]
    settings = [m["setting"] for m in metrics["folds"].values()]
    return {"cache": sizes, "runs_s": times, "median_s": statistics.median(times), "per_fold_s": per_fold,
            "grid_points": len(cfg.model.params["k"]) * len(cfg.model.params["reg"]), "dev_eer_heard": heard,
            "settings": settings, **load}


def bench_bridge_folds(cache: Path, tmp: Path, seeds: list[int], folds: list[int] | None) -> dict:
    from fva.heads.compare import train_seeds

    cfg = config("bridge", {"voice_encoders": ["ecapa-embedding"], "face_encoders": ["vggface-keras"]})
    load = bench_heads.wait_for_load("bridge folds")
    start = time.perf_counter()
    summary = train_seeds(cfg, cache, tmp / "bridge-seeds", seeds, folds, workers=2)
    wall = time.perf_counter() - start
    epochs = []
    for seed in seeds:
        for fold in (folds if folds is not None else range(7)):
            log = tmp / "bridge-seeds" / f"seed{seed}" / f"fold{fold}" / "train_log.jsonl"
            epochs.append(len(log.read_text().splitlines()))
    return {"seeds": len(seeds), "folds": len(folds) if folds else 7, "wall_s": wall, "epochs": int(sum(epochs)),
            "s_per_epoch_all_in": wall / sum(epochs), "dev_eer_heard": summary["heard"], **load}


def bench_bridge_all(cache: Path, tmp: Path, seeds: list[int]) -> dict:
    """The published final fit: every identity, 40 epochs, no selection, once per seed (the trainer's own loop)."""
    from dataclasses import replace

    from fva.heads.experiment import build_model
    from fva.heads.features import make_rows, select_rows
    from fva.heads.trainer import FoldRun, FoldTrainer, fresh_state, make_optimiser

    cfg = config("bridge", {"voice_encoders": ["ecapa-embedding"], "face_encoders": ["vggface-keras"]})
    load = bench_heads.wait_for_load("bridge all identities")
    per_seed = []
    start = time.perf_counter()
    for seed in seeds:
        run_cfg = replace(cfg, seed=seed)
        trainer = FoldTrainer(run_cfg, cache, tmp / f"all{seed}", log=lambda line: None)
        try:
            ids = sorted({r.identity for r in trainer.records.values()})
            classes = {identity: i for i, identity in enumerate(ids)}
            rows = [make_rows(t, select_rows(t, trainer.records, set(ids), None, classes), 4.0)
                    for t in (trainer.feats.voice, trainer.feats.face)]
            t0 = time.perf_counter()
            import torch

            torch.manual_seed(seed)
            model = build_model(trainer.feats.voice.dim, trainer.feats.face.dim, len(ids), run_cfg.model)
            model.fit_inputs(rows[0], rows[1], seed)
            out = tmp / f"all{seed}"
            out.mkdir(parents=True, exist_ok=True)
            run = FoldRun("all", out, classes, model.training_rows("voice", rows[0]),
                          model.training_rows("face", rows[1]), {}, epochs=run_cfg.train.epochs, stream=seed)
            run.log_path.write_text("")
            trainer.fit(run, model, make_optimiser(model, run_cfg.train), fresh_state())
            per_seed.append(time.perf_counter() - t0)
        finally:
            trainer.close()
    wall = time.perf_counter() - start
    epochs = len(seeds) * cfg.train.epochs
    return {"seeds": len(seeds), "wall_s": wall, "per_seed_s": per_seed, "s_per_epoch": sum(per_seed) / epochs,
            **load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seeds = SEEDS[:3] if args.quick else SEEDS
    with tempfile.TemporaryDirectory(prefix="fva-bench-few-") as tmp:
        tmp = Path(tmp)
        figures = {"cca_v3_7_folds": bench_cca(tmp, 1 if args.quick else 3)}
        c = figures["cca_v3_7_folds"]
        print(f"1. cca, 7 folds of a V3-sized cache, {c['grid_points']} grid points per fold: median "
              f"{c['median_s']:.2f} s of {len(c['runs_s'])} runs ({', '.join(f'{t:.2f}' for t in c['runs_s'])}; "
              f"target < {TARGET_CCA_S:.0f} s); per fold {', '.join(f'{t:.2f}' for t in c['per_fold_s'])} s; "
              f"dev EER heard per fold {', '.join(f'{e:.2f}' for e in c['dev_eer_heard'])} %", flush=True)
        cache = tmp / "v4"
        t = time.perf_counter()
        figures["v4_cache"] = {**v4_cache(cache), "write_s": time.perf_counter() - t}
        v = figures["v4_cache"]
        print(f"v4-sized cache: {v['identities']} identities, {v['voice_rows']} voice rows (192-d), {v['face_rows']} "
              f"face rows (4096-d)", flush=True)
        figures["bridge_seeds_folds"] = bench_bridge_folds(cache, tmp, seeds, [0, 1] if args.quick else None)
        b = figures["bridge_seeds_folds"]
        print(f"2a. bridge, {b['seeds']} seeds x {b['folds']} folds, 2 workers: {b['wall_s']:.1f} s wall "
              f"(target < {TARGET_BRIDGE_FOLDS_S:.0f} s for 15 x 7), {b['epochs']} epochs, "
              f"{b['s_per_epoch_all_in']:.3f} s per epoch all in; dev EER heard over seeds "
              f"{b['dev_eer_heard']['mean']:.2f} ± {b['dev_eer_heard']['std']:.2f} %", flush=True)
        figures["bridge_seeds_all_identities"] = bench_bridge_all(cache, tmp, seeds)
        a = figures["bridge_seeds_all_identities"]
        print(f"2b. bridge, {a['seeds']} seeds on all 70 identities, 40 epochs each: {a['wall_s']:.1f} s wall "
              f"(target < {TARGET_BRIDGE_ALL_S:.0f} s), {a['s_per_epoch']:.3f} s per epoch", flush=True)
    path = write_results("few_identities-quick" if args.quick else "few_identities", figures)
    print(path)


if __name__ == "__main__":
    main()
