"""Head-training configuration: typed sections read from YAML; an unknown key is an error naming it.

The defaults are the FAME 2026 winning system: per modality the general and age-gender features
concatenated, dropout 0.9 on that input, one linear map to 192-d; one AAM-softmax classifier over identities
shared by both modalities; score = cosine. The resolved config (seed included) is saved in every experiment
and is what later commands read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from fva.errors import FvaError
from fva.extract.catalogue import default_encoders
from fva.heads.features import BLOCK_ROWS, BUFFER_BLOCKS
from fva.heads.postprocess import (LEVELS, ClusterConfig, PolariseConfig, RefineConfig, SnormConfig, ZnormConfig,
                                   check_level)
from fva.heads.typed import build_dataclass, parse_params
from fva.yamlio import read_yaml_mapping

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


@dataclass
class FeaturesConfig:
    voice_encoders: list[str] = field(default_factory=lambda: default_encoders("voice"))
    face_encoders: list[str] = field(default_factory=lambda: default_encoders("face"))


@dataclass
class ModelConfig:
    system: str = "fame2026"  # the head system (fva.heads.systems): fame2026, xm-align, fop, dual-fop, ...
    params: dict = field(default_factory=dict)  # the system's own options (its Params dataclass)
    embedding_dim: int = 192
    input_dropout: float = 0.9
    aam_margin: float = 0.2
    aam_scale: float = 30.0
    # Standardise every input feature (mean 0, std 1 over the training rows; the statistics are kept in the
    # model) before dropout. Off as published; encoders' scales differ a lot (VGG-Face's fc7 comes
    # L2-normalised, ~0.002 per dimension, beside ViT's ~0.4), and without it one encoder's features dominate.
    input_norm: bool = False


@dataclass
class DataConfig:
    dataset: str = "mavceleb-v3"  # the MAV-Celeb cache folder under --cache
    split: str = "full"  # full or <language>-unheard: the training languages
    # the weight set whose features to use (<cache>/<dataset>/train-<set>, fva.layout); empty: the split's own
    # set when it was extracted, else the full set (the experiment then records that its encoders heard the
    # unheard language)
    weight_set: str = ""
    folds: str = ""  # folds.json; empty: <cache>/<dataset>/folds.json, made on first use
    num_folds: int = 7
    pretrain_dataset: str = ""  # e.g. voxceleb2: pretrain on its cache of the same weight set first
    joint: bool = False  # train on the pretrain dataset and MAV-Celeb together instead of in sequence


@dataclass
class TrainConfig:
    epochs: int = 100  # 0: no fine-tuning; each fold keeps its starting point (pretrained or --init), evaluated
    batch_size: int = 128  # per modality
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimiser: str = "adam"  # adam, or adamw (decoupled weight decay: the InfoNCE bridge's)
    schedule: str = "constant"  # constant, or cosine (lr to 0 over the epochs after the warm-up; per epoch)
    warmup_epochs: int = 0  # lr rises linearly over these first epochs
    # epochs without a better dev EER before stopping (not published). Measured, 7 folds: on a MAV-Celeb-V3-sized
    # synthetic cache 10 selects the same models as 20 (mean dev EER heard 14.77 vs 14.73%) in 143 epochs
    # instead of 243; on the demo's small, noisy dev sets 20 is up to 1.6 points better (fva/configs/demo.yaml).
    patience: int = 10
    # the dev trials model selection (the kept epoch, early stopping) reads: "any" (impostors of any held-out
    # identity) or "same-gender" (FLAG 2027's gender-controlled track: every impostor has the voice's gender).
    # Both are measured and reported whenever the training identities have genders (MAV-Celeb v4's meta file).
    select_on: str = "any"
    pretrain_epochs: int = 10
    pair_repeats: int = 1  # paired systems: passes over the voices per epoch, each re-paired with faces
    rows_per_epoch: int = 0  # 0: every row once per epoch; else a seeded sample of that many rows
    # The epoch order (fva.heads.features.epoch_order): blocks of block_rows consecutive rows, shuffled within
    # windows of buffer_blocks blocks. Caches are in identity order, so buffer_blocks should be many times a
    # batch's rows for batches to meet as many identities as a uniform shuffle; streaming reads whole blocks
    # and buffers block_rows x buffer_blocks rows (the defaults: 32768 rows, within 3 % of uniform sampling's
    # distinct identities per batch of 256 on a 6,000-identity cache).
    block_rows: int = BLOCK_ROWS
    buffer_blocks: int = BUFFER_BLOCKS
    in_memory_limit_gb: float = 4.0  # caches up to this size are loaded; larger ones stream

    def __post_init__(self) -> None:
        if self.optimiser not in ("adam", "adamw"):
            raise FvaError(f"train.optimiser: {self.optimiser!r}; choose adam or adamw")
        if self.schedule not in ("constant", "cosine"):
            raise FvaError(f"train.schedule: {self.schedule!r}; choose constant or cosine")
        if self.warmup_epochs < 0:
            raise FvaError(f"train.warmup_epochs must be >= 0, got {self.warmup_epochs}")


CENTRES = {"none": 0, "train": 0, "file": 1}  # score.centre -> its scoring level


@dataclass
class ScoreConfig:
    """Post-processing of every trial set's distances (dev and test; any system), in this order: the
    embeddings centred (``centre``: on the fold's training mean, or on the file's own mean), S-norm against the
    fold's training-identity cohort, z-normalisation with random training pairs, within-file clustering and
    block mixing, chaining-cluster refinement, then age-gender polarisation (each off unless enabled).

    Each step has a scoring level (:data:`fva.heads.postprocess.LEVELS`); :attr:`level` is the highest enabled,
    and a config above ``max_level`` is refused (``--pairwise`` sets it to 0)."""

    centre: str = "none"
    snorm: SnormConfig = field(default_factory=SnormConfig)
    znorm: ZnormConfig = field(default_factory=ZnormConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    polarise: PolariseConfig = field(default_factory=PolariseConfig)
    max_level: int = 3

    def __post_init__(self) -> None:
        if self.centre not in CENTRES:
            raise FvaError(f"score.centre: {self.centre!r}; choose from {', '.join(CENTRES)}")
        if self.max_level not in LEVELS:
            raise FvaError(f"score.max_level must be one of {', '.join(map(str, LEVELS))}, got {self.max_level}")
        check_level(self.level, self.max_level, f"score.{self.steps()[-1][0] if self.steps() else 'centre'}")

    def steps(self) -> list[tuple[str, int]]:
        """The enabled steps with their scoring levels, in order of level."""
        found = [("centre", CENTRES[self.centre])] if self.centre != "none" else []
        # polarisation scales distances about min(0, the list's lowest distance): 0 for the non-negative
        # distances of the systems, the listed trials' lowest once S-norm or z-norm made them signed
        signed = self.snorm.enabled or self.znorm.enabled
        found += [(name, level) for name, level in (("snorm", 0), ("znorm", 0), ("polarise", 3 if signed else 0),
                                                   ("cluster", 2), ("refine", 3)) if getattr(self, name).enabled]
        return sorted(found, key=lambda item: item[1])

    @property
    def level(self) -> int:
        """What the scores look at besides their own pair: the highest level of the enabled steps (0 when none)."""
        return max((level for _, level in self.steps()), default=0)

    @property
    def plain(self) -> bool:
        """No step enabled: the system's own distances."""
        return not self.steps()


