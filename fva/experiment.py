"""An experiment folder as one typed object: what ``fva train-head`` writes and every later reader opens.

Below both ``fva.heads`` (which trains and scores) and ``fva.evaluate`` (which reports and calibrates), and
free of torch: the folder's layout, its file names and its JSON formats live here, and nowhere else reads them
by name. Checkpoints are only located here; rebuilding a model from one is :mod:`fva.heads.experiment`'s.

Layout::

    config.yaml        the resolved head config (seed included)
    experiment.json    ExperimentInfo: format, fva version, cache, dataset, weight set, features, languages
    metrics.json       ExperimentMetrics: per fold and mean dev EERs
    fold<k>/           Fold: checkpoint.pt, last.pt, train_log.jsonl, metrics.json and its dev lists
                       (DevList: dev_<list>.txt, dev_<list>_labels.txt, dev_scores_<list>.txt)
    pretrain/          the pretraining run's checkpoint (when pretrained)
    seed<k>/           one seed's experiment, in a folder written by ``fva train-head --seeds``

A folder that is not an experiment, a damaged JSON file or another format version is one line naming the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fva import __version__
from fva.atomic import write_text
from fva.data.folds import NEGATIVES
from fva.errors import FvaError
from fva.layout import FULL_SET

EXPERIMENT_FORMAT = 3  # 2: input standardisation buffers in each projection; 3: head systems
READABLE_FORMATS = (2, 3)  # a format-2 experiment is a fame2026 one (no system named)
CONFIG_FILE = "config.yaml"
INFO_FILE = "experiment.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
RESUME_FILE = "last.pt"
LOG_FILE = "train_log.jsonl"
SEEDS_FILE = "seeds.json"


def dev_list_name(language: str, negatives: str) -> str:
    """A fold's dev list name (its files ``dev_<name>.txt``, ``dev_scores_<name>.txt``): the language for
    impostors of any identity, ``<language>-same-gender`` for impostors of the voice's gender.

    >>> dev_list_name("English", "any"), dev_list_name("English", "same-gender")
    ('English', 'English-same-gender')
    """
    return language if negatives == "any" else f"{language}-{negatives}"


def parse_dev_list_name(name: str) -> tuple[str, str]:
    """(language, negatives) of a dev list name (:func:`dev_list_name`).

    >>> parse_dev_list_name("English-same-gender"), parse_dev_list_name("German")
    (('English', 'same-gender'), ('German', 'any'))
    """
    for negatives in NEGATIVES:
        if negatives != "any" and name.endswith(f"-{negatives}"):
            return name[: -len(negatives) - 1], negatives
    return name, "any"


def fold_folder(exp: Path, fold: int | str) -> Path:
    """``<exp>/fold<k>`` (``<exp>/pretrain`` for the pretraining run)."""
    return Path(exp) / ("pretrain" if fold == "pretrain" else f"fold{fold}")


def read_json(path: Path, what: str) -> dict:
    """A JSON object file; missing, unreadable or not an object is one line naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FvaError(f"{path}: no {what}; train the experiment with 'fva train-head'") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise FvaError(f"{path}: damaged {what} ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
                       "train the experiment again") from None
    if not isinstance(data, dict):
        raise FvaError(f"{path}: damaged {what} (not a JSON object); train the experiment again")
    return data


def write_json(path: Path, data: dict) -> None:
    """An experiment's JSON files, indented one space, written atomically."""
    write_text(path, json.dumps(data, indent=1) + "\n")


@dataclass(frozen=True)
class ModalityFeatures:
    """One modality's training features: encoders in order, their widths and weights identities."""

    encoders: list[str] = field(default_factory=list)
    dims: list[int] = field(default_factory=list)
    weights_ids: dict[str, str] = field(default_factory=dict)


