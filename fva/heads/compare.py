"""``fva compare``: several head systems trained over the same folds of the same cache, one table.

A system is named by its config: the shipped ``fva/configs/systems/<name>.yaml`` (or a path to a YAML file).
Its settings are laid over an optional base config (the dataset's settings, e.g. the shipped ``demo``), so
every system sees the same data, folds and seed. The table gives, per system, the mean over folds of the dev EER on the
heard and on the unheard languages, their mean, and the training seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fva.errors import FvaError
from fva.heads.config import HeadConfig, load_config, merge_sections, system_configs
from fva.yamlio import read_yaml_mapping

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def system_config_path(name: str) -> Path | Traversable:
    """A YAML path as given, else the shipped ``fva/configs/systems/<name>.yaml`` (package data, found
    through the package wherever it is installed)."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    shipped = system_configs()
    if name in shipped:
        return shipped[name]
    missing = f"{name} not found" if name.endswith((".yaml", ".yml")) else f"no shipped systems/{name}.yaml"
    raise FvaError(f"system '{name}': {missing}; known systems: {', '.join(shipped) or 'none'}")


def system_config(name: str, base: str | Path | None, overrides: dict | None = None) -> HeadConfig:
    """The base config with the system's YAML laid over it (section by section), then ``overrides``."""
    layer = read_yaml_mapping(system_config_path(name), "config file")
    return load_config(base, merge_sections(merge_sections({}, layer), overrides or {}))


def summary_row(name: str, metrics: dict, seconds: float) -> dict:
    """Mean over folds of each language's dev EER, then over languages: heard, unheard and both."""
    heard = list(metrics["mean_heard"].values())
    unheard = list(metrics["mean_unheard"].values())
    both = heard + unheard
    return {"system": name, "heard": float(np.mean(heard)) if heard else None,
            "unheard": float(np.mean(unheard)) if unheard else None,
            "mean": float(np.mean(both)) if both else None, "seconds": round(seconds, 1),
            "folds": len(metrics["folds"])}


def markdown_table(rows: list[dict]) -> str:
    def cell(v):
        return "–" if v is None else f"{v:.2f}"

    lines = ["| system | dev EER heard % | dev EER unheard % | mean % | training s |", "|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {cell(r['heard'])} | {cell(r['unheard'])} | {cell(r['mean'])} | {r['seconds']:.1f} |"
              for r in rows]
    return "\n".join(lines)


def compare_systems(names: list[str], cache_root: Path, out: Path, base: str | Path | None = None,
                    folds: list[int] | None = None, overrides: dict | None = None, force: bool = False,
                    workers: int = 1, log=print) -> list[dict]:
    """Train each system over ``folds`` (None: all) into ``out/<name>``; returns the table's rows and
    writes ``out/compare.json`` and ``out/compare.md``."""
    from fva.heads.experiment import prepare_experiment
    from fva.heads.trainer import train_head

    if not names:
        raise FvaError("--systems: name at least one system")
    configs = {name: system_config(name, base, overrides) for name in names}  # all checked before training
    for name in names:
        prepare_experiment(out / Path(name).stem, force, resume=False)
    rows = []
    for name, cfg in configs.items():
        start = time.perf_counter()
        metrics = train_head(cfg, cache_root, out / Path(name).stem, folds, force=force, workers=workers,
                             log=lambda line, n=name: log(f"[{n}] {line}"))
        rows.append(summary_row(Path(name).stem, metrics, time.perf_counter() - start))
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "compare.md").write_text(markdown_table(rows) + "\n")
    return rows
