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
