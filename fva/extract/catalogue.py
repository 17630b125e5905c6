"""The encoder catalogue: every built-in encoder's facts in one record (as timm's registry keeps a model's name,
pretrained source and defaults together). The registry's lazy imports, ``fva extract``'s default encoders, the
heads' default features, the demo checkpoints' defaults and ``fva weights``' name look-ups all derive from it;
adding an encoder is one entry here and its module (which registers the class under the same name).

Pure data: importing it loads no numpy or torch (the CLI reads it at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass

from fva.errors import FvaError


@dataclass(frozen=True)
class EncoderEntry:
    """One encoder: ``module`` (under ``fva.extract.encoders``) defines and registers it; ``width`` is its
    output width with the default weights (caches read the real one off the model); ``source`` names its
    default weights in :data:`fva.extract.weights.SOURCES` (variants of one model share one); ``default``: in
    ``fva extract``'s default encoders, the heads' default features and the demo checkpoints (the FAME 2026
    winner's four)."""

    name: str
    modality: str
    module: str
    width: int
    source: str
    default: bool = False
    summary: str = ""


CATALOGUE: tuple[EncoderEntry, ...] = (
    EncoderEntry("speaker-ecapa", "voice", "speaker_ecapa", 6144, "speaker-ecapa", True,
                 "speechbrain ECAPA-TDNN, attentive statistics pooling after its batch norm"),
    EncoderEntry("voice-age-gender-ecapa", "voice", "voice_age_gender", 1536, "voice-age-gender-ecapa", True,
                 "fva's voice age-gender ECAPA (trained on CommonVoice), last shared layer"),
    EncoderEntry("vggface", "face", "vggface", 4096, "vggface", True,
                 "deepface VGG-Face fc7, L2-normalised (DeepFace.represent)"),
    EncoderEntry("vit-age-gender", "face", "vit_age_gender", 768, "vit-age-gender", True,
                 "ViT-Base age-gender model, CLS token of the last hidden state"),
    # the FLAG 2027 organisers' features
    EncoderEntry("ecapa-embedding", "voice", "ecapa_embedding", 192, "ecapa-embedding", False,
                 "any speechbrain ECAPA's embedding_model output, not normalised (FLAG 2027 organisers')"),
    EncoderEntry("vggface-keras", "face", "vggface", 4096, "vggface-keras", False,
                 "VGG-Face fc7 after ReLU, Keras-style input, not normalised (FLAG 2027 organisers')"),
    # FAME 2026's later entries (transformers save_pretrained folders)
    EncoderEntry("wavlm", "voice", "wavlm", 1024, "wavlm", False, "WavLM-Large, mean of the last hidden layer"),
    EncoderEntry("wavlm-layers", "voice", "wavlm", 1024, "wavlm", False,
                 "WavLM-Large, mean of an equal-weight sum of every hidden state"),
    EncoderEntry("dinov2", "face", "dinov2", 1536, "dinov2", False, "DINOv2-Giant CLS token"),
    EncoderEntry("dinov2-patch-mean", "face", "dinov2", 1536, "dinov2", False, "DINOv2-Giant mean of patch tokens"),
    EncoderEntry("dinov2-mean", "face", "dinov2", 1536, "dinov2", False, "DINOv2-Giant mean of every token"),
    EncoderEntry("clip-image", "face", "clip_image", 768, "clip-image", False,
                 "CLIP ViT-L/14 projected image embedding"),
    EncoderEntry("clip-image-pooled", "face", "clip_image", 1024, "clip-image", False,
                 "CLIP ViT-L/14 pooled output before the projection"),
)
BY_NAME: dict[str, EncoderEntry] = {e.name: e for e in CATALOGUE}
if len(BY_NAME) != len(CATALOGUE):
    raise RuntimeError("fva.extract.catalogue: an encoder name is listed twice")


def entry(name: str) -> EncoderEntry:
    """The catalogue's record of ``name``; an unknown name lists the known ones."""
    if name not in BY_NAME:
        raise FvaError(f"unknown encoder {name!r}; choose from {', '.join(BY_NAME)}")
    return BY_NAME[name]


def default_encoders(modality: str | None = None) -> list[str]:
    """The default encoders (of one modality, or both), in catalogue order.

    >>> default_encoders("voice"), default_encoders("face")
    (['speaker-ecapa', 'voice-age-gender-ecapa'], ['vggface', 'vit-age-gender'])
    """
    return [e.name for e in CATALOGUE if e.default and modality in (None, e.modality)]
