"""What the encoder trainers share: the voice data pipeline (random crops), run options and speechbrain's
distributed data parallel, a ``Brain`` base class (learning-rate schedule per step, a JSON-lines training
log, end-of-epoch checkpoints for resuming, model export), and the resolved training config.

An output folder holds the exported model at its top level (what ``fva extract --weights`` loads), the
resumable training state under ``checkpoints/`` (speechbrain's ``Checkpointer``), ``train_config.json``,
``train_log.jsonl`` (one line per optimiser step and per epoch) and ``metrics.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from fva.atomic import write_text
from fva.errors import FvaError

if TYPE_CHECKING:  # annotations only: the CLI builds TrainOptions at start-up, and records imports numpy
    from fva.data.records import Manifest, MediaRecord

SAMPLE_RATE = 16000
SCHEDULES = ("cyclic", "exponential")


@dataclass
class TrainOptions:
    """Options every trainer takes; saved in ``train_config.json`` with the trainer's own."""

    out: str
    epochs: int = 10
    steps: int | None = None  # optimiser steps in all (overrides epochs)
    batch_size: int = 32
    lr: float = 0.001
    schedule: str = "cyclic"  # cyclic (speechbrain's VoxCeleb recipe) or exponential
    base_lr: float = 1e-8  # cyclic: the lowest rate
    step_size: int = 65000  # cyclic: optimiser steps per half cycle
    decay: float = 0.01  # exponential: the rate reached at the end is lr * decay
    weight_decay: float = 2e-6
    crop_seconds: float = 3.0
    workers: int = 2
    seed: int = 1986
    device: str | None = None
    ckpt_minutes: float = 15.0  # intra-epoch checkpoint interval (0: end of epoch only)
    progress: bool = True


def voice_records(manifest: Manifest, what: str) -> list[MediaRecord]:
    """The manifest's voice clips with an identity; an error naming ``what`` needs them when there are none."""
    records = [r for r in manifest.records if r.modality == "voice" and r.identity]
    if not records:
        raise FvaError(f"{manifest.dataset} {manifest.subset} split {manifest.split}: no voice clips left to "
                       f"train {what}; check --root, --split and --languages")
    return records


def crop_dataset(records: list[MediaRecord], root: Path, fields: Callable[[MediaRecord], dict],
                 crop_samples: int | None):
    """speechbrain ``DynamicItemDataset`` of ``sig`` (16 kHz audio, a random crop of ``crop_samples`` when
    longer; None: whole clips) plus the static ``fields`` of each record."""
    import torch
    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechbrain.utils.data_pipeline import provides, takes

    from fva.extract.media import MediaError, load_audio

    @takes("path")
    @provides("sig")
    def audio(path: str):
        try:
            wav = load_audio(path)
        except MediaError as err:
            raise FvaError(f"{path}: {err}; remove the clip from the data (or the manifest) and resume") from None
        if crop_samples is not None and len(wav) > crop_samples:
            start = int(torch.randint(0, len(wav) - crop_samples + 1, ()))
            wav = wav[start:start + crop_samples]
        return torch.from_numpy(wav)

    data = {r.key: {"path": str(root / r.path), **fields(r)} for r in records}
    keys = list(next(iter(data.values())))
    return DynamicItemDataset(data, dynamic_items=[audio], output_keys=["id", "sig", *keys])


def is_distributed_launch() -> bool:
    """Started by torchrun (speechbrain's test for a DDP launch)."""
    return os.environ.get("RANK") is not None and os.environ.get("LOCAL_RANK") is not None


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1)) if is_distributed_launch() else 1


def run_options(opts: TrainOptions, steps: int | None, find_unused: bool = False) -> dict:
    """speechbrain run options; under torchrun also joins the process group (gloo on the CPU, nccl on GPUs)."""
    import torch
    from speechbrain.utils.distributed import ddp_init_group

    from fva.extract.runner import default_device  # one rule for a process's device (cuda:LOCAL_RANK ...)

    device = default_device(opts.device)
    run_opts = {"device": device, "distributed_backend": "nccl" if device.startswith("cuda") else "gloo",
                "noprogressbar": not opts.progress, "ckpt_interval_minutes": opts.ckpt_minutes,
                "optimizer_step_limit": steps, "find_unused_parameters": find_unused}
    if is_distributed_launch() and not torch.distributed.is_initialized():
        ddp_init_group(run_opts)
    return run_opts


