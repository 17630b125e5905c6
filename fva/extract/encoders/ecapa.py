"""ECAPA-TDNN encoders (speechbrain), batched so that padding changes nothing.

speechbrain's ECAPA convolutions pad with ``reflect`` at the end of the tensor, so in a padded batch a
shorter clip's last frames would see the padding instead of its own reflection (measured on the public
model: 4-6 % relative change of the 6144-d pooling output). :class:`LengthAwareEcapa` fixes this at the
root: before every padded convolution it writes, into each clip's padded frames, the reflection of that
clip's own last frames, which is what the convolution sees when the clip runs alone. With speechbrain's
relative lengths for the masked statistics (sentence mean normalisation, SE blocks, attentive pooling),
the batched output equals the one-clip-at-a-time output to float rounding.

Both ECAPA encoders (speaker, voice age-gender) load through speechbrain's ``from_hparams`` and output the
attentive statistics pooling after its batch norm (``asp_bn``): 2 x the last block's channels.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fva.errors import FvaError
from fva.extract.encoders.base import Encoded, Encoder
from fva.extract.weights import models_home  # noqa: F401  (re-exported)
from fva.extract.weights import speechbrain_error, speechbrain_fetch_config, speechbrain_identity, speechbrain_savedir

SAMPLE_RATE = 16000
HOP = 160  # speechbrain Fbank: 10 ms hop at 16 kHz; a clip of n samples has 1 + n // HOP frames
EXTRA_FRAMES = 8  # room after the longest clip for its reflected frames (>= the widest conv padding)

# The Fbank front end and ECAPA-TDNN of every speechbrain ECAPA folder fva writes (the layouts of
# spkrec-ecapa-voxceleb and lang-id-voxlingua107-ecapa, and fva's voice age-gender format): each format's
# template holds ``{ecapa}``, filled with ``ECAPA_YAML.format(channels=..., attention=..., lin_neurons=...)``.
ECAPA_YAML = """\
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {channels}
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: {attention}
    lin_neurons: {lin_neurons}
