"""MAV-Celeb v4 (FLAG 2027: English/Bengali, with gender labels), as the challenge's download ships it.

Train (English only, the data the challenge allows): ``train_set/`` holds ``train_English.txt`` (one line per
sample, whitespace-separated; field 3 the voice path, field 4 the face path, both relative to that folder,
field 5 the speaker id, field 6 its class id), ``voices/English/idNNN/NNNNN.wav`` and
``faces/English/idNNN/NNNNN.jpg``. Genders ship apart, in ``meta_file_train_set.csv`` (no header; speaker id,
then ``m`` or ``f``). Test (dev/eval) lists: one folder per track, ``no_gender/`` and ``gender/`` (every
negative pair has the positive's gender), each with ``<Lang>_test.txt`` (``<key> <voice path> <face path>``,
the paths written ``voices/<Lang>/NNNNN.wav``) and the media under ``<Lang>_test/voices/`` and
``<Lang>_test/faces/``. The language is spelled ``Bangla`` in the lists and the organisers' scorer and
``Bengali`` in the challenge README; manifests use the canonical ``Bengali``, file names keep the lists'.

The two tracks hold different media with the same file names, so a test key is the listed path qualified by
its track folder (``gender/voices/English/00000``); :func:`track_trials` gives a track's trials with those
qualified paths, which is what stage 2 maps to features.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from fva.data.languages import canonical_language
from fva.data.mavceleb import FACE_SUFFIXES, VOICE_SUFFIXES, media_key, resolve_media
from fva.data.records import MediaRecord, iter_files
from fva.data.trials import Trial, read_trials
from fva.errors import FvaError, where

NAME = "mavceleb-v4"
TRAIN_LANGUAGE = "English"  # FLAG 2027 trains on English only; Bengali is never in training
TRACKS = ("no_gender", "gender")  # the organisers' folder names: language track, gender-controlled track
TRAIN_LIST = f"train_{TRAIN_LANGUAGE}.txt"
META_FILE = "meta_file_train_set.csv"
TEST_SUFFIX = "_test.txt"
_GENDERS = {"m": "male", "male": "male", "f": "female", "female": "female"}
# where the download's zips unpack, relative to the root the user names (the root itself first)
_TRAIN_DIRS = (".", "train_set", "train_set/train_set", "train_set_extracted/train_set/train_set")
_TEST_DIRS = (".", "dev_set", "dev_set_extracted/dev_set", "eval_set", "eval_set_extracted/eval_set")


def check_root(root: Path) -> None:
    if not root.is_dir():
        raise FvaError(f"dataset root {root} not found; pass --root the {NAME} folder (the one holding "
                       "train_set/, or the dev set's no_gender/ and gender/)")


def find_train_dir(root: Path) -> Path:
    """The folder holding ``voices/English`` and ``faces/English`` (and ``train_English.txt``)."""
    for rel in _TRAIN_DIRS:
        base = root / rel
        if (base / "voices" / TRAIN_LANGUAGE).is_dir() and (base / "faces" / TRAIN_LANGUAGE).is_dir():
            return base
    raise FvaError(f"no {NAME} train media under {root}: expected voices/{TRAIN_LANGUAGE}/ and "
                   f"faces/{TRAIN_LANGUAGE}/ in it or in {', '.join(_TRAIN_DIRS[1:])}; check --root")


def find_meta(root: Path, train_dir: Path) -> Path | None:
    """``meta_file_train_set.csv``: in the root, the train folder, or a folder between them."""
    here = train_dir
    while True:
        if (here / META_FILE).is_file():
            return here / META_FILE
        if here == root or here.parent == here or root not in here.parents:
            break
        here = here.parent
    return root / META_FILE if (root / META_FILE).is_file() else None


def read_genders(path: Path) -> dict[str, str]:
    """Speaker id -> ``male``/``female`` from the meta file (rows ``idNNN,m``; extra columns ignored)."""
    genders: dict[str, str] = {}
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if len(cells) < 2 or cells[1].lower() not in _GENDERS:
                if lineno == 1 and len(cells) >= 2 and not cells[0].lower().startswith("id"):
                    continue  # a header line
                raise FvaError(f"{where(path, lineno)}: expected '<speaker id>,<m|f>', found {','.join(row)!r}; "
                               "fix that row")
            genders[cells[0]] = _GENDERS[cells[1].lower()]
    if not genders:
        raise FvaError(f"{path}: no speaker genders in it; expected rows '<speaker id>,<m|f>'")
    return genders


def train_records(root: Path) -> tuple[list[MediaRecord], list[str], Path]:
    """English train media with each speaker's gender; returns the records, notes and the train folder."""
    check_root(root)
    train = find_train_dir(root)
    notes: list[str] = []
    meta = find_meta(root, train)
    genders = read_genders(meta) if meta else {}
    if meta is None:
        notes.append(f"{NAME}: no {META_FILE} under {root}; records carry no gender, so the gender-controlled dev "
                     f"trials (fva folds --negatives same-gender) cannot be made; put the meta file in {root}")
    records: list[MediaRecord] = []
    skipped: dict[str, int] = {}
    for modality, folder, suffixes in (("voice", "voices", VOICE_SUFFIXES), ("face", "faces", FACE_SUFFIXES)):
        for path in iter_files(train / folder, suffixes):
            rel = path.relative_to(train)
            if len(rel.parts) != 4:
                raise FvaError(f"{path}: unexpected location; expected {folder}/<Language>/<identity>/<file>; "
                               "move or remove it")
            language = canonical_language(rel.parts[1])
            if language != TRAIN_LANGUAGE:  # the challenge trains on English only
                skipped[language] = skipped.get(language, 0) + 1
                continue
            identity = rel.parts[2]
            listed = path.relative_to(root).as_posix()
            records.append(MediaRecord(
                key=media_key(listed), identity=identity, language=language, modality=modality, path=listed,
                frame=int(path.stem) if modality == "face" and path.stem.isdigit() else None,
                gender=genders.get(identity),
            ))
    if not records:
        raise FvaError(f"no {TRAIN_LANGUAGE} media under {train}/voices or {train}/faces; check --root")
    for language, n in sorted(skipped.items()):
        notes.append(f"{NAME}: left out {n} {language} train file(s): FLAG 2027 trains on {TRAIN_LANGUAGE} only")
    if genders:
        missing = sorted({r.identity for r in records if r.gender is None})
        if missing:
            notes.append(f"{NAME}: {len(missing)} speaker(s) have no gender in {meta} (first {missing[0]})")
    if (train / TRAIN_LIST).is_file():
        check_train_list(train)
    return records, notes, train


