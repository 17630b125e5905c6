"""MAV-Celeb V1 (English/Urdu), V2 (English/Hindi) and V3 (English/German).

Train media: ``voices/idNNNN/<Lang>/<video>/NNNNN.wav`` and ``faces/idNNNN/<Lang>/<video>/<frame>.jpg``;
official lists ``<Lang>_train.txt`` (``<voice path> <face path>``, relative to voices/ and faces/) and
``<Lang>_test.txt`` (``<key> <voice path> <face path>``). The lists ship apart from the media, in the
baseline's ``face_voice_association_splits/<v1|v2|v3>/``: :func:`find_lists` reads them from a folder the user
names, else the dataset root, else that folder under the root. Test media paths in the lists may live under
the dataset root or under ``<Lang>_test/``, and V3 stores on disk as ``voice/``, ``face/`` what its lists call
``voices/``, ``faces/``: :func:`resolve_media` tries each spelling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fva.data.languages import canonical_language
from fva.data.records import MediaRecord, iter_files
from fva.data.trials import read_trials
from fva.errors import FvaError, where

VOICE_SUFFIXES = (".wav",)
FACE_SUFFIXES = (".jpg", ".jpeg", ".png")
_SPELLINGS = {"voices": "voice", "faces": "face", "voice": "voices", "face": "faces"}
_CANONICAL = {"voice": "voices", "face": "faces"}
SPLITS_FOLDER = "face_voice_association_splits"  # the baseline repository's folder of list files


@dataclass(frozen=True)
class MavCelebVersion:
    name: str
    languages: tuple[str, str]
    frame_digits: int

    @property
    def short(self) -> str:
        """``v1``, ``v2`` or ``v3``: the version's folder under ``face_voice_association_splits/``."""
        return self.name.rsplit("-", 1)[1]

    def list_names(self, subset: str) -> list[str]:
        """The list files of a subset, e.g. ``['English_train.txt', 'German_train.txt']``."""
        return [f"{language}_{subset}.txt" for language in self.languages]


VERSIONS = {
    "mavceleb-v1": MavCelebVersion("mavceleb-v1", ("English", "Urdu"), 7),
    "mavceleb-v2": MavCelebVersion("mavceleb-v2", ("English", "Hindi"), 7),
    "mavceleb-v3": MavCelebVersion("mavceleb-v3", ("English", "German"), 9),
}


def media_key(listed: str) -> str:
    """The manifest key of a media path as a list writes it: canonical ``voices``/``faces``, no extension.

    Pure string work, so that stage 2 maps trial lists to cached features without touching media.

    >>> media_key("English_test/voice/English/00000.wav")
    'English_test/voices/English/00000'
    >>> media_key("voices/id0001/English/A8Ch7gJalls/00000.wav")
    'voices/id0001/English/A8Ch7gJalls/00000'
    """
    parts = PurePosixPath(listed.replace("\\", "/")).parts
    parts = tuple(_CANONICAL.get(p, p) for p in parts)
    return str(PurePosixPath(*parts).with_suffix(""))


def resolve_media(root: Path, listed: str, language: str | None = None) -> Path | None:
    """The file a list's path names: under ``root`` or ``root/<Lang>_test``, in either voice(s)/face(s)
    spelling. None when no candidate exists."""
    parts = PurePosixPath(listed.replace("\\", "/")).parts
    variants = [parts]
    for i, p in enumerate(parts):
        if p in _SPELLINGS:
            variants.append(parts[:i] + (_SPELLINGS[p],) + parts[i + 1:])
    bases = [root] + ([root / f"{language}_test"] if language else [])
    for base in bases:
        for v in variants:
            candidate = base.joinpath(*v)
            if candidate.is_file():
                return candidate
    return None


def _frame_number(path: Path) -> int | None:
    return int(path.stem) if path.stem.isdigit() else None


def check_root(root: Path, version: MavCelebVersion) -> None:
    if not root.is_dir():
        raise FvaError(f"dataset root {root} not found; pass --root the {version.name} folder "
                       "(the one holding voices/ and faces/)")


