"""fva: face-voice association for the FAME and FLAG challenges.

The Python API is importable from the top level (``from fva import FaceVoiceVerifier``); it is loaded on first
use, so ``import fva`` itself stays free of torch and the encoders' libraries.
"""

from __future__ import annotations

__version__ = "0.1.0"

# name -> module of the public API, imported when first asked for (PEP 562)
_LAZY = {name: "fva.api" for name in ("Embedding", "FaceVoiceVerifier", "MediaUnreadable", "Verification",
                                      "verify_pair")}
_LAZY["FvaError"] = "fva.errors"

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fva' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
