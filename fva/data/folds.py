"""Identity-disjoint k-fold cross-validation over MAV-Celeb train identities, and per-fold dev trials.

Fold ``f`` (0-based) holds out the identities ``folds[f]``. For each fold and each language its dev trials
pair every held-out voice clip of that language (up to a cap) with faces of the same identity and as many
faces of other held-out identities (3 each by default): balanced, in the FAME trial format, with ground truth beside them.
A model trained on one language is then measured on its heard and its unheard language, as in the challenge.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fva.data.records import MediaRecord
from fva.data.trials import Trial, labels_path, write_labels, write_trials
from fva.errors import FvaError

DEFAULT_FOLDS = 7
NEGATIVES = ("any", "same-gender")  # dev-trial impostors: any other held-out identity, or one of the same gender
_KEY_ALPHABET = np.array(list(string.ascii_lowercase + string.digits))


@dataclass(frozen=True)
class Folds:
    """Identities per fold, with the seed and dataset that made them."""

    folds: list[list[str]]
    seed: int
    dataset: str

    @property
    def k(self) -> int:
        return len(self.folds)

    def held_out(self, fold: int) -> list[str]:
        self.check_fold(fold)
        return self.folds[fold]

    def train_identities(self, fold: int) -> list[str]:
        self.check_fold(fold)
        return sorted(i for f, ids in enumerate(self.folds) if f != fold for i in ids)

    def check_fold(self, fold: int) -> None:
        if not 0 <= fold < self.k:
            raise FvaError(f"fold {fold} out of range; this split has folds 0..{self.k - 1}")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(
            {"k": self.k, "seed": self.seed, "dataset": self.dataset, "folds": self.folds}, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Folds":
        path = Path(path)
        if not path.is_file():
            raise FvaError(f"{path}: folds file not found; make one with 'fva folds'")
        try:
            data = json.loads(path.read_text())
            return cls(folds=[list(map(str, f)) for f in data["folds"]], seed=int(data["seed"]),
                       dataset=str(data["dataset"]))
        except (ValueError, KeyError, TypeError):
            raise FvaError(f"{path}: not an fva folds file; make one with 'fva folds'") from None


def make_folds(identities: list[str], k: int = DEFAULT_FOLDS, seed: int = 0, dataset: str = "") -> Folds:
    """Shuffle the identities with ``seed`` and cut them into ``k`` folds of near-equal size.

    >>> make_folds([f"id{i}" for i in range(10)], k=3, seed=1).folds == make_folds(
    ...     [f"id{i}" for i in range(9, -1, -1)], k=3, seed=1).folds
    True
    """
    ids = sorted(set(identities))
    if k < 2:
        raise FvaError(f"--k {k}: cross-validation needs at least 2 folds")
    if len(ids) < k:
        raise FvaError(f"{len(ids)} identities cannot fill {k} folds; use --k {max(2, len(ids))} or fewer")
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = [sorted(ids[i] for i in part) for part in np.array_split(order, k)]
    return Folds(folds=folds, seed=seed, dataset=dataset)


def identity_genders(records: list[MediaRecord], identities: list[str],
                     instead: str = "use --negatives any") -> dict[str, str]:
    """Gender of each of ``identities`` from its records; one without a gender, or with two, is an error
    (whose last words, ``instead``, say what the caller can do without genders)."""
    wanted = set(identities)
    seen: dict[str, set[str]] = {i: set() for i in wanted}
    for r in records:
        if r.identity in wanted and r.gender:
            seen[r.identity].add(r.gender)
    for identity in sorted(wanted):
        if len(seen[identity]) != 1:
            what = "no gender" if not seen[identity] else f"genders {sorted(seen[identity])}"
            raise FvaError(f"identity {identity} has {what} in the manifest; same-gender negatives need one gender "
                           "per identity (MAV-Celeb v4: meta_file_train_set.csv beside train_set/, read by fva manifest), "
                           f"or {instead}")
    return {i: next(iter(g)) for i, g in seen.items()}


def dev_trials(records: list[MediaRecord], identities: list[str], language: str, seed: int | list[int],
               max_trials: int = 2000, pairs_per_voice: int = 3,
               negatives: str = "any") -> tuple[list[Trial], dict[str, int]]:
    """Balanced dev trials of ``language`` among ``identities``: per voice clip, ``pairs_per_voice``
    same-person trials and as many different-person trials (at most ``max_trials`` in all). Several pairs
    per clip make the EER used for model selection far less noisy on small folds. Faces come from the
    same language when the identity has some, else from any language. ``negatives="same-gender"`` (FLAG
    2027's gender-controlled track): every impostor has the voice's gender; a clip whose gender no other
    held-out identity shares gets no trials."""
    if negatives not in NEGATIVES:
        raise FvaError(f"unknown negatives {negatives!r}; use one of {', '.join(NEGATIVES)}")
    held = set(identities)
    gender = identity_genders(records, sorted(held)) if negatives == "same-gender" else None
    voices = sorted((r for r in records if r.modality == "voice" and r.identity in held
                     and r.language == language), key=lambda r: r.key)
    faces: dict[str, list[MediaRecord]] = {}
    faces_any: dict[str, list[MediaRecord]] = {}
    for r in sorted((r for r in records if r.modality == "face" and r.identity in held), key=lambda r: r.key):
        faces_any.setdefault(r.identity, []).append(r)
        if r.language == language:
            faces.setdefault(r.identity, []).append(r)
    with_faces = sorted(faces_any)
    if len(with_faces) < 2:
        return [], {}
    rng = np.random.default_rng(seed)
    voices = [v for v in voices if v.identity in faces_any]
    if gender is not None:  # impostors of the voice's gender: keep only clips that have some
        voices = [v for v in voices if any(gender[x] == gender[v.identity] for x in with_faces if x != v.identity)]
    per_voice = 2 * pairs_per_voice
    if len(voices) * per_voice > max_trials:
        voices = [voices[i] for i in sorted(rng.choice(len(voices), max(1, max_trials // per_voice), replace=False))]
    keys = iter(_unique_keys(rng, per_voice * len(voices)))
    trials: list[Trial] = []
    labels: dict[str, int] = {}
    for voice in voices:
        others = [x for x in with_faces if x != voice.identity
                  and (gender is None or gender[x] == gender[voice.identity])]
        same_pool = faces.get(voice.identity) or faces_any[voice.identity]
        same = rng.choice(len(same_pool), pairs_per_voice, replace=len(same_pool) < pairs_per_voice)
        for j in range(pairs_per_voice):
            impostor = others[rng.integers(len(others))]
            pool = faces.get(impostor) or faces_any[impostor]
            for face, label in ((same_pool[same[j]], 1), (pool[rng.integers(len(pool))], 0)):
                key = next(keys)
                trials.append(Trial(key, voice.path, face.path))
                labels[key] = label
    return trials, labels


def _unique_keys(rng: np.random.Generator, n: int) -> list[str]:
    keys: list[str] = []
    seen: set[str] = set()
    while len(keys) < n:
        key = "".join(rng.choice(_KEY_ALPHABET, 8))
        if key not in seen:
            seen.add(key)
            keys.append(key)
    return keys


def write_fold_trials(records: list[MediaRecord], folds: Folds, out: str | Path,
                      max_trials: int = 2000, negatives: str = "any") -> dict[int, dict[str, int]]:
    """Write ``fold<f>/<Lang>_dev.txt`` and ``<Lang>_dev_labels.txt`` for every fold and language.

    Returns the trial counts per fold and language.
    """
    out = Path(out)
    languages = sorted({r.language for r in records if r.language})
    counts: dict[int, dict[str, int]] = {}
    for f in range(folds.k):
        fold_dir = out / f"fold{f}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        counts[f] = {}
        for li, language in enumerate(languages):
            trials, labels = dev_trials(records, folds.held_out(f), language,
                                        seed=[folds.seed, f, li], max_trials=max_trials,
                                        negatives=negatives)
            path = fold_dir / f"{language}_dev.txt"
            write_trials(path, trials)
            write_labels(labels_path(path), labels)
            counts[f][language] = len(trials)
    return counts