def find_lists(root: Path, version: MavCelebVersion, subset: str,
               lists: Path | None = None) -> tuple[Path | None, str | None]:
    """The folder holding the subset's ``<Lang>_<subset>.txt`` lists, and a note when it was found by looking.

    ``lists`` given: it must hold at least one of them. Not given: ``root`` when it holds one, else
    ``root/face_voice_association_splits/<v1|v2|v3>/`` when that does, else None.
    """
    names = version.list_names(subset)
    expected = " or ".join(names)
    if lists is not None:
        if not lists.is_dir():
            raise FvaError(f"--lists {lists} not found; pass the folder holding {expected}")
        if not any((lists / n).is_file() for n in names):
            raise FvaError(f"no {subset} list of {version.name} in {lists}; expected {expected} there "
                           f"(as in {SPLITS_FOLDER}/{version.short}/)")
        return lists, None
    if any((root / n).is_file() for n in names):
        return root, None
    splits = root / SPLITS_FOLDER / version.short
    if any((splits / n).is_file() for n in names):
        return splits, (f"{version.name}: read the {subset} lists from {splits} (none in {root}); "
                        "--lists DIR names another folder")
    return None, None


def train_records(root: Path, version: MavCelebVersion, lists: Path | None = None) -> list[MediaRecord]:
    """Every train voice clip and face image under ``voices/`` and ``faces/``; the ``<Lang>_train.txt``
    lists in ``lists`` (when there are any) are checked too."""
    check_root(root, version)
    records: list[MediaRecord] = []
    for modality, folder, suffixes in (("voice", "voices", VOICE_SUFFIXES), ("face", "faces", FACE_SUFFIXES)):
        top = root / folder
        if not top.is_dir():
            raise FvaError(f"{top} not found; {version.name} train media live in {root}/voices and "
                           f"{root}/faces (idNNNN/<Language>/<video>/<file>)")
        for path in iter_files(top, suffixes):
            rel = path.relative_to(root)
            if len(rel.parts) != 5:
                raise FvaError(f"{path}: unexpected location; expected {folder}/<identity>/<Language>/"
                               "<video>/<file>; move or remove it")
            _, identity, language, video, _ = rel.parts
            records.append(MediaRecord(
                key=media_key(rel.as_posix()), identity=identity, language=canonical_language(language),
                modality=modality, path=rel.as_posix(), video=video,
                frame=_frame_number(path) if modality == "face" else None,
            ))
    if not records:
        raise FvaError(f"no media found under {root}/voices or {root}/faces; check --root")
    if lists is not None:
        check_train_lists(root, version, lists)
    return records


def check_train_lists(root: Path, version: MavCelebVersion, lists: Path | None = None) -> None:
    """Check each ``<Lang>_train.txt`` present in ``lists`` (default: the root): two fields per line, both
    files exist under the root."""
    for language in version.languages:
        path = (lists or root) / f"{language}_train.txt"
        if not path.is_file():
            continue
        with path.open() as fh:
            for lineno, line in enumerate(fh, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2:
                    raise FvaError(f"{where(path, lineno)}: expected 2 fields '<voice path> <face path>', "
                                   f"found {len(fields)}; fix or remove that line")
                for folder, listed in zip(("voices", "faces"), fields):
                    if not (root / folder / listed).is_file():
                        raise FvaError(f"{where(path, lineno)}: {folder}/{listed} does not exist; "
                                       "the dataset is incomplete or --root points elsewhere")


def test_records(root: Path, version: MavCelebVersion, lists: Path | None = None) -> list[MediaRecord]:
    """The media of the ``<Lang>_test.txt`` lists in ``lists`` (no identities: the organisers keep them);
    list paths are relative to the dataset root. ``lists`` None: none was found (an error)."""
    check_root(root, version)
    if lists is None:
        raise FvaError(f"no test list of {version.name} in {root} or {root / SPLITS_FOLDER / version.short}; "
                       f"expected {' or '.join(version.list_names('test'))}; pass --lists DIR, the folder "
                       "holding them")
    records: dict[str, MediaRecord] = {}
    found_list = False
    for language in version.languages:
        path = lists / f"{language}_test.txt"
        if not path.is_file():
            continue
        found_list = True
        for trial in read_trials(path):
            for modality, listed in (("voice", trial.voice), ("face", trial.face)):
                found = resolve_media(root, listed, language)
                if found is None:
                    raise FvaError(f"{where(path, trial.line)}: {listed} not found under {root} or "
                                   f"{root}/{language}_test; the test media are missing or --root is wrong")
                key = media_key(listed)
                if key not in records:
                    records[key] = MediaRecord(
                        key=key, identity=None, language=language, modality=modality,
                        path=found.relative_to(root).as_posix(),
                        frame=_frame_number(found) if modality == "face" else None,
                    )
    if not found_list:
        raise FvaError(f"no test list of {version.name} in {lists}; expected {' or '.join(version.list_names('test'))}")
    return list(records.values())
