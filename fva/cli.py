"""The ``fva`` command line: thin commands that parse, call the library and print.

User errors (:class:`fva.errors.FvaError`, unreadable files) become one ``Error:`` line and exit status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from fva import __version__
from fva.errors import FvaError
from fva.extract import COMMIT_ROWS
from fva.extract.catalogue import default_encoders
from fva.train.cli import COMMANDS as TRAIN_COMMANDS, EXAMPLES as TRAIN_EXAMPLES

EXAMPLES = """\b
Examples:
  fva demo-data --out data/demo
  fva demo-world --out data/world
  fva manifest --dataset mavceleb-v3 --root data/demo --out work/demo/train.jsonl
  fva folds --manifest work/demo/train.jsonl --out work/demo/folds
  fva demo-checkpoints --out data/demo-checkpoints
  fva extract --manifest work/demo/train.jsonl --cache work/demo/cache --encoders speaker-ecapa \\
      --weights speaker-ecapa=data/demo-checkpoints/speaker-ecapa
  fva cache info work/demo/cache/mavceleb-v3/train-full/speaker-ecapa
  fva train-head --fold all --cache work/demo/cache --split english-unheard --exp work/demo/exp/noen
  fva score --exp work/demo/exp/noen --trials data/demo/German_test.txt --out scores.txt
  fva verify --exp work/demo/exp/noen face.jpg voice.wav
  fva serve --exp work/demo/exp/noen --port 8000
  fva weights fetch --encoders speaker-ecapa,vggface
  fva submission make --plan work/demo/plan.yaml --out submission.zip --ground-truth data/demo
  fva evaluate --scores scores.txt --labels data/demo/German_test_labels.txt --plot det.png
  fva recipe table work/fame2026/exp/pretrain-full work/fame2026/exp/finetune-full
