"""Train heads per identity-disjoint fold, select on the fold's dev EER, keep everything in an experiment folder.

Experiment folder::

    config.yaml        the resolved config (seed included): what later commands read
    experiment.json    fva version, format, cache root, dataset, features (encoders, dims, weights ids)
    fold<k>/checkpoint.pt   the selected model; rebuilds itself alone (sizes, config, state dict, classes,
                            EER threshold of its dev trials)
    fold<k>/last.pt         the latest epoch with optimiser state, for --resume
    fold<k>/train_log.jsonl one line per epoch: loss, dev EER per language, seconds
    fold<k>/dev_<Lang>.txt, dev_<Lang>_labels.txt, dev_scores_<Lang>.txt   trials, truth, distances
    fold<k>/metrics.json    selected epoch, dev EER heard / unheard
    metrics.json       per fold and mean dev EER, heard and unheard
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fva import __version__
from fva.atomic import atomic_path
from fva.data.folds import Folds, dev_trials, make_folds
from fva.data.mavceleb import media_key
from fva.data.splits import Split
from fva.data.trials import Trial, labels_path, write_labels, write_trials
from fva.errors import FvaError
from fva.evaluate.eer import compute_eer, eer_threshold
from fva.evaluate.scores import write_scores
from fva.heads.config import HeadConfig, ModelConfig, ScoreConfig, load_config
from fva.heads.features import ConcatRows, FeatureTable, epoch_order, make_rows, row_statistics, select_rows
from fva.heads.postprocess import polarise, refine
from fva.heads.systems import get_system
from fva.heads.systems.base import Batch, HeadSystem
from fva.layout import find_features_folder, folds_path, manifest_records

EXPERIMENT_FORMAT = 3  # 2: input standardisation buffers in each projection; 3: head systems
READABLE_FORMATS = (2, 3)  # a format-2 experiment is a fame2026 one (no system named)
RESUME_EVERY = 5  # epochs between resume points (last.pt holds the optimiser state too)
PRETRAIN_STREAM = 1_000_000  # seed stream of pretraining, apart from the folds (0, 1, ...)


@dataclass
class Modalities:
    voice: FeatureTable
    face: FeatureTable

    def close(self) -> None:
        self.voice.close()
        self.face.close()


def open_features(cfg: HeadConfig, folder: Path) -> Modalities:
    return Modalities(FeatureTable(folder, cfg.features.voice_encoders),
                      FeatureTable(folder, cfg.features.face_encoders))


def features_for_keys(table: FeatureTable, keys: list[str], by_key: dict[str, np.ndarray],
                      what: str) -> np.ndarray:
    """float32 (len(keys), dim): each key's row, or the mean of its frames for a face track."""
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise FvaError(f"{what}: no {table.modality} features for key {missing[0]!r} ({len(missing)} key(s) "
                       f"missing) in {table.folder}; extract them with 'fva extract'")
    flat = np.concatenate([by_key[k] for k in keys])
    rows = table.rows(flat)
    counts = np.array([len(by_key[k]) for k in keys])
    if (counts == 1).all():
        return rows
    sums = np.add.reduceat(rows, np.concatenate([[0], np.cumsum(counts)[:-1]]), axis=0)
    return sums / counts[:, None].astype(np.float32)  # stays float32 (an int64 divisor made float64)