def seed_all(seed: int) -> None:
    """One seed for torch, numpy, random and speechbrain's samplers (the same on every DDP process, so the
    initial weights agree; the distributed sampler gives each process its own data)."""
    import random

    import numpy as np
    import torch

    os.environ["SB_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_schedule(opts: TrainOptions, total_steps: int):
    """speechbrain's cyclic schedule (as its VoxCeleb ECAPA recipe) or an exponential decay over the run."""
    from speechbrain.nnet.schedulers import CyclicLRScheduler, WarmAndExpDecayLRSchedule

    if opts.schedule == "cyclic":
        return CyclicLRScheduler(base_lr=opts.base_lr, max_lr=opts.lr, step_size=opts.step_size)
    if opts.schedule == "exponential":
        return WarmAndExpDecayLRSchedule(lr=opts.lr, n_warmup_steps=0, total_steps=max(total_steps, 1),
                                         decay_factor=opts.decay)
    raise FvaError(f"unknown schedule {opts.schedule!r}; choose one of {', '.join(SCHEDULES)}")


def plan_epochs(opts: TrainOptions, n_train: int) -> tuple[int, int]:
    """(epochs, total optimiser steps): ``--steps`` overrides ``--epochs``."""
    per_epoch = max(1, math.ceil(math.ceil(n_train / world_size()) / opts.batch_size))
    if opts.steps is not None:
        if opts.steps < 1:
            raise FvaError(f"--steps {opts.steps}: give a positive number of optimiser steps")
        return math.ceil(opts.steps / per_epoch), opts.steps
    if opts.epochs < 1:
        raise FvaError(f"--epochs {opts.epochs}: give a positive number of epochs")
    return opts.epochs, opts.epochs * per_epoch


def check_config(out: Path, config: dict) -> None:
    """Write ``train_config.json``, or check that a resumed run trains the same model on the same labels."""
    path = out / "train_config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("model") != config["model"]:
            changed = sorted(k for k in set(old.get("model", {})) | set(config["model"])
                             if old.get("model", {}).get(k) != config["model"].get(k))
            raise FvaError(f"{out}: holds a run of another model or label set ({', '.join(changed)} differ); "
                           "resume with the same options or pass another --out")
    from speechbrain.utils.distributed import if_main_process

    if if_main_process():
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, config)


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def read_metrics(out: Path) -> dict:
    """The last epoch's metrics of a training folder ({} before the first epoch ends)."""
    path = out / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def publish(out: Path, write: Callable[[Path], object]) -> None:
    """Export a model folder: ``write`` fills a temporary folder whose files then replace those in ``out``
    one by one (a reader sees either the old or the new file, never a partial one)."""
    tmp = out / ".export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    for path in sorted(tmp.iterdir()):
        path.replace(out / path.name)
    tmp.rmdir()


