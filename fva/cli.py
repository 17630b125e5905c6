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

EXAMPLES = """\b
Examples:
  fva demo-data --out data/demo
  fva manifest --dataset mavceleb-v3 --root data/demo --out work/demo/train.jsonl
  fva manifest --dataset voxceleb2 --root /data/vox2 --split german-unheard \\
      --language-labels vox2_lang.tsv --out work/vox2/german-unheard.jsonl
  fva folds --manifest work/demo/train.jsonl --out work/demo/folds
  fva demo-checkpoints --out data/demo-checkpoints
  fva extract --dataset mavceleb-v3 --root data/demo --cache cache --encoders speaker-ecapa \\
      --weights speaker-ecapa=data/demo-checkpoints/speaker-ecapa
  fva cache info cache/mavceleb-v3/train-full/speaker-ecapa
  fva evaluate --scores scores.txt --labels data/demo/English_test_labels.txt
  fva evaluate --submission submission.zip --ground-truth data/demo
  fva submission validate submission.zip --trials data/demo
"""


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
def cli() -> None:
    """fva: face-voice association for the FAME challenge.

    Stage 1 extracts frozen-encoder features once into HDF5 caches; stage 2 trains light projection heads
    on them per fold, scores trials and writes challenge submissions.
    """


@cli.command("demo-data")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to create (must be empty).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, byte-identical dataset.")
@click.option("--train-identities", type=int, default=24, show_default=True)
@click.option("--test-identities", type=int, default=8, show_default=True)
def demo_data(out: Path, seed: int, train_identities: int, test_identities: int) -> None:
    """Write a small synthetic MAV-Celeb-V3-shaped dataset (English/German).

    Each identity's hidden traits shape both its generated voice and its drawn face, so faces and voices
    are associable, also across languages, but not trivially.

    \b
    Example:
      fva demo-data --out data/demo --seed 0
    """
    from fva.data.demo import generate_demo

    summary = generate_demo(out, seed=seed, train_identities=train_identities, test_identities=test_identities)
    for line in summary.lines():
        click.echo(line)


@cli.command()
@click.option("--dataset", required=True, help="mavceleb-v1, mavceleb-v2, mavceleb-v3, voxceleb2 or commonvoice.")
@click.option("--root", type=click.Path(path_type=Path), required=True, help="The dataset's folder.")
@click.option("--subset", default=None, help="train/test (MAV-Celeb), dev/test (VoxCeleb2), "
              "validated/train/dev/test (CommonVoice); default: the first.")
@click.option("--split", default="full", show_default=True, help="full, or <language>-unheard.")
@click.option("--language-labels", type=click.Path(path_type=Path), default=None,
              help="TSV key/language/confidence (VoxCeleb2 unheard splits need one; 'fva lid' writes it).")
@click.option("--languages", default=None, help="Keep only these languages, comma-separated (names or codes).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Manifest to write (JSONL).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def manifest(dataset: str, root: Path, subset: str | None, split: str, language_labels: Path | None,
             languages: str | None, out: Path, as_json: bool) -> None:
    """Build a dataset manifest (JSONL records of every voice clip and face) for one subset and split.

    \b
    Example:
      fva manifest --dataset mavceleb-v3 --root data/demo --split english-unheard --out train.jsonl
    """
    from fva.data.datasets import build_manifest

    built, notes = build_manifest(dataset, root, subset=subset, split=split, language_labels=language_labels,
                                  languages=languages.split(",") if languages else None)
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


def _parse_weights(values: tuple[str, ...]) -> dict[str, str]:
    weights = {}
    for value in values:
        name, sep, source = value.partition("=")
        if not sep or not name or not source:
            raise click.BadParameter(f"{value!r}: use ENCODER=SOURCE, e.g. speaker-ecapa=models/ecapa_noen",
                                     param_hint="--weights")
        weights[name.strip()] = source.strip()
    return weights


@cli.command()
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), default=None,
              help="A manifest from 'fva manifest' (or give --dataset/--root to build one).")
@click.option("--dataset", default=None, help="Dataset name, as for 'fva manifest'.")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Dataset folder (overrides the manifest's).")
@click.option("--subset", default=None, help="Dataset subset (default: its training subset).")
@click.option("--split", default="full", show_default=True, help="full or <language>-unheard.")
@click.option("--language-labels", type=click.Path(path_type=Path), default=None,
              help="VoxCeleb2 language labels (for unheard splits).")
@click.option("--cache", "cache_root", type=click.Path(path_type=Path), default=Path("cache"), show_default=True,
              help="Cache root; features go to CACHE/<dataset>/<subset>-<split>/<encoder>/.")
@click.option("--encoders", default=",".join(("speaker-ecapa", "voice-age-gender-ecapa", "vggface",
                                              "vit-age-gender")), show_default=True,
              help="Comma-separated encoder names.")
@click.option("--weights", "weights", multiple=True, metavar="ENCODER=SOURCE",
              help="Weights per encoder: a hub id or a local folder/file (repeatable).")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="Background decoding processes.")
