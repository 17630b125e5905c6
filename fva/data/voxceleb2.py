"""VoxCeleb2: ``<subset>/aac/idNNNNN/<video>/NNNNN.m4a`` voices and ``<subset>/mp4/...mp4`` face tracks.

The dev archives (``vox2_dev_aac_parta*``, ``vox2_dev_mp4_parta*``) unpack to ``dev/aac/``, ``dev/mp4/``; the test
zips (``vox2_test_aac.zip``, ``vox2_test_mp4.zip``) to ``aac/``, ``mp4/`` directly. So a subset is read from
``<root>/<subset>/`` or, when that is absent, from ``aac/``, ``mp4/`` in the root itself (:func:`subset_folder`).
Keys are canonical either way, ``<subset>/aac/idNNNNN/<video>/NNNNN`` (``mp4`` for faces), so both layouts give
the same keys and caches; paths stay relative to the root.

A face track is one record (``frame`` None); extraction samples its every 25th frame. VoxCeleb2 has no
language in its layout: a language-label TSV (``key<TAB>language<TAB>confidence``, as ``fva lid`` writes it,
keyed by utterance ``idNNNNN/<video>/NNNNN`` or by video ``idNNNNN/<video>``) supplies it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fva.data.languages import canonical_language
from fva.data.records import MediaRecord, iter_files
from fva.errors import FvaError, where

FACE_FRAME_STEP = 25  # every 25th frame of a face track is a face sample
VOICE_SUFFIXES = (".m4a", ".wav", ".flac")
FACE_SUFFIXES = (".mp4",)


FOLDERS = {"voice": "aac", "face": "mp4"}


def subset_folder(root: Path, subset: str) -> tuple[Path, bool]:
    """The folder holding a subset's ``aac/`` and ``mp4/``: ``root/<subset>`` when it has either, else
    ``root`` itself when it has either (an unpacked ``vox2_test_*.zip``); and whether it is the root."""
    if not root.is_dir():
        raise FvaError(f"dataset root {root} not found; pass --root the VoxCeleb2 folder holding dev/ and test/ "
                       "(or the folder holding the aac/ and mp4/ of the unpacked test zips)")
    for base, flat in ((root / subset, False), (root, True)):
        if any((base / f).is_dir() for f in FOLDERS.values()):
            return base, flat
    raise FvaError(f"{root}: neither {subset}/aac/, {subset}/mp4/ nor aac/, mp4/ found; pass --root the VoxCeleb2 "
                   f"folder holding {subset}/aac/idNNNNN/... (or aac/idNNNNN/... as vox2_{subset}_aac.zip unpacks)")


def records(root: Path, subset: str, language_labels: Path | None = None) -> list[MediaRecord]:
    """All voice clips and face tracks of one subset, with languages from ``language_labels`` if given."""
    base, _ = subset_folder(root, subset)
    labels = read_language_labels(language_labels) if language_labels else {}
    out: list[MediaRecord] = []
    for modality, name in FOLDERS.items():
        folder = base / name
        if not folder.is_dir():
            continue
        for path in iter_files(folder, VOICE_SUFFIXES if modality == "voice" else FACE_SUFFIXES):
            rel = path.relative_to(folder)
            if len(rel.parts) != 3:
                raise FvaError(f"{path}: unexpected location; expected {folder}/idNNNNN/<video>/<file>")
            identity, video, file = rel.parts
            utterance = f"{identity}/{video}/{Path(file).stem}"
            language = labels.get(utterance) or labels.get(f"{identity}/{video}")
            out.append(MediaRecord(
                key=f"{subset}/{name}/{utterance}", identity=identity, language=language,
                modality=modality, path=path.relative_to(root).as_posix(), video=video,
            ))
    return out


def read_language_labels(path: Path) -> dict[str, str]:
    """Read ``key<TAB>language<TAB>confidence`` lines (a header line starting with 'key' is skipped)."""
    if not path.is_file():
        raise FvaError(f"{path}: language-label file not found; write one with 'fva lid'")
    labels: dict[str, str] = {}
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not row or (lineno == 1 and row[0] == "key"):
                continue
            if len(row) != 3:
                raise FvaError(f"{where(path, lineno)}: expected 3 tab-separated fields "
                               f"'key language confidence', found {len(row)}")
            try:
                float(row[2])
            except ValueError:
                raise FvaError(f"{where(path, lineno)}: confidence {row[2]!r} is not a number") from None
            if row[0] in labels:
                raise FvaError(f"{where(path, lineno)}: key {row[0]!r} is labelled twice")
            labels[row[0]] = canonical_language(row[1])
    return labels