""" + TRAIN_EXAMPLES


class UserError(click.ClickException):
    """A user error shown as one line, exit status 2."""

    exit_code = 2


class FvaGroup(click.Group):
    """Click group that turns library user errors into :class:`UserError`."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FvaError as err:
            raise UserError(str(err)) from None
        except OSError as err:  # unreadable, unwritable or vanished files the user named
            raise UserError(f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")) from None


@click.group(cls=FvaGroup, epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fva")
@click.option("--offline", is_flag=True, help="Load only local copies of model weights, never download "
              "(sets HF_HUB_OFFLINE=1 and FVA_OFFLINE=1, inherited by child processes).")
def cli(offline: bool) -> None:
    """fva: face-voice association for the FAME challenge.

    Stage 1 extracts frozen-encoder features once into HDF5 caches; stage 2 trains light projection heads
    on them per fold, scores trials and writes challenge submissions.
    """
    if offline:
        from fva.extract.weights import go_offline

        go_offline()


@cli.command("demo-data", short_help="Write the synthetic demo dataset (V3 or v4 layout).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to create (must be empty).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, byte-identical dataset.")
@click.option("--variant", type=click.Choice(["v3", "v4"]), default="v3", show_default=True,
              help="v3: MAV-Celeb V3 (English/German, FAME 2026); v4: MAV-Celeb v4 (FLAG 2027: English train "
                   "with genders, English/Bangla tests per track).")
@click.option("--train-identities", type=int, default=None, help="Default: 72 (v3), 40 (v4).")
@click.option("--test-identities", type=int, default=16, show_default=True)
def demo_data(out: Path, seed: int, variant: str, train_identities: int | None, test_identities: int) -> None:
    """Write a small synthetic MAV-Celeb-shaped dataset: V3 (English/German) or v4 (FLAG 2027).

    Each identity's hidden traits shape both its generated voice and its drawn face, so faces and voices
    are associable, also across languages, but not trivially.

    \b
    Examples:
      fva demo-data --out data/demo --seed 0
      fva demo-data --variant v4 --out data/demo-v4
    """
    if variant == "v4":
        from fva.synth.demo_v4 import generate_demo_v4

        summary = generate_demo_v4(out, seed=seed, train_identities=train_identities or 40,
                                   test_identities=test_identities)
    else:
        from fva.synth.demo import generate_demo

        summary = generate_demo(out, seed=seed, train_identities=train_identities or 72,
                                test_identities=test_identities)
    for line in summary.lines():
        click.echo(line)


@cli.command("demo-world", short_help="Write a tiny synthetic world in the real dataset layouts.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to create (must be empty).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, byte-identical world.")
def demo_world(out: Path, seed: int) -> None:
    """Write VoxCeleb2 (m4a voices, mp4 face tracks), CommonVoice (mp3, 7 locales) and MAV-Celeb V3 (with its
    splits folder), all synthetic and small, for running a recipe end to end offline in seconds.

    \b
    Example:
      fva demo-world --out data/world --seed 0
    """
    from fva.synth.world import write_world

    summary = write_world(out, seed=seed)
    for line in summary.lines():
        click.echo(line)


@cli.command(short_help="Build a dataset manifest (JSONL records).")
@click.option("--dataset", required=True,
              help="mavceleb-v1, mavceleb-v2, mavceleb-v3, mavceleb-v4 (FLAG 2027), voxceleb2 or commonvoice.")
@click.option("--root", type=click.Path(path_type=Path), required=True, help="The dataset's folder.")
@click.option("--subset", default=None, help="train/test (MAV-Celeb), dev/test (VoxCeleb2), "
              "validated/train/dev/test (CommonVoice); default: the first.")
@click.option("--split", default="full", show_default=True, help="full, or <language>-unheard.")
@click.option("--language-labels", type=click.Path(path_type=Path), default=None,
              help="TSV key/language/confidence (VoxCeleb2 unheard splits need one; 'fva lid' writes it).")
@click.option("--languages", default=None, help="Keep only these languages, comma-separated (names or codes).")
@click.option("--lists", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="MAV-Celeb: folder of the <Lang>_train.txt/<Lang>_test.txt lists (default: the root, else "
                   "ROOT/face_voice_association_splits/<v1|v2|v3>/).")
@click.option("--strict", is_flag=True, help="Stop at the first unusable row (CommonVoice) instead of skipping it.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Manifest to write (JSONL).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def manifest(dataset: str, root: Path, subset: str | None, split: str, language_labels: Path | None,
             languages: str | None, lists: Path | None, strict: bool, out: Path, as_json: bool) -> None:
    """Build a dataset manifest (JSONL records of every voice clip and face) for one subset and split.

    \b
    Examples:
      fva manifest --dataset mavceleb-v3 --root data/demo --split english-unheard --out train.jsonl
      fva manifest --dataset mavceleb-v3 --root /data/mavceleb_v3 --subset test \\
          --lists /data/face_voice_association_splits/v3 --out test.jsonl
    """
    from fva.data.datasets import build_manifest

    built, notes = build_manifest(dataset, root, subset=subset, split=split, language_labels=language_labels,
                                  languages=languages.split(",") if languages else None, lists=lists,
                                  strict=strict)
    built.write(out)
    summary = built.summary()
    if as_json:
        click.echo(json.dumps({**summary, "notes": notes, "path": str(out)}, indent=1))
        return
    click.echo(f"{out}: {summary['records']} records, {summary['identities']} identities "
               f"({dataset} {summary['subset']}, split {summary['split']})")
    for modality, per_lang in summary["counts"].items():
        click.echo(f"  {modality:5s} " + ", ".join(f"{lang} {n}" for lang, n in sorted(per_lang.items())))
    for note in notes:
        click.echo(f"  note: {note}")


def _report(thing: Path, problems: list[str]) -> None:
    """Print every problem of a validation and exit 1, or say the thing is valid."""
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        click.echo(f"{thing}: {len(problems)} problem(s); fix them and validate again", err=True)
        raise SystemExit(1)
    click.echo(f"{thing}: valid")


def _parse_weights(values: tuple[str, ...]) -> dict[str, str]:
    weights = {}
    for value in values:
        name, sep, source = value.partition("=")
        if not sep or not name or not source:
            raise click.BadParameter(f"{value!r}: use ENCODER=SOURCE, e.g. speaker-ecapa=models/ecapa_noen",
                                     param_hint="--weights")
        weights[name.strip()] = source.strip()
    return weights


@cli.command(short_help="Frozen encoders -> resumable HDF5 caches.")
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

    weight_map = _parse_weights(weights)
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


@cli.command("train-head", short_help="Train projection heads per fold.")
@click.option("--fold", "fold", default="all", show_default=True, help="A fold number (from 0) or 'all'.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML config (unknown keys are an error), or a shipped config's name (demo, fop, ...); "
                   "defaults: the FAME 2026 winning system.")
@click.option("--cache", "cache_root", type=click.Path(path_type=Path), default=Path("cache"), show_default=True)
@click.option("--exp", type=click.Path(path_type=Path), required=True, help="Experiment folder to write.")
@click.option("--split", default=None, help="Training languages: full or <language>-unheard (overrides the config).")
@click.option("--weight-set", default=None,
              help="Features of this weight set (overrides the config; default: the split's own, else full).")
@click.option("--dataset", default=None, help="MAV-Celeb cache folder name (overrides the config).")
@click.option("--folds", "folds_path", type=click.Path(path_type=Path), default=None,
              help="folds.json from 'fva folds' (overrides the config; default: made from the seed).")
@click.option("--init", type=click.Path(path_type=Path), default=None, help="Start from a trained experiment's head.")
@click.option("--epochs", type=click.IntRange(min=0), default=None,
              help="Overrides train.epochs; 0: no fine-tuning, each fold keeps the pretrained (or --init) heads.")
@click.option("--pretrain-dataset", default=None,
              help="Pretrain on this dataset's cache of the same weight set first, e.g. voxceleb2 (overrides the config).")
@click.option("--seed", type=int, default=None, help="Overrides the config's seed.")
@click.option("--select-on", type=click.Choice(["any", "same-gender"]), default=None,
              help="Dev impostors model selection reads (overrides train.select_on; same-gender: FLAG's gender track).")
@click.option("--seeds", "seeds_text", default=None, metavar="0,1,2",
              help="Train one experiment per seed into EXP/seed<k>/ and report the dev EERs' mean and spread "
                   "(EXP/seeds.json); one seed: as --seed.")
@click.option("--resume", is_flag=True, help="Continue an interrupted experiment.")
@click.option("--force", is_flag=True, help="Overwrite an existing experiment folder.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Folds trained at once (this process and N-1 spawned ones), each with a share of the CPU threads.")
def train_head_cmd(fold: str, config_path: Path | None, cache_root: Path, exp: Path, split: str | None,
                   weight_set: str | None, dataset: str | None, folds_path: Path | None, init: Path | None,
                   epochs: int | None, pretrain_dataset: str | None, seed: int | None, select_on: str | None,
                   seeds_text: str | None, resume: bool, force: bool, workers: int) -> None:
    """Train projection heads per identity-disjoint fold on cached features, selecting on dev EER.

    Prints each fold's dev EER, heard and unheard separately, and their mean; where the training identities
    have genders (MAV-Celeb v4), also the heard dev EER with same-gender impostors (FLAG's gender track).

    \b
    Example:
      fva train-head --fold all --cache work/demo/cache --dataset mavceleb-v3 --split english-unheard \\
          --exp work/demo/exp/noen
    """
    from fva.heads.config import load_config
    from fva.heads.trainer import train_head

    overrides: dict = {"data": {}}
    if split:
        overrides["data"]["split"] = split
    if weight_set:
        overrides["data"]["weight_set"] = weight_set
    if epochs is not None or select_on is not None:
        overrides["train"] = {k: v for k, v in (("epochs", epochs), ("select_on", select_on)) if v is not None}
    if pretrain_dataset is not None:
        overrides["data"]["pretrain_dataset"] = pretrain_dataset
    if dataset:
        overrides["data"]["dataset"] = dataset
    if folds_path:
        overrides["data"]["folds"] = str(folds_path)
    if seed is not None:
        overrides["seed"] = seed
    cfg = load_config(config_path, overrides)
    if seeds_text is not None:
        from fva.heads.compare import parse_seeds, train_seeds

        if seed is not None:
            raise click.UsageError("give --seed or --seeds, not both")
        seeds = parse_seeds(seeds_text)
        if len(seeds) > 1:
            summary = train_seeds(cfg, cache_root, exp, seeds, parse_folds(fold), init=init, resume=resume,
                                  force=force, workers=workers, log=click.echo)
            for kind in ("heard", "unheard"):
                if summary[f"mean_{kind}"]:
                    click.echo(f"mean dev EER {kind} over seeds {seeds_text}: " + ", ".join(
                        f"{k} {v['mean']:.2f}% ± {v['std']:.2f} ({v['min']:.2f}–{v['max']:.2f})"
                        for k, v in summary[f"mean_{kind}"].items()))
            click.echo(f"{exp}/seeds.json")
            return
        overrides["seed"] = seeds[0]
        cfg = load_config(config_path, overrides)
    metrics = train_head(cfg, cache_root, exp, parse_folds(fold), init=init, resume=resume, force=force,
                         workers=workers, log=click.echo)
    for kind in ("heard", "unheard"):
        means = metrics[f"mean_{kind}"]
        if means:
            click.echo(f"mean dev EER {kind}: " + ", ".join(f"{k} {v:.2f}%" for k, v in means.items()))
    same = metrics.get("mean_same_gender", {}).get("heard")
    if same:
        click.echo("mean dev EER heard, same-gender impostors: " + ", ".join(f"{k} {v:.2f}%" for k, v in same.items()))
    from fva.experiment import METRICS_FILE

    click.echo(f"{exp}/{METRICS_FILE}")


def parse_folds(fold: str) -> list[int] | None:
    """'all' -> None, '3' -> [3], '0,2' -> [0, 2]."""
    if fold == "all":
        return None
    parts = fold.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise FvaError(f"--fold {fold!r}: give a fold number (from 0), a comma-separated list of them, or 'all'")
    return [int(p) for p in parts]


@cli.command(short_help="Train several head systems on the same folds; one table.")
@click.option("--systems", required=True,
              help="Comma-separated system names (shipped fva/configs/systems/<name>.yaml) or YAML paths.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Base config every system's YAML is laid over (dataset, features, folds, training budget): "
                   "a YAML path or a shipped config's name (demo).")
@click.option("--cache", "cache_root", type=click.Path(path_type=Path), default=Path("cache"), show_default=True)
@click.option("--fold", "fold", default="all", show_default=True, help="'all', a fold number or a list (0,1,2).")
@click.option("--split", default=None, help="Training languages: full or <language>-unheard (overrides the configs).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("work/compare"), show_default=True,
              help="Folder for the experiments (one per system), compare.json and compare.md.")
@click.option("--force", is_flag=True, help="Overwrite existing experiment folders.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Folds trained at once per system (this process and N-1 spawned ones).")
@click.option("--seeds", "seeds_text", default=None, metavar="0,1,2",
              help="Train every system once per seed into OUT/seed<k>/<system>/; the table shows mean ± std "
                   "(min–max) over seeds. One seed: as the configs' seed replaced.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Resamples of the pooled dev EER's interval over identities (0: none).")
def compare(systems: str, config_path: Path | None, cache_root: Path, fold: str, split: str | None, out: Path,
            force: bool, workers: int, seeds_text: str | None, bootstrap: int) -> None:
    """Train the named head systems over the same folds and print dev EER heard, unheard, their mean and the
    training seconds of each, as a markdown table (also written with JSON to OUT).

    \b
    Example:
      fva compare --systems fame2026,xm-align,fop --config demo --cache work/demo/cache \\
          --split english-unheard --out work/demo/compare
    """
    from fva.heads.compare import compare_systems, markdown_table, parse_seeds

    overrides = {"data": {"split": split}} if split else None
    seeds = parse_seeds(seeds_text) if seeds_text is not None else None
    rows = compare_systems([n.strip() for n in systems.split(",") if n.strip()], cache_root, out,
                           base=config_path, folds=parse_folds(fold), overrides=overrides, force=force,
                           workers=workers, log=click.echo, seeds=seeds, bootstrap=bootstrap)
    click.echo(markdown_table(rows))
    click.echo(f"{out}/compare.json")


@cli.command("import-fop", short_help="An official FOP baseline checkpoint as an fva experiment.")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Experiment folder to write.")
@click.option("--voice-encoders", required=True,
              help="Cache name(s) of the voice features the checkpoint takes, comma-separated (the published "
                   "checkpoints take 512-d utterance embeddings).")
@click.option("--face-encoders", default="vggface", show_default=True, help="Cache name(s) of the face features.")
@click.option("--cache", "cache_root", type=click.Path(path_type=Path), default=None,
              help="Cache root whose features the experiment scores (needed with several encoders per modality).")
@click.option("--dataset", default="mavceleb-v3", show_default=True, help="Dataset folder under --cache.")
@click.option("--force", is_flag=True, help="Overwrite an existing experiment folder.")
def import_fop_cmd(checkpoint: Path, out: Path, voice_encoders: str, face_encoders: str, cache_root: Path | None,
                   dataset: str, force: bool) -> None:
    """Turn an official FAME baseline (FOP) checkpoint, a torch file holding {'epoch', 'state_dict'}, into an
    fva experiment that 'fva score' and submission plans use, giving the official code's scores (Euclidean
    distance between tanh(face) and tanh(voice) embeddings).

    \b
    Example:
      fva import-fop v3_models/English/checkpoint.pth.tar --out work/exp/fop-official \\
          --voice-encoders utterance-512 --cache work/cache
    """
    from fva.heads.fop_import import import_fop

    def names(text: str) -> list[str]:
        return [n.strip() for n in text.split(",") if n.strip()]

    exp = import_fop(checkpoint, out, cache=cache_root, dataset=dataset, voice_encoders=names(voice_encoders),
                     face_encoders=names(face_encoders), force=force)
    click.echo(f"{exp}: fop experiment (fold0/checkpoint.pt)")


@cli.command(short_help="Score a trial list with an experiment.")
@click.option("--exp", type=click.Path(path_type=Path), required=True, help="A trained experiment.")
@click.option("--trials", type=click.Path(path_type=Path), required=True, help="FAME trial list.")
@click.option("--cache", "cache_root", type=click.Path(path_type=Path), default=None,
              help="Cache root with the trial media's features (default: the experiment's).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Score file to write.")
def score(exp: Path, trials: Path, cache_root: Path | None, out: Path) -> None:
    """Score a FAME trial list with an experiment: the system's distance (fame2026: 1 - cosine), post-processed
    as its config says, averaged over its fold models.

    \b
    Example:
      fva score --exp work/demo/exp/full --trials data/demo/English_test.txt --out scores.txt
    """
    from fva.heads.scoring import score_trial_list

    result = score_trial_list(exp, trials, cache_root)
    from fva.evaluate.scores import write_scores

    write_scores(out, result)
    click.echo(f"{out}: {len(result)} trials scored")


def _verifier_options(command):
    """The options of the commands that build a :class:`fva.api.FaceVoiceVerifier` (verify, serve)."""
    for option in reversed((
            click.option("--weights", "weights", multiple=True, metavar="ENCODER=SOURCE",
                         help="Encoder weights if not where the experiment's caches say (repeatable)."),
            click.option("--device", default=None, help="torch device (default: cuda when available, else cpu)."),
            click.option("--threshold", default="eer", show_default=True, metavar="RULE",
                         help="Decision threshold: eer (the dev EER point), far:RATE (e.g. far:0.01, a dev "
                              "false-accept rate) or prior:P (the Bayes decision of P(same) on the experiment's "
                              "calibration)."))):
        command = option(command)
    return command


@cli.command(short_help="Same person? One face and one voice.")
@click.option("--exp", type=click.Path(path_type=Path), required=True, help="A trained experiment.")
@click.argument("face", type=click.Path(path_type=Path))
@click.argument("voice", type=click.Path(path_type=Path))
@_verifier_options
def verify(exp: Path, face: Path, voice: Path, weights: tuple[str, ...], device: str | None, threshold: str) -> None:
    """Say whether a face image (or mp4 face track) and a voice clip are the same person.

    Runs the experiment's encoders and heads on the pair; the decision uses the distance threshold
    where the experiment's dev EER was measured, or the rule --threshold names.

    \b
    Example:
      fva verify --exp work/demo/exp/full data/demo/faces/id0001/English/.../000000007.jpg voice.wav
    """
    from fva.api import FaceVoiceVerifier
    from fva.extract.runner import default_device

    verifier = FaceVoiceVerifier.from_experiment(exp, device or default_device(), _parse_weights(weights),
                                                 threshold=threshold)
    click.echo(_verdict_line(verifier.verify(face, voice), exp, threshold))


def _verdict_line(result, exp: Path, rule: str = "eer") -> str:
    from fva.api import describe_threshold

    if result.threshold is None:
        return (f"distance {result.distance:.4f} ({result.folds} fold model(s)); {exp} holds no dev EER threshold "
                "(imported, not trained here), so no decision")
    verdict = "same person" if result.same_person else "different people"
    calibrated = "" if result.p_same is None else f", P(same) {result.p_same:.3f} (LLR {result.llr:.2f})"
    return (f"distance {result.distance:.4f} (threshold {result.threshold:.4f} {describe_threshold(rule)}, "
            f"{result.folds} fold model(s)): {verdict}{calibrated}")


@cli.command(short_help="A local demo page: upload a face and a voice.")
@click.option("--exp", type=click.Path(path_type=Path), required=True, help="A trained experiment.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (local only by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option("--max-mb", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Largest upload accepted per file, in MB (larger ones get HTTP 413).")
@_verifier_options
def serve(exp: Path, host: str, port: int, max_mb: float, weights: tuple[str, ...], device: str | None,
          threshold: str) -> None:
    """Serve a demo page: upload (or record) a face image and a voice clip, see the decision, the calibrated
    probability where the experiment has one, the distance against the threshold and each medium's nearest
    training identities. The experiment is loaded once, at start-up.

    \b
    Example:
      fva serve --exp work/demo/exp/english-unheard --port 8000
    """
    from fva.api import FaceVoiceVerifier
    from fva.extract.runner import default_device
    from fva.serve import make_server

    verifier = FaceVoiceVerifier.from_experiment(exp, device or default_device(), _parse_weights(weights),
                                                 threshold=threshold)
    server = make_server(verifier, host, port, max_mb)
    click.echo(f"serving {exp} on http://{host}:{server.server_port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.group()
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

    _report(folder, validate_cache(folder, Manifest.read(manifest_path) if manifest_path else None))


@cli.group(short_help="List and fetch the published encoder weights.")
def weights() -> None:
    """Published encoder weights: list them, fetch them for offline use."""


def _weights_line(st) -> str:
    where = str(st.path) if st.present else f"not present ({st.location})" if st.location else "not present"
    if not st.source.published:
        where = "not present"
    return f"{st.source.name:24s} {st.source.describe()}: {where}" + (f", {st.weights_id}" if st.weights_id else "")


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def weights_list(as_json: bool) -> None:
    """Each encoder's (and the LID model's) source, local copy or 'not present', and weights identity.

    \b
    Example:
      fva weights list --json
    """
    from fva.extract.weights import list_weights

    statuses = list_weights()
    if as_json:
        click.echo(json.dumps([st.as_dict() for st in statuses], indent=1))
        return
    for st in statuses:
        click.echo(_weights_line(st))


@weights.command("fetch")
@click.option("--encoders", default=None,
              help="Comma-separated sources to fetch (encoder names, or lid); default: those of the default "
                   "system (the FAME 2026 encoders and the LID model).")
@click.option("--lid/--no-lid", "lid", default=None,
              help="Also fetch the VoxLingua107 LID model (default: yes without --encoders, no with it).")
def weights_fetch(encoders: str | None, lid: bool | None) -> None:
    """Fetch the published weights with each library's own download, so that later runs work offline.

    speechbrain models go to $FVA_MODELS, deepface's VGG-Face to $DEEPFACE_HOME/.deepface/weights, the ViT
    to the Hugging Face cache. Prints one line per source: where it is now and its weights identity.

    \b
    Example:
      fva weights fetch
      fva weights fetch --encoders vggface,vit-age-gender
      fva --offline extract --manifest work/train.jsonl --cache cache
    """
    from fva.extract.weights import fetch, get_source, published_names

    names = published_names(include_lid=False) if encoders is None else \
        [n.strip() for n in encoders.split(",") if n.strip()]
    for name in names:
        get_source(name)  # unknown names first, before any download
    if lid if lid is not None else encoders is None:
        names.append("lid")
    elif lid is False:
        names = [n for n in names if n != "lid"]
    for name in dict.fromkeys(names):
        click.echo(_weights_line(fetch(name)))


@cli.command("demo-checkpoints", short_help="Demo encoder weights in their real formats.")
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


@cli.command(short_help="Identity-disjoint folds and their dev trials.")
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), required=True,
              help="Train manifest (from 'fva manifest').")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for folds.json and fold*/.")
@click.option("--k", type=int, default=7, show_default=True, help="Number of folds.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-trials", type=int, default=2000, show_default=True, help="Dev trials per fold and language.")
@click.option("--negatives", type=click.Choice(["any", "same-gender"]), default="any", show_default=True,
              help="Dev-trial impostors: any held-out identity, or one of the voice's gender (FLAG 2027's "
                   "gender-controlled track; needs genders in the manifest).")
def folds(manifest_path: Path, out: Path, k: int, seed: int, max_trials: int, negatives: str) -> None:
    """Cut train identities into k identity-disjoint folds and write each fold's dev trials per language.

    Writes OUT/folds.json and OUT/fold<f>/<Lang>_dev.txt with <Lang>_dev_labels.txt beside it
    (folds are numbered from 0).

    \b
    Example:
      fva folds --manifest work/demo/train.jsonl --out work/demo/folds --k 7 --seed 0
    """
    from fva.data.folds import make_folds, write_fold_trials
    from fva.data.records import Manifest
    from fva.layout import FOLDS_FILE

    man = Manifest.read(manifest_path)
    if man.subset == "test":
        raise FvaError(f"{manifest_path}: is a test manifest; folds are cut from training identities")
    made = make_folds(man.identities(), k=k, seed=seed, dataset=man.dataset)
    out.mkdir(parents=True, exist_ok=True)
    made.save(out / FOLDS_FILE)
    counts = write_fold_trials(man.records, made, out, max_trials=max_trials, negatives=negatives)
    click.echo(f"{out}/folds.json: {made.k} folds over {sum(map(len, made.folds))} identities (seed {seed}, "
               f"negatives {negatives})")
    for f, per_lang in counts.items():
        click.echo(f"  fold{f}: {len(made.folds[f])} held-out identities, dev trials "
                   + ", ".join(f"{lang} {n}" for lang, n in per_lang.items()))


@cli.command(short_help="EER as the FAME organisers compute it.")
@click.option("--scores", type=click.Path(path_type=Path), help="Score file '<key> <distance>'.")
@click.option("--labels", type=click.Path(path_type=Path), help="Ground truth '<key> <0|1>'.")
@click.option("--submission", type=click.Path(path_type=Path),
              help="A submission zip (FAME 2026: four flat files; FLAG 2027: two track folders).")
@click.option("--ground-truth", type=click.Path(path_type=Path),
              help="Folder with <Lang>_test_labels.txt (FLAG 2027: <Lang>_test_<track>.txt), for --submission.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None, metavar="FILE.png",
              help="Also write a figure: DET curves and same/different-person distance histograms.")
@click.option("--trials", "trials_path", type=click.Path(path_type=Path), default=None,
              help="Trial list of --labels (default: X.txt beside X_labels.txt): maps trials to voice clips.")
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), default=None,
              help="Manifest giving each trial voice's identity, gender, language (default: an experiment's "
                   "own for its fold<k>/dev_<Lang>.txt lists).")
