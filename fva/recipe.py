"""What the FAME 2026 recipe (``recipes/fame2026/run.sh``) needs from Python: its YAML config (paths, devices,
per-stage options; an unknown key is an error) as shell variables, the published per-scenario selection as a
submission plan, and the table of dev EERs per stage and scenario.

The recipe's folders under ``work``::

    lid/vox2_lang.tsv                 stage 1: VoxCeleb2 language labels (per-video vote; clips beside it)
    models/speaker-ecapa-<set>/       stage 2: speaker ECAPA trained without a language (set = its split)
    models/voice-age-gender-<set>/    stage 3: voice age-gender ECAPA on CommonVoice, per set
    manifests/, folds/                stage 4
    cache/                            stage 5: features per weight set (fva.layout)
    exp/pretrain-<set>/               stage 6: heads pretrained on VoxCeleb2, evaluated on the folds' dev trials
    exp/finetune-<set>/               stage 7: the same heads fine-tuned per fold on MAV-Celeb
    plan.yaml, submission.zip         stage 8
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

from fva.errors import FvaError
from fva.heads.typed import build_dataclass
from fva.yamlio import read_yaml_mapping

SETS = ("full", "english-unheard", "german-unheard")  # the weight sets of MAV-Celeb V3 (English/German)


@dataclass
class DataPaths:
    mavceleb: str = ""  # MAV-Celeb V3 root (voices/, faces/, <Lang>_test/)
    mavceleb_lists: str = ""  # its list files (default: the root, else face_voice_association_splits/v3/ under it)
    voxceleb2: str = ""  # VoxCeleb2 root (dev/aac, dev/mp4)
    commonvoice: str = ""  # CommonVoice root (<locale>/validated.tsv, <locale>/clips/)
    commonvoice_languages: str = "en,de,da,nl,es,fr,it"
    noise: str = ""  # speaker training: folder of noise clips (e.g. MUSAN noise); empty: none
    reverb: str = ""  # speaker training: folder of room impulse responses; empty: none


@dataclass
class Weights:
    """Local copies of the published weights; empty: fetched from the published source in stage 0."""

    speaker_ecapa: str = ""
    vggface: str = ""
    vit_age_gender: str = ""
    lid: str = ""


@dataclass
class Devices:
    device: str = ""  # torch device for extraction, LID and head training; empty: cuda when available
    nproc: int = 1  # processes per encoder training and extraction (torchrun --nproc-per-node when > 1)
    workers: int = 4  # media decoding processes per extraction process


@dataclass
class Stages:
    """Extra command-line options per stage (a string each), e.g. ``speaker: --epochs 40``."""

    lid: str = ""
    speaker: str = ""
    age_gender: str = ""
    extract: str = ""
    pretrain: str = ""
    finetune: str = ""


@dataclass
class Encoders:
    # the face encoders (the same in every weight set: faces have no language); the heads config's
    # features.face_encoders must name the same
    face: str = "vggface,vit-age-gender"


@dataclass
class Heads:
    config: str = "fame2026"  # head config (a shipped name or a YAML file) for stages 6 and 7
    folds: int = 7
    workers: int = 1  # folds trained at once


@dataclass
class RecipeConfig:
    work: str = "exp/fame2026"
    data: DataPaths = field(default_factory=DataPaths)
    weights: Weights = field(default_factory=Weights)
    devices: Devices = field(default_factory=Devices)
    encoders: Encoders = field(default_factory=Encoders)
    heads: Heads = field(default_factory=Heads)
    options: Stages = field(default_factory=Stages)


def load_recipe_config(path: str | Path) -> RecipeConfig:
    """The recipe config at ``path``; unknown keys and wrong types are one-line errors naming them. Relative
    paths are taken from the config file's folder."""
    cfg = build_dataclass(RecipeConfig, read_yaml_mapping(path, "recipe config"), str(path))
    base = Path(path).resolve().parent

    def absolute(value: str) -> str:
        return str((base / value).resolve()) if value and not Path(value).is_absolute() else value

    cfg.work = absolute(cfg.work)
    for section in (cfg.data, cfg.weights):
        for f in fields(section):
            if f.name != "commonvoice_languages":
                setattr(section, f.name, absolute(getattr(section, f.name)))
    if cfg.heads.config.endswith((".yaml", ".yml")):
        cfg.heads.config = absolute(cfg.heads.config)
    missing = [name for name in ("mavceleb", "voxceleb2", "commonvoice") if not getattr(cfg.data, name)]
    if missing:
        raise FvaError(f"{path}: data.{missing[0]} is empty; the recipe needs the MAV-Celeb, VoxCeleb2 and "
                       "CommonVoice folders (for MAV-Celeb alone: make submission DATASET=mavceleb-v3 ROOT=...)")
    return cfg


