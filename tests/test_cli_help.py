"""Every command's --help is what tests/data/cli_help.txt recorded: moving commands between modules (fva.cli
and fva/commands/) changes no option, default, text or order a user sees. After a deliberate change to a
command, write the file again with ``python tests/test_cli_help.py`` and review its diff."""

from __future__ import annotations

import sys
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parent / "data" / "cli_help.txt"


def help_pages() -> str:
    """``fva ... --help`` of the group and of every command and subcommand, depth first, 120 columns."""
    import click
    from click.testing import CliRunner

    from fva.cli import cli

    def walk(cmd, path: list[str]) -> list[str]:
        res = CliRunner().invoke(cli, [*path, "--help"], prog_name="fva", terminal_width=120)
        assert res.exit_code == 0, res.output
        pages = [f"$ fva {' '.join([*path, '--help'])}\n{res.output}"]
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                pages += walk(cmd.get_command(ctx, name), [*path, name])
        return pages

    return "".join(walk(cli, []))


def test_every_help_page_is_unchanged():
    assert help_pages() == SNAPSHOT.read_text()


if __name__ == "__main__":
    SNAPSHOT.write_text(help_pages())
    sys.exit(0)
