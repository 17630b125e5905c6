"""A small synthetic dataset shaped like MAV-Celeb v4 (FLAG 2027: English train, English/Bangla tests per track).

Identities, voices and faces come from :mod:`fva.synth.demo` (Bengali shifts every voice in its own fixed way);
the layout is the challenge download's (see :mod:`fva.data.mavceleb_v4`)::

    meta_file_train_set.csv                       idNNN,m|f (no header)
    train_set/train_English.txt                   <key> English <voice> <face> <speaker> <class>
    train_set/voices/English/idNNN/NNNNN.wav      train_set/faces/English/idNNN/NNNNN.jpg
    dev_set/<track>/<Lang>_test.txt               <key> voices/<Lang>/NNNNN.wav faces/<Lang>/NNNNN.jpg
    dev_set/<track>/<Lang>_test/voices/NNNNN.wav  dev_set/<track>/<Lang>_test/faces/NNNNN.jpg
    ground_truth/<Lang>_test_<track>.txt          <key> <0|1>, as the organisers' scorer reads it

with tracks ``no_gender`` (negatives of any gender) and ``gender`` (every negative has the positive's
gender) and the test language spelled ``Bangla``, as the lists and the scorer spell it. The same seed and
sizes give the same bytes.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fva.data.mavceleb_v4 import META_FILE, TRACKS, TRAIN_LANGUAGE, TRAIN_LIST
from fva.data.trials import Trial, write_labels, write_trials
from fva.errors import FvaError
from fva.synth import demo

TEST_LANGUAGES = ("English", "Bangla")  # as the v4 lists spell them
_VOICE_LANGUAGE = {"English": "English", "Bangla": "Bengali"}  # the synthetic voices' language
# keyed random streams, apart from demo.py's tags
_T_V4_TRAIN, _T_V4_KEYS, _T_V4_TRIALS, _T_V4_VOICE, _T_V4_FACE = range(40, 45)


@dataclass(frozen=True)
class DemoV4Summary:
    """What :func:`generate_demo_v4` wrote."""

    root: Path
    seed: int
    train_identities: int
    test_identities: int
    train_samples: int
    test_trials: dict[str, dict[str, int]]  # track -> language -> trials
    seconds: float

    def lines(self) -> list[str]:
        out = [f"wrote synthetic MAV-Celeb v4 (FLAG 2027) demo data to {self.root} (seed {self.seed}) in "
               f"{self.seconds:.1f} s",
               f"identities: {self.train_identities} train ({TRAIN_LANGUAGE} only, {self.train_samples} "
               f"voice-face samples), {self.test_identities} test (disjoint, half female)"]
        for track, per_lang in self.test_trials.items():
            out.append(f"{track}: " + ", ".join(f"{lang} {n} trials" for lang, n in per_lang.items())
                       + " (half same person)")
        return out


def generate_demo_v4(out: Path, *, seed: int = 0, train_identities: int = 40, test_identities: int = 16,
                     videos: int = 2, samples: int = 3, trials_per_identity: int = 8) -> DemoV4Summary:
    """Write a synthetic MAV-Celeb v4 dataset to ``out`` (new or empty) and return what was written.

    Train identities ``id001..`` get ``videos`` x ``samples`` English voice-face samples each; the test
    identities (half female, half male) are the voice side of ``trials_per_identity`` trials per track and
    language, half same-person.
    """
    start = time.perf_counter()
    out = Path(out)
    demo.check_sizes(seed, train_identities, test_identities, videos, samples, 1, trials_per_identity)
    if test_identities % 2 or test_identities < 4:
        raise FvaError(f"test identities must be even and at least 4 (got {test_identities}): half are female, "
                       "and the gender track needs two of each gender")
    if train_identities + test_identities > 999:
        raise FvaError(f"{train_identities + test_identities} identities do not fit idNNN names; use at most 999")
    tmp = demo.start_tree(out)
    try:
        train = [demo.make_identity(seed, i) for i in range(1, train_identities + 1)]
        test = _balanced(seed, train_identities + 1, test_identities)
        n_train = _write_train(tmp, seed, train, videos, samples)
        trials = {track: {lang: _write_test(tmp, seed, track, lang, test, videos, trials_per_identity)
                          for lang in TEST_LANGUAGES} for track in TRACKS}
        (tmp / "README.txt").write_text(
            f"Synthetic MAV-Celeb v4 (FLAG 2027) demo data written by fva demo-data --variant v4 with seed {seed}; "
            f"no real people. {train_identities} English train identities with genders in {META_FILE}; "
            f"{test_identities} disjoint test identities in dev_set/<track>/ (tracks {', '.join(TRACKS)}), "
            "ground truth in ground_truth/<Lang>_test_<track>.txt.\n")
        demo.publish_tree(tmp, out, "the demo data were")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DemoV4Summary(out, seed, train_identities, test_identities, n_train, trials, time.perf_counter() - start)


def _name(number: int) -> str:
    return f"id{number:03d}"


def _balanced(seed: int, first: int, count: int) -> list[demo.Identity]:
    """``count`` identities numbered from ``first`` on, half female and half male (in number order)."""
    picked: dict[bool, list[demo.Identity]] = {True: [], False: []}
    number = first
    while min(len(v) for v in picked.values()) < count // 2:
        ident = demo.make_identity(seed, number)
        if len(picked[ident.female]) < count // 2:
            picked[ident.female].append(ident)
        number += 1
    return sorted(picked[True] + picked[False], key=lambda i: int(i.name[2:]))


def _write_train(root: Path, seed: int, ids: list[demo.Identity], videos: int, samples: int) -> int:
    """English train samples (a voice clip and a face of one video, numbered alike), the list and the meta."""
    train = root / "train_set"
    keys = iter(_keys(demo.seeded_rng(seed, _T_V4_KEYS, 0), len(ids) * videos * samples))
    lines: list[str] = []
    for cls, ident in enumerate(ids):
        number = int(ident.name[2:])
        name = _name(number)
        for vi, video in enumerate(demo.identity_videos(seed, number, 0, videos)):
            for u in range(samples):
                n = len(lines)
                r = demo.seeded_rng(seed, _T_V4_TRAIN, number, vi, u)
                voice = f"voices/{TRAIN_LANGUAGE}/{name}/{n:05d}.wav"
                face = f"faces/{TRAIN_LANGUAGE}/{name}/{n:05d}.jpg"
                demo.write_wav(train / voice, demo.render_voice(ident, TRAIN_LANGUAGE, video, r))
                demo.write_jpg(train / face, demo.render_face(ident, video, r))
                lines.append(f"{next(keys)} {TRAIN_LANGUAGE} {voice} {face} {name} {cls}\n")
    (train / TRAIN_LIST).write_text("".join(lines))
    (root / META_FILE).write_text("".join(f"{_name(int(i.name[2:]))},{'f' if i.female else 'm'}\n" for i in ids))
    return len(lines)


def _write_test(root: Path, seed: int, track: str, lang: str, ids: list[demo.Identity], videos: int,
                per_identity: int) -> int:
    """One track's list of one language, its media and ground truth. Track ``gender``: every impostor face
    has the voice's gender."""
    ti, li = TRACKS.index(track), TEST_LANGUAGES.index(lang)
    pairs = trial_pairs(seed, track, lang, ids, per_identity)
    keys = _keys(demo.seeded_rng(seed, _T_V4_KEYS, 1 + ti * len(TEST_LANGUAGES) + li), len(pairs))
    voice_lang = _VOICE_LANGUAGE[lang]
    contexts = {i: demo.identity_videos(seed, int(ident.name[2:]), 1 + li, videos) for i, ident in enumerate(ids)}
    folder = root / "dev_set" / track
    trials: list[Trial] = []
    labels: dict[str, int] = {}
    for k, (vi, fi) in enumerate(pairs):
        rv = demo.seeded_rng(seed, _T_V4_VOICE, ti, li, k)
        rf = demo.seeded_rng(seed, _T_V4_FACE, ti, li, k)
        demo.write_wav(folder / f"{lang}_test" / "voices" / f"{k:05d}.wav",
                        demo.render_voice(ids[vi], voice_lang, contexts[vi][int(rv.integers(videos))], rv))
        demo.write_jpg(folder / f"{lang}_test" / "faces" / f"{k:05d}.jpg",
                        demo.render_face(ids[fi], contexts[fi][int(rf.integers(videos))], rf))
        # the lists write voices/<Lang>/NNNNN.wav while the files sit in <Lang>_test/voices/, as the release's
        # README shows them
        trials.append(Trial(keys[k], f"voices/{lang}/{k:05d}.wav", f"faces/{lang}/{k:05d}.jpg"))
        labels[keys[k]] = int(vi == fi)
    write_trials(folder / f"{lang}_test.txt", trials)
    (root / "ground_truth").mkdir(exist_ok=True)
    write_labels(root / "ground_truth" / f"{lang}_test_{track}.txt", labels)
    return len(trials)