@click.option("--calibration", "calibration_exp", type=click.Path(path_type=Path), default=None, metavar="EXP",
              help="Experiment whose dev-fitted calibration turns the distances into LLRs (for actDCF, Cllr).")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True, metavar="N",
              help="Bootstrap resamples of the EER's 95% interval (by identity when known); 0: none.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--p-target", "p_targets", default="0.01,0.05", show_default=True,
              help="Priors of the DCF operating points, comma-separated.")
@click.option("--c-miss", type=float, default=1.0, show_default=True, help="Cost of a miss in the DCF.")
@click.option("--c-fa", type=float, default=1.0, show_default=True, help="Cost of a false accept in the DCF.")
def evaluate(scores: Path | None, labels: Path | None, submission: Path | None, ground_truth: Path | None,
             as_json: bool, plot_path: Path | None, trials_path: Path | None, manifest_path: Path | None,
             calibration_exp: Path | None, bootstrap: int, seed: int, p_targets: str, c_miss: float,
             c_fa: float) -> None:
    """Compute the EER exactly as the FAME organisers do, for one score file or a whole submission.

    Scores are distances (lower = same person). The EER is where the false-positive rate equals
    1 - the linearly interpolated true-positive rate of roc_curve(labels, -distance), in percent.
    For a score file, also: the EER's bootstrap interval (resampling identities when a manifest gives them,
    else voice clips, else trials), minDCF and min Cllr (calibration-free), actDCF and Cllr with
    --calibration, and per-gender / per-language lines when the manifest labels them.

    \b
    Examples:
      fva evaluate --scores scores.txt --labels data/demo/English_test_labels.txt
      fva evaluate --scores exp/fold0/dev_scores_English.txt --labels exp/fold0/dev_English_labels.txt \\
          --calibration exp --json
      fva evaluate --submission submission.zip --ground-truth data/demo --json
      fva evaluate --submission submission.zip --ground-truth data/demo-v4/ground_truth
    """
    from fva.evaluate.submission import evaluate_submission

    if plot_path is not None:
        from fva.evaluate.plots import check_plot_path

        check_plot_path(plot_path)  # a bad --plot path fails before anything is printed
    if submission is not None:
        if ground_truth is None or scores or labels or trials_path or manifest_path or calibration_exp:
            raise click.UsageError("--submission goes with --ground-truth (and not --scores/--labels; --trials, "
                                   "--manifest and --calibration are for one score file)")
        result = evaluate_submission(submission, ground_truth)
        click.echo(json.dumps(result.to_dict(), indent=1) if as_json else result.table())
        if plot_path is not None:
            from fva.evaluate.plots import plot_evaluation, submission_scenarios

            plot_evaluation(plot_path, submission_scenarios(submission, ground_truth, result))
            click.echo(f"plot: {plot_path}", err=as_json)  # stdout stays pure JSON with --json
        return
    if scores is None or labels is None:
        raise click.UsageError("give --scores and --labels, or --submission and --ground-truth")
    from fva.evaluate.metrics import parse_operating_points
    from fva.evaluate.report import evaluate_report, report_lines

    report = evaluate_report(scores, labels, trials_path=trials_path, manifest=manifest_path,
                             calibration=calibration_exp, points=parse_operating_points(p_targets, c_miss, c_fa),
                             bootstrap=bootstrap, seed=seed)
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        for line in report_lines(report):
            click.echo(line)
    if plot_path is not None:
        from fva.evaluate.plots import file_scenario, plot_evaluation

        plot_evaluation(plot_path, [file_scenario(scores, labels)])
        click.echo(f"plot: {plot_path}", err=as_json)