def check_train_list(train: Path) -> None:
    """Each line of ``train_English.txt``: at least 4 fields, and every listed media path exists."""
    path = train / TRAIN_LIST
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4:
                raise FvaError(f"{where(path, lineno)}: expected '... <voice path> <face path> <speaker> <class>', "
                               f"found {len(fields)} field(s); fix or remove that line")
            for listed in fields:
                if listed.lower().endswith(VOICE_SUFFIXES + FACE_SUFFIXES) and not (train / listed).is_file():
                    raise FvaError(f"{where(path, lineno)}: {listed} does not exist under {train}; the dataset "
                                   "is incomplete or --root points elsewhere")


def find_test_dir(root: Path, lists: Path | None = None) -> Path | None:
    """The folder holding the track folders (``no_gender/``, ``gender/``) with ``<Lang>_test.txt`` lists."""
    if lists is not None:
        if not is_track_dir(lists):
            raise FvaError(f"--lists {lists}: no {'/ or '.join(TRACKS)}/ folder with <Lang>{TEST_SUFFIX} lists in it; "
                           "pass the folder holding the track folders")
        return lists
    for rel in _TEST_DIRS:
        if is_track_dir(root / rel):
            return root / rel
    return None


def is_track_dir(folder: Path) -> bool:
    """Whether ``folder`` holds at least one track folder with a ``<Lang>_test.txt`` list (the FLAG layout)."""
    return any(test_languages(folder / t) for t in TRACKS)


