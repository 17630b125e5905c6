"""Typed dataclasses from YAML mappings: an unknown key, or a value of the wrong type, is one error line naming
it. The head config's sections (:mod:`fva.heads.config`) and each head system's ``Params``
(:mod:`fva.heads.systems.base`) are read with it; it imports neither, so both can import it.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

from fva.errors import FvaError


def build_dataclass(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    """``cls`` from a mapping; ``source`` names the file and ``prefix`` the section for messages."""
    if not isinstance(data, dict):
        raise FvaError(f"{source}: {prefix.rstrip('.') or 'the config'} must be a mapping, got {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise FvaError(f"{source}: unknown config key '{prefix}{unknown[0]}'; known keys"
                       f"{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(known))}")
    default = cls()
    values = {}
    for name, value in data.items():
        current = getattr(default, name)
        if is_dataclass(current):
            values[name] = build_dataclass(type(current), value or {}, source, f"{prefix}{name}.")
        else:
            values[name] = _coerce(value, current, source, f"{prefix}{name}")
    return cls(**values)


def _coerce(value: Any, default: Any, source: str, name: str) -> Any:
    """``value`` checked against the type of the field's default."""
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            raise FvaError(f"{source}: {name} must be true or false, got {value!r}")
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise FvaError(f"{source}: {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        return kind(value)
    if kind is dict:
        if not isinstance(value, dict):
            raise FvaError(f"{source}: {name} must be a mapping, got {value!r}")
        return dict(value)
    if kind is list:
        numeric = bool(default) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in default)
        if numeric:  # a list of numbers (e.g. a grid): each entry coerced like the default's first
            if not isinstance(value, list) or not value:
                raise FvaError(f"{source}: {name} must be a non-empty list of numbers, got {value!r}")
            return [_coerce(v, default[0], source, name) for v in value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FvaError(f"{source}: {name} must be a list of names, got {value!r}")
        return list(value)
    return str(value)


def parse_params(cls: type, data: dict, what: str) -> Any:
    """A system's ``Params`` dataclass from the config's ``model.params`` mapping (unknown keys: errors)."""
    return build_dataclass(cls, data or {}, what)