@click.option("--num-shards", type=int, default=None, help="Workers splitting the manifest (default: WORLD_SIZE or 1).")
@click.option("--shard-index", type=int, default=None, help="This worker's index (default: RANK or 0).")
@click.option("--limit", type=int, default=None, help="Only the first N records per encoder (a quick look).")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--strict", is_flag=True, help="Stop at the first media file that fails instead of recording it.")
@click.option("--commit-rows", type=int, default=4096, show_default=True,
              help="Rows per committed part file: at most this much work is lost when a run is killed.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="tqdm progress bars.")
def extract(manifest_path: Path | None, dataset: str | None, root: Path | None, subset: str | None, split: str,
            language_labels: Path | None, cache_root: Path, encoders: str, weights: tuple[str, ...],
            device: str | None, batch_size: int, workers: int, num_shards: int | None, shard_index: int | None,
            limit: int | None, dtype: str, strict: bool, commit_rows: int, progress: bool) -> None:
    """Run frozen encoders over a dataset in batches into resumable, sharded HDF5 caches.

    Killed and run again with the same command, it resumes where it stopped. Media that cannot be
    decoded are recorded with their reason and skipped (--strict stops instead).

    \b
    Examples:
      fva extract --dataset mavceleb-v3 --root data/demo --cache cache \\
          --weights speaker-ecapa=speechbrain/spkrec-ecapa-voxceleb
      torchrun --nproc-per-node 8 -m fva.cli extract --dataset voxceleb2 --root /data/vox2 \\
          --split german-unheard --language-labels vox2_lang.tsv --encoders speaker-ecapa
    """
    from fva.data.datasets import build_manifest
    from fva.data.records import Manifest
    from fva.extract.encoders.base import get_encoder_class
    from fva.extract.runner import default_device, iter_encoders, run_extraction, shard_from_env

    weight_map = _parse_weights(weights)
    names = [n.strip() for n in encoders.split(",") if n.strip()]
    for name in list(names) + list(weight_map):
        get_encoder_class(name)  # unknown names fail before any work
    if manifest_path is not None:
        man = Manifest.read(manifest_path)
    elif dataset is not None and root is not None:
        man, notes = build_manifest(dataset, root, subset=subset, split=split, language_labels=language_labels)
        for note in notes:
            click.echo(f"note: {note}", err=True)
    else:
        raise click.UsageError("give --manifest, or --dataset with --root")
    num_shards, shard_index = shard_from_env(num_shards, shard_index)
    split_dir = cache_root / man.dataset / f"{man.subset}-{man.split}"
    if manifest_path is None:
        man.write(split_dir / "manifest.jsonl")  # stage 2 reads identities and languages from it
    device = device or default_device()
    for encoder in iter_encoders(names, weight_map, device):
        summary = run_extraction(man, encoder, cache_root, root=root, num_shards=num_shards,
                                 shard_index=shard_index, batch_size=batch_size, workers=workers, limit=limit,
                                 dtype=dtype, strict=strict, progress=progress,
                                 manifest_path=str(manifest_path or split_dir / "manifest.jsonl"),
                                 commit_rows=commit_rows)
        click.echo(summary.line())


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

    problems = validate_cache(folder, Manifest.read(manifest_path) if manifest_path else None)
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        click.echo(f"{folder}: {len(problems)} problem(s)", err=True)
        raise SystemExit(1)
    click.echo(f"{folder}: valid")


@cli.command("demo-checkpoints")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write them into.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo_checkpoints(out: Path, seed: int) -> None:
    """Write seeded random demo checkpoints for the four encoders, each in its source's real format.

    Prints the --weights option for each, for 'fva extract'.

    \b
    Example:
      fva demo-checkpoints --out data/demo-checkpoints
    """
    from fva.extract.demo_checkpoints import write_demo_checkpoints

    for name, path in write_demo_checkpoints(out, seed).items():
        click.echo(f"--weights {name}={path}")


@cli.command()
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), required=True,
              help="Train manifest (from 'fva manifest').")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for folds.json and fold*/.")
