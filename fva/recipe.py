"""What the recipes need from Python: their YAML configs (paths, devices, per-stage options; an unknown key is
an error) as shell variables, their submission plans, and their tables of dev EERs.

FAME 2026 (``recipes/fame2026/run.sh``): the published per-scenario selection and the dev EERs per stage and
scenario. FLAG 2027 (``recipes/flag2027/run.sh``, :class:`FlagRecipeConfig`): per track, the system with the
best dev EER of that track's impostors (or a fusion of all), and the dev EERs per system, track and language.

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

import shlex
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

from fva.errors import FvaError
from fva.data.mavceleb_v4 import TRACKS as FLAG_TRACKS
from fva.experiment import Experiment, heard_eers
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
    """A markdown table of each experiment's mean dev EERs over its folds: per heard and unheard language (and
    with same-gender impostors, where measured), with its weight set and whether its heads were fine-tuned."""
    rows = []
    languages: list[str] = []
    for exp in exps:
        opened = Experiment.open(exp)
        metrics, info = opened.metrics, opened.info
        eers = {**{f"{k} heard": v for k, v in metrics["mean_heard"].items()},
                **{f"{k} unheard": v for k, v in metrics["mean_unheard"].items()},
                **{f"{k} heard, same-gender impostors": v for k, v in heard_eers(metrics, "same-gender").items()}}
        languages += [k for k in eers if k not in languages]
        tuned = {True: "yes", False: "no", None: "not recorded"}[info.fine_tuned]
        rows.append((Path(exp).name, info.weight_set, tuned, eers))
    columns = sorted(languages, key=lambda k: (k.endswith("unheard"), "same-gender" in k, k))
    lines = ["| experiment | weight set | fine-tuned | " + " | ".join(f"dev EER {c} %" for c in columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for name, weight_set, tuned, eers in rows:
        cells = ["–" if c not in eers else f"{eers[c]:.2f}" for c in columns]
        lines.append(f"| {name} | {weight_set} | {tuned} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- FLAG 2027
# the dev impostors that match each track: model selection and the per-track choice of system read them
TRACK_SELECT_ON = {"no_gender": "any", "gender": "same-gender"}


@dataclass
class FlagData:
    root: str = ""  # the MAV-Celeb v4 download: train_set/ (+ meta_file_train_set.csv) and the dev set's tracks
    eval: str = ""  # the eval set's folder (no_gender/ and gender/), once released; empty: dev only
    ground_truth: str = ""  # the organisers' <Lang>_test_<track>.txt, to print test EERs; empty: none


@dataclass
class FlagEncoders:
    # encoders extracted beside the organisers' two (ecapa-embedding, vggface-keras): the FAME 2026 set by
    # default (its voice age-gender ECAPA is not published); the stage-4 systems' configs name among these
    extra: str = "speaker-ecapa,vggface,vit-age-gender"


@dataclass
class FlagHeads:
    baseline: str = "flag2027-baseline"  # stage 3: the organisers' baseline (shipped config or YAML)
    systems: str = ""  # stage 4: comma-separated head configs (shipped names or YAML files), each trained per track
    selection: str = "best"  # stage 5, per track: best (lowest dev EER of the track's impostors) or fuse (all)
    folds: int = 7
    workers: int = 1  # folds trained at once


@dataclass
class FlagStages:
    extract: str = ""
    baseline: str = ""  # extra fva train-head options for stage 3, e.g. --epochs 20
    systems: str = ""


@dataclass
class FlagRecipeConfig:
    work: str = "exp/flag2027"
    data: FlagData = field(default_factory=FlagData)
    weights: dict = field(default_factory=dict)  # encoder -> local copy (file or folder); others are fetched
    devices: Devices = field(default_factory=Devices)
    encoders: FlagEncoders = field(default_factory=FlagEncoders)
    heads: FlagHeads = field(default_factory=FlagHeads)
    options: FlagStages = field(default_factory=FlagStages)


def load_flag_config(path: str | Path) -> FlagRecipeConfig:
    """The FLAG recipe's config at ``path``; relative paths are taken from the config file's folder."""
    from fva.extract.weights import get_source

    cfg = build_dataclass(FlagRecipeConfig, read_yaml_mapping(path, "recipe config"), str(path))
    base = Path(path).resolve().parent

    def absolute(value: str) -> str:
        return str((base / value).resolve()) if value and not Path(value).is_absolute() else value

    cfg.work = absolute(cfg.work)
    for f in fields(cfg.data):
        setattr(cfg.data, f.name, absolute(getattr(cfg.data, f.name)))
    for name, value in cfg.weights.items():
        get_source(str(name))  # an unknown encoder is one line
        cfg.weights[name] = absolute(str(value or ""))
    cfg.heads.baseline = absolute(cfg.heads.baseline) if cfg.heads.baseline.endswith((".yaml", ".yml")) \
        else cfg.heads.baseline
    cfg.heads.systems = ",".join(absolute(s) if s.endswith((".yaml", ".yml")) else s
                                 for s in (x.strip() for x in cfg.heads.systems.split(",")) if s)
    if cfg.heads.selection not in ("best", "fuse"):
        raise FvaError(f"{path}: heads.selection {cfg.heads.selection!r}; choose best or fuse")
    if not cfg.data.root:
        raise FvaError(f"{path}: data.root is empty; the recipe needs the MAV-Celeb v4 folder (train_set/ and the "
                       "dev set's no_gender/ and gender/)")
    return cfg


def flag_shell_assignments(cfg: FlagRecipeConfig) -> str:
    """:func:`shell_assignments` of the FLAG config with the tracks (``FLAG_TRACKS``) and the impostors each
    selects on (``SELECT_ON_<TRACK>``); its weights mapping becomes ``WEIGHTS_ARGS`` (``--weights
    ENCODER=PATH`` options, split on spaces by the recipe: paths without spaces) and ``WEIGHTS_LOCAL``
    (``ENCODER=PATH`` of each local copy, for stage 0 to check and not fetch).

    >>> print(flag_shell_assignments(FlagRecipeConfig(weights={"vggface": "/w/v.pth"})).splitlines()[-2])
    WEIGHTS_ARGS='--weights vggface=/w/v.pth'
    """
    given = {k: v for k, v in cfg.weights.items() if v}
    spaced = [v for v in given.values() if " " in v]
    if spaced:
        raise FvaError(f"weights: {spaced[0]!r} has a space; the recipe passes weights paths without spaces")
    lines = [line for line in shell_assignments(cfg).splitlines() if not line.startswith("WEIGHTS=")]
    lines.append("FLAG_TRACKS=" + shlex.quote(" ".join(FLAG_TRACKS)))
    lines += [f"SELECT_ON_{track.upper()}={TRACK_SELECT_ON[track]}" for track in FLAG_TRACKS]
    lines.append("WEIGHTS_ARGS=" + shlex.quote(" ".join(f"--weights {k}={v}" for k, v in given.items())))
    lines.append("WEIGHTS_LOCAL=" + shlex.quote(" ".join(f"{k}={v}" for k, v in given.items())))
    return "\n".join(lines) + "\n"


def experiment_track_eer(exp: Path, track: str) -> float:
    """An experiment's mean heard dev EER with the impostors of ``track`` (any, or same-gender for the gender
    track); FvaError when it was not measured."""
    heard = heard_eers(Experiment.open(exp).metrics, TRACK_SELECT_ON[track])
    if not heard:
        raise FvaError(f"{exp}: no heard dev EER with {TRACK_SELECT_ON[track]} impostors in its metrics; train it "
                       "on features whose manifest has every identity's gender")
    return float(sum(heard.values()) / len(heard))


def flag_plan(work: str | Path, trials: str | Path, cache: str | Path, systems: list[str],
              selection: str = "best") -> tuple[dict, dict[str, str]]:
    """The FLAG submission plan: each track's files scored by the system (``exp/<system>-<track>``) with the
    lowest heard dev EER of that track's impostors (``best``), or by all of them fused with weights fitted on
    their dev trials (``fuse``). Returns the plan and, per track, what was chosen."""
    from fva.evaluate.submission import FLAG_2027, submission_files
    from fva.heads.plan import plan_name

    exp = Path(work) / "exp"
    chosen: dict[str, str] = {}
    entries: dict[str, object] = {}
    for track in FLAG_TRACKS:
        exps = [exp / f"{s}-{track}" for s in systems]
        if selection == "fuse" and len(exps) > 1:
            entries[track] = {"fuse": [str(e) for e in exps], "weights": "logistic"}
            chosen[track] = "fusion of " + ", ".join(systems)
        else:
            eers = {s: experiment_track_eer(e, track) for s, e in zip(systems, exps)}
            best = min(eers, key=lambda s: (eers[s], systems.index(s)))
            entries[track] = str(exp / f"{best}-{track}")
            chosen[track] = f"{best} (dev EER {eers[best]:.2f}% with {TRACK_SELECT_ON[track]} impostors)"
    files = {plan_name(sub): entries[sub.track] for sub in submission_files(trials, FLAG_2027)}
    return {"trials": str(trials), "cache": str(cache), "files": files}, chosen


def flag_dev_table(work: str | Path, systems: list[str]) -> str:
    """Per system and track (``exp/<system>-<track>``): its selection, the mean heard dev EER with any and with
    same-gender impostors (English: FLAG trains on English only, so there is no Bengali dev set)."""
    lines = ["| system | track | selected on | dev EER English, any impostors % | "
             "dev EER English, same-gender impostors % |", "|---|---|---|---|---|"]
    for system in systems:
        for track in FLAG_TRACKS:
            metrics = Experiment.open(Path(work) / "exp" / f"{system}-{track}").metrics
            select_on = next(iter(metrics["folds"].values()), {}).get("select_on", "any")
            cells = []
            for negatives in ("any", "same-gender"):
                heard = heard_eers(metrics, negatives)
                cells.append(f"{sum(heard.values()) / len(heard):.2f}" if heard else "–")
            lines.append(f"| {system} | {track} | {select_on} impostors | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)
