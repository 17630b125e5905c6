"""A name -> object registry: datasets, encoders and head systems are each one of these.

``register`` refuses a name already taken (a programmer error: :class:`ValueError`); ``get`` answers an unknown
name with one :class:`~fva.errors.FvaError` line listing the known names. A name can also be declared *lazy*,
``name -> module``: the module is imported on the name's first lookup and registers the object itself, so
that listing the names costs no import.
"""

from __future__ import annotations

import importlib
from typing import Generic, Iterator, TypeVar

from fva.errors import FvaError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects by name. ``kind`` names them in messages ("dataset", "head system"); ``choices`` introduces
    the list of known names in the unknown-name error; ``sort``: list names sorted, else in the order they
    were added."""

    def __init__(self, kind: str, choices: str = "choose one of", sort: bool = True) -> None:
        self.kind = kind
        self.choices = choices
        self.sort = sort
        self._objects: dict[str, T] = {}
        self._modules: dict[str, str] = {}  # lazy names: the module that registers each

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name``; a name that already holds an object is a ValueError."""
        if name in self._objects:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._objects[name] = obj
        return obj

    def lazy(self, name: str, module: str) -> None:
        """Declare ``name`` as defined (and registered) by ``module``, imported on first lookup."""
        self._modules[name] = module

    def get(self, name: str) -> T:
        """The object called ``name``; an unknown name is one FvaError line listing the known ones."""
        if name not in self._objects and name in self._modules:
            importlib.import_module(self._modules[name])
        try:
            return self._objects[name]
        except KeyError:
            raise FvaError(f"unknown {self.kind} {name!r}; {self.choices} {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Every known name, lazy ones included."""
        names = list(dict.fromkeys([*self._objects, *self._modules]))
        return sorted(names) if self.sort else names

    def __contains__(self, name: object) -> bool:
        return name in self._objects or name in self._modules

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
