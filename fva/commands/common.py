"""What the command modules share: option decorators and small helpers (each command stays a thin call into the
library)."""

from __future__ import annotations

from pathlib import Path

import click

from fva.errors import FvaError


def report(thing: Path, problems: list[str]) -> None:
    """Print every problem of a validation and exit 1, or say the thing is valid."""
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        click.echo(f"{thing}: {len(problems)} problem(s); fix them and validate again", err=True)
        raise SystemExit(1)
    click.echo(f"{thing}: valid")


def parse_weights(values: tuple[str, ...]) -> dict[str, str]:
    weights = {}
    for value in values:
        name, sep, source = value.partition("=")
        if not sep or not name or not source:
            raise click.BadParameter(f"{value!r}: use ENCODER=SOURCE, e.g. speaker-ecapa=models/ecapa_noen",
                                     param_hint="--weights")
        weights[name.strip()] = source.strip()
    return weights


def parse_folds(fold: str) -> list[int] | None:
    """'all' -> None, '3' -> [3], '0,2' -> [0, 2]."""
    if fold == "all":
        return None
    parts = fold.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise FvaError(f"--fold {fold!r}: give a fold number (from 0), a comma-separated list of them, or 'all'")
    return [int(p) for p in parts]


def verifier_options(command):
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


# options several commands take with the same meaning and text
trained_exp_option = click.option("--exp", type=click.Path(path_type=Path), required=True, help="A trained experiment.")
heads_cache_option = click.option("--cache", "cache_root", type=click.Path(path_type=Path), default=Path("cache"),
                                  show_default=True)
test_cache_option = click.option("--cache", "cache_root", type=click.Path(path_type=Path), required=True,
                                 help="Test features' cache root.")
pairwise_option = click.option(
    "--pairwise", is_flag=True,
    help="Score each pair alone (level 0): refuse score steps that read other test samples (file statistics, "
         "clusters, the list's pairing).")


def pairwise_overrides(pairwise: bool) -> dict:
    """The config layer of ``--pairwise``: ``score.max_level`` 0 (:data:`fva.heads.postprocess.PAIRWISE`)."""
    from fva.heads.postprocess import PAIRWISE

    return {"score": {"max_level": PAIRWISE}} if pairwise else {}