@click.option("--k", type=int, default=7, show_default=True, help="Number of folds.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-trials", type=int, default=2000, show_default=True, help="Dev trials per fold and language.")
def folds(manifest_path: Path, out: Path, k: int, seed: int, max_trials: int) -> None:
    """Cut train identities into k identity-disjoint folds and write each fold's dev trials per language.

    Writes OUT/folds.json and OUT/fold<f>/<Lang>_dev.txt with <Lang>_dev_labels.txt beside it
    (folds are numbered from 0).

    \b
    Example:
      fva folds --manifest work/demo/train.jsonl --out work/demo/folds --k 7 --seed 0
    """
    from fva.data.folds import make_folds, write_fold_trials
    from fva.data.records import Manifest

    man = Manifest.read(manifest_path)
    if man.subset == "test":
        raise FvaError(f"{manifest_path}: is a test manifest; folds are cut from training identities")
    made = make_folds(man.identities(), k=k, seed=seed, dataset=man.dataset)
    out.mkdir(parents=True, exist_ok=True)
    made.save(out / "folds.json")
    counts = write_fold_trials(man.records, made, out, max_trials=max_trials)
    click.echo(f"{out}/folds.json: {made.k} folds over {sum(map(len, made.folds))} identities (seed {seed})")
    for f, per_lang in counts.items():
        click.echo(f"  fold{f}: {len(made.folds[f])} held-out identities, dev trials "
                   + ", ".join(f"{lang} {n}" for lang, n in per_lang.items()))


@cli.command()
@click.option("--scores", type=click.Path(path_type=Path), help="Score file '<key> <distance>'.")
@click.option("--labels", type=click.Path(path_type=Path), help="Ground truth '<key> <0|1>'.")
@click.option("--submission", type=click.Path(path_type=Path), help="A submission zip (four files).")
@click.option("--ground-truth", type=click.Path(path_type=Path),
              help="Folder with <Lang>_test_labels.txt, for --submission.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def evaluate(scores: Path | None, labels: Path | None, submission: Path | None, ground_truth: Path | None,
             as_json: bool) -> None:
    """Compute the EER exactly as the FAME organisers do, for one score file or a whole submission.

    Scores are distances (lower = same person). The EER is where the false-positive rate equals
    1 - the linearly interpolated true-positive rate of roc_curve(labels, -distance), in percent.

    \b
    Examples:
      fva evaluate --scores scores.txt --labels data/demo/English_test_labels.txt
      fva evaluate --submission submission.zip --ground-truth data/demo --json
    """
    from fva.evaluate.scores import evaluate_files
    from fva.evaluate.submission import evaluate_submission

    if submission is not None:
        if ground_truth is None or scores or labels:
            raise click.UsageError("--submission goes with --ground-truth (and not --scores/--labels)")
        result = evaluate_submission(submission, ground_truth)
        click.echo(json.dumps(result.to_dict(), indent=1) if as_json else result.table())
        return
    if scores is None or labels is None:
        raise click.UsageError("give --scores and --labels, or --submission and --ground-truth")
    res = evaluate_files(scores, labels)
    if as_json:
        click.echo(json.dumps({"eer": res.eer, "trials": res.n_trials, "target": res.n_target,
                               "nontarget": res.n_nontarget, "threshold": res.threshold}, indent=1))
    else:
        click.echo(f"EER {res.eer:.2f}% over {res.n_trials} trials ({res.n_target} same, "
                   f"{res.n_nontarget} different); threshold {res.threshold:.4f}")


@cli.group()
def submission() -> None:
    """Pack and validate FAME submission zips."""


@submission.command("validate")
@click.argument("zip_path", type=click.Path(path_type=Path))
@click.option("--trials", type=click.Path(path_type=Path), required=True,
              help="Folder with the <Lang>_test.txt trial lists.")
def submission_validate(zip_path: Path, trials: Path) -> None:
    """Check a submission zip: file names, line format, finite scores, each trial key exactly once.

    Reports every problem, not only the first, and exits 1 when there is any.

    \b
    Example:
      fva submission validate submission.zip --trials data/demo
    """
    from fva.evaluate.submission import validate_submission

    problems = validate_submission(zip_path, trials)
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        click.echo(f"{zip_path}: {len(problems)} problem(s); fix them and validate again", err=True)
        raise SystemExit(1)
    click.echo(f"{zip_path}: valid")


@submission.command("pack")
@click.argument("scores_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Zip to write.")
@click.option("--trials", type=click.Path(path_type=Path), required=True,
              help="Folder with the <Lang>_test.txt trial lists (the zip is validated against them).")
def submission_pack(scores_dir: Path, out: Path, trials: Path) -> None:
    """Zip the four sub_score_<Lang>_<heard|unheard>.txt files of a folder into a checked submission.

    \b
    Example:
      fva submission pack work/scores --out submission.zip --trials data/demo
    """
    from fva.evaluate.scores import read_scores
    from fva.evaluate.submission import CONDITIONS, submission_languages, validate_submission, write_submission

    files = {(lang, cond): scores_dir / f"sub_score_{lang}_{cond}.txt"
             for lang in submission_languages(trials) for cond in CONDITIONS}
    write_submission(out, {k: read_scores(p) for k, p in files.items()})
    problems = validate_submission(out, trials)
    if problems:
        raise FvaError(f"{out}: written but invalid: {problems[0]} ({len(problems)} problem(s); "
                       "run 'fva submission validate' for all)")
    click.echo(f"{out}: {len(files)} files, valid")


def main() -> None:
    cli(prog_name="fva")


if __name__ == "__main__":
    main()
