"""``fva compare``: several head systems trained over the same folds of the same cache, one table.

A system is named by its config: the shipped ``fva/configs/systems/<name>.yaml`` (or a path to a YAML file).
Its settings are laid over an optional base config (the dataset's settings, e.g. the shipped ``demo``), so
every system sees the same data, folds and seed. The table gives, per system, the mean over folds of the dev EER on the
heard and on the unheard languages, their mean, the training seconds and the scoring level of its scores
(:data:`fva.heads.postprocess.LEVELS`: what besides the pair they read); where the folds measured dev trials
with same-gender impostors too (MAV-Celeb v4: FLAG 2027's gender track), also their heard dev EER.

Seeds: with several seeds each system is trained once per seed, into ``out/seed<k>/<system>`` (a seed's folder
holds what one single-seed compare writes, so a ``dual-fop`` still finds its ``{exp_parent}/fop``), and the
table gives the mean over seeds with its spread (sample std, min-max). :func:`train_seeds` does the same for one
experiment (``fva train-head --seeds``): ``<exp>/seed<k>/`` and ``<exp>/seeds.json``. One seed is a plain run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fva.errors import FvaError
from fva.experiment import heard_eers
from fva.heads.config import HeadConfig, config_layers, load_config, merge_sections, system_configs

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
    """The base config with the system's YAML laid over it (section by section), then ``overrides``; a config
    that cannot be (e.g. one scoring above ``--pairwise``'s level) is one line naming the system."""
    layer = config_layers(system_config_path(name))
    try:
        return load_config(base, merge_sections(merge_sections({}, layer), overrides or {}))
    except FvaError as err:
        text = str(err)
        raise FvaError(text if text.startswith(f"system '{name}'") else f"system '{name}': {text}") from None


ROW_FIGURES = ("heard", "unheard", "mean", "same_gender")  # the table's EER columns (same_gender: where measured)


def summary_row(name: str, metrics: dict, seconds: float) -> dict:
    """Mean over folds of each language's dev EER, then over languages: heard, unheard and both; and the heard
    dev EER with same-gender impostors (None where not measured)."""
    heard = list(metrics["mean_heard"].values())
    unheard = list(metrics["mean_unheard"].values())
    same = list(heard_eers(metrics, "same-gender").values())
    both = heard + unheard
    return {"system": name, "heard": float(np.mean(heard)) if heard else None,
            "unheard": float(np.mean(unheard)) if unheard else None,
            "mean": float(np.mean(both)) if both else None,
            "same_gender": float(np.mean(same)) if same else None, "seconds": round(seconds, 1),
            "folds": len(metrics["folds"]), "level": score_level(metrics)}


def score_level(metrics: dict) -> int:
    """The scoring level of an experiment's dev scores (:data:`fva.heads.postprocess.LEVELS`): the highest its
    folds' metrics record (0 for folds written before levels were recorded)."""
    return max((int(m.get("score_level", 0)) for m in metrics["folds"].values()), default=0)



def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; FvaError for anything but distinct integers.

    >>> parse_seeds("0, 1,2")
    [0, 1, 2]
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        raise FvaError(f"--seeds {text!r}: give comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise FvaError(f"--seeds {text!r}: give at least one seed, each once, e.g. 0,1,2")
    return seeds


def seed_folder(exp: Path, seed: int) -> Path:
    """``<exp>/seed<k>``: one seed's experiment of a multi-seed run."""
    return Path(exp) / f"seed{seed}"


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max.

    >>> spread([1.0, 3.0])
    {'mean': 2.0, 'std': 1.4142135623730951, 'min': 1.0, 'max': 3.0, 'n': 2}
    """
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "min": float(v.min()),
            "max": float(v.max()), "n": len(v)}


def seed_summary(per_seed: dict[int, dict]) -> dict:
    """Spread over seeds of each experiment's mean dev EER per language (heard, unheard) and of the
    :func:`summary_row` figures (heard, unheard, mean); ``per_seed``: seed -> the experiment's metrics.json."""
    out: dict = {"seeds": sorted(per_seed), "per_seed": {str(k): per_seed[k] for k in sorted(per_seed)}}
    for kind in ("heard", "unheard"):
        langs = sorted({lang for m in per_seed.values() for lang in m[f"mean_{kind}"]})
        out[f"mean_{kind}"] = {lang: spread([m[f"mean_{kind}"][lang] for m in per_seed.values()
                                             if lang in m[f"mean_{kind}"]]) for lang in langs}
    rows = [summary_row("", m, 0.0) for m in per_seed.values()]
    for key in ROW_FIGURES:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = spread(values) if values else None
    return out


def seeds_row(name: str, per_seed: dict[int, dict], seconds: float) -> dict:
    """:func:`summary_row` over several seeds: heard, unheard and mean are means over seeds, each with its
    ``<key>_spread`` (:func:`spread`); ``seeds`` lists them."""
    summary = seed_summary(per_seed)
    row = {"system": name, "seconds": round(seconds, 1), "folds": len(next(iter(per_seed.values()))["folds"]),
           "seeds": summary["seeds"], "level": max(score_level(m) for m in per_seed.values())}
    for key in ROW_FIGURES:
        row[key] = None if summary[key] is None else summary[key]["mean"]
        row[f"{key}_spread"] = summary[key]
    return row


def train_seeds(cfg: HeadConfig, cache_root: Path, exp: Path, seeds: list[int], folds: list[int] | None = None,
                **kwargs) -> dict:
    """Train one experiment per seed into ``<exp>/seed<k>`` (the config's seed replaced) with
    :func:`fva.heads.trainer.train_head` (``kwargs``: init, resume, force, workers, log) and write
    ``<exp>/seeds.json`` (:func:`seed_summary`); returns that summary. One seed: a plain run into ``exp``."""
    from dataclasses import replace

    from fva.experiment import SEEDS_FILE, write_json
    from fva.heads.experiment import prepare_experiment
    from fva.heads.trainer import train_head

    if len(seeds) == 1:
        return train_head(replace(cfg, seed=seeds[0]), cache_root, exp, folds, **kwargs)
    for seed in seeds:  # every folder checked before any training
        prepare_experiment(seed_folder(exp, seed), kwargs.get("force", False), kwargs.get("resume", False))
    log = kwargs.pop("log", None) or (lambda line: None)
    per_seed = {seed: train_head(replace(cfg, seed=seed), cache_root, seed_folder(exp, seed), folds,
                                 log=lambda line, k=seed: log(f"[seed {k}] {line}"), **kwargs) for seed in seeds}
    summary = seed_summary(per_seed)
    write_json(Path(exp) / SEEDS_FILE, summary)
    return summary


def markdown_table(rows: list[dict]) -> str:
    """The comparison table; rows of several seeds show ``mean ± std (min–max)`` over seeds."""
    def cell(r, key):
        v, sp = r[key], r.get(f"{key}_spread")
        if v is None:
            return "–"
        if not sp or sp["n"] < 2:
            return f"{v:.2f}"
        return f"{v:.2f} ± {sp['std']:.2f} ({sp['min']:.2f}–{sp['max']:.2f})"

    def interval(r):
        ci = r.get("pooled_heard")
        return "–" if not ci else f"{ci['eer']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"

    seeded = any(len(r.get("seeds", ())) > 1 for r in rows)
    pooled = any(r.get("pooled_heard") for r in rows)
    gendered = any(r.get("same_gender") is not None for r in rows)
    head = "| system | dev EER heard % | dev EER unheard % | mean % |"
    head += " dev EER heard, same-gender impostors % |" if gendered else ""
    head += " training s | scoring level |"
    head += " pooled dev EER heard % [95% CI] |" if pooled else ""
    head += " seeds |" if seeded else ""
    lines = [head, "|---" * head.count(" |") + "|"]
    lines += [f"| {r['system']} | {cell(r, 'heard')} | {cell(r, 'unheard')} | {cell(r, 'mean')} |"
              + (f" {cell(r, 'same_gender')} |" if gendered else "") + f" {r['seconds']:.1f} | {r.get('level', 0)} |"
              + (f" {interval(r)} |" if pooled else "")
              + (f" {','.join(map(str, r.get('seeds', ())))} |" if seeded else "") for r in rows]
    return "\n".join(lines)


def compare_systems(names: list[str], cache_root: Path, out: Path, base: str | Path | None = None,
                    folds: list[int] | None = None, overrides: dict | None = None, force: bool = False,
                    workers: int = 1, log=print, seeds: list[int] | None = None,
                    bootstrap: int = 1000) -> list[dict]:
    """Train each system over ``folds`` (None: all) into ``out/<name>`` (several ``seeds``:
    ``out/seed<k>/<name>`` each); returns the table's rows and writes ``out/compare.json`` and
    ``out/compare.md``. ``bootstrap`` > 0 adds each system's pooled heard dev EER (all folds' dev trials; the
    first seed's) with its bootstrap interval over identities (:func:`fva.evaluate.report.experiment_dev_interval`)."""
    from fva.evaluate.report import experiment_dev_interval
    from fva.heads.experiment import prepare_experiment
    from fva.heads.trainer import train_head

    from dataclasses import replace

    if not names:
        raise FvaError("--systems: name at least one system")
    configs = {name: system_config(name, base, overrides) for name in names}  # all checked before training
    seeded = seeds is not None and len(seeds) > 1
    runs = [(seed, seed_folder(out, seed)) for seed in seeds] if seeded else [(None, out)]
    for _, folder in runs:
        for name in names:
            prepare_experiment(folder / Path(name).stem, force, resume=False)
    rows = []
    for name, cfg in configs.items():
        start = time.perf_counter()
        per_seed = {}
        for seed, folder in runs:
            run_cfg = cfg if seed is None and not seeds else replace(cfg, seed=seeds[0] if seed is None else seed)
            tag = name if seed is None else f"{name} seed {seed}"
            per_seed[seed] = train_head(run_cfg, cache_root, folder / Path(name).stem, folds, force=force,
                                        workers=workers, log=lambda line, n=tag: log(f"[{n}] {line}"))
        seconds = time.perf_counter() - start
        row = (seeds_row(Path(name).stem, per_seed, seconds) if seeded
               else summary_row(Path(name).stem, per_seed[None], seconds))
        if bootstrap > 0:
            row["pooled_heard"] = experiment_dev_interval(runs[0][1] / Path(name).stem, bootstrap,
                                                          cfg.seed).to_dict()
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "compare.md").write_text(markdown_table(rows) + "\n")
    return rows