@cli.group(short_help="Plan, make, pack and validate FAME and FLAG submissions.")
def submission() -> None:
    """Plan, make, pack and validate FAME 2026 and FLAG 2027 submission zips (the layout follows the trial
    folder: <Lang>_test.txt lists, or FLAG's track folders no_gender/ and gender/)."""


@submission.command("validate")
@click.argument("zip_path", type=click.Path(path_type=Path))
@click.option("--trials", type=click.Path(path_type=Path), required=True,
              help="Folder with the <Lang>_test.txt trial lists (FLAG 2027: with the track folders).")
def submission_validate(zip_path: Path, trials: Path) -> None:
    """Check a submission zip: file names, line format, finite scores, each trial key exactly once.

    Reports every problem, not only the first, and exits 1 when there is any.

    \b
    Example:
      fva submission validate submission.zip --trials data/demo
      fva submission validate submission.zip --trials data/demo-v4/dev_set
    """
    from fva.evaluate.submission import validate_submission

    _report(zip_path, validate_submission(zip_path, trials))


@submission.command("plan")
@click.option("--trials", type=click.Path(path_type=Path), required=True, help="Folder with <Lang>_test.txt.")
@click.option("--exp-root", type=click.Path(path_type=Path), required=True,
              help="Folder of experiments named full and <language>-unheard.")