"""


def pretrainer_yaml(*loadables: str) -> str:
    """The ``pretrainer:`` section of a speechbrain model folder's hyperparams (each format's template holds
    ``{pretrainer}``): every loadable from ``<pretrained_path>/<name>.ckpt``, the label encoder from
    ``label_encoder.txt``.

    >>> print(pretrainer_yaml("embedding_model", "label_encoder"), end="")
    pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
        loadables:
            embedding_model: !ref <embedding_model>
            label_encoder: !ref <label_encoder>
        paths:
            embedding_model: !ref <pretrained_path>/embedding_model.ckpt
            label_encoder: !ref <pretrained_path>/label_encoder.txt
    """
    lines = ["pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer", "    loadables:"]
    lines += [f"        {name}: !ref <{name}>" for name in loadables]
    lines += ["    paths:"]
    lines += [f"        {name}: !ref <pretrained_path>/{name}.{'txt' if name == 'label_encoder' else 'ckpt'}"
              for name in loadables]
    return "\n".join(lines) + "\n"


def prepare_source(weights: str, savedir: Path | None) -> tuple[str, Path, dict]:
    """``(source, savedir, overrides)`` for ``from_hparams``.

    A local folder is used in place (``pretrained_path`` pointed at it); its ``label_encoder.ckpt`` is
    copied into the save folder as the ``label_encoder.txt`` the public hyperparams name. Anything else is
    a hub id, fetched by speechbrain into the models home (``fva.extract.weights``), or found there offline.
    """
    savedir = Path(savedir) if savedir else speechbrain_savedir(weights)
    folder = Path(weights)
    if folder.is_dir() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # speechbrain re-links a local folder's files into the save folder on every load: ranks of one torchrun
        # loading together would unlink each other's links mid-load, so each rank links into its own
        savedir = savedir.with_name(f"{savedir.name}-rank{os.environ.get('RANK', '0')}")
    savedir.mkdir(parents=True, exist_ok=True)
    if folder.is_dir():
        if not (folder / "hyperparams.yaml").is_file():
            raise FvaError(f"{folder}: no hyperparams.yaml; --weights must be a speechbrain model folder "
                           "(hyperparams.yaml and its .ckpt files) or a hub id")
        label = folder / "label_encoder.ckpt"
        if label.is_file() and not (folder / "label_encoder.txt").exists():
            shutil.copyfile(label, savedir / "label_encoder.txt")
        return str(folder.resolve()), savedir, {"pretrained_path": str(folder.resolve())}
    if folder.exists() or not re.fullmatch(r"[\w-]+/[\w.-]+", weights):  # hub ids are owner/name
        raise FvaError(f"{weights}: not a model folder; pass --weights an existing speechbrain model folder "
                       "or a hub id such as speechbrain/spkrec-ecapa-voxceleb")
    return weights, savedir, {}


def load_pretrained(cls: Any, weights: str, device: torch.device, savedir: Path | None) -> Any:
    """``cls.from_hparams`` (speechbrain's own fetch for a hub id: only local files when offline) with
    one-line errors saying how to fetch the model or give a local copy."""
    source, savedir, overrides = prepare_source(weights, savedir)
    local = Path(source).is_dir()
    try:
        return cls.from_hparams(source=source, savedir=str(savedir), overrides=overrides,
                                run_opts={"device": str(device)},
                                fetch_config=speechbrain_fetch_config(allow_network=False if local else None))
    except FvaError:
        raise
    except Exception as err:  # noqa: BLE001  (a folder that does not load, or a failed fetch: one line)
        if local:
            raise FvaError(f"{source}: cannot load the speechbrain model ({type(err).__name__}: "
                           f"{str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}); "
                           "check the folder's files") from None
        raise speechbrain_error(source, savedir, err) from None


def model_identity(weights: str, pretrained: Any) -> str:
    """source@digest of a loaded speechbrain model's embedding checkpoint, as speechbrain collected it."""
    return speechbrain_identity(weights, [Path(pretrained.hparams.pretrainer.paths.get("embedding_model", ""))])


@dataclass(frozen=True)
class AudioPreprocess:
    """Decoded 16 kHz mono audio -> float32 array (ECAPA computes its Fbank on the device, per batch)."""

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(audio, dtype=np.float32)


def collate_audio(items: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad clips into (B, L) and return them with their lengths in samples."""
    n = torch.tensor([len(x) for x in items], dtype=torch.long)
    batch = torch.zeros(len(items), int(n.max()))
    for i, x in enumerate(items):
        batch[i, : len(x)] = torch.from_numpy(x)
    return batch, n


OUTPUTS = ("pooled", "embedding")  # asp_bn's pooled statistics (2 x last channels), or the model's fc output


class LengthAwareEcapa:
    """Runs speechbrain's Fbank, sentence mean normalisation and an ``ECAPA_TDNN`` on a padded batch so
    that each clip's output equals that of the clip alone: ``output="pooled"``, the ``asp_bn`` statistics;
    ``"embedding"``, what ``embedding_model`` returns (its ``fc``: the speaker embedding, not normalised)."""

    def __init__(self, compute_features: torch.nn.Module, mean_var_norm: torch.nn.Module,
                 embedding_model: torch.nn.Module, output: str = "pooled") -> None:
        from speechbrain.nnet.CNN import Conv1d

        if output not in OUTPUTS:
            raise ValueError(f"output {output!r}; choose from {', '.join(OUTPUTS)}")
        self.output = output
        self.compute_features = compute_features
        self.mean_var_norm = mean_var_norm
        self.model = embedding_model
        self._frames: torch.Tensor | None = None
        self._pooled: torch.Tensor | None = None
        self.max_pad = 0
        for module in embedding_model.modules():
            if isinstance(module, Conv1d):
                pad = module.dilation * (module.kernel_size - 1) // 2
                if pad and module.padding == "same" and module.padding_mode == "reflect":
                    module.register_forward_pre_hook(self._reflect_own_end)
                    self.max_pad = max(self.max_pad, pad)
        if self.max_pad >= EXTRA_FRAMES:
            raise ValueError(f"convolution padding {self.max_pad} needs more than {EXTRA_FRAMES} extra frames")
        embedding_model.asp_bn.register_forward_hook(self._keep_pooled)
        # reflect padding needs more frames than the widest padding: shorter clips cannot be encoded
        self.min_samples = self.max_pad * HOP + 1

    def _reflect_own_end(self, module: torch.nn.Module, args: tuple) -> tuple | None:
        frames = self._frames
        if frames is None:
            return None
        (x,) = args
        pad = module.dilation * (module.kernel_size - 1) // 2
        x = x.clone()
        offsets = torch.arange(1, pad + 1, device=x.device)
        for i, t in enumerate(frames.tolist()):
            x[i, :, t - 1 + offsets] = x[i, :, t - 1 - offsets]
        return (x,)

    def _keep_pooled(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._pooled = output

    @torch.inference_mode()
    def __call__(self, wavs: torch.Tensor, n_samples: torch.Tensor) -> torch.Tensor:
        """(B, L) padded audio and (B,) lengths in samples -> (B, 2C) pooled statistics or (B, lin_neurons)
        embeddings, float32 CPU."""
        device = next(self.model.parameters()).device
        feats = self.compute_features(wavs.to(device))
        frames = 1 + n_samples // HOP
        if feats.shape[1] != int(frames.max()):
            raise RuntimeError(f"Fbank gave {feats.shape[1]} frames, expected {int(frames.max())}")
        feats = torch.nn.functional.pad(feats, (0, 0, 0, EXTRA_FRAMES))
        # relative lengths a quarter frame short of each clip's frames: masks (< rel*T) and rounding
        # (round(rel*T)) inside speechbrain both give exactly the clip's frame count
        rel = ((frames.float() - 0.25) / feats.shape[1]).to(device)
        feats = self.mean_var_norm(feats, rel)
        self._frames = frames
        try:
            embedding = self.model(feats, rel)
        finally:
            self._frames = None
        pooled, self._pooled = self._pooled, None
        out = embedding.squeeze(1) if self.output == "embedding" else pooled.squeeze(-1)
        return out.float().cpu()

    @property
    def dim(self) -> int:
        """The output's width, read off the model."""
        if self.output == "embedding":
            return int(self.model.fc.conv.out_channels)
        return int(self.model.asp_bn.norm.num_features)


class EcapaEncoder(Encoder):
    """Shared by the ECAPA encoders: 16 kHz audio in, padded batches run by :class:`LengthAwareEcapa`. A
    subclass loading a speechbrain folder as it is names its ``interface`` (speechbrain's class, a zero-argument
    callable returning it) and ``output``; the voice age-gender encoder loads its own format instead."""

    modality = "voice"
    runner: LengthAwareEcapa
    output = "pooled"

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu",
                 savedir: Path | None = None) -> None:
        super().__init__(weights, device)
        self.load(savedir)

    @staticmethod
    def interface() -> Any:
        """speechbrain's interface class the folder loads with (``from_hparams``)."""
        raise NotImplementedError

    def encode(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Encoded:
        return Encoded(self.runner(*batch), {})

    @property
    def preprocess(self) -> AudioPreprocess:
        return AudioPreprocess()

    def collate(self, items: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        return collate_audio(items)

    def load(self, savedir: Path | None) -> None:
        """Load ``self.weights`` with speechbrain's ``from_hparams`` of :meth:`interface` (:func:`load_pretrained`),
        check it with :meth:`check_model`, wrap its modules for :attr:`output` and take the weights identity."""
        self.pretrained = load_pretrained(self.interface(), self.weights, self.device, savedir)
        self.pretrained.mods.eval()
        mods = self.pretrained.mods
        self.check_model(mods)
        self.use_model(mods.compute_features, mods.mean_var_norm, mods.embedding_model, self.output)
        self._weights_id = model_identity(self.weights, self.pretrained)

    def check_model(self, mods: Any) -> None:
        """One line when the loaded modules are not what this encoder reads (nothing checked by default)."""

    def use_model(self, compute_features: torch.nn.Module, mean_var_norm: torch.nn.Module,
                  embedding_model: torch.nn.Module, output: str = "pooled") -> None:
        """Wrap the loaded modules; the dimension is that of the output (pooled: 2 x last channels)."""
        self.runner = LengthAwareEcapa(compute_features, mean_var_norm, embedding_model, output)
        self.min_samples = self.runner.min_samples
        self._dim = self.runner.dim