def trial_pairs(seed: int, track: str, lang: str, ids: list[demo.Identity],
                per_identity: int) -> list[tuple[int, int]]:
    """(voice identity, face identity) of each trial of a list, in list order, as indices into ``ids``: per
    identity ``per_identity // 2`` same-person trials and as many impostors, cycling over the others (track
    ``gender``: the others of its gender)."""
    r = demo.seeded_rng(seed, _T_V4_TRIALS, TRACKS.index(track), TEST_LANGUAGES.index(lang))
    half = per_identity // 2
    pairs: list[tuple[int, int]] = []
    for i, ident in enumerate(ids):
        others = [j for j in range(len(ids)) if j != i and (track != "gender" or ids[j].female == ident.female)]
        shift = int(r.integers(len(others)))
        pairs.extend((i, i) for _ in range(half))
        pairs.extend((i, others[(shift + k) % len(others)]) for k in range(half))
    return [pairs[int(p)] for p in r.permutation(len(pairs))]


def _keys(r: np.random.Generator, n: int) -> list[str]:
    keys: list[str] = []
    seen: set[str] = set()
    while len(keys) < n:
        key = "".join(r.choice(list(demo.KEY_ALPHABET), 8))
        if key not in seen:
            seen.add(key)
            keys.append(key)
    return keys
