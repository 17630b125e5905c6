"""Head systems: each published face-voice system is a choice of head, loss, pairing and score in ONE
trainer (:mod:`fva.heads.trainer`), selected by ``model.system`` in the config, with its own options under
``model.params`` (a dataclass per system: unknown keys are errors, defaults as published).

A system is an :class:`~fva.heads.systems.base.HeadSystem` registered with :func:`register_system`.
Modules here are imported lazily by :func:`get_system` so that importing fva stays cheap.
"""

from __future__ import annotations

from fva.registry import Registry

SYSTEMS: Registry[type] = Registry("head system", choices="known systems:")
# system name -> module defining it (imported on first use; the module calls register_system)
for _name, _module in (("fame2026", "fva.heads.model"), ("xm-align", "fva.heads.systems.xmalign"),
                       ("fop", "fva.heads.systems.fop"), ("dual-fop", "fva.heads.systems.fop"),
                       ("contrastive", "fva.heads.systems.contrastive"),
                       ("cross-attention", "fva.heads.systems.crossattn"), ("cca", "fva.heads.systems.cca"),
                       ("bridge", "fva.heads.systems.contrastive"), ("zeroshot", "fva.heads.systems.zeroshot"),
                       ("age-gap", "fva.heads.systems.zeroshot")):
    SYSTEMS.lazy(_name, _module)


def register_system(cls: type) -> type:
    """Class decorator: make ``cls`` (a HeadSystem with a ``name``) selectable by ``model.system``; a name
    registered twice is an error."""
    return SYSTEMS.register(cls.name, cls)


def get_system(name: str) -> type:
    """The HeadSystem class called ``name``; an unknown name is an error listing the known ones."""
    return SYSTEMS.get(name)