class ExperimentInfo(Mapping):
    """``experiment.json``: the file's mapping as written (read-only), with typed, checked accessors. Build one
    with :meth:`new` (the keys every trainer writes) or read one with :meth:`Experiment.open`."""

    def __init__(self, data: dict, path: Path | str = INFO_FILE) -> None:
        self._data = dict(data)
        self.path = Path(path)
        if self._data.get("format") not in READABLE_FORMATS:
            raise FvaError(f"{self.path}: experiment written by fva {self._data.get('fva_version', '?')} (format "
                           f"{self._data.get('format')}); this fva {__version__} reads format {EXPERIMENT_FORMAT}: "
                           "retrain it with this version")
        try:  # the typed parts, checked once
            self._features = {m: ModalityFeatures(**(self._data.get("features") or {}).get(m, {}))
                              for m in ("voice", "face")}
        except (TypeError, AttributeError) as err:
            raise FvaError(f"{self.path}: damaged experiment description (features: {err}); train the "
                           "experiment again") from None
        for key in ("heard", "unheard"):
            if not isinstance(self._data.get(key, []), list):
                raise FvaError(f"{self.path}: damaged experiment description ({key} is not a list); train the "
                               "experiment again")

    @classmethod
    def new(cls, *, cache: str, dataset: str, weight_set: str, train_features: str, heard: list[str],
            unheard: list[str], folds: int, voice: ModalityFeatures, face: ModalityFeatures,
            encoders_unheard: str | None, fine_tuned: bool, pretrain: dict | None = None,
            init: dict | None = None, score_level: int = 0) -> "ExperimentInfo":
        data = {"format": EXPERIMENT_FORMAT, "fva_version": __version__, "cache": cache, "dataset": dataset,
                "weight_set": weight_set, "train_features": train_features, "heard": heard, "unheard": unheard,
                "folds": folds, "features": {m: {"encoders": f.encoders, "dims": f.dims, "weights_ids": f.weights_ids}
                                             for m, f in (("voice", voice), ("face", face))},
                "encoders_unheard": encoders_unheard, "fine_tuned": fine_tuned, "score_level": score_level}
        if pretrain is not None:
            data["pretrain"] = pretrain
        if init is not None:
            data["init"] = init
        return cls(data)

    def __getitem__(self, key: str):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to_dict(self) -> dict:
        return dict(self._data)

    def _text(self, key: str) -> str:
        return str(self._data.get(key, ""))

    format = property(lambda self: int(self._data["format"]))
    cache = property(lambda self: self._text("cache"), doc="the cache root its features came from")
    dataset = property(lambda self: self._text("dataset"))
    train_features = property(lambda self: self._text("train_features"), doc="its training features' folder")
    heard = property(lambda self: list(self._data.get("heard", [])), doc="the languages its heads trained on")
    unheard = property(lambda self: list(self._data.get("unheard", [])), doc="the languages they never saw")

    @property
    def weight_set(self) -> str:
        """The weight set its features came from (the full set for experiments that predate weight sets)."""
        return str(self._data.get("weight_set") or FULL_SET)

    def modality(self, name: str) -> ModalityFeatures:
        """The training features of ``voice`` or ``face``."""
        return self._features[name]

    voice = property(lambda self: self.modality("voice"), doc="the voice training features (ModalityFeatures)")
    face = property(lambda self: self.modality("face"), doc="the face training features (ModalityFeatures)")

    @property
    def weights_ids(self) -> dict[str, str]:
        """encoder -> weights identity of every feature it trained on (both modalities)."""
        return {**self.voice.weights_ids, **self.face.weights_ids}

    encoders_unheard = property(lambda self: self._data.get("encoders_unheard"),
                                doc="the language its voice encoders never heard, as far as fva can tell (or None)")

    @property
    def fine_tuned(self) -> bool | None:
        """Whether its heads were trained on the dataset's folds; None where the file does not say (an
        imported checkpoint)."""
        value = self._data.get("fine_tuned")
        return None if value is None else bool(value)

    pretrain = property(lambda self: self._data.get("pretrain"), doc="what its heads were pretrained on, if any")
    init = property(lambda self: self._data.get("init"), doc="the experiment it started from, if any")

    @property
    def pretrained_on(self) -> dict | None:
        """What its heads were pretrained on: its own pretraining, else that of the experiment it started from."""
        return self.pretrain or (self.init or {}).get("pretrain")


@dataclass(frozen=True)
class DevList:
    """One of a fold's dev lists: its trials, truth and the selected model's distances."""

    folder: Path
    name: str

    language = property(lambda self: parse_dev_list_name(self.name)[0], doc="the language of its trials")
    negatives = property(lambda self: parse_dev_list_name(self.name)[1], doc="its impostors: any or same-gender")

    def _file(self, pattern: str) -> Path:
        return self.folder / pattern.format(name=self.name)

    trials_path = property(lambda self: self._file("dev_{name}.txt"), doc="its trials (FAME list format)")
    labels_path = property(lambda self: self._file("dev_{name}_labels.txt"), doc="its truth, 1 = same person")
    scores_path = property(lambda self: self._file("dev_scores_{name}.txt"), doc="the selected model's distances")


