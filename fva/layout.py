"""Where stage 1's output lives on disk: the one owner of the cache root's layout.

::

    <cache>/<dataset>/folds.json                        identity-disjoint folds (stage 2 makes them on first use)
    <cache>/<dataset>/<subset>-<split>/manifest.jsonl   the manifest the caches beside it were extracted from:
                                                        stage 2 reads identities and languages from it
    <cache>/<dataset>/<subset>-<split>/<encoder>/       one encoder's sharded feature cache (fva.extract.cache)

The library function that writes a cache writes its manifest too (:func:`write_manifest`, called by
``fva.extract.runner.run_extraction``), so a cache built from Python is as readable by stage 2 as one built by
``fva extract``.
"""

from __future__ import annotations

from pathlib import Path

from fva.data.records import Manifest, MediaRecord
from fva.errors import FvaError

MANIFEST_FILE = "manifest.jsonl"
FOLDS_FILE = "folds.json"


def features_folder(cache_root: str | Path, dataset: str, subset: str, split: str = "full") -> Path:
    """``<cache>/<dataset>/<subset>-<split>``: the caches of one extraction, and their manifest.

    >>> features_folder("cache", "mavceleb-v3", "train", "english-unheard").as_posix()
    'cache/mavceleb-v3/train-english-unheard'
    """
    return Path(cache_root) / dataset / f"{subset}-{split}"


def encoder_folder(cache_root: str | Path, manifest: Manifest, encoder: str) -> Path:
    """``<cache>/<dataset>/<subset>-<split>/<encoder>`` for the extraction of ``manifest``."""
    return features_folder(cache_root, manifest.dataset, manifest.subset, manifest.split) / encoder


def manifest_path(folder: str | Path) -> Path:
    """The manifest kept beside the caches of ``folder`` (a :func:`features_folder`)."""
    return Path(folder) / MANIFEST_FILE


def folds_path(cache_root: str | Path, dataset: str) -> Path:
    """Where stage 2 keeps a dataset's folds when no ``folds.json`` is given."""
    return Path(cache_root) / dataset / FOLDS_FILE


def write_manifest(cache_root: str | Path, manifest: Manifest) -> Path:
    """Keep ``manifest`` beside the caches extracted from it (atomically); returns its path."""
    path = manifest_path(features_folder(cache_root, manifest.dataset, manifest.subset, manifest.split))
    manifest.write(path)
    return path


def find_features_folder(cache_root: str | Path, dataset: str, subset: str, split: str = "full") -> Path:
    """The split's own :func:`features_folder`, falling back to ``-full`` (filtered later) when the split's own
    extraction does not exist."""
    base = Path(cache_root) / dataset
    for folder in (features_folder(cache_root, dataset, subset, split), features_folder(cache_root, dataset, subset)):
        if folder.is_dir():
            return folder
    raise FvaError(f"no {subset} features of {dataset} under {cache_root} (looked for {base}/{subset}-{split} "
                   f"and {base}/{subset}-full); run 'fva extract' for them first")


def manifest_records(folder: str | Path) -> dict[str, MediaRecord]:
    """key -> record from the manifest kept beside the caches of ``folder``."""
    path = manifest_path(folder)
    if not path.is_file():
        raise FvaError(f"{path} not found: 'fva extract' keeps the manifest beside its caches; extract again "
                       "with this fva version")
    return {r.key: r for r in Manifest.read(path).records}
