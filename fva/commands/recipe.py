"""The recipes' helpers: their configs, plans and dev-EER tables."""

from __future__ import annotations

from pathlib import Path

import click

from fva.commands.common import test_cache_option


@click.group(short_help="A recipe's config, published plan and dev-EER table.")
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
@test_cache_option
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
@test_cache_option
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


COMMANDS = [recipe]
