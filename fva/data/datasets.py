"""Dataset registry: build a manifest for a dataset, subset and language split by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fva.data import commonvoice, mavceleb, voxceleb2
from fva.data.languages import canonical_language
from fva.data.records import Manifest, MediaRecord
from fva.data.splits import Split, apply_split
from fva.errors import FvaError
from fva.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    subsets: tuple[str, ...]  # the first is the default; train subsets accept language splits
    train_subsets: tuple[str, ...]
    load: Callable[[Path, str, Path | None], list[MediaRecord]]
    language_from_layout: bool
    description: str


def _mavceleb(name: str) -> DatasetSpec:
    version = mavceleb.VERSIONS[name]

    def load(root: Path, subset: str, _labels: Path | None) -> list[MediaRecord]:
        if subset == "train":
            return mavceleb.train_records(root, version)
        return mavceleb.test_records(root, version)

    return DatasetSpec(name, ("train", "test"), ("train",), load, True,
                       f"MAV-Celeb {name[-2:].upper()} ({' / '.join(version.languages)})")


DATASETS: Registry[DatasetSpec] = Registry("dataset", sort=False)
for _spec in (*(_mavceleb(n) for n in mavceleb.VERSIONS),
              DatasetSpec("voxceleb2", ("dev", "test"), ("dev",), voxceleb2.records, False,
                          "VoxCeleb2 (m4a voices, mp4 face tracks; languages from a label file)"),
              DatasetSpec("commonvoice", ("validated", "train", "dev", "test"), ("validated", "train", "dev", "test"),
                          lambda root, subset, _labels: commonvoice.records(root, subset), True,
                          "Mozilla CommonVoice (one folder per locale)")):
    DATASETS.register(_spec.name, _spec)


def get_dataset(name: str) -> DatasetSpec:
    return DATASETS.get(name)


def load_manifest(manifest: str | Path | None, dataset: str | None, root: str | Path | None,
                  subset: str | None = None, split: str = "full", language_labels: str | Path | None = None,
                  languages: list[str] | None = None, keep_languages: bool = False) -> tuple[Manifest, list[str]]:
    """The manifest read from the file ``manifest``, else built from ``dataset`` at ``root``
    (:func:`build_manifest`); returns it and notes worth telling the user."""
    if manifest is not None:
        return Manifest.read(manifest), []
    if dataset is None or root is None:
        raise FvaError("give --manifest, or --dataset with --root: the data to use")
    return build_manifest(dataset, root, subset=subset, split=split, language_labels=language_labels,
                          languages=languages, keep_languages=keep_languages)


def build_manifest(dataset: str, root: str | Path, *, subset: str | None = None, split: str = "full",
                   language_labels: str | Path | None = None, languages: list[str] | None = None,
                   keep_languages: bool = False) -> tuple[Manifest, list[str]]:
    """Build the manifest of ``dataset`` at ``root``; returns it and notes worth telling the user.

    ``languages`` keeps only those languages (names or codes) before the split is applied. ``keep_languages``
    checks the split (its language must be there, and labelled) but keeps every record: the manifest of a
    weight set's extraction, whose unheard language stage 2 leaves out of training and uses for its dev EER.
    """
    spec = get_dataset(dataset)
    subset = subset or spec.subsets[0]
    if subset not in spec.subsets:
        raise FvaError(f"unknown subset {subset!r} of {dataset}; choose one of {', '.join(spec.subsets)}")
    parsed = Split.parse(split)
    if parsed.unheard and subset not in spec.train_subsets and not keep_languages:
        raise FvaError(f"split {parsed.name} applies to training data; use --subset "
                       f"{spec.train_subsets[0]} or --split full")
    labels = Path(language_labels) if language_labels else None
    if parsed.unheard and not spec.language_from_layout and labels is None:
        raise FvaError(f"{dataset} has no language in its layout; split {parsed.name} needs "
                       "--language-labels TSV (key, language, confidence), as 'fva lid' writes it")
    root = Path(root)
    records = spec.load(root, subset, labels)
    notes: list[str] = []
    if languages:
        wanted = {canonical_language(x) for x in languages}
        records = [r for r in records if r.language in wanted]
        if not records:
            raise FvaError(f"no {dataset} records in language(s) {', '.join(sorted(wanted))} under {root}")
    kept, unlabelled = apply_split(records, parsed, dataset)
    if not keep_languages:
        records = kept
    elif parsed.unheard:
        notes.append(f"kept every language for weight set {parsed.name}: head training leaves {parsed.unheard} "
                     f"out of its rows{' (and the records without a language)' if unlabelled else ''}")
        unlabelled = 0
    if unlabelled:
        notes.append(f"{unlabelled} records without a language label were left out of {parsed.name} "
                     "(they could be in the unheard language)")
    manifest = Manifest(dataset=dataset, root=str(root.resolve()), subset=subset, split=parsed.name,
                        records=records)
    return manifest, notes
