"""Built-in encoders; importing this package registers them by name."""

from fva.environment import require_torchaudio

require_torchaudio()  # speechbrain imports torchaudio: one clear line, not a ctypes traceback

from fva.extract.encoders import speaker_ecapa, vggface, vit_age_gender, voice_age_gender  # noqa: F401
from fva.extract.encoders.base import ENCODERS, Encoded, Encoder, get_encoder_class, register

__all__ = ["ENCODERS", "Encoded", "Encoder", "get_encoder_class", "register"]
