"""The encoder catalogue: every built-in encoder's facts in one record (as timm's registry keeps a model's name,
pretrained source and defaults together), kept as data in ``catalogue.yaml`` beside this module. The registry's lazy imports, ``fva extract``'s default encoders, the
heads' default features, the demo checkpoints' defaults and ``fva weights``' name look-ups all derive from it;
adding an encoder is one record there and its module (which registers the class under the same name).

Importing it loads no numpy or torch (the CLI reads it at start-up); a name listed twice fails at import.
"""

from __future__ import annotations

import re
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


def _read() -> tuple[EncoderEntry, ...]:
    """The records of ``catalogue.yaml`` (package data beside this module), in file order; a record with a
    missing or unknown field fails loudly at import (a packaging bug, not a user error)."""
    from importlib.resources import files

    import yaml

    text = (files("fva.extract") / "catalogue.yaml").read_text()
    names = re.findall(r"^([\w-]+):", text, flags=re.MULTILINE)
    if len(set(names)) != len(names):  # safe_load would keep the last of a repeated key silently
        raise RuntimeError(f"fva/extract/catalogue.yaml lists an encoder twice: {sorted(names)}")
    return tuple(EncoderEntry(name=name, **record) for name, record in yaml.safe_load(text).items())


CATALOGUE: tuple[EncoderEntry, ...] = _read()
BY_NAME: dict[str, EncoderEntry] = {e.name: e for e in CATALOGUE}


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
