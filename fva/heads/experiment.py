"""Heads in an experiment folder: building a head system, its checkpoints (save, rebuild alone), and the
experiment's resolved config. The folder itself (layout, file names, description, metrics, folds, dev lists) is
:mod:`fva.experiment`'s; this module adds what needs torch and the head systems.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from fva import __version__
from fva.atomic import atomic_path
from fva.errors import FvaError
from fva.experiment import (CHECKPOINT_FILE, CONFIG_FILE, EXPERIMENT_FORMAT, READABLE_FORMATS, Experiment,
                            ExperimentInfo, fold_folder)
from fva.heads.config import HeadConfig, ModelConfig, load_config
from fva.heads.systems import get_system
from fva.heads.systems.base import HeadSystem


def build_model(voice_dim: int, face_dim: int, n_classes: int, cfg: ModelConfig) -> HeadSystem:
    """The configured head system (``cfg.system``) for these input sizes and identity count."""
    return get_system(cfg.system)(voice_dim, face_dim, n_classes, cfg)


def save_checkpoint(path: Path, model: HeadSystem, extra: dict) -> None:
    """Everything needed to rebuild the model alone (its system, sizes, model config and weights) and
    ``extra``; written under a temporary name, then renamed."""
    payload = {"format": EXPERIMENT_FORMAT, "fva_version": __version__, "system": model.name,
               "sizes": dict(model.sizes), "model_config": asdict(model.cfg), "state_dict": model.state_dict(),
               **extra}
    write_payload(path, payload)


def write_payload(path: Path, payload: dict) -> None:
    """Write a checkpoint's payload under a temporary name, then rename it into place."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> tuple[HeadSystem, dict]:
    """Rebuild a head from its checkpoint file alone; a missing, damaged or foreign file is one line."""
    if not path.is_file():
        raise FvaError(f"{path}: checkpoint not found; train it with 'fva train-head'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (a truncated or foreign file: torch raises many kinds)
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise FvaError(f"{path}: damaged checkpoint ({type(err).__name__}: {detail}); train the fold again "
                       "(fva train-head --resume retrains what is missing)") from None
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
        payload = payload if isinstance(payload, dict) else {}
        raise FvaError(f"{path}: written by fva {payload.get('fva_version', '?')} in checkpoint format "
                       f"{payload.get('format')}; this fva {__version__} reads format {EXPERIMENT_FORMAT}: "
                       "retrain it with this version")
    sizes = payload["sizes"]
    model = build_model(sizes["voice_dim"], sizes["face_dim"], sizes["n_classes"],
                        ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload


def read_experiment(exp: Path) -> tuple[HeadConfig, ExperimentInfo]:
    """The experiment's resolved config and description (:class:`fva.experiment.Experiment`); another
    version's or a damaged experiment is one line."""
    opened = Experiment.open(exp)
    return load_config(opened.config_path), opened.info


def write_experiment(exp: Path, cfg: HeadConfig, info: ExperimentInfo) -> None:
    """The resolved config and the description that :func:`read_experiment` reads back."""
    Experiment(Path(exp), info).write()
    cfg.dump(Path(exp) / CONFIG_FILE)


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


def fold_checkpoints(exp: Path) -> list[Path]:
    """Every trained fold's selected checkpoint, in fold order."""
    return [fold.checkpoint for fold in Experiment.open(exp).trained_folds()]


def init_projections(init: Path) -> dict:
    """Projection weights of a trained experiment (its fold 0, or its pretrain checkpoint)."""
    for candidate in (fold_folder(init, "pretrain") / CHECKPOINT_FILE, fold_folder(init, 0) / CHECKPOINT_FILE):
        if candidate.is_file():
            model, _ = load_checkpoint(candidate)
            return model.projections_state()
    raise FvaError(f"{init}: no checkpoint to start from (looked for pretrain/ and fold0/); "
                   "pass --init a trained experiment")


def check_same_weights(expected: dict[str, str], found: dict[str, str], where: str, expected_from: str,
                       fix: str) -> None:
    """FvaError (one line naming both identities) when an encoder's features in ``found`` come from other
    weights than ``expected`` says; identities missing on either side (old caches) are not compared."""
    for name, want in expected.items():
        got = found.get(name)
        if want and got and want != got:
            raise FvaError(f"{where}: {name} features come from weights {got}, but {expected_from} used weights "
                           f"{want}; {fix}")


def fold_line(f: int, r: dict, seconds: float) -> str:
    return (f"fold {f}: epoch {r['epoch']} selected, dev EER heard " + ", ".join(f"{k} {v:.2f}%" for k, v in r["heard"].items())
            + ("; unheard " + ", ".join(f"{k} {v:.2f}%" for k, v in r["unheard"].items()) if r["unheard"] else "")
            + ("; with same-gender impostors heard " + ", ".join(f"{k} {v:.2f}%" for k, v in r["same_gender"]["heard"].items())
               if r.get("same_gender", {}).get("heard") else "")
            + (f" (selected on {r['select_on']} impostors)" if r.get("select_on", "any") != "any" else "")
            + f" ({seconds:.1f} s)")