def extras_for_keys(table: FeatureTable, keys: list[str], by_key: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-row scalars the encoders predicted (age, p_female), one per key: a face track's frames averaged."""
    return {name: np.array([float(np.mean(values[by_key[k]])) for k in keys]) for name, values in table.extras.items()}


def distinct_features(table: FeatureTable, keys: list[str], by_key: dict[str, np.ndarray],
                      what: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features of the distinct keys (first-seen order), per key of ``keys`` its row in them, and the
    distinct keys."""
    row = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return (features_for_keys(table, list(row), by_key, what), np.array([row[k] for k in keys], dtype=np.int64),
            list(row))


@dataclass
class TrialSet:
    """Trials with their features resolved: one voice and one (frame-averaged) face vector per distinct
    medium, and per trial the row of its voice and of its face (a dev voice clip is in six trials: each
    medium is embedded once per scoring)."""

    trials: list[Trial]
    voice: np.ndarray  # (distinct voices, dim)
    face: np.ndarray  # (distinct faces, dim)
    voice_of: np.ndarray  # (trials,) row of each trial's voice in ``voice``
    face_of: np.ndarray
    voice_extras: dict[str, np.ndarray]  # per distinct voice: the encoders' age, p_female (where predicted)
    face_extras: dict[str, np.ndarray]

    @classmethod
    def build(cls, trials: list[Trial], feats: Modalities, what: str,
              by_key: tuple[dict, dict] | None = None) -> "TrialSet":
        vk, fk = by_key or (feats.voice.rows_by_key(), feats.face.rows_by_key())
        voice, voice_of, voices = distinct_features(feats.voice, [media_key(t.voice) for t in trials], vk, what)
        face, face_of, faces = distinct_features(feats.face, [media_key(t.face) for t in trials], fk, what)
        return cls(trials, voice, face, voice_of, face_of, extras_for_keys(feats.voice, voices, vk),
                   extras_for_keys(feats.face, faces, fk))

    def distances(self, model: HeadSystem, post: ScoreConfig | None = None) -> np.ndarray:
        """The system's distance of each trial, post-processed as ``post`` says (refinement, then
        polarisation) when given."""
        if post is None or not (post.refine.enabled or post.polarise.enabled):
            return score_distances(model, self.voice, self.face, voice_of=self.voice_of, face_of=self.face_of)
        ev, ef = embed_rows(model, "voice", self.voice), embed_rows(model, "face", self.face)
        dist = pair_distances(model, ev, ef, self.voice_of, self.face_of)
        if post.refine.enabled:
            if ev.dim() != 2:
                raise FvaError(f"score.refine: the {model.name} system has no embedding per medium to cluster; "
                               "turn refinement off for it")
            dist = refine(dist, ev.numpy(), ef.numpy(), self.voice_of, self.face_of, post.refine)
        if post.polarise.enabled:
            for modality, extras in (("voice", self.voice_extras), ("face", self.face_extras)):
                if not {"age", "p_female"} <= set(extras):
                    raise FvaError(f"score.polarise needs the age and p_female that a {modality} age-gender "
                                   "encoder predicts; add one to the features or turn polarisation off")
            dist = polarise(dist, self.voice_extras["age"][self.voice_of], self.voice_extras["p_female"][self.voice_of],
                            self.face_extras["age"][self.face_of], self.face_extras["p_female"][self.face_of],
                            post.polarise)
        return dist


def build_model(voice_dim: int, face_dim: int, n_classes: int, cfg: ModelConfig) -> HeadSystem:
    """The configured head system (``cfg.system``) for these input sizes and identity count."""
    return get_system(cfg.system)(voice_dim, face_dim, n_classes, cfg)


@torch.inference_mode()
def embed_rows(model: HeadSystem, modality: str, x: np.ndarray, batch: int = 4096) -> torch.Tensor:
    """The system's representation of every row of ``x`` (eval mode), computed in batches."""
    model.eval()
    return torch.cat([model.embed(modality, torch.from_numpy(np.ascontiguousarray(x[lo:lo + batch])))
                      for lo in range(0, max(len(x), 1), batch)])


@torch.inference_mode()
def score_distances(model: HeadSystem, voice: np.ndarray, face: np.ndarray, batch: int = 4096,
                    voice_of: np.ndarray | None = None, face_of: np.ndarray | None = None) -> np.ndarray:
    """The system's distance (fame2026: 1 - cosine) of the voice and face of each trial, dropout off:
    trial i pairs ``voice[i]`` with ``face[i]``, or ``voice[voice_of[i]]`` with ``face[face_of[i]]`` when
    those are given (each medium is embedded once)."""
    ev, ef = embed_rows(model, "voice", voice, batch), embed_rows(model, "face", face, batch)
    return pair_distances(model, ev, ef, voice_of, face_of, batch)


@torch.inference_mode()
def pair_distances(model: HeadSystem, ev: torch.Tensor, ef: torch.Tensor, voice_of: np.ndarray | None,
                   face_of: np.ndarray | None, batch: int = 4096) -> np.ndarray:
    """float64 distances of trials given the media's representations and each trial's rows in them."""
    vi = torch.arange(len(ev)) if voice_of is None else torch.from_numpy(voice_of)
    fi = torch.arange(len(ef)) if face_of is None else torch.from_numpy(face_of)
    out = [model.pair_distances(ev[vi[lo:lo + batch]], ef[fi[lo:lo + batch]]) for lo in range(0, len(vi), batch)]
    return (torch.cat(out) if out else torch.zeros(0)).numpy().astype(np.float64)


def save_checkpoint(path: Path, model: HeadSystem, extra: dict) -> None:
    """Everything needed to rebuild the model alone (its system, sizes, model config and weights) and
    ``extra``; written under a temporary name, then renamed."""
    payload = {"format": EXPERIMENT_FORMAT, "fva_version": __version__, "system": model.name,
               "sizes": dict(model.sizes), "model_config": asdict(model.cfg), "state_dict": model.state_dict(),
               **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> tuple[HeadSystem, dict]:
    """Rebuild a head from its checkpoint file alone."""
    if not path.is_file():
        raise FvaError(f"{path}: checkpoint not found; train it with 'fva train-head'")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") not in READABLE_FORMATS:
        raise FvaError(f"{path}: written by fva {payload.get('fva_version', '?')} in checkpoint format "
                       f"{payload.get('format')}; this fva {__version__} reads format {EXPERIMENT_FORMAT}: "
                       "retrain it with this version")
    sizes = payload["sizes"]
    model = build_model(sizes["voice_dim"], sizes["face_dim"], sizes["n_classes"],
                        ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload


def read_experiment(exp: Path) -> tuple[HeadConfig, dict]:
    """The experiment's resolved config and description; another version's experiment is an error."""
    info_path = exp / "experiment.json"
    if not info_path.is_file():
        raise FvaError(f"{exp}: not an fva experiment (no experiment.json); train one with 'fva train-head'")
    info = json.loads(info_path.read_text())
    if info.get("format") not in READABLE_FORMATS:
        raise FvaError(f"{exp}: experiment written by fva {info.get('fva_version', '?')} (format "
                       f"{info.get('format')}); this fva {__version__} reads format {EXPERIMENT_FORMAT}: "
                       "retrain it with this version")
    return load_config(exp / "config.yaml"), info


class FoldTrainer:
    """Everything one training run over folds shares: features, records, folds, languages."""

    def __init__(self, cfg: HeadConfig, cache_root: Path, exp: Path) -> None:
        self.cfg, self.cache_root, self.exp = cfg, Path(cache_root), Path(exp)
        split = Split.parse(cfg.data.split)
        self.folder = find_features_folder(cache_root, cfg.data.dataset, "train", split.name)
        self.feats = open_features(cfg, self.folder)
        for table in (self.feats.voice, self.feats.face):  # read once for all folds when half the budget holds it
            table.preload(cfg.train.in_memory_limit_gb / 2)
        self.records = manifest_records(self.folder)
        self.by_key = (self.feats.voice.rows_by_key(), self.feats.face.rows_by_key())
        all_languages = sorted({r.language for r in self.records.values() if r.language})
        self.heard = [lang for lang in all_languages if lang != split.unheard]
        self.unheard = [lang for lang in all_languages if lang == split.unheard]
        if split.unheard and not self.unheard:
            raise FvaError(f"split {split.name}: the {cfg.data.dataset} features have no {split.unheard} "
                           f"records (languages: {', '.join(all_languages)})")
        self.folds = self._folds()
        self.pre: Modalities | None = None
        if cfg.data.pretrain_dataset:
            from fva.data.datasets import get_dataset

            pds = cfg.data.pretrain_dataset
            self.pre_folder = find_features_folder(cache_root, pds, get_dataset(pds).train_subsets[0], split.name)
            self.pre = open_features(cfg, self.pre_folder)
            for modality in ("voice", "face"):
                a, b = getattr(self.feats, modality), getattr(self.pre, modality)
                if a.dims != b.dims:
                    raise FvaError(f"{b.folder}: {modality} features {b.dims} differ from {a.folder}'s {a.dims}; "
                                   "pretrain on features of the same encoders")
            self.pre_records = manifest_records(self.pre_folder)
            self._pretrained: dict | None = None

    def pre_rows(self):
        """Training rows of the pretraining dataset (the split's language removed) and its identities."""
        unheard = self.unheard[0] if self.unheard else Split.parse(self.cfg.data.split).unheard
        ids = sorted({r.identity for r in self.pre_records.values() if r.identity})
        classes = {identity: i for i, identity in enumerate(ids)}
        limit = self.cfg.train.in_memory_limit_gb
        rows = [make_rows(getattr(self.pre, m), select_rows(getattr(self.pre, m), self.pre_records, set(ids),
                                                            unheard, classes), limit) for m in ("voice", "face")]
        return rows[0], rows[1], ids

    def pretrain(self) -> dict:
        """Train on the pretraining dataset alone (once per experiment); its projections start every fold."""
        if self._pretrained is not None:
            return self._pretrained
        out = self.exp / "pretrain"
        ckpt = out / "checkpoint.pt"
        if not ckpt.is_file():
            out.mkdir(parents=True, exist_ok=True)
            voice_rows, face_rows, ids = self.pre_rows()
            torch.manual_seed(self.cfg.seed)
            model = build_model(self.pre.voice.dim, self.pre.face.dim, len(ids), self.model_config("pretrain"))
            fit_input_norm(model, voice_rows, face_rows, [self.cfg.seed, PRETRAIN_STREAM])
            tc = self.cfg.train
            optimiser = make_optimiser(model, tc)
            with (out / "train_log.jsonl").open("w") as fh:
                for epoch in range(tc.pretrain_epochs):
                    loss = train_epoch(model, optimiser, voice_rows, face_rows, tc.batch_size, seed=[self.cfg.seed, PRETRAIN_STREAM],
                                       epoch=epoch, block_rows=tc.block_rows, buffer_blocks=tc.buffer_blocks,
                                       rows=tc.rows_per_epoch, pair_repeats=tc.pair_repeats)
                    fh.write(json.dumps({"epoch": epoch, "loss": loss}) + "\n")
            save_checkpoint(ckpt, model, {"classes": ids, "dataset": self.cfg.data.pretrain_dataset,
                                                    "epoch": tc.pretrain_epochs - 1})
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

    def describe(self) -> dict:
        return {"format": EXPERIMENT_FORMAT, "fva_version": __version__, "cache": str(self.cache_root.resolve()),
                "dataset": self.cfg.data.dataset, "train_features": str(self.folder),
                "heard": self.heard, "unheard": self.unheard, "folds": self.folds.k,
                "features": {"voice": {"encoders": self.feats.voice.encoders, "dims": self.feats.voice.dims,
                                       "weights_ids": self.feats.voice.weights_ids},
                             "face": {"encoders": self.feats.face.encoders, "dims": self.feats.face.dims,
                                      "weights_ids": self.feats.face.weights_ids}}}

    def dev_sets(self, fold: int) -> dict[str, tuple[TrialSet, dict[str, int]]]:
        """Per language: the fold's dev trials (as ``fva folds`` writes them) with features and truth."""
        records = list(self.records.values())
        languages = sorted({r.language for r in records if r.language})
        out = {}
        for li, language in enumerate(languages):
            trials, labels = dev_trials(records, self.folds.held_out(fold), language, seed=[self.folds.seed, fold, li])
            if trials:
                out[language] = (TrialSet.build(trials, self.feats, f"fold {fold} dev trials", self.by_key), labels)
        return out

    def train_fold(self, fold: int, init_state: dict | None = None, resume: bool = False,
                   log=print) -> dict:
        cfg, tc = self.cfg, self.cfg.train
        out = self.exp / f"fold{fold}"
        out.mkdir(parents=True, exist_ok=True)
        train_ids = self.folds.train_identities(fold)
        classes = {identity: i for i, identity in enumerate(train_ids)}
        unheard = self.unheard[0] if self.unheard else None
        voice_sel = select_rows(self.feats.voice, self.records, set(train_ids), unheard, classes)
        face_sel = select_rows(self.feats.face, self.records, set(train_ids), unheard, classes)
        if len(voice_sel.rows) == 0 or len(face_sel.rows) == 0:
            raise FvaError(f"fold {fold}: no training rows for the {cfg.data.split} split in {self.folder}")
        voice_rows = make_rows(self.feats.voice, voice_sel, tc.in_memory_limit_gb)
        face_rows = make_rows(self.feats.face, face_sel, tc.in_memory_limit_gb)
        if self.pre is not None and cfg.data.joint:  # VoxCeleb2 identities as extra classes, same batches
            pre_voice, pre_face, pre_ids = self.pre_rows()
            voice_rows = ConcatRows([voice_rows, pre_voice], [0, len(train_ids)])
            face_rows = ConcatRows([face_rows, pre_face], [0, len(train_ids)])
            classes.update({f"{cfg.data.pretrain_dataset}:{i}": len(train_ids) + n for n, i in enumerate(pre_ids)})
        dev = self.dev_sets(fold)
        torch.manual_seed(cfg.seed * 1000 + fold)
        model = build_model(self.feats.voice.dim, self.feats.face.dim, len(classes), self.model_config(fold))
        if init_state is None and self.pre is not None and not cfg.data.joint:
            init_state = self.pretrain()
        if init_state is not None:  # the projections with their input statistics
            model.load_projections(init_state)
        else:
            fit_input_norm(model, voice_rows, face_rows, [cfg.seed, fold])
        optimiser = make_optimiser(model, tc)
        state = {"epoch": 0, "best": math.inf, "best_epoch": -1, "stale": 0}
        last = out / "last.pt"
        if resume and last.is_file():
            saved = torch.load(last, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["model"])
            optimiser.load_state_dict(saved["optimiser"])
            state = saved["state"]
            torch.set_rng_state(saved["torch_rng"])
        log_path = out / "train_log.jsonl"
        if log_path.is_file():  # epochs after the resume point are trained again: drop their old lines
            kept = [line for line in log_path.read_text().splitlines()
                    if line.strip() and json.loads(line)["epoch"] < state["epoch"]]
            log_path.write_text("".join(line + "\n" for line in kept))
        extra = {"classes": list(classes), "fold": fold, "split": cfg.data.split, "heard": self.heard,
                 "unheard": self.unheard}
        while state["epoch"] < tc.epochs and state["stale"] < tc.patience:
            epoch = state["epoch"]
            start = time.perf_counter()
            loss = train_epoch(model, optimiser, voice_rows, face_rows, tc.batch_size,
                               seed=[cfg.seed, fold], epoch=epoch, block_rows=tc.block_rows,
                               buffer_blocks=tc.buffer_blocks, rows=tc.rows_per_epoch,
                               pair_repeats=tc.pair_repeats)
            dev_eer = {lang: compute_eer(np.array([labels[t.key] for t in ts.trials]), ts.distances(model))
                       for lang, (ts, labels) in dev.items()}
            selection = float(np.mean([dev_eer[lang] for lang in self.heard if lang in dev_eer]))
            state["epoch"] = epoch + 1
            if selection < state["best"]:
                state.update(best=selection, best_epoch=epoch, stale=0)
                save_checkpoint(out / "checkpoint.pt", model, {**extra, "epoch": epoch, "dev_eer": dev_eer})
            else:
                state["stale"] += 1
            entry = {"fold": fold, "epoch": epoch, "loss": loss, "dev_eer": dev_eer, "selection_eer": selection,
                     "seconds": round(time.perf_counter() - start, 4)}
            with log_path.open("a") as fh:
                fh.write(json.dumps(entry) + "\n")
            finished = state["epoch"] >= tc.epochs or state["stale"] >= tc.patience
            if finished or state["epoch"] % RESUME_EVERY == 0:
                with atomic_path(last) as tmp:
                    torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "state": state,
                                "torch_rng": torch.get_rng_state()}, tmp)
        return self.finish_fold(fold, dev)

    def finish_fold(self, fold: int, dev: dict) -> dict:
        """Score the dev trials with the selected model; write scores, truth, threshold and metrics."""
        out = self.exp / f"fold{fold}"
        model, payload = load_checkpoint(out / "checkpoint.pt")
        metrics = {"fold": fold, "epoch": payload["epoch"], "heard": {}, "unheard": {}}
        all_labels, all_dist = [], []
        for lang, (ts, labels) in dev.items():
            dist = ts.distances(model, self.cfg.score)
            path = out / f"dev_{lang}.txt"
            write_trials(path, ts.trials)
            write_labels(labels_path(path), labels)
            write_scores(out / f"dev_scores_{lang}.txt", {t.key: float(d) for t, d in zip(ts.trials, dist)})
            y = np.array([labels[t.key] for t in ts.trials])
            metrics["heard" if lang in self.heard else "unheard"][lang] = compute_eer(y, dist)
            if lang in self.heard:
                all_labels.append(y)
                all_dist.append(dist)
        threshold = eer_threshold(np.concatenate(all_labels), np.concatenate(all_dist))
        metrics["threshold"] = threshold
        payload["threshold"] = threshold
        with atomic_path(out / "checkpoint.pt") as tmp:
            torch.save(payload, tmp)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        return metrics


def make_optimiser(model: HeadSystem, tc) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (a frozen branch has none); fused: one pass per step, ~5x faster
    on the CPU than the default."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr,
                            weight_decay=tc.weight_decay, fused=True)


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


