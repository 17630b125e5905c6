"""The experiment format: what ``fva train-head`` writes and every later command reads (scoring, verify,
plans, ``--init``, ``fva import-fop``), apart from the training loop that writes it.

Experiment folder::

    config.yaml        the resolved config (seed included): what later commands read
    experiment.json    fva version, format, cache root, dataset, weight set, features (encoders, dims, weights
                       ids), what it was pretrained on or initialised from (with their weights ids)
    fold<k>/checkpoint.pt   the selected model; rebuilds itself alone (sizes, config, state dict, classes,
                            EER threshold of its dev trials)
    fold<k>/last.pt         the latest epoch with optimiser state, for --resume
    fold<k>/train_log.jsonl one line per epoch: loss, dev EER per dev list, selection EER, seconds
    fold<k>/dev_<list>.txt, dev_<list>_labels.txt, dev_scores_<list>.txt   trials, truth, distances; a list
                            per language (impostors of any identity) and, where genders are known,
                            <Lang>-same-gender (impostors of the voice's gender): dev_list_name
    fold<k>/metrics.json    selected epoch, dev EER heard / unheard (any impostors), same_gender, select_on
    metrics.json       per fold and mean dev EER, heard and unheard (mean_same_gender where measured)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from fva import __version__
from fva.atomic import atomic_path, write_text
from fva.data.folds import NEGATIVES
from fva.errors import FvaError
from fva.heads.config import HeadConfig, ModelConfig, load_config
from fva.heads.systems import get_system
from fva.heads.systems.base import HeadSystem

EXPERIMENT_FORMAT = 3  # 2: input standardisation buffers in each projection; 3: head systems
READABLE_FORMATS = (2, 3)  # a format-2 experiment is a fame2026 one (no system named)
CONFIG_FILE = "config.yaml"
INFO_FILE = "experiment.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"


def dev_list_name(language: str, negatives: str) -> str:
    """A fold's dev list name (its files ``dev_<name>.txt``, ``dev_scores_<name>.txt``): the language for
    impostors of any identity, ``<language>-same-gender`` for impostors of the voice's gender.

    >>> dev_list_name("English", "any"), dev_list_name("English", "same-gender")
    ('English', 'English-same-gender')
    """
    return language if negatives == "any" else f"{language}-{negatives}"


def parse_dev_list_name(name: str) -> tuple[str, str]:
    """(language, negatives) of a dev list name (:func:`dev_list_name`)."""
    for negatives in NEGATIVES:
        if negatives != "any" and name.endswith(f"-{negatives}"):
            return name[: -len(negatives) - 1], negatives
    return name, "any"


def fold_folder(exp: Path, fold: int | str) -> Path:
    """``<exp>/fold<k>`` (``<exp>/pretrain`` for the pretraining run)."""
    return Path(exp) / ("pretrain" if fold == "pretrain" else f"fold{fold}")


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

def write_experiment(exp: Path, cfg: HeadConfig, info: dict) -> None:
    """The resolved config and the description that :func:`read_experiment` reads back."""
    cfg.dump(Path(exp) / CONFIG_FILE)
    write_json(Path(exp) / INFO_FILE, info)


def write_json(path: Path, data: dict) -> None:
    """An experiment's JSON files (description, metrics), indented one space."""
    write_text(path, json.dumps(data, indent=1) + "\n")


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
    found = sorted(Path(exp).glob(f"fold*/{CHECKPOINT_FILE}"), key=lambda p: int(p.parent.name[4:]))
    if not found:
        raise FvaError(f"{exp}: no trained fold (fold*/checkpoint.pt); train it with 'fva train-head'")
    return found


def init_projections(init: Path) -> dict:
    """Projection weights of a trained experiment (its fold 0, or its pretrain checkpoint)."""
    for candidate in (Path(init) / "pretrain" / "checkpoint.pt", Path(init) / "fold0" / "checkpoint.pt"):
        if candidate.is_file():
            model, _ = load_checkpoint(candidate)
            return model.projections_state()
    raise FvaError(f"{init}: no checkpoint to start from (looked for pretrain/ and fold0/); "
                   "pass --init a trained experiment")


def experiment_weights(info: dict) -> dict[str, str]:
    """encoder -> weights identity of every feature an experiment trained on (its ``experiment.json``)."""
    return {name: wid for modality in ("voice", "face")
            for name, wid in info.get("features", {}).get(modality, {}).get("weights_ids", {}).items()}


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
