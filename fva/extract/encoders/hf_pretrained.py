"""Loading a transformers ``save_pretrained`` folder of a standard architecture (wavlm, dinov2, clip-image).

The model class is transformers' own (never remote code); its ``from_pretrained`` reads the folder's
``model.safetensors`` (or sharded safetensors, or ``pytorch_model.bin``, which transformers loads with
``weights_only=True``) and renames legacy keys (e.g. weight-norm ``weight_g``/``weight_v``). fva checks the
folder first and the loading report after, so a wrong folder or checkpoint is one line: transformers itself
only warns and initialises missing weights at random.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Iterator

import torch

from fva.errors import FvaError
from fva.extract.weights import BIN, HUB_PATTERNS, SAFETENSORS, hub_snapshot, pretrained_weight_files, source_of

CONFIG, PREPROCESSOR = "config.json", "preprocessor_config.json"


def resolve_folder(weights: str, name: str, hub_id: str) -> Path:
    """A local save_pretrained folder, or a hub id fetched by ``snapshot_download`` (configs, settings and
    PyTorch weights only; the cached copy offline)."""
    path = Path(weights).expanduser()
    if path.is_dir():
        return path
    what = f"a save_pretrained folder ({CONFIG}, {PREPROCESSOR} and {SAFETENSORS} or {BIN}) or a hub id"
    if path.exists():
        raise FvaError(f"{path}: not a folder; pass --weights {name}=DIR with {what}")
    if not re.fullmatch(r"[\w-]+/[\w.-]+", weights):  # hub ids are owner/name
        raise FvaError(f"{weights}: no such folder; pass --weights {name}=DIR with {what} such as {hub_id}")
    known = source_of(weights)  # a variant (dinov2-mean, ...) is fetched as its source (dinov2)
    return hub_snapshot(weights, known.name if known else name, HUB_PATTERNS)


def read_config_dict(folder: Path, model_types: tuple[str, ...], hub_id: str) -> dict:
    """config.json as a mapping whose ``model_type`` is one of ``model_types``."""
    path = folder / CONFIG
    if not path.is_file():
        raise FvaError(f"{folder}: no {CONFIG}; --weights must be a save_pretrained folder of {hub_id} "
                       f"({CONFIG}, {PREPROCESSOR} and {SAFETENSORS} or {BIN})")
    try:
        raw = json.loads(path.read_text())
    except ValueError as err:
        raise FvaError(f"{path}: not valid JSON ({err})") from None
    got = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
    if got not in model_types:
        raise FvaError(f"{path}: model_type {got!r}, expected {' or '.join(map(repr, model_types))} "
                       f"(a config as in {hub_id})")
    return raw


def build_config(config_cls, raw: dict, path: Path):
    """``config_cls.from_dict(raw)``; an unusable mapping is one line."""
    try:
        return config_cls.from_dict(raw)
    except (ValueError, TypeError, KeyError) as err:
        raise FvaError(f"{path}: not a {config_cls.__name__} ({type(err).__name__}: {err})") from None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' loading report and progress bars off (fva checks the report itself)."""
    from transformers.utils import logging as tlog

    level, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()


def _names(keys, limit: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_pretrained(model_cls, folder: Path, config, hub_id: str, ignored: tuple[str, ...] = ()) -> torch.nn.Module:
    """``model_cls.from_pretrained(folder, config=config)`` in float32 on the CPU, in eval mode; every weight of
    the model must come from the checkpoint with its shape, else one line naming the missing keys and the
    checkpoint's unused ones (those starting with ``ignored``, e.g. CLIP's text tower, left out). Unused keys
    alone are accepted."""
    files = pretrained_weight_files(folder, hub_id)
    try:
        with quiet_transformers():
            model, info = model_cls.from_pretrained(folder, config=config, dtype=torch.float32, local_files_only=True,
                                                    output_loading_info=True, ignore_mismatched_sizes=True)
    except Exception as err:  # noqa: BLE001  (any unreadable checkpoint is the user's to replace)
        text = str(err).strip().splitlines()
        raise FvaError(f"{files[0]}: {model_cls.__name__} could not load it ({type(err).__name__}: "
                       f"{text[0][:160] if text else ''}); download it again") from None
    where = files[0] if len(files) == 1 else folder
    mismatched = [f"{m[0]} {tuple(m[1])} vs {tuple(m[2])}" if isinstance(m, tuple) and len(m) == 3 else str(m)
                  for m in info.get("mismatched_keys", ())]
    if mismatched:
        raise FvaError(f"{where}: weights of other shapes than {CONFIG} describes: {_names(mismatched, 3)}")
    missing = list(info.get("missing_keys", ()))
    unexpected = [k for k in info.get("unexpected_keys", ()) if not k.startswith(ignored)]
    if missing:  # extra checkpoint keys alone are harmless: every weight of the model came from the file
        raise FvaError(f"{where}: checkpoint does not match {model_cls.__name__}: missing {_names(missing) or 'none'}; "
                       f"unexpected {_names(unexpected) or 'none'}")
    return model.eval()


def processor_from_folder(processor_cls, folder: Path, hub_id: str):
    """The folder's preprocessor_config.json read by transformers' own ``processor_cls``."""
    path = folder / PREPROCESSOR
    if not path.is_file():
        raise FvaError(f"{folder}: no {PREPROCESSOR}; --weights must be a save_pretrained folder of {hub_id} "
                       f"(the model's input settings are part of it)")
    try:
        with quiet_transformers():
            return processor_cls.from_pretrained(folder, local_files_only=True)
    except Exception as err:  # noqa: BLE001
        raise FvaError(f"{path}: unreadable {processor_cls.__name__} settings ({type(err).__name__}: "
                       f"{str(err).strip()[:160]})") from None


# ------------------------------------------------------------------------ wav2vec 2.0-family speech models
def speech_extractor(folder: Path, hub_id: str):
    """The folder's ``Wav2Vec2FeatureExtractor`` (WavLM, wav2vec 2.0), which must read audio at fva's rate."""
    from transformers import Wav2Vec2FeatureExtractor

    from fva.extract.media import SAMPLE_RATE

    extractor = processor_from_folder(Wav2Vec2FeatureExtractor, folder, hub_id)
    if int(extractor.sampling_rate) != SAMPLE_RATE:
        raise FvaError(f"{folder}: preprocessor_config.json has sampling_rate {extractor.sampling_rate}; "
                       f"fva decodes audio at {SAMPLE_RATE} Hz")
    return extractor


def receptive_field(config) -> int:
    """Samples of audio behind the first output frame of a wav2vec 2.0-family convolution stack."""
    field = 1
    for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
        field = (field - 1) * stride + kernel
    return field


def mean_over_frames(model, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N, frames, dim) hidden states of a zero-padded batch -> (N, dim): each clip's mean over its own frames
    (``model._get_feat_extract_output_lengths`` of its ``lengths`` in samples), padding left out."""
    frames = model._get_feat_extract_output_lengths(lengths).to(hidden.device)
    keep = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] < frames[:, None]).float()
    return (hidden * keep[..., None]).sum(1) / frames[:, None].clamp(min=1).float()