@click.option("--cache", "cache_root", type=click.Path(path_type=Path), default=None, help="Test features' cache root.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Plan YAML to write.")
def submission_plan(trials: Path, exp_root: Path, cache_root: Path | None, out: Path) -> None:
    """Write the published default plan: which experiment scores which of the four files.

    <first language> heard: the model trained on all data; the other heard file: the model trained without
    the first language; each unheard file: the model trained without its test language. FLAG 2027 (a trials
    folder with track folders): every file of both tracks by the model trained on English, full.

    \b
    Example:
      fva submission plan --trials data/demo --exp-root work/demo/exp --out work/demo/plan.yaml
    """
    from fva.heads.plan import write_default_plan

    plan = write_default_plan(out, trials, exp_root, cache_root)
    for name, exp in plan["files"].items():
        click.echo(f"{name}: {exp}")


@submission.command("make")
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), required=True,
              help="YAML: trials folder, cache, and the experiment for each of the four files.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Zip to write.")
@click.option("--ground-truth", type=click.Path(path_type=Path), default=None,
              help="Folder with <Lang>_test_labels.txt: also print the four EERs and their mean.")
def submission_make(plan_path: Path, out: Path, ground_truth: Path | None) -> None:
    """Score the four files with the experiments a plan names, write the zip and validate it.

    \b
    Example:
      fva submission make --plan work/demo/plan.yaml --out submission.zip --ground-truth data/demo
    """
    from fva.evaluate.submission import evaluate_submission
    from fva.heads.plan import make_submission, plan_conditions, read_plan

    plan = read_plan(plan_path)
    make_submission(plan, out)
    click.echo(f"{out}: valid")
    for line in plan_conditions(plan):  # what keeps each file from the published condition
        click.echo(f"not as published: {line}")
    if ground_truth is not None:
        click.echo(evaluate_submission(out, ground_truth).table())


