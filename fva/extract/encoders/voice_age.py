"""voice-age: audEERING's wav2vec 2.0 age and gender model ``audeering/wav2vec2-large-robust-24-ft-age-gender``
(CC-BY-NC-SA 4.0: non-commercial use only); output per clip ``[age in years, p_female, p_male, p_child]``
(width 4), and the extras ``age`` (years) and ``p_female`` that FAME 2024's age/gender polarisation reads.

The published model (its model card; paper arXiv 2306.16962) is ``AgeGenderModel``, a ``Wav2Vec2PreTrainedModel``
defined in the card's own code (no transformers class): ``wav2vec2 = Wav2Vec2Model(config)`` (fine-tuned from
``facebook/wav2vec2-large-robust``, all 24 transformer layers trained), ``age = ModelHead(config, 1)`` and
``gender = ModelHead(config, 3)``, where ``ModelHead`` is dropout, ``dense`` Linear(hidden, hidden), tanh,
dropout, ``out_proj`` Linear(hidden, n) (dropout ``config.final_dropout``, inactive at inference). Its forward
takes the mean over time of ``last_hidden_state``, gives it to both heads, and returns the age head's output
(about 0...1, i.e. years / 100) and the softmax of the gender head, in the order female, male, child. fva
rebuilds the heads as plain torch modules on transformers' ``Wav2Vec2Model`` (never remote code); the
checkpoint's keys are the card's module names: ``wav2vec2.*``, ``age.dense.*``, ``age.out_proj.*``,
``gender.dense.*``, ``gender.out_proj.*``. transformers loads ``wav2vec2.*`` into ``Wav2Vec2Model`` (stripping
the prefix, renaming the legacy weight-norm ``weight_g``/``weight_v``); fva reads the four head tensors of each
head itself (``model.safetensors`` or ``pytorch_model.bin`` with ``weights_only=True``). A missing or mis-shaped
weight of either part is one line naming it.

Input: 16 kHz mono float32 audio, normalised as the folder's ``preprocessor_config.json``
(``Wav2Vec2FeatureExtractor``) says, per model input (the card runs the processor on each signal it scores).
Long clips: windows of 20 s every 10 s, the last one ending at the clip's end (a clip of at most 20 s is one
window); e.g. a 35 s clip gives [0, 20), [10, 30), [15, 35) s (:func:`window_starts`). Each window is normalised
and scored on its own; the clip's age and gender probabilities are the plain means over its windows. Windows of
a batch run padded with an attention mask when the convolutions are layer-normalised (``feat_extract_norm``
"layer", as wav2vec2-large-robust), each window's mean covering its own frames only, so a batch gives the
one-at-a-time output; a group-normalised model runs its windows one at a time.

Verified (public copies of the card and configs, read through the reference search tools; no network here):
the card's code (``ModelHead``, ``AgeGenderModel``, ``Wav2Vec2Processor`` normalisation, the mean over time),
that its later revision applies ``torch.softmax`` to the gender head and prints the outputs as "Age female male
child" (an earlier revision returned raw gender logits with a comment "Age child female male"; fva follows the
later one, which third-party ports also use), the age range "0...1 (0...100 years)", "trained all 24
transformer layers", the licence cc-by-nc-sa-4.0, and the repository's files (config.json 2.4 kB,
preprocessor_config.json 214 bytes, model.safetensors and pytorch_model.bin 1.27 GB, vocab.json). The base
model ``facebook/wav2vec2-large-robust``'s config (24 layers, hidden 1024, ``do_stable_layer_norm`` true,
``feat_extract_norm`` "layer", ``final_dropout`` 0.1) was read from public copies of configs derived from it.
Not verified: the text of the published config.json (24 layers and the base model's settings assumed; fva
reads whatever it says) and of preprocessor_config.json (its size matches transformers' standard
``Wav2Vec2FeatureExtractor`` file with ``do_normalize`` true; fva applies whatever it says), and the weight
files' key names (the error names them if a real download does not load). The 20 s / 10 s windowing is fva's.

``save_voice_age(folder, config, seed)`` writes a seeded random model in this format; ``tiny_config()`` is a
small config for it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from fva.errors import FvaError
from fva.extract.encoders.base import Encoded, Encoder, register
from fva.extract.encoders.hf_pretrained import (build_config, load_pretrained, mean_over_frames, quiet_transformers,
                                                read_config_dict, receptive_field, resolve_folder, speech_extractor)
from fva.extract.media import SAMPLE_RATE
from fva.extract.weights import SAFETENSORS, VOICE_AGE_HUB_ID, pretrained_identity, pretrained_weight_files

HUB_ID = VOICE_AGE_HUB_ID
ARCHITECTURE = "AgeGenderModel"
WINDOW_S, HOP_S = 20, 10
GENDERS = ("female", "male", "child")  # the gender head's order
HEADS = {"age": 1, "gender": len(GENDERS)}  # head name -> outputs
HEAD_PREFIXES = tuple(f"{h}." for h in HEADS)
MAX_WINDOWS = 16  # windows per forward pass (outputs do not depend on it)


# ------------------------------------------------------------------------------------------------------- model
class ModelHead(nn.Module):
    """The card's head: dropout, dense (hidden -> hidden), tanh, dropout, out_proj (hidden -> n)."""

    def __init__(self, hidden: int, n: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(x)))))


