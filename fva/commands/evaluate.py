"""Evaluation and submissions: EER and other metrics, plan, make, pack and validate submissions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fva.commands.common import pairwise_option, report


@click.command(short_help="EER as the FAME organisers compute it.")
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


@click.group(short_help="Plan, make, pack and validate FAME and FLAG submissions.")
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

    report(zip_path, validate_submission(zip_path, trials))


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
@pairwise_option
def submission_make(plan_path: Path, out: Path, ground_truth: Path | None, pairwise: bool) -> None:
    """Score the four files with the experiments a plan names, write the zip and validate it.

    \b
    Example:
      fva submission make --plan work/demo/plan.yaml --out submission.zip --ground-truth data/demo
    """
    from fva.evaluate.submission import evaluate_submission
    from fva.experiment import read_json
    from fva.heads.plan import levels_path, make_submission, plan_conditions, read_plan
    from fva.heads.postprocess import LEVELS, PAIRWISE

    plan = read_plan(plan_path)
    make_submission(plan, out, max_level=PAIRWISE if pairwise else None)
    level = read_json(levels_path(out), "submission levels")["level"]
    click.echo(f"{out}: valid; scoring level {level} ({LEVELS[level]}), per file in {levels_path(out)}")
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


COMMANDS = [evaluate, submission]
