"""Head systems: each published face-voice system is a choice of head, loss, pairing and score in ONE
trainer (:mod:`fva.heads.trainer`), selected by ``model.system`` in the config, with its own options under
``model.params`` (a dataclass per system: unknown keys are errors, defaults as published).

A system is an :class:`~fva.heads.systems.base.HeadSystem` registered with :func:`register_system`.
Modules here are imported lazily by :func:`get_system` so that importing fva stays cheap.
"""

from __future__ import annotations

import importlib

from fva.errors import FvaError

# system name -> module defining it (imported on first use; the module calls register_system)
SYSTEM_MODULES = {
    "fame2026": "fva.heads.model",
    "xm-align": "fva.heads.systems.xmalign",
    "fop": "fva.heads.systems.fop",
    "dual-fop": "fva.heads.systems.fop",
    "contrastive": "fva.heads.systems.contrastive",
    "cross-attention": "fva.heads.systems.crossattn",
}

_REGISTRY: dict[str, type] = {}


def register_system(cls: type) -> type:
    """Class decorator: make ``cls`` (a HeadSystem with a ``name``) selectable by ``model.system``."""
    _REGISTRY[cls.name] = cls
    return cls


def get_system(name: str) -> type:
    """The HeadSystem class called ``name``; an unknown name is an error listing the known ones."""
    if name not in _REGISTRY and name in SYSTEM_MODULES:
        importlib.import_module(SYSTEM_MODULES[name])
    if name not in _REGISTRY:
        raise FvaError(f"unknown head system '{name}'; known systems: {', '.join(sorted(SYSTEM_MODULES))}")
    return _REGISTRY[name]
