"""Train heads per identity-disjoint fold, select on the fold's dev EER, keep everything in an experiment folder
(its layout and files: :mod:`fva.heads.experiment`).

:meth:`FoldTrainer.train_fold` is a short loop over named steps (the fold's rows, a fresh or initialised
model, the resume point, then per epoch: train, evaluate, select, log, resume point); the head system
(:class:`~fva.heads.systems.base.HeadSystem`) is the hook that defines the model and its loss.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fva.atomic import atomic_path
from fva.data.folds import NEGATIVES, Folds, dev_trials, identity_genders, make_folds
from fva.data.splits import Split
from fva.data.trials import write_labels, write_trials
from fva.errors import FvaError
from fva.evaluate.calibration import Calibration
from fva.evaluate.eer import compute_eer
from fva.evaluate.metrics import DEFAULT_OPERATING_POINTS, act_dcf, cllr, min_cllr, min_dcf
from fva.evaluate.scores import write_scores
from fva.heads.config import HeadConfig, ModelConfig, load_config
from fva.experiment import (CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE, METRICS_FILE, RESUME_FILE, DevList,
                            ExperimentInfo, ModalityFeatures, dev_list_name, fold_folder, parse_dev_list_name,
                            write_json)
from fva.heads.experiment import (build_model, check_same_weights, fold_line, init_projections, load_checkpoint,
                                  prepare_experiment, read_experiment, save_checkpoint, write_experiment,
                                  write_payload)
from fva.heads.features import ConcatRows, epoch_order, make_rows, row_statistics, select_rows
from fva.heads.parallel import train_folds_in_workers
from fva.heads.systems.base import Batch, HeadSystem
from fva.heads.trialset import Modalities, TrialSet, build_cohort, build_train_stats, open_features
from fva.layout import (FULL_SET, check_weight_set, features_folder, find_features_folder, folds_path,
                        manifest_records)

RESUME_EVERY = 5  # epochs between resume points (last.pt holds the optimiser state too)
PRETRAIN_STREAM = 1_000_000  # seed stream of pretraining, apart from the folds (0, 1, ...)


@dataclass
class FoldRun:
    """What one fold's training loop works on."""

    fold: int
    out: Path  # the fold's folder in the experiment
    classes: dict[str, int]  # identity -> class index (pretraining identities after the fold's, when joint)
    voice_rows: object  # InMemoryRows / StreamingRows / ConcatRows
    face_rows: object
    dev: dict  # dev list name (dev_list_name) -> (TrialSet, labels); empty for pretraining (no selection)
    epochs: int = 0  # how many epochs the loop trains at most
    stream: int | None = None  # the seed stream of its epochs' order (default: the fold number)

    @property
    def seed(self) -> int:
        return self.fold if self.stream is None else self.stream

    @property
    def log_path(self) -> Path:
        return self.out / LOG_FILE


