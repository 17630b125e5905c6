"""Small generated datasets in the VoxCeleb2 and CommonVoice layouts, for the trainers' tests and benchmark.

Voices come from the demo dataset's generator (``fva.data.demo``): each identity has its own pitch, formant
scale, rate and voice quality, with age and gender among its traits, so speakers are separable and age and
gender are learnable. Clips are 16 kHz wav files (``.wav`` is accepted in both layouts). The layout writers
live in :mod:`fva.data.world`, which also writes them with real m4a/mp4/mp3 media for the recipes' world.
"""

from __future__ import annotations

from pathlib import Path

from fva.data import world
from fva.data.world import CV_COLUMNS

__all__ = ["CV_COLUMNS", "write_commonvoice", "write_voxceleb2"]


def write_voxceleb2(root: Path, identities: int = 4, videos: int = 2, clips: int = 3, seed: int = 0,
                    segments: int = 1) -> Path:
    """``root/dev/aac/idNNNNN/<video>/NNNNN.wav`` for ``identities`` speakers (English voices, no faces)."""
    world.write_voxceleb2(root, identities=identities, videos=videos, clips=clips, seed=seed, segments=segments)
    return root


def write_commonvoice(root: Path, locales: tuple[str, ...] = ("en", "de"), speakers: int = 4, clips: int = 3,
                      seed: int = 0, segments: int = 1) -> Path:
    """``root/<locale>/validated.tsv`` and ``clips/`` with ``speakers`` speakers per locale; ages are the
    identities' decades, genders male/female except the last speaker of each locale, who says 'other'."""
    world.write_commonvoice(root, locales=locales, speakers=speakers, clips=clips, seed=seed, segments=segments)
    return root