@dataclass(frozen=True)
class Fold:
    """One fold's folder: its selected checkpoint, metrics and dev lists."""

    index: int
    folder: Path

    checkpoint = property(lambda self: self.folder / CHECKPOINT_FILE, doc="its selected model's checkpoint")
    metrics = property(lambda self: read_json(self.folder / METRICS_FILE, "fold metrics"),
                       doc="its ``metrics.json``: selected epoch, dev EERs, calibration")

    def dev_lists(self, names: list[str] | None = None, negatives: str | None = None) -> list[DevList]:
        """The scored dev lists (scores and truth present), by name; ``names`` (e.g. languages) and
        ``negatives`` restrict them."""
        found = sorted((DevList(self.folder, p.name[len("dev_scores_"):-len(".txt")])
                        for p in self.folder.glob("dev_scores_*.txt")), key=lambda d: d.name)
        return [d for d in found if d.labels_path.is_file() and (names is None or d.name in names)
                and (negatives is None or d.negatives == negatives)]


class Experiment:
    """An experiment folder (:meth:`open` checks it is one, of a readable format)."""

    def __init__(self, path: Path, info: ExperimentInfo) -> None:
        self.path = Path(path)
        self.info = info

    @classmethod
    def open(cls, path: str | Path) -> "Experiment":
        path = Path(path)
        if not (path / INFO_FILE).is_file():
            raise FvaError(f"{path}: not an fva experiment (no {INFO_FILE}); train one with 'fva train-head'")
        return cls(path, ExperimentInfo(read_json(path / INFO_FILE, "experiment description"), path / INFO_FILE))

    @staticmethod
    def is_experiment(path: str | Path) -> bool:
        return (Path(path) / INFO_FILE).is_file()

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> dict:
        """``metrics.json``: per fold and mean dev EERs (``mean_heard``, ``mean_unheard``, ``mean_same_gender``)."""
        return read_json(self.path / METRICS_FILE, "metrics")

    def write(self) -> None:
        """Write its description (the folder made when new)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / INFO_FILE, self.info.to_dict())

    def folds(self) -> list[Fold]:
        """Its fold folders, in fold order."""
        return experiment_folds(self.path)

    def trained_folds(self) -> list[Fold]:
        """The folds with a selected checkpoint; none is one line."""
        done = [f for f in self.folds() if f.checkpoint.is_file()]
        if not done:
            raise FvaError(f"{self.path}: no trained fold (fold*/{CHECKPOINT_FILE}); train it with 'fva train-head'")
        return done


def heard_eers(metrics: dict, negatives: str = "any") -> dict[str, float]:
    """Language -> mean over folds of the heard dev EER with impostors ``negatives`` (``any`` or
    ``same-gender``), from an experiment's ``metrics.json``; {} where those impostors were not measured.

    >>> heard_eers({"mean_heard": {"English": 30.0}, "mean_same_gender": {"heard": {"English": 33.0}}}, "same-gender")
    {'English': 33.0}
    """
    if negatives == "any":
        return metrics["mean_heard"]
    return metrics.get("mean_same_gender", {}).get("heard", {})


def experiment_folds(path: str | Path) -> list[Fold]:
    """The ``fold<k>`` folders under ``path``, in fold order (read from the layout alone, description unread)."""
    found = [p for p in Path(path).glob("fold*") if re.fullmatch(r"fold\d+", p.name) and p.is_dir()]
    return [Fold(int(p.name[4:]), p) for p in sorted(found, key=lambda p: int(p.name[4:]))]


def seed_experiments(path: str | Path) -> list[Path]:
    """The ``seed<k>`` experiments of a ``fva train-head --seeds`` folder, by seed; [] for any other folder."""
    folder = Path(path)
    if Experiment.is_experiment(folder) or not folder.is_dir():
        return []
    found = [p for p in folder.glob("seed*") if re.fullmatch(r"seed\d+", p.name) and Experiment.is_experiment(p)]
    return sorted(found, key=lambda p: int(p.name[4:]))