def test_languages(track_dir: Path) -> list[str]:
    """``X`` for each ``X_test.txt`` in a track folder, sorted, spelled as the file names spell them."""
    if not track_dir.is_dir():
        return []
    return sorted(p.name[:-len(TEST_SUFFIX)] for p in track_dir.glob(f"*{TEST_SUFFIX}")
                  if p.is_file() and len(p.name) > len(TEST_SUFFIX))


def tracks_of(test_dir: Path) -> list[str]:
    """The tracks that have lists under ``test_dir``, in :data:`TRACKS` order."""
    return [t for t in TRACKS if test_languages(test_dir / t)]


def track_trials(test_dir: Path, track: str, language: str) -> list[Trial]:
    """A track's trials with their media paths qualified by the track folder (the manifest keys' form)."""
    path = test_dir / track / f"{language}{TEST_SUFFIX}"
    return [Trial(t.key, f"{track}/{t.voice}", f"{track}/{t.face}", line=t.line) for t in read_trials(path)]


def resolve_test_media(track_dir: Path, listed: str, language: str) -> Path | None:
    """The file a track list's path names: under the track folder or ``<Lang>_test/``, also with the language
    folder left out (``voices/English/00000.wav`` stored as ``English_test/voices/00000.wav``)."""
    found = resolve_media(track_dir, listed, language)
    if found is not None:
        return found
    parts = PurePosixPath(listed.replace("\\", "/")).parts
    if len(parts) == 3 and parts[1] == language:
        return resolve_media(track_dir / f"{language}_test", f"{parts[0]}/{parts[2]}")
    return None


def test_records(root: Path, lists: Path | None = None) -> tuple[list[MediaRecord], Path]:
    """The media of every track's ``<Lang>_test.txt`` (no identities: the organisers keep them)."""
    check_root(root)
    test_dir = find_test_dir(root, lists)
    if test_dir is None:
        raise FvaError(f"no {NAME} test lists under {root}: expected {'/ and '.join(TRACKS)}/ with <Lang>{TEST_SUFFIX} "
                       f"in it or in {', '.join(_TEST_DIRS[1:])}; pass --lists DIR, the folder holding the tracks")
    tracks = tracks_of(test_dir)
    if len(tracks) < len(TRACKS):
        missing = next(t for t in TRACKS if t not in tracks)
        raise FvaError(f"{test_dir}: has {tracks[0]}/ but no {missing}/ with <Lang>{TEST_SUFFIX} lists; FLAG 2027's "
                       f"dev and eval sets come in both tracks ({', '.join(TRACKS)}): unpack the missing one there")
    records: dict[str, MediaRecord] = {}
    for track in tracks:
        for language in test_languages(test_dir / track):
            path = test_dir / track / f"{language}{TEST_SUFFIX}"
            for trial in read_trials(path):
                for modality, listed in (("voice", trial.voice), ("face", trial.face)):
                    found = resolve_test_media(test_dir / track, listed, language)
                    if found is None:
                        raise FvaError(f"{where(path, trial.line)}: {listed} not found under {test_dir / track} or "
                                       f"its {language}_test/; the test media are missing or --root is wrong")
                    key = media_key(f"{track}/{listed}")
                    if key not in records:
                        records[key] = MediaRecord(
                            key=key, identity=None, language=canonical_language(language), modality=modality,
                            path=found.relative_to(root).as_posix() if root in found.parents else str(found),
                            frame=int(found.stem) if modality == "face" and found.stem.isdigit() else None)
    return list(records.values()), test_dir
