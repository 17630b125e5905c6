"""Dataset registry: build a manifest for a dataset, subset and language split by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fva.data import commonvoice, mavceleb, mavceleb_v4, voxceleb2
from fva.data.languages import canonical_language
from fva.data.records import Manifest, MediaRecord
from fva.data.splits import Split, apply_split
from fva.errors import FvaError
from fva.registry import Registry


@dataclass(frozen=True)
class LoadOptions:
    """What a dataset loader may need beyond root and subset."""

    language_labels: Path | None = None
    lists: Path | None = None  # MAV-Celeb: the folder of the list files
    strict: bool = False  # stop at the first unusable row instead of skipping it
    subset_named: bool = True  # the user named the subset (False: it is the default)


@dataclass
class Loaded:
    records: list[MediaRecord]
    notes: list[str] = field(default_factory=list)
    lists: Path | None = None  # where the list files were read from, if any


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    subsets: tuple[str, ...]  # the first is the default; train subsets accept language splits
    train_subsets: tuple[str, ...]
    load: Callable[[Path, str, LoadOptions], Loaded]
    language_from_layout: bool
    description: str
    has_lists: bool = False


def _mavceleb(name: str) -> DatasetSpec:
    version = mavceleb.VERSIONS[name]

    def load(root: Path, subset: str, opts: LoadOptions) -> Loaded:
        mavceleb.check_root(root, version)
        lists, note = mavceleb.find_lists(root, version, subset, opts.lists)
        if subset == "train":
            records = mavceleb.train_records(root, version, lists)
        else:
            records = mavceleb.test_records(root, version, lists)
        return Loaded(records, [note] if note else [], lists)

    return DatasetSpec(name, ("train", "test"), ("train",), load, True,
                       f"MAV-Celeb {name[-2:].upper()} ({' / '.join(version.languages)})", has_lists=True)


def _mavceleb_v4(root: Path, subset: str, opts: LoadOptions) -> Loaded:
    """FLAG 2027: ``train`` is the English training data the challenge allows, with genders; ``test`` every
    track's lists."""
    if subset == "train":
        records, notes, _ = mavceleb_v4.train_records(root)
        return Loaded(records, notes)
    records, test_dir = mavceleb_v4.test_records(root, opts.lists)
    return Loaded(records, [], test_dir)


def _voxceleb2(root: Path, subset: str, opts: LoadOptions) -> Loaded:
    base, flat = voxceleb2.subset_folder(root, subset)
    notes = []
    if flat:
        if not opts.subset_named:
            raise FvaError(f"{root} holds aac/ or mp4/ itself (an unpacked vox2_test_*.zip?) and no {subset}/; "
                           "say which subset it is with --subset test (or --subset dev)")
        notes.append(f"voxceleb2: read subset {subset} from {root}/aac and {root}/mp4 (no {root}/{subset}/); "
                     f"keys say {subset}/aac/..., {subset}/mp4/... as in the {subset}/ layout")
    return Loaded(voxceleb2.records(root, subset, opts.language_labels), notes)


def _commonvoice(root: Path, subset: str, opts: LoadOptions) -> Loaded:
    records, notes = commonvoice.records(root, subset, strict=opts.strict)
    return Loaded(records, notes)


DATASETS: Registry[DatasetSpec] = Registry("dataset", sort=False)
for _spec in (*(_mavceleb(n) for n in mavceleb.VERSIONS),
              DatasetSpec(mavceleb_v4.NAME, ("train", "test"), ("train",), _mavceleb_v4, True,
                          "MAV-Celeb v4, FLAG 2027 (English train with genders; English / Bengali test, tracks "
                          "no_gender and gender)", has_lists=True),
              DatasetSpec("voxceleb2", ("dev", "test"), ("dev",), _voxceleb2, False,
                          "VoxCeleb2 (m4a voices, mp4 face tracks; languages from a label file)"),
              DatasetSpec("commonvoice", ("validated", "train", "dev", "test"), ("validated", "train", "dev", "test"),
                          _commonvoice, True, "Mozilla CommonVoice (one folder per locale)")):
    DATASETS.register(_spec.name, _spec)


def get_dataset(name: str) -> DatasetSpec:
    return DATASETS.get(name)


def load_manifest(manifest: str | Path | None, dataset: str | None, root: str | Path | None,
                  subset: str | None = None, split: str = "full", language_labels: str | Path | None = None,
                  languages: list[str] | None = None, lists: str | Path | None = None,
                  strict: bool = False, keep_languages: bool = False) -> tuple[Manifest, list[str]]:
    """The manifest read from the file ``manifest``, else built from ``dataset`` at ``root``
    (:func:`build_manifest`); returns it and notes worth telling the user."""
    if manifest is not None:
        return Manifest.read(manifest), []
    if dataset is None or root is None:
        raise FvaError("give --manifest, or --dataset with --root: the data to use")
    return build_manifest(dataset, root, subset=subset, split=split, language_labels=language_labels,
                          languages=languages, lists=lists, strict=strict, keep_languages=keep_languages)


def build_manifest(dataset: str, root: str | Path, *, subset: str | None = None, split: str = "full",
                   language_labels: str | Path | None = None, languages: list[str] | None = None,
                   lists: str | Path | None = None, strict: bool = False,
                   keep_languages: bool = False) -> tuple[Manifest, list[str]]:
    """Build the manifest of ``dataset`` at ``root``; returns it and notes worth telling the user.

    ``languages`` keeps only those languages (names or codes) before the split is applied. ``lists``: the
    folder of MAV-Celeb's list files (default: the root, else its ``face_voice_association_splits/<v>/``).
    ``strict``: stop at the first unusable row (CommonVoice) instead of skipping and counting it.
    ``keep_languages`` checks the split (its language must be there, and labelled) but keeps every record: the
    manifest of a weight set's extraction, whose unheard language stage 2 leaves out of training and uses for
    its dev EER.
    """
    spec = get_dataset(dataset)
    named = subset is not None
    subset = subset or spec.subsets[0]
    if subset not in spec.subsets:
        raise FvaError(f"unknown subset {subset!r} of {dataset}; choose one of {', '.join(spec.subsets)}")
    if lists is not None and not spec.has_lists:
        raise FvaError(f"--lists names MAV-Celeb's list folder; {dataset} has no list files, leave it out")
    parsed = Split.parse(split)
    if parsed.unheard and subset not in spec.train_subsets and not keep_languages:
        raise FvaError(f"split {parsed.name} applies to training data; use --subset "
                       f"{spec.train_subsets[0]} or --split full")
    labels = Path(language_labels) if language_labels else None
    if parsed.unheard and not spec.language_from_layout and labels is None:
        raise FvaError(f"{dataset} has no language in its layout; split {parsed.name} needs "
                       "--language-labels TSV (key, language, confidence), as 'fva lid' writes it")
    root = Path(root)
    loaded = spec.load(root, subset, LoadOptions(language_labels=labels, lists=Path(lists) if lists else None,
                                                 strict=strict, subset_named=named))
    records, notes = loaded.records, list(loaded.notes)
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
                        records=records, lists=str(loaded.lists.resolve()) if loaded.lists else None)
    return manifest, notes