class FoldTrainer:
    """Everything one training run over folds shares: features, records, folds, languages."""

    def __init__(self, cfg: HeadConfig, cache_root: Path, exp: Path, log=print) -> None:
        self.cfg, self.cache_root, self.exp = cfg, Path(cache_root), Path(exp)
        split = Split.parse(cfg.data.split)
        self.weight_set, fallback = choose_weight_set(cache_root, cfg.data.dataset, cfg.data.weight_set, split)
        if fallback:
            log(f"note: {fallback}")
        self.folder = find_features_folder(cache_root, cfg.data.dataset, "train", self.weight_set)
        self.feats = open_features(cfg, self.folder)
        for table in (self.feats.voice, self.feats.face):  # read once for all folds when half the budget holds it
            table.preload(cfg.train.in_memory_limit_gb / 2)
        self.records = manifest_records(self.folder)
        self.by_key = (self.feats.voice.rows_by_key(), self.feats.face.rows_by_key())
        all_languages = sorted({r.language for r in self.records.values() if r.language})
        self.heard = [lang for lang in all_languages if lang != split.unheard]
        self.unheard = [lang for lang in all_languages if lang == split.unheard]
        if split.unheard and not self.unheard:
            raise FvaError(f"split {split.name}: the {cfg.data.dataset} features in {self.folder} have no "
                           f"{split.unheard} records (languages: {', '.join(all_languages)}), which the unheard dev "
                           "EER needs; extract the weight set from the full manifest (every language)")
        self.folds = self._folds()
        self.negatives = self._dev_negatives()
        self.pre: Modalities | None = None
        if cfg.data.pretrain_dataset:
            from fva.data.datasets import get_dataset

            pds = cfg.data.pretrain_dataset
            self.pre_folder = find_features_folder(cache_root, pds, get_dataset(pds).train_subsets[0], self.weight_set)
            self.pre = open_features(cfg, self.pre_folder)
            for modality in ("voice", "face"):
                a, b = getattr(self.feats, modality), getattr(self.pre, modality)
                if a.dims != b.dims:
                    raise FvaError(f"{b.folder}: {modality} features {b.dims} differ from {a.folder}'s {a.dims}; "
                                   "pretrain on features of the same encoders")
                check_same_weights(a.weights_ids, b.weights_ids, str(b.folder), f"the {cfg.data.dataset} features "
                                   f"in {a.folder}", f"extract {pds} with the weights of weight set {self.weight_set}")
            self.pre_records = manifest_records(self.pre_folder)
            self._pretrained: dict | None = None

    def pre_rows(self):
        """Training rows of the pretraining dataset (the split's language removed) and its identities."""
        unheard = self.unheard[0] if self.unheard else Split.parse(self.cfg.data.split).unheard
        ids = sorted({r.identity for r in self.pre_records.values() if r.identity})
        classes = {identity: i for i, identity in enumerate(ids)}
        limit = self.cfg.train.in_memory_limit_gb
        tc = self.cfg.train
        rows = [make_rows(getattr(self.pre, m), select_rows(getattr(self.pre, m), self.pre_records, set(ids),
                                                            unheard, classes), limit, tc.block_rows, tc.buffer_blocks)
                for m in ("voice", "face")]
        return rows[0], rows[1], ids

    def pretrain(self) -> dict:
        """Train on the pretraining dataset alone (once per experiment); its projections start every fold."""
        if self._pretrained is not None:
            return self._pretrained
        out = fold_folder(self.exp, "pretrain")
        ckpt = out / CHECKPOINT_FILE
        if not ckpt.is_file():  # a fold of the one loop: its own rows and seed stream, no dev lists to select on
            out.mkdir(parents=True, exist_ok=True)
            voice_rows, face_rows, ids = self.pre_rows()
            run = FoldRun("pretrain", out, {i: n for n, i in enumerate(ids)}, voice_rows, face_rows, {},
                          epochs=self.cfg.train.pretrain_epochs, stream=PRETRAIN_STREAM)
            torch.manual_seed(self.cfg.seed)
            model = build_model(self.pre.voice.dim, self.pre.face.dim, len(ids), self.model_config("pretrain"))
            fit_input_norm(model, voice_rows, face_rows, [self.cfg.seed, PRETRAIN_STREAM])
            model.fit_inputs(voice_rows, face_rows, self.cfg.seed * 1000 + PRETRAIN_STREAM)
            run.voice_rows, run.face_rows = (model.training_rows("voice", voice_rows),
                                             model.training_rows("face", face_rows))
            run.log_path.write_text("")
            self.fit(run, model, make_optimiser(model, self.cfg.train), fresh_state())
            save_checkpoint(ckpt, model, {"classes": ids, "dataset": self.cfg.data.pretrain_dataset,
                                          "epoch": run.epochs - 1})
        model, _ = load_checkpoint(ckpt)
        self._pretrained = model.projections_state()
        return self._pretrained

    def _folds(self) -> Folds:
        path = Path(self.cfg.data.folds) if self.cfg.data.folds else folds_path(self.cache_root, self.cfg.data.dataset)
        if path.is_file():
            folds = Folds.load(path)
        else:
            identities = sorted({r.identity for r in self.records.values() if r.identity})
            folds = make_folds(identities, k=self.cfg.data.num_folds, seed=self.cfg.seed, dataset=self.cfg.data.dataset)
            path.parent.mkdir(parents=True, exist_ok=True)
            folds.save(path)
        return folds

    def _dev_negatives(self) -> tuple[str, ...]:
        """The kinds of dev impostors measured: ``any``, and ``same-gender`` when every training identity has a
        gender; the one selection reads must be among them (else one line, before anything is written)."""
        select_on = self.cfg.train.select_on
        if select_on not in NEGATIVES:
            raise FvaError(f"train.select_on: {select_on!r}; choose from {', '.join(NEGATIVES)}")
        identities = sorted({r.identity for r in self.records.values() if r.identity})
        try:
            identity_genders(list(self.records.values()), identities,
                             instead=f"select on any impostors (the features in {self.folder})")
        except FvaError as err:
            if select_on == "same-gender":
                raise FvaError(f"train.select_on same-gender: {err}") from None
            return ("any",)
        return NEGATIVES

    def fold_dev_trials(self, fold: int, negatives: str) -> dict[str, tuple[list, dict[str, int]]]:
        """Per language with any: the fold's dev trials and truth with impostors ``negatives``, as ``fva folds
        --negatives`` writes them (the same seed per fold and language)."""
        records = list(self.records.values())
        languages = sorted({r.language for r in records if r.language})
        out = {}
        for li, language in enumerate(languages):
            trials, labels = dev_trials(records, self.folds.held_out(fold), language,
                                        seed=[self.folds.seed, fold, li], negatives=negatives)
            if trials:
                out[language] = (trials, labels)
        return out

    def check_selection_trials(self, fold: int) -> None:
        """One line when the fold has no dev trials of the impostors selection reads (e.g. same-gender ones when
        its held-out identities are one of each gender), before anything is written."""
        select_on = self.cfg.train.select_on
        if any(lang in self.heard for lang in self.fold_dev_trials(fold, select_on)):
            return
        raise FvaError(f"fold {fold}: no heard dev trials with {select_on} impostors among its held-out identities "
                       f"({', '.join(self.folds.held_out(fold))}); use fewer folds (more identities each) or "
                       "select on any")

    def model_config(self, fold: int | str) -> ModelConfig:
        """The model config of one fold: ``{fold}`` and ``{exp_parent}`` (the folder holding this experiment)
        in the system's text options are filled in, so a dual-fop's frozen FOP can be the same fold's of a
        sibling experiment (``{exp_parent}/fop/fold{fold}/checkpoint.pt``) and never saw its dev identities."""
        params = {k: v.format(fold=fold, exp_parent=self.exp.parent) if isinstance(v, str) else v
                  for k, v in self.cfg.model.params.items()}
        return replace(self.cfg.model, params=params)

    def close(self) -> None:
        self.feats.close()
        if self.pre is not None:
            self.pre.close()

    def weights_ids(self) -> dict[str, str]:
        """encoder -> weights identity of the training features (both modalities)."""
        return {**self.feats.voice.weights_ids, **self.feats.face.weights_ids}

    def check_init(self, init: Path) -> ExperimentInfo:
        """The ``--init`` experiment's description, after checking it was trained on features of the same
        weights as this experiment's."""
        _, info = read_experiment(Path(init))
        check_same_weights(info.weights_ids, self.weights_ids(), str(self.folder), f"--init {init}",
                           "start from an experiment of the same weight set")
        return info

    def describe(self, init_info: ExperimentInfo | None = None, init: Path | None = None) -> ExperimentInfo:
        split = Split.parse(self.cfg.data.split)
        features = {m: ModalityFeatures(t.encoders, t.dims, t.weights_ids)
                    for m, t in (("voice", self.feats.voice), ("face", self.feats.face))}
        pretrain = None
        if self.pre is not None:
            pretrain = {"dataset": self.cfg.data.pretrain_dataset, "features": str(self.pre_folder),
                        "joint": self.cfg.data.joint}
        started = None
        if init is not None:
            started = {"exp": str(Path(init).resolve()), "pretrain": init_info.pretrained_on if init_info else None}
        return ExperimentInfo.new(
            cache=str(self.cache_root.resolve()), dataset=self.cfg.data.dataset, weight_set=self.weight_set,
            train_features=str(self.folder), heard=self.heard, unheard=self.unheard, folds=self.folds.k,
            voice=features["voice"], face=features["face"],
            encoders_unheard=encoders_unheard(self.weight_set, split, self.feats),
            fine_tuned=self.cfg.train.epochs > 0, pretrain=pretrain, init=started, score_level=self.cfg.score.level)

    def dev_sets(self, fold: int) -> dict[str, tuple[TrialSet, dict[str, int]]]:
        """Per language and kind of impostor (:func:`dev_list_name`): the fold's dev trials (as ``fva folds
        --negatives`` writes them) with features and truth."""
        return {dev_list_name(language, negatives): (
                    TrialSet.build(trials, self.feats, f"fold {fold} dev trials", self.by_key), labels)
                for negatives in self.negatives
                for language, (trials, labels) in self.fold_dev_trials(fold, negatives).items()}

    def train_fold(self, fold: int, init_state: dict | None = None, resume: bool = False,
                   log=print) -> dict:
        """Train one fold, keep the epoch with the best dev EER heard, then score its dev trials."""
        run = self.fold_run(fold)
        model = self.new_model(run, init_state)
        if model.closed_form:
            self.solve(run, model)
            return self.finish_fold(fold, run.dev)
        if self.cfg.train.epochs == 0:  # no fine-tuning: the starting point is the fold's model
            if init_state is None and self.pre is None:
                raise FvaError("train.epochs 0 keeps each fold's starting point: give data.pretrain_dataset "
                               "or --init an experiment to start from")
            dev_eer, selection = self.evaluate(run, model)
            self.select(run, model, fresh_state(), -1, dev_eer, selection)
            run.log_path.write_text(json.dumps({"fold": fold, "epoch": -1, "dev_eer": dev_eer,
                                                "selection_eer": selection, "fine_tuned": False}) + "\n")
            return self.finish_fold(fold, run.dev)
        optimiser = make_optimiser(model, self.cfg.train)
        self.fit(run, model, optimiser, self.resume_point(run, model, optimiser, resume))
        return self.finish_fold(fold, run.dev)

    def solve(self, run: "FoldRun", model: HeadSystem) -> None:
        """A closed-form system's run: each candidate of :meth:`HeadSystem.solutions` evaluated on the dev trials
        and kept when its selection EER is the best so far (the first best wins ties), one log line each."""
        state = fresh_state()
        run.log_path.write_text("")
        for step, setting in enumerate(model.solutions(run.voice_rows, run.face_rows)):
            start = time.perf_counter()
            dev_eer, selection = self.evaluate(run, model)
            self.select(run, model, state, step, dev_eer, selection, {"setting": setting})
            self.log_epoch(run, {"fold": run.fold, "epoch": step, "setting": setting, "dev_eer": dev_eer,
                                 "selection_eer": selection, "seconds": round(time.perf_counter() - start, 4)})
        if state["best_epoch"] < 0:
            raise FvaError(f"fold {run.fold}: {model.name} gave no candidate solution; check model.params")

    def fit(self, run: "FoldRun", model: HeadSystem, optimiser: torch.optim.Optimizer, state: dict) -> None:
        """The one epoch loop of every run (each fold, and pretraining): train; where the run has dev lists,
        evaluate and keep the best epoch (:meth:`select`), log, and leave a resume point; else log the loss."""
        while not self.finished(state, run.epochs):
            start = time.perf_counter()
            epoch = state["epoch"]
            set_learning_rate(optimiser, self.cfg.train, epoch, run.epochs)
            loss = self.train_one_epoch(run, model, optimiser, epoch)
            if not run.dev:
                state["epoch"] = epoch + 1
                self.log_epoch(run, {"epoch": epoch, "loss": loss})
                continue
            dev_eer, selection = self.evaluate(run, model)
            self.select(run, model, state, epoch, dev_eer, selection)
            self.log_epoch(run, {"fold": run.fold, "epoch": epoch, "loss": loss, "dev_eer": dev_eer,
                                 "selection_eer": selection, "seconds": round(time.perf_counter() - start, 4)})
            self.save_resume_point(run, model, optimiser, state)

    def fold_run(self, fold: int) -> "FoldRun":
        """The fold's training rows (with the pretraining dataset's when joint), classes and dev trial sets."""
        cfg, tc = self.cfg, self.cfg.train
        out = fold_folder(self.exp, fold)
        out.mkdir(parents=True, exist_ok=True)
        train_ids = self.folds.train_identities(fold)
        classes = {identity: i for i, identity in enumerate(train_ids)}
        unheard = self.unheard[0] if self.unheard else None
        voice_sel = select_rows(self.feats.voice, self.records, set(train_ids), unheard, classes)
        face_sel = select_rows(self.feats.face, self.records, set(train_ids), unheard, classes)
        if len(voice_sel.rows) == 0 or len(face_sel.rows) == 0:
            raise FvaError(f"fold {fold}: no training rows for the {cfg.data.split} split in {self.folder}")
        voice_rows = make_rows(self.feats.voice, voice_sel, tc.in_memory_limit_gb, tc.block_rows, tc.buffer_blocks)
        face_rows = make_rows(self.feats.face, face_sel, tc.in_memory_limit_gb, tc.block_rows, tc.buffer_blocks)
        if self.pre is not None and cfg.data.joint:  # VoxCeleb2 identities as extra classes, same batches
            pre_voice, pre_face, pre_ids = self.pre_rows()
            voice_rows = ConcatRows([voice_rows, pre_voice], [0, len(train_ids)])
            face_rows = ConcatRows([face_rows, pre_face], [0, len(train_ids)])
            classes.update({f"{cfg.data.pretrain_dataset}:{i}": len(train_ids) + n for n, i in enumerate(pre_ids)})
        return FoldRun(fold, out, classes, voice_rows, face_rows, self.dev_sets(fold), epochs=tc.epochs)

    def new_model(self, run: "FoldRun", init_state: dict | None) -> HeadSystem:
        """The fold's model, seeded: its projections from ``init_state`` or the pretrained heads, else input
        statistics fitted on its training rows."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed * 1000 + run.fold)
        model = build_model(self.feats.voice.dim, self.feats.face.dim, len(run.classes), self.model_config(run.fold))
        if init_state is None and self.pre is not None and not cfg.data.joint:
            init_state = self.pretrain()
        if init_state is not None:  # the projections with their input statistics
            model.load_projections(init_state)
        else:
            fit_input_norm(model, run.voice_rows, run.face_rows, [cfg.seed, run.fold])
            model.fit_inputs(run.voice_rows, run.face_rows, cfg.seed * 1000 + run.fold)
        run.voice_rows = model.training_rows("voice", run.voice_rows)
        run.face_rows = model.training_rows("face", run.face_rows)
        return model

    def resume_point(self, run: "FoldRun", model: HeadSystem, optimiser: torch.optim.Optimizer,
                     resume: bool) -> dict:
        """The selection state to start from: the last resume point's (model, optimiser and torch RNG
        restored) with ``resume``, else a fresh one; the log keeps only the epochs before it."""
        state = fresh_state()
        last = run.out / RESUME_FILE
        if resume and last.is_file():
            saved = torch.load(last, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["model"])
            optimiser.load_state_dict(saved["optimiser"])
            state = saved["state"]
            torch.set_rng_state(saved["torch_rng"])
        if run.log_path.is_file():  # epochs after the resume point are trained again: drop their old lines
            kept = [line for line in run.log_path.read_text().splitlines()
                    if line.strip() and json.loads(line)["epoch"] < state["epoch"]]
            run.log_path.write_text("".join(line + "\n" for line in kept))
        return state

    def finished(self, state: dict, epochs: int) -> bool:
        """All ``epochs`` done, or ``patience`` epochs without a better dev EER."""
        return state["epoch"] >= epochs or state["stale"] >= self.cfg.train.patience

    def train_one_epoch(self, run: "FoldRun", model: HeadSystem, optimiser: torch.optim.Optimizer,
                        epoch: int) -> float:
        tc = self.cfg.train
        return train_epoch(model, optimiser, run.voice_rows, run.face_rows, tc.batch_size,
                           seed=[self.cfg.seed, run.seed], epoch=epoch, block_rows=tc.block_rows,
                           buffer_blocks=tc.buffer_blocks, rows=tc.rows_per_epoch, pair_repeats=tc.pair_repeats)

    def evaluate(self, run: "FoldRun", model: HeadSystem) -> tuple[dict[str, float], float]:
        """Dev EER per dev list (raw distances) and the selection EER: the mean over the heard languages' lists
        of the impostors ``train.select_on`` names."""
        dev_eer = {name: compute_eer(np.array([labels[t.key] for t in ts.trials]), ts.distances(model))
                   for name, (ts, labels) in run.dev.items()}
        chosen = [dev_list_name(lang, self.cfg.train.select_on) for lang in self.heard]
        return dev_eer, float(np.mean([dev_eer[name] for name in chosen if name in dev_eer]))

    def select(self, run: "FoldRun", model: HeadSystem, state: dict, epoch: int, dev_eer: dict[str, float],
               selection: float, extra: dict | None = None) -> None:
        """Keep this epoch's model as the fold's checkpoint (with ``extra`` in its payload) when its selection
        EER is the best so far."""
        state["epoch"] = epoch + 1
        if selection < state["best"]:
            state.update(best=selection, best_epoch=epoch, stale=0)
            save_checkpoint(run.out / CHECKPOINT_FILE, model,
                            {"classes": list(run.classes), "fold": run.fold, "split": self.cfg.data.split,
                             "heard": self.heard, "unheard": self.unheard, "epoch": epoch, "dev_eer": dev_eer,
                             **(extra or {})})
        else:
            state["stale"] += 1

    def log_epoch(self, run: "FoldRun", entry: dict) -> None:
        with run.log_path.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def save_resume_point(self, run: "FoldRun", model: HeadSystem, optimiser: torch.optim.Optimizer,
                          state: dict) -> None:
        """Every RESUME_EVERY epochs and at the end: model, optimiser, selection state and torch RNG."""
        if self.finished(state, run.epochs) or state["epoch"] % RESUME_EVERY == 0:
            with atomic_path(run.out / RESUME_FILE) as tmp:
                torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "state": state,
                            "torch_rng": torch.get_rng_state()}, tmp)

    def finish_fold(self, fold: int, dev: dict) -> dict:
        """Score the dev trials with the selected model, calibrate on the heard ones, write both into the fold:
        :meth:`score_dev_lists` then :meth:`calibrate`, the checkpoint's payload and ``metrics.json`` last."""
        out = fold_folder(self.exp, fold)
        model, payload = load_checkpoint(out / CHECKPOINT_FILE)
        cohort = None
        if self.cfg.score.snorm.enabled:  # S-norm's cohort: the fold's training identities, kept in its checkpoint
            cohort = build_cohort(model, self.feats, self.records, self.folds.train_identities(fold),
                                  self.unheard[0] if self.unheard else None, self.cfg.score.snorm, fold)
            payload["cohort"] = cohort.payload()
        stats = None
        post = self.cfg.score
        if post.centre != "none" or post.znorm.enabled or post.cluster.enabled:
            stats = build_train_stats(model, self.feats, self.records, self.folds.train_identities(fold),
                                      self.unheard[0] if self.unheard else None, post, fold, cohort)
            payload["train_stats"] = stats.payload()
        metrics = {"fold": fold, "epoch": payload["epoch"], "heard": {}, "unheard": {},
                   "select_on": self.cfg.train.select_on}
        if "setting" in payload:  # a closed-form system's selected grid point
            metrics["setting"] = payload["setting"]
        heard_y, heard_d = self.score_dev_lists(out, model, dev, cohort, metrics, stats)
        metrics["score_level"] = post.level
        self.calibrate(heard_y, heard_d, metrics, payload)
        write_payload(out / CHECKPOINT_FILE, payload)
        write_json(out / METRICS_FILE, metrics)
        return metrics

    def score_dev_lists(self, out: Path, model: HeadSystem, dev: dict, cohort, metrics: dict, stats=None,
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Write each dev list's trials, truth and distances (:class:`~fva.experiment.DevList`), put its EER in
        ``metrics`` (heard / unheard; ``same_gender`` for the same-gender lists); returns the labels and
        distances of the heard lists with impostors of any identity."""
        if "same-gender" in self.negatives:
            metrics["same_gender"] = {"heard": {}, "unheard": {}}
        all_labels, all_dist = [], []
        for name, (ts, labels) in dev.items():
            lang, negatives = parse_dev_list_name(name)
            dist = ts.distances(model, self.cfg.score, cohort, stats)
            files = DevList(out, name)
            write_trials(files.trials_path, ts.trials)
            write_labels(files.labels_path, labels)
            write_scores(files.scores_path, {t.key: float(d) for t, d in zip(ts.trials, dist)})
            y = np.array([labels[t.key] for t in ts.trials])
            kind = "heard" if lang in self.heard else "unheard"
            (metrics if negatives == "any" else metrics["same_gender"])[kind][lang] = compute_eer(y, dist)
            if negatives == "any" and lang in self.heard:
                all_labels.append(y)
                all_dist.append(dist)
        return np.concatenate(all_labels), np.concatenate(all_dist)

    @staticmethod
    def calibrate(heard_y: np.ndarray, heard_d: np.ndarray, metrics: dict, payload: dict) -> None:
        """Fit the fold's calibration (:class:`~fva.evaluate.calibration.Calibration`) on its heard dev trials,
        the ones the EER threshold is taken on; keep map and threshold in the checkpoint's payload. Its Cllr and
        actDCF in ``metrics`` are measured on those same trials, so they show the affine map's fit (an
        optimistic figure), beside the calibration-free min Cllr and minDCF."""
        calibration = Calibration.fit(heard_y, heard_d)  # logistic distance -> LLR on the heard dev trials
        threshold = calibration.eer_threshold  # eer_threshold() of the same trials
        metrics["threshold"] = threshold
        payload["threshold"] = threshold
        payload["calibration"] = calibration.to_dict()  # plain floats: weights_only loading still works
        llr = calibration.llr(heard_d)
        metrics["calibration"] = {**calibration.summary(), "cllr": cllr(heard_y, llr),
                                  "min_cllr": min_cllr(heard_y, heard_d),
                                  "min_dcf": {p.name: min_dcf(heard_y, heard_d, p) for p in DEFAULT_OPERATING_POINTS},
                                  "act_dcf": {p.name: act_dcf(heard_y, llr, p) for p in DEFAULT_OPERATING_POINTS}}


def fresh_state() -> dict:
    """The selection state a run starts from: epoch 0, no best dev EER yet, no epochs without improvement."""
    return {"epoch": 0, "best": math.inf, "best_epoch": -1, "stale": 0}


def choose_weight_set(cache_root: Path, dataset: str, wanted: str, split: Split) -> tuple[str, str]:
    """The weight set to train on and, when it is not the one the split asks for, a note saying so.

    A named set (``data.weight_set``) is used as it is. Otherwise the split's own set (``train-<split>``) when it
    was extracted, else the full set: for an unheard split that means encoders that heard its language, which
    the note says (and the experiment records, see :func:`encoders_unheard`)."""
    if wanted:
        return check_weight_set(wanted), ""
    if split.unheard is None or features_folder(cache_root, dataset, "train", split.name).is_dir():
        return split.name, ""
    if not features_folder(cache_root, dataset, "train", FULL_SET).is_dir():
        return split.name, ""  # find_features_folder reports what is missing
    return FULL_SET, (f"no {dataset} features of encoders trained without {split.unheard} (weight set "
                      f"{split.name}); training {split.name} on weight set {FULL_SET}, whose encoders heard "
                      f"{split.unheard}")


def encoders_unheard(weight_set: str, split: Split, feats) -> str | None:
    """The language the voice encoders of the training features never heard, as far as fva can tell: the
    split's unheard language when the features come from that split's own weight set and no voice encoder is
    the public speaker model (its hub id or the digest of its weights: it heard every VoxCeleb language);
    else None."""
    from fva.extract.weights import SPEAKER_HUB_ID, SPEAKER_PUBLIC_DIGEST

    if split.unheard is None or weight_set != split.name:
        return None
    public = any(wid.partition("@")[0] == SPEAKER_HUB_ID or wid.partition("@")[2] == SPEAKER_PUBLIC_DIGEST
                 for wid in feats.voice.weights_ids.values())
    return None if public else split.unheard


OPTIMISERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}  # train.optimiser


def make_optimiser(model: HeadSystem, tc) -> torch.optim.Optimizer:
    """``train.optimiser`` (Adam, or AdamW's decoupled weight decay) over the trainable parameters (a frozen
    branch has none); fused: one pass per step, ~5x faster on the CPU than the default."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise FvaError(f"the {model.name} head has no trainable parameters; train it with its own method")
    return OPTIMISERS[tc.optimiser](params, lr=tc.lr, weight_decay=tc.weight_decay, fused=True)


