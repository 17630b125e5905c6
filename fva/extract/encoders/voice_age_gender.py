"""voice-age-gender-ecapa: a small ECAPA-TDNN (channels / 4) with age and gender heads, trained by fva on
CommonVoice; output the 1536-d last shared layer (attentive statistics pooling after its batch norm), plus
the heads' age (years) and P(female) per utterance.

Checkpoint folder format (a speechbrain model folder, loaded with ``Pretrained.from_hparams`` like the
public speaker model)::

    hyperparams.yaml      compute_features (80-d Fbank), mean_var_norm (sentence), embedding_model
                          (ECAPA_TDNN, channels [256, 256, 256, 256, 768]), age_head and gender_head
                          (MLPHead: Linear(1536, hidden) -> ReLU -> Linear(hidden, out)), modules, and a
                          pretrainer whose loadables are embedding_model, age_head, gender_head at
                          <pretrained_path>/<name>.ckpt
    embedding_model.ckpt  age_head.ckpt  gender_head.ckpt   (torch state dicts)
    fva_model.json        {"kind": "voice-age-gender-ecapa", "age": "regression-years",
                           "gender_classes": ["male", "female"], "languages": [...], "trained_on": ...}

The age head regresses years (targets: CommonVoice decade centres); the gender head gives two logits,
[male, female], so P(female) = softmax(logits)[1]. ``save_voice_age_gender`` writes this format. No weights
are published: without ``--weights`` the encoder says so and how to train them (``fva train-encoder age-gender``).
"""

from __future__ import annotations

import json
from pathlib import Path
import torch

from fva.errors import FvaError
from fva.extract.encoders.base import Encoded, Encoder, register
from fva.extract.encoders.ecapa import ECAPA_YAML, EcapaEncoder, load_pretrained, pretrainer_yaml
from fva.extract.weights import TRAIN_AGE_GENDER, age_gender_identity

KIND = "voice-age-gender-ecapa"
DEFAULT_CHANNELS = (256, 256, 256, 256, 768)


class MLPHead(torch.nn.Module):
    """Two-layer MLP head over the shared pooled statistics."""

    def __init__(self, input_size: int, hidden: int = 256, out: int = 1) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(input_size, hidden), torch.nn.ReLU(),
                                          torch.nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


HPARAMS = """\
# fva voice age-gender ECAPA ({kind}); see fva/extract/encoders/voice_age_gender.py
pretrained_path: .
n_mels: 80
channels: {channels}
pooled_size: {pooled}
head_hidden: {hidden}

{ecapa}
age_head: !new:fva.extract.encoders.voice_age_gender.MLPHead
    input_size: !ref <pooled_size>
    hidden: !ref <head_hidden>
    out: 1

gender_head: !new:fva.extract.encoders.voice_age_gender.MLPHead
    input_size: !ref <pooled_size>
    hidden: !ref <head_hidden>
    out: 2

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    age_head: !ref <age_head>
    gender_head: !ref <gender_head>

{pretrainer}"""


def hparams_text(channels: tuple[int, ...] = DEFAULT_CHANNELS, hidden: int = 256, attention: int = 32) -> str:
    return HPARAMS.format(kind=KIND, channels=list(channels), pooled=2 * channels[-1], hidden=hidden,
                          ecapa=ECAPA_YAML.format(channels="!ref <channels>", attention=attention,
                                                  lin_neurons=192),
                          pretrainer=pretrainer_yaml("embedding_model", "age_head", "gender_head"))


def save_voice_age_gender(folder: str | Path, modules: dict[str, torch.nn.Module], meta: dict | None = None,
                          channels: tuple[int, ...] = DEFAULT_CHANNELS, hidden: int = 256,
                          attention: int = 32) -> Path:
    """Write a checkpoint folder from trained (or initialised) ``embedding_model``, ``age_head`` and
    ``gender_head`` modules built with the same sizes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.yaml").write_text(hparams_text(channels, hidden, attention))
    for name in ("embedding_model", "age_head", "gender_head"):
        torch.save(modules[name].state_dict(), folder / f"{name}.ckpt")
    info = {"kind": KIND, "age": "regression-years", "gender_classes": ["male", "female"],
            "channels": list(channels), **(meta or {})}
    (folder / "fva_model.json").write_text(json.dumps(info, indent=1) + "\n")
    return folder


def init_voice_age_gender(channels: tuple[int, ...] = DEFAULT_CHANNELS, hidden: int = 256, attention: int = 32,
                          seed: int = 0) -> dict[str, torch.nn.Module]:
    """Freshly initialised modules of the checkpoint's architecture (seeded): the trainer's starting point
    and the demo checkpoint."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    torch.manual_seed(seed)
    model = ECAPA_TDNN(80, channels=list(channels), kernel_sizes=[5, 3, 3, 3, 1], dilations=[1, 2, 3, 4, 1],
                       attention_channels=attention, lin_neurons=192)
    pooled = 2 * channels[-1]
    return {"embedding_model": model, "age_head": MLPHead(pooled, hidden, 1),
            "gender_head": MLPHead(pooled, hidden, 2)}


@register
class VoiceAgeGenderEcapa(EcapaEncoder):
    name = KIND
    default_weights = "fva/voice-age-gender-ecapa"  # not published: a name only, users train it with fva
    extras = ("age", "p_female")

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu",
                 savedir: Path | None = None) -> None:
        Encoder.__init__(self, weights, device)  # its own folder format: not EcapaEncoder's from_hparams load
        from speechbrain.inference.interfaces import Pretrained

        folder = Path(self.weights)
        if weights is None or str(weights) == self.default_weights:
            raise FvaError(f"{KIND}: no published weights; train them with '{TRAIN_AGE_GENDER}' (CommonVoice) "
                           f"and pass --weights {KIND}=DIR, the folder it writes")
        if not (folder / "fva_model.json").is_file():
            raise FvaError(f"{self.weights}: not a voice age-gender checkpoint folder (no fva_model.json); "
                           "train one with 'fva train-encoder age-gender' or pass --weights its folder")
        self.pretrained = load_pretrained(Pretrained, str(folder), self.device, savedir)
        mods = self.pretrained.mods
        mods.eval()
        self.use_model(mods.compute_features, mods.mean_var_norm, mods.embedding_model)
        self.age_head, self.gender_head = mods.age_head, mods.gender_head
        self._weights_id = age_gender_identity(folder)

    @torch.inference_mode()
    def encode(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Encoded:
        pooled = self.runner(*batch)
        x = pooled.to(self.device)
        age = self.age_head(x)[:, 0]
        p_female = torch.softmax(self.gender_head(x), dim=-1)[:, 1]
        return Encoded(pooled, {"age": age.float().cpu(), "p_female": p_female.float().cpu()})
