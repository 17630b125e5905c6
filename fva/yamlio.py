"""Reading a YAML file that must hold a mapping (configs, submission plans): one user-error line for a
missing or unreadable file, malformed YAML or anything but a mapping."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from fva.errors import FvaError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def read_yaml_mapping(path: str | Path | Traversable, what: str) -> dict:
    """The mapping in the YAML file at ``path`` (a path, or a package resource); an empty file is ``{}``.
    ``what`` names the file in messages ("config file", "submission plan")."""
    if isinstance(path, str):
        path = Path(path)
    if not path.is_file():
        raise FvaError(f"{path}: {what} not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise FvaError(f"{path}: cannot read the {what} ({getattr(err, 'strerror', None) or err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise FvaError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FvaError(f"{path}: a {what} must be a mapping (key: value lines), got {type(data).__name__} "
                       f"{_short(data)}")
    return data


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