def brain_base():
    """speechbrain ``Brain`` with fva's conventions (defined lazily: speechbrain is a heavy import).

    Subclasses set ``self.out`` and implement ``compute_forward``/``compute_objectives``,
    ``epoch_metrics()`` and ``export(folder, metrics)``.
    """
    import speechbrain as sb
    from speechbrain.nnet.schedulers import CyclicLRScheduler
    from speechbrain.utils.distributed import if_main_process

    global _BrainBase
    if _BrainBase is not None:
        return _BrainBase

    class BrainBase(sb.core.Brain):
        out: Path
        has_valid = False

        def on_fit_start(self) -> None:
            super().on_fit_start()
            self._t0, self._steps0 = time.perf_counter(), self.optimizer_step
            self.train_loss = float("nan")

        def _wrap_distributed(self) -> None:
            if self.distributed_launch and self.device_type == "cpu":
                # speechbrain converts batch norms to SyncBatchNorm, which has no CPU kernel: on the CPU
                # use plain DDP (batch-norm statistics per process)
                from torch.nn.parallel import DistributedDataParallel as DDP

                for name, module in self.modules.items():
                    if any(p.requires_grad for p in module.parameters()):
                        self.modules[name] = DDP(module, find_unused_parameters=self.find_unused_parameters)
                return
            super()._wrap_distributed()

        def on_fit_batch_start(self, batch, should_step: bool) -> None:
            if should_step:  # the schedule sets the rate this step uses
                schedule = self.hparams.schedule
                if isinstance(schedule, CyclicLRScheduler):
                    schedule.on_batch_end(self.optimizer)
                else:
                    schedule(self.optimizer)

        def on_fit_batch_end(self, batch, outputs, loss, should_step: bool) -> None:
            if should_step and if_main_process():
                self.log({"step": self.optimizer_step, "loss": round(float(loss.detach()), 6),
                          "lr": self.optimizer.param_groups[0]["lr"],
                          "seconds": round(time.perf_counter() - self._t0, 3)})

        def log(self, entry: dict) -> None:
            with open(self.out / "train_log.jsonl", "a") as fh:
                fh.write(json.dumps(entry) + "\n")

        def on_stage_end(self, stage, stage_loss, epoch=None) -> None:
            if stage == sb.Stage.TRAIN:
                self.train_loss = float(stage_loss)
            if (stage == sb.Stage.TRAIN and not self.has_valid) or stage == sb.Stage.VALID:
                self.end_epoch(epoch)

        def end_epoch(self, epoch: int) -> None:
            """Checkpoint (for resuming), log and export after every epoch."""
            metrics = {"epoch": epoch, "steps": self.optimizer_step, "train_loss": round(self.train_loss, 6),
                       **self.epoch_metrics()}
            seconds = time.perf_counter() - self._t0
            if self.optimizer_step > self._steps0 and seconds > 0:
                metrics["steps_per_second"] = round((self.optimizer_step - self._steps0) / seconds, 4)
            self.checkpointer.save_and_keep_only(meta=metrics, num_to_keep=1)
            if if_main_process():
                self.log(metrics)
                publish(self.out, lambda folder: self.export(folder, metrics))
                write_json(self.out / "metrics.json", metrics)

        def epoch_metrics(self) -> dict:
            return {}

        def export(self, folder: Path, metrics: dict) -> None:
            raise NotImplementedError

    _BrainBase = BrainBase
    return BrainBase


_BrainBase = None


def make_brain(brain_class, modules: dict, hparams: dict, run_opts: dict, checkpointer, opts: TrainOptions,
               out: Path):
    """A trainer's ``Brain`` optimised by Adam (the options' rate and weight decay), exporting to ``out``."""
    import torch

    brain = brain_class(modules=modules, hparams=hparams, run_opts=run_opts, checkpointer=checkpointer,
                        opt_class=lambda params: torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay))
    brain.out = out
    return brain


def crop_samples(opts: TrainOptions) -> int:
    """Training crop length in samples."""
    return int(opts.crop_seconds * SAMPLE_RATE)


def fit(brain, train_set, valid_set, epochs: int, opts: TrainOptions):
    """Run ``brain.fit`` over an epoch counter that the checkpointer saves (so a rerun resumes)."""
    from speechbrain.utils.epoch_loop import EpochCounter

    counter = EpochCounter(epochs)
    brain.checkpointer.add_recoverable("counter", counter)
    loader = {"batch_size": opts.batch_size, "shuffle": True, "num_workers": opts.workers, "drop_last": False}
    valid = {"batch_size": opts.batch_size, "num_workers": opts.workers}
    brain.fit(counter, train_set, valid_set, train_loader_kwargs=loader, valid_loader_kwargs=valid,
              progressbar=opts.progress)
    return counter