def learning_rate(tc, epoch: int, epochs: int) -> float:
    """The learning rate of ``epoch`` (from 0) of ``epochs``: ``train.lr``, times (epoch + 1) / warmup_epochs
    during the warm-up, times 0.5 (1 + cos(pi e / E)) after it under the cosine schedule (e, E: epochs after
    the warm-up; torch's CosineAnnealingLR stepped once per epoch, down to 0). A function of the epoch alone,
    so a resumed run continues the same curve.

    >>> from fva.heads.config import TrainConfig
    >>> [round(learning_rate(TrainConfig(lr=1.0, schedule="cosine"), e, 4), 3) for e in range(4)]
    [1.0, 0.854, 0.5, 0.146]
    """
    if epoch < tc.warmup_epochs:
        return tc.lr * (epoch + 1) / tc.warmup_epochs
    if tc.schedule == "cosine":
        span = max(epochs - tc.warmup_epochs, 1)
        return tc.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - tc.warmup_epochs) / span))
    return tc.lr


def set_learning_rate(optimiser: torch.optim.Optimizer, tc, epoch: int, epochs: int) -> None:
    lr = learning_rate(tc, epoch, epochs)
    for group in optimiser.param_groups:
        group["lr"] = lr


def fit_input_norm(model: HeadSystem, voice_rows, face_rows, seed: list[int]) -> None:
    """With ``input_norm`` on, set each projection's input statistics from its training rows."""
    if model.cfg.input_norm:
        norms = model.input_norms()
        for modality, rows, stream in (("voice", voice_rows, 0), ("face", face_rows, 1)):
            if modality in norms:
                norms[modality].fit(*row_statistics(rows, seed=[*seed, stream]))


