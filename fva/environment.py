"""The installed dependency stack: checks that it holds together, and its drift from the committed lock.

A source checkout installs ``requirements.lock`` (every package of the tree at an exact version, resolved
by ``make lock``). Installed any other way, the stack can still come apart in two ways that otherwise show
up as a ctypes traceback or a missing module deep inside a library:

* torchaudio loads its C++ extension only against the torch release of its own version (torchaudio 2.11.1
  beside torch 2.11.0 fails with ``undefined symbol``), and speechbrain imports torchaudio;
* deepface has the PyTorch backend that VGG-Face runs on only from :data:`DEEPFACE_PYTORCH_SINCE` on.

:func:`require_torchaudio` and :func:`require_deepface_pytorch` run where fva first reaches those libraries
and raise :class:`EnvironmentMismatch` (an :class:`~fva.errors.FvaError`: one line, exit status 2 from the
CLI) naming the versions found and the command that fixes them. Both read package metadata only; neither
imports the library it checks.
"""

from __future__ import annotations

import functools
import os
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fva.errors import FvaError

#: The committed lock, at the root of a source checkout.
LOCK_FILE = "requirements.lock"
#: The first deepface release with ``deepface.models.facial_recognition.pytorch`` (0.0.100 has none).
DEEPFACE_PYTORCH_SINCE = "0.0.101"
#: A file of that backend that fva loads VGG-Face through.
_DEEPFACE_PYTORCH_FILE = "deepface/models/facial_recognition/pytorch/VGGFace.py"


class EnvironmentMismatch(FvaError):
    """Installed packages that do not work together; ``str(err)`` names them and the fix."""


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def checkout_lock() -> Path | None:
    """The lock of the source checkout fva runs from, or None (an installed wheel has none)."""
    path = Path(__file__).resolve().parents[1] / LOCK_FILE
    return path if path.is_file() else None


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies under it (symbolic links kept), else absolute."""
    absolute = Path(os.path.abspath(path))
    return os.path.relpath(absolute) if absolute.is_relative_to(Path.cwd()) else str(absolute)


def fix_command(fallback: str) -> str:
    """The command that reinstalls the locked stack into this interpreter (in a checkout), else ``fallback``
    (a ``pip install`` of the one package to move)."""
    lock = checkout_lock()
    if lock is None:
        return fallback
    return f"{_shown(Path(sys.executable))} -m pip install --require-hashes --no-deps -r {_shown(lock)}"


def _release(version: str) -> tuple[int, ...] | None:
    try:
        return Version(version).release
    except InvalidVersion:
        return None


def torchaudio_problem(torch_version: str | None, torchaudio_version: str | None) -> str | None:
    """Why this torch and torchaudio cannot be used together, or None when they pair.

    torchaudio pairs with the torch release of its own version; local build tags (+cpu, +cu128) aside.

    >>> torchaudio_problem("2.11.0", "2.11.0+cpu") is None
    True
    >>> torchaudio_problem("2.11.0", "2.11.1")
    'torch 2.11.0 and torchaudio 2.11.1 do not belong together (torchaudio 2.11.1 loads only against torch 2.11.1)'
    """
    if torch_version is None:
        return "torch is not installed"
    if torchaudio_version is None:
        return f"torchaudio is not installed (torch {torch_version} needs torchaudio {torch_version})"
    own = _release(torchaudio_version)
    if own is None or own != _release(torch_version):
        wants = ".".join(map(str, own)) if own else torchaudio_version
        return (f"torch {torch_version} and torchaudio {torchaudio_version} do not belong together "
                f"(torchaudio {torchaudio_version} loads only against torch {wants})")
    return None


def deepface_problem(version: str | None, has_pytorch_backend: bool) -> str | None:
    """Why this deepface cannot run VGG-Face on PyTorch, or None when it can.

    >>> deepface_problem("0.0.100", False)
    'deepface 0.0.100 has no PyTorch backend (fva needs deepface >= 0.0.101)'
    >>> deepface_problem("0.0.103", True) is None
    True
    """
    if version is None:
        return f"deepface is not installed (fva needs deepface >= {DEEPFACE_PYTORCH_SINCE})"
    release = _release(version)
    if not has_pytorch_backend or release is None or release < _release(DEEPFACE_PYTORCH_SINCE):
        return f"deepface {version} has no PyTorch backend (fva needs deepface >= {DEEPFACE_PYTORCH_SINCE})"
    return None


@functools.cache
def require_torchaudio() -> None:
    """Raise :class:`EnvironmentMismatch` unless the installed torch and torchaudio pair."""
    torch_version = installed_version("torch")
    problem = torchaudio_problem(torch_version, installed_version("torchaudio"))
    if problem:
        pair = f"torch=={torch_version} torchaudio=={torch_version}" if torch_version else "torch torchaudio"
        raise EnvironmentMismatch(f"{problem}; fix: {fix_command(f'pip install {pair}')}")


@functools.cache
def require_deepface_pytorch() -> None:
    """Raise :class:`EnvironmentMismatch` unless deepface has the PyTorch backend fva runs VGG-Face on."""
    version = installed_version("deepface")
    has_backend = False
    if version is not None:
        files = metadata.distribution("deepface").files or ()
        has_backend = any(str(f).replace("\\", "/") == _DEEPFACE_PYTORCH_FILE for f in files)
    problem = deepface_problem(version, has_backend)
    if problem:
        raise EnvironmentMismatch(f"{problem}; fix: {fix_command(f'pip install deepface>={DEEPFACE_PYTORCH_SINCE}')}")


# ------------------------------------------------------------------------------------------------ the lock

def read_lock(path: str | Path) -> dict[str, str]:
    """The ``name==version`` pins of a requirements lock (hashes, markers and comments aside), by
    canonical name.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".lock", delete=False) as fh:
    ...     _ = fh.write("Torch==2.11.0 \\\\\\n    --hash=sha256:00\\n# via x\\nruamel.yaml==0.18.17\\n")
    >>> read_lock(fh.name)
    {'torch': '2.11.0', 'ruamel-yaml': '0.18.17'}
    """
    pins: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line.split(" --hash")[0].strip())
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise FvaError(f"{path}:{number}: {req.name} is not pinned to one version (run make lock)")
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def lock_drift(pins: dict[str, str]) -> list[str]:
    """One line per locked package whose installed version differs from its pin (or that is missing)."""
    drift = []
    for name, pinned in sorted(pins.items()):
        found = installed_version(name)
        if found is None:
            drift.append(f"{name}: locked {pinned}, not installed")
        elif Version(found) != Version(pinned):
            drift.append(f"{name}: locked {pinned}, installed {found}")
    return drift


def unmet_ranges(requirements: list[str], pins: dict[str, str], extras: tuple[str, ...] = ()) -> list[str]:
    """The declared requirements (pyproject ranges) that the locked versions do not satisfy.

    >>> unmet_ranges(["torch==2.11.0", "numpy>=1.24", "pytest>=8; extra == 'test'"],
    ...              {"torch": "2.11.1", "numpy": "2.4.6", "pytest": "9.2.0"}, extras=("test",))
    ['torch==2.11.0: locked 2.11.1']
    """
    unmet = []
    for text in requirements:
        req = Requirement(text)
        environments = [{"extra": extra} for extra in ("",) + extras]
        if req.marker is not None and not any(req.marker.evaluate(env) for env in environments):
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            unmet.append(f"{req}: not in the lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            unmet.append(f"{req}: locked {pinned}")
    return unmet