def prepare_experiment(exp: Path, force: bool, resume: bool) -> bool:
    """Checks only (deletes nothing): True when ``exp`` holds an experiment that --force will overwrite."""
    if exp.exists() and any(exp.iterdir()):
        if resume:
            read_experiment(exp)
            return False
        if not force:
            raise FvaError(f"{exp}: experiment folder exists; pass --force to overwrite it or --resume to continue it")
        return True
    return False


def fold_line(f: int, r: dict, seconds: float) -> str:
    return (f"fold {f}: epoch {r['epoch']} selected, dev EER heard " + ", ".join(f"{k} {v:.2f}%" for k, v in r["heard"].items())
            + ("; unheard " + ", ".join(f"{k} {v:.2f}%" for k, v in r["unheard"].items()) if r["unheard"] else "")
            + f" ({seconds:.1f} s)")


def _fold_worker(tasks, results, cfg_dict: dict, cache_root: str, exp: str, init: str | None, resume: bool,
                 threads: int) -> None:
    """A spawned worker of ``train_head(workers=N)``: trains the folds it takes from ``tasks`` (until None)
    with its own trainer over the same caches (features read once), and puts (fold, metrics, seconds) or
    ("error", fold, message) on ``results``."""
    import traceback

    from fva.heads.config import _build

    torch.set_num_threads(threads)
    trainer = None
    try:
        while (fold := tasks.get()) is not None:
            start = time.perf_counter()
            try:
                if trainer is None:
                    trainer = FoldTrainer(_build(HeadConfig, cfg_dict, "config"), Path(cache_root), Path(exp))
                result = trainer.train_fold(fold, init_state=init_projections(Path(init)) if init else None,
                                            resume=resume)
            except Exception as err:  # reported by the parent; FvaError keeps its one line
                results.put(("error", fold, str(err) if isinstance(err, FvaError) else traceback.format_exc()))
                return
            results.put((fold, result, time.perf_counter() - start))
    finally:
        if trainer is not None:
            trainer.close()


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
    if resume and (exp / "config.yaml").is_file():
        cfg = load_config(exp / "config.yaml")
    trainer = FoldTrainer(cfg, cache_root, exp)
    try:
        fold_list = list(range(trainer.folds.k)) if folds is None else folds
        for f in fold_list:
            trainer.folds.check_fold(f)
        if overwrite:  # only once the request is known to be valid: a user error deletes nothing
            shutil.rmtree(exp)
        exp.mkdir(parents=True, exist_ok=True)
        cfg.dump(exp / "config.yaml")
        (exp / "experiment.json").write_text(json.dumps(trainer.describe(), indent=1) + "\n")
        init_state = init_projections(init) if init else None
        results = {}
        todo = []
        for f in fold_list:
            done = exp / f"fold{f}" / "metrics.json"
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
    (exp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def train_folds_in_workers(trainer: FoldTrainer, folds: list[int], init: Path | None, init_state: dict | None,
                           resume: bool, workers: int, log) -> dict[int, dict]:
    """``workers`` lanes take folds from one queue: this process (its trainer has the features already) and
    ``workers`` - 1 spawned processes, each with an equal share of torch's threads."""
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("spawn")
    workers = min(workers, len(folds))
    threads = max(1, torch.get_num_threads() // workers)
    tasks, results = ctx.Queue(), ctx.Queue()
    for f in folds:
        tasks.put(f)
    for _ in range(workers):
        tasks.put(None)  # one stop per lane
    args = (tasks, results, trainer.cfg.to_dict(), str(trainer.cache_root), str(trainer.exp),
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


def summarise(results: dict[int, dict]) -> dict:
    """Per-fold dev EERs and their means, heard and unheard separately."""
    def mean(kind: str) -> dict[str, float]:
        langs = sorted({lang for r in results.values() for lang in r[kind]})
        return {lang: float(np.mean([r[kind][lang] for r in results.values() if lang in r[kind]])) for lang in langs}

    return {"folds": {str(f): r for f, r in sorted(results.items())}, "mean_heard": mean("heard"),
            "mean_unheard": mean("unheard")}


def init_projections(init: Path) -> dict:
    """Projection weights of a trained experiment (its fold 0, or its pretrain checkpoint)."""
    for candidate in (Path(init) / "pretrain" / "checkpoint.pt", Path(init) / "fold0" / "checkpoint.pt"):
        if candidate.is_file():
            model, _ = load_checkpoint(candidate)
            return model.projections_state()
    raise FvaError(f"{init}: no checkpoint to start from (looked for pretrain/ and fold0/); "
                   "pass --init a trained experiment")