@submission.command("pack")
@click.argument("scores_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Zip to write.")
@click.option("--trials", type=click.Path(path_type=Path), required=True,
              help="Folder with the <Lang>_test.txt trial lists (the zip is validated against them).")
def submission_pack(scores_dir: Path, out: Path, trials: Path) -> None:
    """Zip the score files of a folder into a checked submission: FAME 2026's four
    sub_score_<Lang>_<heard|unheard>.txt, or FLAG 2027's <track>/sub_score_v4_<Lang>_<heard|unheard>.txt.

    \b
    Example:
      fva submission pack work/scores --out submission.zip --trials data/demo
    """
    from fva.evaluate.scores import read_scores
    from fva.evaluate.submission import submission_files, write_valid_submission

    subs = submission_files(trials)
    scores = {((sub.track,) if sub.track else ()) + (sub.language, sub.condition): read_scores(scores_dir / sub.name)
              for sub in subs}
    write_valid_submission(out, scores, trials)
    click.echo(f"{out}: {len(subs)} files, valid")


@cli.group(short_help="A recipe's config, published plan and dev-EER table.")
def recipe() -> None:
    """Helpers of the recipes (recipes/fame2026/run.sh, recipes/flag2027/run.sh): their config, their plans,
    their dev-EER tables."""


