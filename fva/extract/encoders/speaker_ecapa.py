"""speaker-ecapa: speechbrain's ECAPA-TDNN speaker model, 6144-d pooled statistics before its 192-d fc.

Default source ``speechbrain/spkrec-ecapa-voxceleb`` (trained on VoxCeleb, so every VoxCeleb language is
heard), fetched by speechbrain into fva's models home when online (see ``fva.extract.weights``); for an
unheard split pass ``--weights`` the folder of a model trained without that language (``fva train-encoder
speaker`` writes one in the same format).
"""

from __future__ import annotations

from fva.extract.encoders.base import register
from fva.extract.encoders.ecapa import EcapaEncoder
from fva.extract.weights import SPEAKER_HUB_ID


@register
class SpeakerEcapa(EcapaEncoder):
    name = "speaker-ecapa"
    default_weights = SPEAKER_HUB_ID

    @staticmethod
    def interface():
        from speechbrain.inference.speaker import EncoderClassifier

        return EncoderClassifier
