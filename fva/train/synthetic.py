"""Small generated datasets in the VoxCeleb2 and CommonVoice layouts, for the trainers' tests and benchmark.

Voices come from the demo dataset's generator (``fva.data.demo``): each identity has its own pitch, formant
scale, rate and voice quality, with age and gender among its traits, so speakers are separable and age and
gender are learnable. Clips are 16 kHz wav files (``.wav`` is accepted in both layouts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fva.data import demo
from fva.data.commonvoice import AGES

CV_COLUMNS = ("client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
              "gender", "accents", "variant", "locale", "segment")


def _utterance(ident, video, seed: int, *key: int, segments: int = 1) -> np.ndarray:
    """``segments`` generated clips (1.5-2.5 s each) of one identity, back to back."""
    r = demo._rng(seed, 7919, *key)
    return np.concatenate([demo._voice(ident, "English", video, r) for _ in range(segments)])


def write_voxceleb2(root: Path, identities: int = 4, videos: int = 2, clips: int = 3, seed: int = 0,
                    segments: int = 1) -> Path:
    """``root/dev/aac/idNNNNN/<video>/NNNNN.wav`` for ``identities`` speakers."""
    for i in range(identities):
        ident = demo._identity(seed, i)
        for v, video in enumerate(demo._videos(seed, i, 0, videos)):
            for u in range(clips):
                path = root / "dev" / "aac" / f"id{i:05d}" / video.vid / f"{u + 1:05d}.wav"
                demo._write_wav(path, _utterance(ident, video, seed, i, v, u, segments=segments))
    return root


def write_commonvoice(root: Path, locales: tuple[str, ...] = ("en", "de"), speakers: int = 4, clips: int = 3,
                      seed: int = 0, segments: int = 1) -> Path:
    """``root/<locale>/validated.tsv`` and ``clips/`` with ``speakers`` speakers per locale; ages are the
    identities' decades, genders male/female except the last speaker of each locale, who says 'other'."""
    for li, locale in enumerate(locales):
        rows = ["\t".join(CV_COLUMNS)]
        for s in range(speakers):
            number = 1000 * (li + 1) + s
            ident = demo._identity(seed, number)
            video = demo._videos(seed, number, 0, 1)[0]
            decade = AGES[min(len(AGES) - 1, max(1, int(ident.age // 10) - 1))]
            gender = "other" if s == speakers - 1 else ("female" if ident.female else "male")
            for u in range(clips):
                name = f"common_voice_{locale}_{number}_{u}.wav"
                demo._write_wav(root / locale / "clips" / name,
                                _utterance(ident, video, seed, number, u, segments=segments))
                rows.append("\t".join((f"client{number}", name, f"s{u}", "Ein Satz.", "", "2", "0", decade,
                                       gender, "", "", locale, "")))
        (root / locale / "validated.tsv").write_text("\n".join(rows) + "\n")
    return root