@recipe.command("config")
@click.argument("config_path", type=click.Path(path_type=Path))
@click.option("--recipe", "which", type=click.Choice(["fame2026", "flag2027"]), default="fame2026",
              show_default=True, help="Which recipe's config this is.")
def recipe_config(config_path: Path, which: str) -> None:
    """Check a recipe config and print it as shell assignments (SECTION_KEY='value'), for run.sh to eval."""
    from fva.recipe import flag_shell_assignments, load_flag_config, load_recipe_config, shell_assignments

    if which == "flag2027":
        click.echo(flag_shell_assignments(load_flag_config(config_path)), nl=False)
    else:
        click.echo(shell_assignments(load_recipe_config(config_path)), nl=False)


def _systems(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise click.UsageError("--systems: name at least one system")
    return names


@recipe.command("flag-plan")
@click.option("--work", type=click.Path(path_type=Path), required=True, help="The FLAG recipe's work folder.")
@click.option("--trials", type=click.Path(path_type=Path), required=True,
              help="Folder of the track folders (no_gender/, gender/).")
@click.option("--cache", "cache_root", type=click.Path(path_type=Path), required=True, help="Test features' cache root.")
@click.option("--systems", "systems_text", required=True, help="Comma-separated: the systems trained per track.")
@click.option("--selection", type=click.Choice(["best", "fuse"]), default="best", show_default=True,
              help="Per track: the system with the lowest dev EER of the track's impostors, or all fused.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Plan YAML to write.")
def recipe_flag_plan(work: Path, trials: Path, cache_root: Path, systems_text: str, selection: str, out: Path) -> None:
    """Write the FLAG 2027 plan: per track, the best system on that track's dev EER, or a fusion of all."""
    from fva.recipe import flag_plan, write_plan

    plan, chosen = flag_plan(work, trials, cache_root, _systems(systems_text), selection)
    write_plan(out, plan)
    for track, what in chosen.items():
        click.echo(f"{track}: {what}")


@recipe.command("flag-table")
@click.option("--work", type=click.Path(path_type=Path), required=True, help="The FLAG recipe's work folder.")
@click.option("--systems", "systems_text", required=True, help="Comma-separated: the systems trained per track.")
def recipe_flag_table(work: Path, systems_text: str) -> None:
    """Dev EERs per system and track, with any and with same-gender impostors (markdown)."""
    from fva.recipe import flag_dev_table

    click.echo(flag_dev_table(work, _systems(systems_text)))


@recipe.command("plan")
@click.option("--work", type=click.Path(path_type=Path), required=True, help="The recipe's work folder.")
@click.option("--trials", type=click.Path(path_type=Path), required=True, help="Folder with <Lang>_test.txt.")
@click.option("--cache", "cache_root", type=click.Path(path_type=Path), required=True, help="Test features' cache root.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Plan YAML to write.")
def recipe_plan(work: Path, trials: Path, cache_root: Path, out: Path) -> None:
    """Write the published per-scenario selection (FAME 2026 winner) as a submission plan."""
    from fva.evaluate.submission import submission_languages
    from fva.recipe import published_plan, write_plan

    plan = published_plan(work, trials, cache_root, submission_languages(trials))
    write_plan(out, plan)
    for name, exp in plan["files"].items():
        click.echo(f"{name}: {exp}")


@recipe.command("table")
@click.argument("exps", nargs=-1, required=True, type=click.Path(path_type=Path))
def recipe_table(exps: tuple[Path, ...]) -> None:
    """Mean dev EERs of experiments side by side (markdown)."""
    from fva.recipe import dev_eer_table

    click.echo(dev_eer_table(list(exps)))


for _command in TRAIN_COMMANDS:  # fva lid, fva train-encoder (fva/train/cli.py)
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="fva")


if __name__ == "__main__":
    main()
