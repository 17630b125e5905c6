"""Atomic file writes: the one way fva replaces a file.

Every file fva writes that a reader, a resumed run or another process may open is written under a temporary
name in its own folder (``.<name>.<pid>.tmp``) and renamed over its path only once it is complete, so a reader
sees the old file or the new one, never a partial one, and a killed run leaves at most a temporary file.
``fsync=True`` also flushes the data (and then the folder's entry) to the disk before and after the rename,
for files that must survive a power cut, not just a killed process.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

#: What :func:`temp_path` names hold after the target's name; a folder listing can tell them apart by it.
TEMP_SUFFIX = ".tmp"


def temp_path(path: str | Path) -> Path:
    """The temporary name beside ``path`` that this process writes it under.

    >>> temp_path("/data/exp/checkpoint.pt").name == f".checkpoint.pt.{os.getpid()}.tmp"
    True
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's) data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: str | Path) -> None:
    """Flush a folder's entries (a rename in it) to the disk, where the filesystem allows it."""
    try:
        fsync_path(folder)
    except OSError:  # some filesystems refuse fsync on a folder; the rename is atomic all the same
        pass


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary path for a writer that wants a file name (``torch.save``, h5py, zipfile, matplotlib);
    renamed over ``path`` when the block ends cleanly, removed when it raises. Creates the parent folder.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out" / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    ...     target.exists()
    False
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('done', ['a.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if fsync:
        fsync_folder(path.parent)


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", *, fsync: bool = False, **open_args) -> Iterator[IO]:
    """``open(path, mode)`` for a new version of ``path``, which replaces the old one only when the block ends
    cleanly (``open_args``: ``newline``, ``encoding``, ...).

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_write(target) as fh:
    ...     _ = fh.write("one")
    >>> try:
    ...     with atomic_write(target) as fh:
    ...         _ = fh.write("half")
    ...         raise KeyboardInterrupt
    ... except KeyboardInterrupt:
    ...     pass
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('one', ['a.txt'])
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes a whole new file: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, mode, **open_args) as fh:
            yield fh


def write_text(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """Replace ``path`` with ``text``, atomically."""
    with atomic_write(path, fsync=fsync) as fh:
        fh.write(text)
    return Path(path)
