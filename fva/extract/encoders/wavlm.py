"""wavlm: WavLM (``microsoft/wavlm-large`` by default; FAME 2026's 4th entry), mean-pooled over a clip's frames.

Output dim = the config's ``hidden_size`` (1024 for WavLM-Large, 768 for WavLM-Base / Base+). Two encoders:

* ``wavlm``: the last hidden layer (``last_hidden_state``), averaged over the clip's frames;
* ``wavlm-layers``: a weighted sum of every hidden state transformers returns (``output_hidden_states``: the
  first layer's input and each transformer layer's output, ``num_hidden_layers + 1`` of them; for a
  stable-layer-norm model such as WavLM-Large the last is before the encoder's final layer norm, which
  ``last_hidden_state`` has), averaged over frames; equal weights by default (``layer_weights`` given in
  Python: any ``num_hidden_layers + 1`` numbers, used as given; register them under a name of their own with
  :func:`register_layer_weights` so that their features get their own cache).

The model is transformers' ``WavLMModel`` loaded from a ``save_pretrained`` folder (config.json with
``model_type`` "wavlm", ``model.safetensors`` or ``pytorch_model.bin``); the input is what the folder's
``preprocessor_config.json`` (transformers' ``Wav2Vec2FeatureExtractor``) makes of 16 kHz mono audio, e.g.
WavLM-Large's per-clip zero mean / unit variance.

Batches: a model whose convolutions are layer-normalised (``feat_extract_norm`` "layer", as WavLM-Large; its
feature extractor has ``return_attention_mask``) takes zero-padded batches with an attention mask, and each
clip's mean covers only its own frames (``_get_feat_extract_output_lengths``), so a batch gives each clip's
one-at-a-time output. A group-normalised model (WavLM-Base) normalises over time, padding included, so its
clips run one at a time.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from fva.errors import FvaError
from fva.extract.encoders.base import Encoded, Encoder, register
from fva.extract.encoders.hf_pretrained import (build_config, load_pretrained, mean_over_frames, read_config_dict,
                                                receptive_field, resolve_folder, speech_extractor)
from fva.extract.media import SAMPLE_RATE
from fva.extract.weights import WAVLM_HUB_ID, pretrained_identity

HUB_ID = WAVLM_HUB_ID


@dataclass(frozen=True)
class WavLMPreprocess:
    """16 kHz mono float32 audio -> the model input, by transformers' feature extractor of the folder."""

    extractor: Any  # transformers.Wav2Vec2FeatureExtractor

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        out = self.extractor(np.asarray(audio, np.float32), sampling_rate=SAMPLE_RATE, return_tensors="np")
        return np.ascontiguousarray(out["input_values"][0], dtype=np.float32)


def load_wavlm(folder: Path):
    from transformers import WavLMConfig, WavLMModel

    raw = read_config_dict(folder, ("wavlm",), HUB_ID)
    config = build_config(WavLMConfig, raw, folder / "config.json")
    return load_pretrained(WavLMModel, folder, config, HUB_ID, ignored=("lm_head.", "masked_spec_embed"))


@register
class WavLM(Encoder):
    """WavLM, the last hidden layer mean-pooled over frames (``pooling`` "last"), or a weighted sum of layers
    (``pooling`` "layers")."""

    name = "wavlm"
    modality = "voice"
    default_weights = HUB_ID
    pooling: ClassVar[str] = "last"
    default_layer_weights: ClassVar[tuple[float, ...] | None] = None  # None: equal weights

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu",
                 layer_weights: tuple[float, ...] | list[float] | None = None) -> None:
        super().__init__(weights, device)
        self.folder = resolve_folder(self.weights, self.name, HUB_ID)
        extractor = speech_extractor(self.folder, HUB_ID)
        self.model = load_wavlm(self.folder).to(self.device)
        config = self.model.config
        self.batched = config.feat_extract_norm == "layer"
        self.min_samples = receptive_field(config)
        n_states = config.num_hidden_layers + 1
        weights_ = layer_weights if layer_weights is not None else self.default_layer_weights
        if weights_ is not None and self.pooling != "layers":
            raise FvaError(f"{self.name}: layer_weights need the weighted-sum encoder (wavlm-layers)")
        if weights_ is not None and len(weights_) != n_states:
            raise FvaError(f"{self.name}: {len(weights_)} layer weights given, the model has {n_states} hidden "
                           f"states (num_hidden_layers + 1)")
        self.layer_weights = tuple(float(w) for w in weights_) if weights_ is not None else (1.0 / n_states,) * n_states
        self._preprocess = WavLMPreprocess(extractor)
        self._dim = int(config.hidden_size)
        self._weights_id = pretrained_identity(self.weights, self.folder)

    @property
    def preprocess(self) -> Callable[[np.ndarray], np.ndarray]:
        return self._preprocess

    def collate(self, items: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-padded (N, T) input values and their (N,) lengths."""
        lengths = torch.tensor([len(x) for x in items], dtype=torch.long)
        batch = torch.zeros(len(items), int(lengths.max()), dtype=torch.float32)
        for i, x in enumerate(items):
            batch[i, :len(x)] = torch.from_numpy(np.asarray(x, np.float32))
        return batch, lengths

    def _pooled(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(values.shape[1], device=values.device)[None, :] < lengths[:, None]
        with warnings.catch_warnings():  # transformers' WavLM attention mixes a bool and a float mask (torch warns)
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            out = self.model(values, attention_mask=mask if self.batched else None,
                             output_hidden_states=self.pooling == "layers")
        if self.pooling == "layers":
            w = torch.tensor(self.layer_weights, device=values.device, dtype=torch.float32)
            hidden = torch.einsum("l,lntd->ntd", w, torch.stack(out.hidden_states).float())
        else:
            hidden = out.last_hidden_state.float()
        return mean_over_frames(self.model, hidden, lengths)

    def encode(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Encoded:
        values, lengths = batch
        if int(lengths.min()) < self.min_samples:
            raise ValueError(f"{self.name}: a clip of {int(lengths.min())} samples is shorter than the "
                             f"{self.min_samples} the model needs for one frame")
        self.model.eval()
        values, lengths = values.to(self.device), lengths.to(self.device)
        with torch.inference_mode():
            if self.batched:
                emb = self._pooled(values, lengths)
            else:
                emb = torch.cat([self._pooled(values[i:i + 1, :int(n)], lengths[i:i + 1])
                                 for i, n in enumerate(lengths)])
        return Encoded(emb.float().cpu(), {})

    def config(self) -> dict:
        e = self._preprocess.extractor
        out = {"output": "mean over frames of the last hidden layer" if self.pooling == "last" else
               "mean over frames of a weighted sum of the hidden states", "pooling": self.pooling,
               "sampling_rate": int(e.sampling_rate), "do_normalize": bool(e.do_normalize),
               "batched_with_attention_mask": self.batched}
        if self.pooling == "layers":
            out["layer_weights"] = list(self.layer_weights)
        return out


@register
class WavLMLayers(WavLM):
    """WavLM, a weighted sum of all hidden states (equal weights unless given), mean-pooled over frames."""

    name = "wavlm-layers"
    pooling = "layers"


def register_layer_weights(name: str, layer_weights: tuple[float, ...]) -> type[WavLM]:
    """Register ``name`` as the weighted-sum WavLM with these fixed layer weights (its own cache folder)."""
    cls = type("WavLMLayers_" + "".join(c if c.isalnum() else "_" for c in name), (WavLMLayers,),
               {"name": name, "default_layer_weights": tuple(float(w) for w in layer_weights)})
    return register(cls)
