"""Folds trained at once: this process and spawned workers taking folds from one queue
(``fva train-head --workers N``). Each worker builds its own trainer over the same caches (features read
once per process) and reports (fold, metrics, seconds), or its error, back to this process."""

from __future__ import annotations

import multiprocessing
import queue
import time
from pathlib import Path

import torch

from fva.errors import FvaError
from fva.heads.config import HeadConfig
from fva.heads.experiment import fold_line, init_projections
from fva.heads.typed import build_dataclass


def _fold_worker(trainer_class, tasks, results, cfg_dict: dict, cache_root: str, exp: str, init: str | None,
                 resume: bool, threads: int) -> None:
    """A spawned worker of ``train_head(workers=N)``: trains the folds it takes from ``tasks`` (until None)
    with its own trainer over the same caches (features read once), and puts (fold, metrics, seconds) or
    ("error", fold, message) on ``results``."""
    import traceback

    torch.set_num_threads(threads)
    trainer = None
    try:
        while (fold := tasks.get()) is not None:
            start = time.perf_counter()
            try:
                if trainer is None:
                    cfg = build_dataclass(HeadConfig, cfg_dict, "config")
                    trainer = trainer_class(cfg, Path(cache_root), Path(exp), log=lambda _line: None)  # parent said it
                result = trainer.train_fold(fold, init_state=init_projections(Path(init)) if init else None,
                                            resume=resume)
            except Exception as err:  # reported by the parent; FvaError keeps its one line
                results.put(("error", fold, str(err) if isinstance(err, FvaError) else traceback.format_exc()))
                return
            results.put((fold, result, time.perf_counter() - start))
    finally:
        if trainer is not None:
            trainer.close()


def train_folds_in_workers(trainer, folds: list[int], init: Path | None, init_state: dict | None,
                           resume: bool, workers: int, log) -> dict[int, dict]:
    """``workers`` lanes take folds from one queue: this process (its ``trainer``, a
    :class:`fva.heads.trainer.FoldTrainer`, has the features already) and ``workers`` - 1 spawned processes
    (each building a trainer of the same class over the same caches), each with an equal share of torch's
    threads."""
    ctx = multiprocessing.get_context("spawn")
    workers = min(workers, len(folds))
    threads = max(1, torch.get_num_threads() // workers)
    tasks, results = ctx.Queue(), ctx.Queue()
    for f in folds:
        tasks.put(f)
    for _ in range(workers):
        tasks.put(None)  # one stop per lane
    args = (type(trainer), tasks, results, trainer.cfg.to_dict(), str(trainer.cache_root), str(trainer.exp),
            str(init) if init else None, resume, threads)
    children = [ctx.Process(target=_fold_worker, args=args, daemon=True) for _ in range(workers - 1)]
    for child in children:
        child.start()
    done: dict[int, dict] = {}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        while (fold := tasks.get()) is not None:
            start = time.perf_counter()
            done[fold] = trainer.train_fold(fold, init_state=init_state, resume=resume)
            log(fold_line(fold, done[fold], time.perf_counter() - start))
        while len(done) < len(folds):
            try:
                item = results.get(timeout=5)
            except queue.Empty:
                if not any(child.is_alive() for child in children) and results.empty():
                    raise FvaError("a fold worker process died without a result; train again with --workers 1 "
                                   "to see why") from None
                continue
            if item[0] == "error":
                raise FvaError(f"fold {item[1]} (in a worker process): {item[2].strip().splitlines()[-1]}")
            fold, result, seconds = item
            done[fold] = result
            log(fold_line(fold, result, seconds))
    finally:
        torch.set_num_threads(before)
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.terminate()
    return dict(sorted(done.items()))
