"""Stage 1 commands: feature extraction, demo checkpoints, the cache group."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fva.commands.common import parse_weights, report
from fva.extract import COMMIT_ROWS
from fva.extract.catalogue import default_encoders


@click.command(short_help="Frozen encoders -> resumable HDF5 caches.")
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), default=None,
              help="A manifest from 'fva manifest' (or give --dataset/--root to build one).")
@click.option("--dataset", default=None, help="Dataset name, as for 'fva manifest'.")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Dataset folder (overrides the manifest's).")
@click.option("--subset", default=None, help="Dataset subset (default: its training subset).")
@click.option("--split", default="full", show_default=True,
              help="full or <language>-unheard: the condition the weights are for (every language is kept: head "
                   "training leaves the unheard one out and uses it for its dev EER).")
@click.option("--weight-set", default=None,
              help="Name of the weights' set: features go to CACHE/<dataset>/<subset>-<set>/<encoder>/ "
                   "(default: the split, or the manifest's split).")
@click.option("--language-labels", type=click.Path(path_type=Path), default=None,
              help="VoxCeleb2 language labels (for unheard splits).")
@click.option("--lists", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="MAV-Celeb list folder, as for 'fva manifest'.")
@click.option("--cache", "cache_root", type=click.Path(path_type=Path), default=Path("cache"), show_default=True,
              help="Cache root; features go to CACHE/<dataset>/<subset>-<set>/<encoder>/.")
@click.option("--encoders", default=",".join(default_encoders()), show_default=True,
              help="Comma-separated encoder names.")
@click.option("--weights", "weights", multiple=True, metavar="ENCODER=SOURCE",
              help="Weights per encoder: a hub id or a local folder/file (repeatable).")
@click.option("--device", default=None,
              help="torch device (default: cuda:LOCAL_RANK under torchrun, else cuda when available, else cpu).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=None,
              help="Background decoding processes (default: the usable CPUs less one, divided by torchrun's "
                   "LOCAL_WORLD_SIZE, at most 8).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Encoder arithmetic: bf16/fp16 run under torch.autocast (fp16 on CUDA only); rows are stored "
                   "as --dtype either way.")
@click.option("--num-shards", type=int, default=None, help="Workers splitting the manifest (default: WORLD_SIZE or 1).")
@click.option("--shard-index", type=int, default=None, help="This worker's index (default: RANK or 0).")
@click.option("--limit", type=int, default=None, help="Only the first N records per encoder (a quick look).")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--strict", is_flag=True, help="Stop at the first media file that fails instead of recording it "
              "(and, building a manifest, at the first unusable CommonVoice row instead of skipping it).")
@click.option("--commit-rows", type=int, default=COMMIT_ROWS, show_default=True,
              help="Rows per committed part file: at most this much work is lost when a run is killed.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="tqdm progress bars.")
def extract(manifest_path: Path | None, dataset: str | None, root: Path | None, subset: str | None, split: str,
            weight_set: str | None, language_labels: Path | None, lists: Path | None, cache_root: Path, encoders: str,
            weights: tuple[str, ...],
            device: str | None, batch_size: int, workers: int | None, precision: str, num_shards: int | None,
            shard_index: int | None, limit: int | None, dtype: str, strict: bool, commit_rows: int,
            progress: bool) -> None:
    """Run frozen encoders over a dataset in batches into resumable, sharded HDF5 caches.

    Killed and run again with the same command, it resumes where it stopped. Media that cannot be
    decoded are recorded with their reason and skipped (--strict stops instead). Features of several weight
    sets (the public encoders: full; encoders trained without a language: that split) sit side by side.
    The encoders of one modality run together, in memory together: each medium is decoded once for all.

    \b
    Examples:
      fva extract --dataset mavceleb-v3 --root data/demo --cache cache \\
          --weights speaker-ecapa=speechbrain/spkrec-ecapa-voxceleb
      torchrun --nproc-per-node 8 -m fva.cli extract --dataset voxceleb2 --root /data/vox2 \\
          --split german-unheard --language-labels vox2_lang.tsv --encoders speaker-ecapa \\
          --weights speaker-ecapa=models/ecapa-nogerman
    """
    from fva.data.datasets import load_manifest
    from fva.extract.encoders.base import get_encoder_class
    from fva.extract.runner import (check_precision, default_device, default_workers, encoders_by_modality,
                                    iter_encoders, run_extraction_many, shard_from_env)
    from fva.layout import check_weight_set

    weight_map = parse_weights(weights)
    names = [n.strip() for n in encoders.split(",") if n.strip()]
    for name in list(names) + list(weight_map):
        get_encoder_class(name)  # unknown names fail before any work
    man, notes = load_manifest(manifest_path, dataset, root, subset, split, language_labels, lists=lists,
                               strict=strict, keep_languages=True)
    weight_set = check_weight_set(weight_set or (man.split if manifest_path else split))
    for note in notes:
        click.echo(f"note: {note}", err=True)
    num_shards, shard_index = shard_from_env(num_shards, shard_index)
    device = default_device(device)
    check_precision(precision, device)
    workers = default_workers() if workers is None else workers
    for group in encoders_by_modality(names):
        built = list(iter_encoders(group, weight_map, device))
        for summary in run_extraction_many(man, built, cache_root, root=root, num_shards=num_shards,
                                           shard_index=shard_index, batch_size=batch_size, workers=workers,
                                           limit=limit, dtype=dtype, strict=strict, progress=progress,
                                           commit_rows=commit_rows, weight_set=weight_set, precision=precision):
            click.echo(summary.line())
        del built


@click.command("demo-checkpoints", short_help="Demo encoder weights in their real formats.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write them into.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--encoders", default=None, help="Comma-separated: which to write (default: the four FAME 2026 encoders; also ecapa-embedding, vggface-keras).")
def demo_checkpoints(out: Path, seed: int, encoders: str | None) -> None:
    """Write seeded random demo checkpoints for the four encoders, each in its source's real format.

    Prints the --weights option for each, for 'fva extract'.

    \b
    Examples:
      fva demo-checkpoints --out data/demo-checkpoints
      fva demo-checkpoints --out data/world-models --encoders speaker-ecapa,vit-age-gender
    """
    from fva.synth.checkpoints import DEMO_ENCODERS, write_demo_checkpoints

    names = tuple(n.strip() for n in encoders.split(",") if n.strip()) if encoders else DEMO_ENCODERS
    for name, path in write_demo_checkpoints(out, seed, names).items():
        click.echo(f"--weights {name}={path}")


@click.group()
def cache() -> None:
    """Inspect and validate feature caches."""


@cache.command("info")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cache_info_cmd(folder: Path, as_json: bool) -> None:
    """Counts, dimension, dtype, encoder and weights identity of one encoder's cache folder.

    \b
    Example:
      fva cache info cache/demo/train-full/speaker-ecapa --json
    """
    from fva.extract.cache import cache_info

    info = cache_info(folder)
    if as_json:
        click.echo(json.dumps(info, indent=1, default=str))
        return
    for key in ("encoder", "modality", "rows", "keys", "failed", "dim", "dtype", "weights", "weights_id",
                "fva_version", "size_bytes"):
        if key in info:
            click.echo(f"{key:12s} {info[key]}")
    click.echo(f"{'shards':12s} {len(info.get('shards', []))}"
               + (f" (missing: {', '.join(info['missing_shards'])})" if info.get("missing_shards") else ""))


@cache.command("validate")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), default=None,
              help="Check every key of this manifest (of the cache's modality) is present exactly once.")
def cache_validate_cmd(folder: Path, manifest_path: Path | None) -> None:
    """Check a cache: every manifest key once, dims agreeing across shards, no NaN or infinite row.

    Reports every problem and exits 1 when there is any.

    \b
    Example:
      fva cache validate cache/demo/train-full/vggface --manifest cache/demo/train-full/manifest.jsonl
    """
    from fva.data.records import Manifest
    from fva.extract.cache import validate_cache

    report(folder, validate_cache(folder, Manifest.read(manifest_path) if manifest_path else None))


COMMANDS = [extract, demo_checkpoints, cache]
