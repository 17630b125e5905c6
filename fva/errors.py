"""User-facing errors.

The library raises :class:`FvaError` (or a subclass) for anything the user can fix: a missing root, a bad
list line, an unknown split. Its message is one line that names the thing and says what to do; ``fva.cli``
prints it and exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class FvaError(Exception):
    """An error the user can fix; ``str(err)`` is the one line shown to them."""


def where(path: str | Path, line: int | None = None) -> str:
    """Format a file location as ``path`` or ``path:line`` for error messages.

    >>> where("lists/English_train.txt", 3)
    'lists/English_train.txt:3'
    """
    return f"{path}:{line}" if line is not None else str(path)
