"""ecapa-embedding: the 192-d speaker embedding (``embedding_model``'s output, not normalised) of any
speechbrain ECAPA-TDNN model folder or hub id.

Default source ``yangwang825/ecapa-tdnn-vox2`` (VoxCeleb2, channels 512), the FLAG 2027 organisers' voice
model: its embeddings of whole clips read at 16 kHz mono are the baseline's voice features. What is stored is
what speechbrain's ``EncoderClassifier.encode_batch(wav, normalize=False)`` returns for the clip alone
(``compute_features`` -> ``mean_var_norm`` -> ``embedding_model`` with relative lengths), computed here on
padded batches that change no clip's output (:class:`~fva.extract.encoders.ecapa.LengthAwareEcapa`).
Pick it for the FLAG baseline or any ECAPA's embedding; ``speaker-ecapa`` keeps the 6144-d pooled statistics
before the embedding layer (the FAME 2026 winner's feature).

The model loads through speechbrain's ``from_hparams`` (its own fetch for a hub id, into fva's models home);
it needs the modules ``compute_features``, ``mean_var_norm`` and an ECAPA-TDNN ``embedding_model``; a folder
of another model (an x-vector, say) is one line.
"""

from __future__ import annotations

from fva.errors import FvaError
from fva.extract.encoders.base import register
from fva.extract.encoders.ecapa import EcapaEncoder
from fva.extract.weights import ORGANISER_VOICE_HUB_ID

NEEDED = ("compute_features", "mean_var_norm", "embedding_model")


def embedding_interface():
    """speechbrain's ``Pretrained`` that needs only the three modules the embedding uses (a model folder
    without a classifier loads too)."""
    from speechbrain.inference.interfaces import Pretrained

    class EcapaEmbedding(Pretrained):
        MODULES_NEEDED = list(NEEDED)

    return EcapaEmbedding


def check_ecapa(weights: str, mods) -> None:
    """One line when the loaded model is not a speechbrain ECAPA-TDNN with its Fbank front end."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    model = getattr(mods, "embedding_model", None)
    if not isinstance(model, ECAPA_TDNN):
        kind = type(model).__name__ if model is not None else "missing"
        raise FvaError(f"{weights}: embedding_model is {kind}, not speechbrain's ECAPA_TDNN; ecapa-embedding "
                       "needs an ECAPA model folder or hub id (e.g. yangwang825/ecapa-tdnn-vox2)")


@register
class EcapaEmbedding(EcapaEncoder):
    name = "ecapa-embedding"
    default_weights = ORGANISER_VOICE_HUB_ID
    output = "embedding"
    interface = staticmethod(embedding_interface)

    def check_model(self, mods) -> None:
        check_ecapa(self.weights, mods)

    def config(self) -> dict:
        return {"output": "embedding_model (speaker embedding, not normalised)", "input": "whole clip, 16 kHz mono"}