class AgeGenderWav2Vec2(nn.Module):
    """``AgeGenderModel`` of the card: ``wav2vec2`` (transformers' Wav2Vec2Model), ``age`` and ``gender`` heads."""

    def __init__(self, config, wav2vec2: nn.Module | None = None) -> None:
        super().__init__()
        from transformers import Wav2Vec2Model

        self.config = config
        self.wav2vec2 = wav2vec2 if wav2vec2 is not None else Wav2Vec2Model(config)
        dropout = float(getattr(config, "final_dropout", 0.1))
        self.age = ModelHead(config.hidden_size, HEADS["age"], dropout)
        self.gender = ModelHead(config.hidden_size, HEADS["gender"], dropout)

    def heads(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, hidden) pooled states -> (N,) age / 100 and (N, 3) P(female, male, child)."""
        return self.age(pooled)[:, 0], torch.softmax(self.gender(pooled), dim=-1)

    def pooled(self, values: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over frames of the last hidden state; with ``lengths`` (a padded batch) an attention mask and
        each row's mean over its own frames."""
        if lengths is None:
            return self.wav2vec2(values).last_hidden_state.float().mean(1)
        mask = torch.arange(values.shape[1], device=values.device)[None, :] < lengths[:, None]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            hidden = self.wav2vec2(values, attention_mask=mask.long()).last_hidden_state.float()
        return mean_over_frames(self.wav2vec2, hidden, lengths)


# ---------------------------------------------------------------------------------------------------- windows
def window_starts(n: int, window: int = WINDOW_S * SAMPLE_RATE, hop: int = HOP_S * SAMPLE_RATE) -> list[int]:
    """Start samples of a clip's windows: one window when ``n <= window``; else every ``hop`` while the window
    ends before the clip does, then one ending at the clip's end (35 s, 20 s / 10 s -> 0, 10, 15 s)."""
    if n <= window:
        return [0]
    return list(range(0, n - window, hop)) + [n - window]


@dataclass(frozen=True)
class VoiceAgePreprocess:
    """16 kHz mono float32 audio -> (windows, samples) float32: each window through the folder's feature
    extractor (its per-input normalisation)."""

    extractor: Any  # transformers.Wav2Vec2FeatureExtractor
    window: int = WINDOW_S * SAMPLE_RATE
    hop: int = HOP_S * SAMPLE_RATE

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected mono audio (samples,), got shape {audio.shape}")
        size = min(len(audio), self.window)
        out = [self.extractor(audio[s:s + size], sampling_rate=SAMPLE_RATE, return_tensors="np")["input_values"][0]
               for s in window_starts(len(audio), self.window, self.hop)]
        return np.ascontiguousarray(np.stack(out), dtype=np.float32)


# ------------------------------------------------------------------------------------------------------ loading
def read_heads(files: list[Path]) -> dict[str, torch.Tensor]:
    """The checkpoint's ``age.*`` and ``gender.*`` tensors (the rest is transformers' to load)."""
    heads: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            if path.name.endswith(".safetensors"):
                from safetensors import safe_open

                with safe_open(str(path), framework="pt", device="cpu") as fh:
                    heads.update({k: fh.get_tensor(k) for k in fh.keys() if k.startswith(HEAD_PREFIXES)})
            else:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                heads.update({k: v for k, v in state.items() if k.startswith(HEAD_PREFIXES)})
        except Exception as err:  # noqa: BLE001  (any unreadable file is the user's to replace)
            text = str(err).strip().splitlines()
            raise FvaError(f"{path}: unreadable weights file ({type(err).__name__}: "
                           f"{text[0][:160] if text else ''}); download it again") from None
    return heads


