"""Systems with nothing to train: a joint embedding space scored as it is, and the age gap.

* ``zeroshot``: the voice and the face features already live in one space (ImageBind's ``imagebind-voice`` and
  ``imagebind-face``, 1024-d), so the score is 1 - cosine of the two features. Centring is the config's
  ``score.centre``: ``train`` (each fold's training mean, level 0: the published "each centred" of FLAG 2027's
  best documented system, ``nguyennhan2006/FourFusion_FLAG2027``) or ``file`` (the test file's own mean, level 1).
* ``age-gap``: distance = |voice age - face age| in years (the score term "minus the absolute age difference"
  of the same system), from the age estimators ``voice-age`` and ``face-age`` (their first column is the age).
  Used in fusion beside a face-voice system (a ``fuse`` entry), not alone.

Both are closed-form systems with one candidate solution: the trainer still runs each fold, so that every fold
has its checkpoint, its training statistics (the centring mean, z-norm), its dev EER and its calibration, and the
system fuses, compares and scores like any other.
"""

from __future__ import annotations

import torch

from fva.errors import FvaError
from fva.heads.systems import register_system
from fva.heads.systems.base import Batch, HeadSystem

# the encoders whose rows start with the age in years (fva/extract/encoders/voice_age.py, face_age.py)
AGE_ENCODERS = {"voice": ("voice-age",), "face": ("face-age",)}


class NothingToTrain(HeadSystem):
    """A closed-form system whose one solution is fixed: no parameters, no fitting."""

    closed_form = True
    classifier_modules = ()

    def solutions(self, voice_rows, face_rows):
        yield {"fitted": "nothing"}

    def loss(self, batch: Batch) -> torch.Tensor:
        raise FvaError(f"{self.name} has nothing to train by gradient steps")


@register_system
class ZeroShot(NothingToTrain):
    """1 - cosine of the voice and face features themselves (one shared space, equal widths)."""

    name = "zeroshot"

    def __init__(self, voice_dim: int, face_dim: int, n_classes: int, cfg) -> None:
        super().__init__(voice_dim, face_dim, n_classes, cfg)
        if voice_dim != face_dim:
            raise FvaError(f"zeroshot scores voice and face features of one joint space, but they are {voice_dim}-d "
                           f"and {face_dim}-d; use one encoder per modality from the same model (imagebind-voice "
                           "and imagebind-face)")

    @staticmethod
    def check_features(voice: list[str], face: list[str], source: str) -> None:
        if len(voice) != 1 or len(face) != 1:
            raise FvaError(f"{source}: the zeroshot system takes one encoder per modality from one joint space "
                           f"(e.g. imagebind-voice and imagebind-face), got {voice} and {face}")

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return x


@register_system
class AgeGap(NothingToTrain):
    """|voice age - face age| in years: the first column of each modality's age estimator."""

    name = "age-gap"

    @staticmethod
    def check_features(voice: list[str], face: list[str], source: str) -> None:
        for modality, names in (("voice", voice), ("face", face)):
            if len(names) != 1 or names[0] not in AGE_ENCODERS[modality]:
                raise FvaError(f"{source}: the age-gap system reads ages from one {modality} age estimator "
                               f"({' or '.join(AGE_ENCODERS[modality])}), got {names}")

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]

    def pair_distances(self, voice: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return (voice[:, 0] - face[:, 0]).abs()