def shell_assignments(cfg: RecipeConfig) -> str:
    """``SECTION_KEY='value'`` lines (``WORK``, ``DATA_MAVCELEB``, ``WEIGHTS_LID``, ...) for the recipe to eval.

    >>> print(shell_assignments(RecipeConfig(work="/w x")).splitlines()[0])
    WORK='/w x'
    """
    lines = []

    def walk(obj, prefix: str) -> None:
        for f in fields(obj):
            value = getattr(obj, f.name)
            name = f"{prefix}{f.name}".upper()
            if is_dataclass(value):
                walk(value, name + "_")
            else:
                lines.append(f"{name}={shlex.quote(str(value))}")

    walk(cfg, "")
    return "\n".join(lines) + "\n"


def published_plan(work: str | Path, trials: str | Path, cache: str | Path, languages: list[str]) -> dict:
    """The published selection (FAME 2026 winner, section 4.3-4.4) as a plan: for test languages [A, B] with A
    the first (English), A heard: the all-data pretrained heads without fine-tuning; B heard: the heads
    pretrained without A, not fine-tuned; A unheard: those fine-tuned; B unheard: the heads pretrained without
    B, fine-tuned."""
    if len(languages) != 2:
        raise FvaError(f"{trials}: the published selection is for two test languages, found "
                       f"{', '.join(languages) or 'none'}")
    a, b = languages
    exp = Path(work) / "exp"
    files = {f"{a}_heard": exp / "pretrain-full", f"{b}_heard": exp / f"pretrain-{a.lower()}-unheard",
             f"{a}_unheard": exp / f"finetune-{a.lower()}-unheard", f"{b}_unheard": exp / f"finetune-{b.lower()}-unheard"}
    return {"trials": str(trials), "cache": str(cache), "files": {k: str(v) for k, v in files.items()}}


def write_plan(path: str | Path, plan: dict) -> Path:
    Path(path).write_text(yaml.safe_dump(plan, sort_keys=False))
    return Path(path)


def dev_eer_table(exps: list[Path]) -> str:
    """A markdown table of each experiment's mean dev EERs over its folds: per heard and unheard language, with
    its weight set, split and whether its heads were fine-tuned."""
    rows = []
    languages: list[str] = []
    for exp in exps:
        metrics_path = Path(exp) / "metrics.json"
        if not metrics_path.is_file():
            raise FvaError(f"{exp}: no metrics.json; train it first")
        metrics = json.loads(metrics_path.read_text())
        info = json.loads((Path(exp) / "experiment.json").read_text())
        eers = {**{f"{k} heard": v for k, v in metrics["mean_heard"].items()},
                **{f"{k} unheard": v for k, v in metrics["mean_unheard"].items()}}
        languages += [k for k in eers if k not in languages]
        rows.append((Path(exp).name, info.get("weight_set", "full"), "yes" if info.get("fine_tuned", True) else "no",
                     eers))
    columns = sorted(languages, key=lambda k: (k.endswith("unheard"), k))
    lines = ["| experiment | weight set | fine-tuned | " + " | ".join(f"dev EER {c} %" for c in columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for name, weight_set, tuned, eers in rows:
        cells = ["–" if c not in eers else f"{eers[c]:.2f}" for c in columns]
        lines.append(f"| {name} | {weight_set} | {tuned} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