def load_voice_age(folder: Path) -> AgeGenderWav2Vec2:
    """The folder's model: config.json (``model_type`` "wav2vec2"), the backbone by transformers'
    ``Wav2Vec2Model.from_pretrained`` (checked), the heads from the same weight files (checked)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = build_config(Wav2Vec2Config, read_config_dict(folder, ("wav2vec2",), HUB_ID), folder / "config.json")
    files = pretrained_weight_files(folder, HUB_ID)
    backbone = load_pretrained(Wav2Vec2Model, folder, config, HUB_ID, ignored=HEAD_PREFIXES)
    model = AgeGenderWav2Vec2(config, backbone)
    where = files[0] if len(files) == 1 else folder
    found = read_heads(files)
    own = {k: v for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIXES)}
    missing = sorted(set(own) - set(found))
    if missing:
        raise FvaError(f"{where}: checkpoint does not match {ARCHITECTURE}: missing {', '.join(missing)} "
                       f"(the card's age / gender heads; found {len(found)} head keys)")
    for key, param in own.items():
        if tuple(found[key].shape) != tuple(param.shape):
            raise FvaError(f"{where}: {key} has shape {tuple(found[key].shape)}, expected {tuple(param.shape)} "
                           f"for the model config.json describes")
    model.load_state_dict({**model.state_dict(), **{k: found[k] for k in own}}, strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------------------------ encoder
@register
class VoiceAge(Encoder):
    """audEERING's age / gender wav2vec 2.0: [age in years, P(female), P(male), P(child)] per clip."""

    name = "voice-age"
    modality = "voice"
    default_weights = HUB_ID
    extras = ("age", "p_female")

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(weights, device)
        self.folder = resolve_folder(self.weights, self.name, HUB_ID)
        extractor = speech_extractor(self.folder, HUB_ID)
        self.model = load_voice_age(self.folder).to(self.device)
        config = self.model.config
        self.batched = config.feat_extract_norm == "layer"
        self.min_samples = receptive_field(config)
        self._preprocess = VoiceAgePreprocess(extractor)
        self._dim = 1 + len(GENDERS)
        self._weights_id = pretrained_identity(self.weights, self.folder)

    @property
    def preprocess(self) -> Callable[[np.ndarray], np.ndarray]:
        return self._preprocess

    def collate(self, items: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every item's windows, zero-padded (W, T), their (W,) lengths and the (W,) item each belongs to."""
        windows = [w for x in items for w in np.atleast_2d(x)]
        owner = torch.tensor([i for i, x in enumerate(items) for _ in range(len(np.atleast_2d(x)))], dtype=torch.long)
        lengths = torch.tensor([len(w) for w in windows], dtype=torch.long)
        batch = torch.zeros(len(windows), int(lengths.max()), dtype=torch.float32)
        for i, w in enumerate(windows):
            batch[i, :len(w)] = torch.from_numpy(np.asarray(w, np.float32))
        return batch, lengths, owner

    def _windows(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(W, 4): each window's age / 100 and P(female, male, child)."""
        if self.batched:
            pooled = self.model.pooled(values, lengths)
        else:
            pooled = torch.cat([self.model.pooled(values[i:i + 1, :int(n)]) for i, n in enumerate(lengths)])
        age, probs = self.model.heads(pooled)
        return torch.cat([age[:, None], probs], dim=1).float()

    def encode(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> Encoded:
        values, lengths, owner = batch
        if int(lengths.min()) < self.min_samples:
            raise ValueError(f"{self.name}: a clip of {int(lengths.min())} samples is shorter than the "
                             f"{self.min_samples} the model needs for one frame")
        self.model.eval()
        with torch.inference_mode():
            parts = []
            for s in range(0, len(lengths), MAX_WINDOWS):
                n = lengths[s:s + MAX_WINDOWS]
                parts.append(self._windows(values[s:s + MAX_WINDOWS, :int(n.max())].to(self.device),
                                           n.to(self.device)).cpu())
            per_window = torch.cat(parts)
        n_items = int(owner.max()) + 1
        sums = torch.zeros(n_items, per_window.shape[1]).index_add_(0, owner, per_window)
        rows = sums / torch.bincount(owner, minlength=n_items).clamp(min=1)[:, None].float()
        rows[:, 0] *= 100.0  # years
        rows = rows.float().contiguous()
        return Encoded(rows, {"age": rows[:, 0].clone(), "p_female": rows[:, 1].clone()})

    def config(self) -> dict:
        e = self._preprocess.extractor
        return {"output": "[age in years, p_female, p_male, p_child], means over windows",
                "genders": list(GENDERS), "window_s": WINDOW_S, "hop_s": HOP_S, "sampling_rate": int(e.sampling_rate),
                "do_normalize": bool(e.do_normalize), "batched_with_attention_mask": self.batched}


# ------------------------------------------------------------------------------------------------------- saving
def tiny_config():
    """A small wav2vec 2.0 config in the layout of wav2vec2-large-robust (layer-normalised convolutions, stable
    layer norm): hidden 32, 2 layers, 2 heads, 16 channels per convolution."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          conv_dim=(16,) * 7, conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, final_dropout=0.1,
                          vocab_size=32, architectures=[ARCHITECTURE])


def save_voice_age(folder: str | Path, config=None, seed: int = 0) -> Path:
    """Write a seeded, randomly initialised ``AgeGenderModel`` for ``config`` (default :func:`tiny_config`) in
    the published format: config.json (``architectures`` ["AgeGenderModel"]), model.safetensors with the card's
    key names (``wav2vec2.*`` with the legacy weight-norm ``weight_g``/``weight_v``, ``age.*``, ``gender.*``) and
    the ``Wav2Vec2FeatureExtractor``'s preprocessor_config.json (normalising). Returns the folder."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2FeatureExtractor

    config = config or tiny_config()
    config.architectures = [ARCHITECTURE]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AgeGenderWav2Vec2(config)
    legacy = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    state = {}
    for key, value in model.state_dict().items():
        for new, old in legacy.items():
            key = key.replace(new, old)
        state[key] = value.detach().clone().contiguous()
    save_file(state, str(folder / SAFETENSORS), metadata={"format": "pt"})
    with quiet_transformers():
        config.save_pretrained(folder)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=False).save_pretrained(folder)
    return folder
