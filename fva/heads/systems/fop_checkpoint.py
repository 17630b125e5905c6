"""The official FAME baseline (FOP) checkpoint format: what the ``fop`` system loads as it is, what
``dual-fop`` freezes, and what ``fva import-fop`` turns into an experiment."""

from __future__ import annotations

from pathlib import Path

import torch

from fva.errors import FvaError

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# every key of the official gated-fusion FOP state dict
FOP_KEYS = tuple(
    [f"{m}_branch.fc1.0.{p}" for m in ("voice", "face") for p in ("weight", "bias")]
    + [f"{m}_branch.fc1.1.{p}" for m in ("voice", "face") for p in _BN]
    + [f"fusion_layer.attention.0.block.0.{p}" for p in ("weight", "bias")]
    + [f"fusion_layer.attention.0.block.1.{p}" for p in _BN]
    + [f"fusion_layer.attention.1.{p}" for p in ("weight", "bias")]
    + [f"logits_layer.{p}" for p in ("weight", "bias")])


def read_fop_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The FOP state dict held in ``path`` and the rest of the file's payload.

    ``path``: an official checkpoint (``{'epoch', 'state_dict'}``; ``module.`` prefixes that DataParallel
    adds are removed), a ``fop`` experiment's ``checkpoint.pt``, or an experiment folder (its fold 0).
    Anything else is an :class:`FvaError` that names what is missing."""
    path = Path(path)
    if path.is_dir():
        path = path / "fold0" / "checkpoint.pt"
    if not path.is_file():
        raise FvaError(f"{path}: FOP checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a non-torch or damaged file: unpickling and zip errors of many kinds
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FvaError(f"{path}: not a torch checkpoint ({detail})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise FvaError(f"{path}: not a FOP checkpoint (no 'state_dict' mapping)")
    config = payload.get("model_config")
    system = config.get("system", "fame2026") if isinstance(config, dict) else "fop"
    if system != "fop":
        raise FvaError(f"{path}: a {system} checkpoint, not a FOP one")
    state = {k.removeprefix("module."): v for k, v in payload["state_dict"].items()}
    missing = [k for k in FOP_KEYS if k not in state]
    if missing:
        raise FvaError(f"{path}: not a FOP checkpoint: no key {missing[0]!r} "
                       f"({len(missing)} of the {len(FOP_KEYS)} FOP keys missing)")
    return state, {k: v for k, v in payload.items() if k != "state_dict"}


def read_fop_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of :func:`read_fop_checkpoint`."""
    return read_fop_checkpoint(path)[0]