@dataclass
class HeadConfig:
    seed: int = 0
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def merge_sections(data: dict, layer: dict) -> dict:
    """``data`` with ``layer`` laid over it section by section (a section's keys updated, other values
    replaced); returns ``data``, changed in place."""
    for section, values in layer.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return data


def system_configs() -> dict[str, Traversable]:
    """name -> YAML of each head system's shipped config (package data: ``fva/configs/systems/<name>.yaml``)."""
    return _yaml_files(files("fva") / "configs" / "systems")


def shipped_configs() -> dict[str, Traversable]:
    """name -> YAML of every config shipped in the package: each system's and ``fva/configs/<name>.yaml``
    (e.g. ``demo``; such a name wins over a system's)."""
    return {**system_configs(), **_yaml_files(files("fva") / "configs")}


def _yaml_files(folder: Traversable) -> dict[str, Traversable]:
    """name -> file of the ``<name>.yaml`` files in ``folder``, by name."""
    found = {p.name[:-5]: p for p in folder.iterdir() if p.name.endswith(".yaml") and p.is_file()}
    return dict(sorted(found.items()))


def config_file(path: str | Path) -> Path | Traversable:
    """``path`` when it names a file, else the shipped config called ``path`` (``demo``, ``fame2026``, ...)."""
    if Path(path).is_file():
        return Path(path)
    shipped = shipped_configs()
    if str(path) in shipped:
        return shipped[str(path)]
    raise FvaError(f"{path}: config file not found (nor a shipped config: {', '.join(sorted(shipped))})")


BASE_KEY = "base"  # a config file's parent: a shipped config's name or a path (relative to the file)


def config_layers(path: "str | Path | Traversable", seen: tuple[str, ...] = ()) -> dict:
    """The mapping of a config file with its ``base`` chain laid under it: ``base: bridge`` starts from the
    shipped bridge config, and the file's sections update it section by section (:func:`merge_sections`), so a
    recipe's config can add its features to a shipped system without repeating the system's settings."""
    found = config_file(path) if isinstance(path, (str, Path)) else path
    data = read_yaml_mapping(found, "config file")
    parent = data.pop(BASE_KEY, None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise FvaError(f"{path}: base must name a config (a shipped config or a YAML path), got {parent!r}")
    if isinstance(found, Path) and (found.parent / parent).is_file():
        parent = str(found.parent / parent)
    if parent in seen or str(found) in seen:
        raise FvaError(f"{path}: base {parent} comes back to itself; configs' bases must not loop")
    return merge_sections(config_layers(parent, (*seen, str(found))), data)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> HeadConfig:
    """Defaults, updated by the YAML file at ``path`` (or the shipped config of that name, see
    :func:`config_file`; with its ``base`` configs under it, :func:`config_layers`), then by ``overrides``
    (same nesting)."""
    data: dict = {}
    source = str(path) if path else "config"
    if path is not None:
        data = config_layers(path)
    cfg = build_dataclass(HeadConfig, merge_sections(data, overrides or {}), source)
    from fva.heads.systems import get_system

    system = get_system(cfg.model.system)
    parse_params(system.Params, cfg.model.params, f"{source}: model.params")
    system.check_features(cfg.features.voice_encoders, cfg.features.face_encoders, source)
    return cfg