def paired_faces(voice_labels: np.ndarray, face_labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each voice row, a face position of the same identity drawn uniformly (another sample, usually
    of another video: faces and voices re-paired across scenes); -1 where the identity has no face."""
    order = np.argsort(face_labels, kind="stable")
    labels = face_labels[order]
    lo = np.searchsorted(labels, voice_labels, side="left")
    count = np.searchsorted(labels, voice_labels, side="right") - lo
    pick = lo + (rng.random(len(voice_labels)) * np.maximum(count, 1)).astype(np.int64)
    return np.where(count > 0, order[np.minimum(pick, len(order) - 1)], -1)


def train_epoch(model: HeadSystem, optimiser: torch.optim.Optimizer, voice_rows, face_rows, batch_size: int,
                seed: list[int], epoch: int, block_rows: int, buffer_blocks: int, rows: int = 0,
                pair_repeats: int = 1) -> float:
    """One epoch: as many steps as voice batches. ``independent`` systems draw faces from their own
    block-shuffled order; ``paired`` systems get, for each voice, a face of the same identity, and pass over
    the voices ``pair_repeats`` times (each time re-paired)."""
    model.train()
    paired = model.pairing == "paired"
    voice_order = np.concatenate([
        epoch_order(len(voice_rows), seed=[*seed, 0], epoch=epoch * pair_repeats + r if paired else epoch,
                    block_rows=block_rows, buffer_blocks=buffer_blocks, rows=rows)
        for r in range(pair_repeats if paired else 1)])
    if paired:
        face_order = paired_faces(voice_rows.labels[voice_order], face_rows.labels,
                                  np.random.default_rng([*seed, 1, epoch]))
        voice_order, face_order = voice_order[face_order >= 0], face_order[face_order >= 0]
        if len(voice_order) == 0:
            raise FvaError("no identity has both voice and face training rows: a paired system cannot train")
    steps = max(1, math.ceil(len(voice_order) / batch_size))
    if not paired:
        face_order = epoch_order(len(face_rows), seed=[*seed, 1], epoch=epoch, block_rows=block_rows,
                                 buffer_blocks=buffer_blocks, rows=rows)
        if len(face_order) < steps * batch_size:  # cycle faces when they are fewer than voices
            face_order = np.resize(face_order, steps * batch_size)
    total, done = 0.0, 0
    for step in range(steps):
        part = slice(step * batch_size, (step + 1) * batch_size)
        if paired and step and len(voice_order[part]) < 2:  # a lone last pair: no pairs, breaks batch norm
            continue
        xv, yv = voice_rows.batch(voice_order[part])
        xf, yf = face_rows.batch(face_order[part])
        loss = model.loss(Batch(torch.from_numpy(xv), torch.from_numpy(yv), torch.from_numpy(xf),
                                torch.from_numpy(yf)))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += loss.item()
        done += 1
    return total / done


def train_head(cfg: HeadConfig, cache_root: Path, exp: Path, folds: list[int] | None = None, *,
               init: Path | None = None, resume: bool = False, force: bool = False, workers: int = 1,
               log=print) -> dict:
    """Train the configured head on each requested fold (None: all); returns the experiment's metrics.

    ``workers`` > 1 trains that many folds at once, in this process and ``workers`` - 1 spawned ones, each
    with an equal share of torch's threads: on a few cores, small heads use them better than one fold's
    matrix products on all threads.
    A fold's numbers then come from fewer threads, so they can differ in the last bits from a run with
    another ``workers``; the same ``workers`` and seed give the same numbers."""
    exp = Path(exp)
    overwrite = prepare_experiment(exp, force, resume)
    if resume and (exp / CONFIG_FILE).is_file():
        cfg = load_config(exp / CONFIG_FILE)
    trainer = FoldTrainer(cfg, cache_root, exp, log=log)
    try:
        fold_list = list(range(trainer.folds.k)) if folds is None else folds
        for f in fold_list:
            trainer.folds.check_fold(f)
            trainer.check_selection_trials(f)
        init_info = trainer.check_init(init) if init else None
        if overwrite:  # only once the request is known to be valid: a user error deletes nothing
            shutil.rmtree(exp)
        exp.mkdir(parents=True, exist_ok=True)
        write_experiment(exp, cfg, trainer.describe(init_info, init))
        init_state = init_projections(init) if init else None
        results = {}
        todo = []
        for f in fold_list:
            done = fold_folder(exp, f) / METRICS_FILE
            if resume and done.is_file():
                results[f] = json.loads(done.read_text())
                log(f"fold {f}: already trained (resume)")
            else:
                todo.append(f)
        if workers > 1 and len(todo) > 1:
            if trainer.pre is not None and not cfg.data.joint and init_state is None:
                trainer.pretrain()  # once, before the workers read it
            results.update(train_folds_in_workers(trainer, todo, init, init_state, resume, workers, log))
        else:
            for f in todo:
                start = time.perf_counter()
                results[f] = trainer.train_fold(f, init_state=init_state, resume=resume)
                log(fold_line(f, results[f], time.perf_counter() - start))
    finally:
        trainer.close()
    metrics = summarise(results)
    write_json(exp / METRICS_FILE, metrics)
    return metrics


def summarise(results: dict[int, dict]) -> dict:
    """Per-fold dev EERs and their means, heard and unheard separately; with same-gender impostors too
    (``mean_same_gender``) where the folds measured them."""
    def mean(parts: list[dict], kind: str) -> dict[str, float]:
        langs = sorted({lang for p in parts for lang in p[kind]})
        return {lang: float(np.mean([p[kind][lang] for p in parts if lang in p[kind]])) for lang in langs}

    folds = list(results.values())
    out = {"folds": {str(f): r for f, r in sorted(results.items())}, "mean_heard": mean(folds, "heard"),
           "mean_unheard": mean(folds, "unheard")}
    same = [r["same_gender"] for r in folds if "same_gender" in r]
    if same:
        out["mean_same_gender"] = {kind: mean(same, kind) for kind in ("heard", "unheard")}
    return out
