"""Where stage 1's output lives on disk: the one owner of the cache root's layout.

::

    <cache>/<dataset>/folds.json                        identity-disjoint folds (stage 2 makes them on first use)
    <cache>/<dataset>/<subset>-<set>/manifest.jsonl     the manifest the caches beside it were extracted from:
                                                        stage 2 reads identities and languages from it
    <cache>/<dataset>/<subset>-<set>/<encoder>/         one encoder's sharded feature cache (fva.extract.cache)

A *weight set* (``<set>``) names the encoder weights the features of its folders come from, so one cache root
holds the same encoder's features of several weight sets side by side: ``full`` (the public encoders, which
heard every language) and one set per unheard condition, named by its split (``english-unheard``: encoders
trained without English). A set's training caches hold every language of the dataset: stage 2 leaves the
unheard language out of the training rows itself and uses it for the unheard dev EER.

The library function that writes a cache writes its manifest too (:func:`write_manifest`, called by
``fva.extract.runner.run_extraction``), so a cache built from Python is as readable by stage 2 as one built by
``fva extract``.
"""

from __future__ import annotations

import re
from pathlib import Path

from fva.data.records import Manifest, MediaRecord
from fva.errors import FvaError

MANIFEST_FILE = "manifest.jsonl"
FOLDS_FILE = "folds.json"


FULL_SET = "full"  # the weight set of the public encoders


def features_folder(cache_root: str | Path, dataset: str, subset: str, weight_set: str = FULL_SET) -> Path:
    """``<cache>/<dataset>/<subset>-<set>``: the caches of one weight set's extraction, and their manifest.

    >>> features_folder("cache", "mavceleb-v3", "train", "english-unheard").as_posix()
    'cache/mavceleb-v3/train-english-unheard'
    """
    return Path(cache_root) / dataset / f"{subset}-{weight_set}"


def check_weight_set(name: str) -> str:
    """A weight set's name as a folder part (letters, digits, ``-``, ``_``, ``.``); FvaError otherwise."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise FvaError(f"weight set {name!r}: use letters, digits, '-', '_' or '.', e.g. full or english-unheard")
    return name


def encoder_folder(cache_root: str | Path, manifest: Manifest, encoder: str, weight_set: str | None = None) -> Path:
    """``<cache>/<dataset>/<subset>-<set>/<encoder>`` for the extraction of ``manifest`` (set: the manifest's
    split unless named)."""
    return features_folder(cache_root, manifest.dataset, manifest.subset, weight_set or manifest.split) / encoder


def manifest_path(folder: str | Path) -> Path:
    """The manifest kept beside the caches of ``folder`` (a :func:`features_folder`)."""
    return Path(folder) / MANIFEST_FILE


def folds_path(cache_root: str | Path, dataset: str) -> Path:
    """Where stage 2 keeps a dataset's folds when no ``folds.json`` is given."""
    return Path(cache_root) / dataset / FOLDS_FILE


def write_manifest(cache_root: str | Path, manifest: Manifest, weight_set: str | None = None) -> Path:
    """Keep ``manifest`` beside the caches extracted from it (atomically); returns its path."""
    path = manifest_path(features_folder(cache_root, manifest.dataset, manifest.subset, weight_set or manifest.split))
    manifest.write(path)
    return path


def find_features_folder(cache_root: str | Path, dataset: str, subset: str, weight_set: str = FULL_SET) -> Path:
    """The weight set's :func:`features_folder`; FvaError saying how to extract it when it does not exist."""
    folder = features_folder(cache_root, dataset, subset, weight_set)
    if not folder.is_dir():
        others = sorted(p.name for p in (Path(cache_root) / dataset).glob(f"{subset}-*") if p.is_dir())
        found = f" (found: {', '.join(others)})" if others else ""
        raise FvaError(f"{folder}: no {subset} features of {dataset} from weight set {weight_set}{found}; run "
                       f"'fva extract --weight-set {weight_set}' for them first")
    return folder


def manifest_records(folder: str | Path) -> dict[str, MediaRecord]:
    """key -> record from the manifest kept beside the caches of ``folder``."""
    path = manifest_path(folder)
    if not path.is_file():
        raise FvaError(f"{path} not found: 'fva extract' keeps the manifest beside its caches; extract again "
                       "with this fva version")
    return {r.key: r for r in Manifest.read(path).records}
