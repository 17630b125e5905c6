"""The real `fva` command line: help, user errors as one line with exit 2, manifests and folds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import assert_user_error
from fva.cli import cli

COMMANDS = ("demo-data", "demo-world", "manifest", "folds", "demo-checkpoints", "extract", "cache", "train-head",
            "score", "verify", "serve", "evaluate", "submission", "weights", "recipe", "lid", "train-encoder")


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_help_lists_every_command_with_summary_and_example():
    result = run("--help")
    assert result.exit_code == 0
    listing = result.output.split("Commands:")[1]
    for command in COMMANDS:
        line = next(line for line in listing.splitlines() if line.strip().startswith(command + " "))
        summary = line.split(None, 1)[1]
        assert summary.endswith(".") and not summary.endswith("..."), line  # whole, not cut by click
        assert f"fva {command}" in result.output.split("Examples:")[1]
    for command in ("demo-data", "manifest", "folds", "extract", "train-head", "score", "verify", "evaluate",
                    "cache validate", "submission validate", "submission make"):
        sub = run(*command.split(), "--help")
        assert sub.exit_code == 0 and "Example" in sub.output, command


def test_manifest_and_folds_commands(tmp_path: Path, mav_root: Path):
    out = tmp_path / "train.jsonl"
    result = run("manifest", "--dataset", "mavceleb-v3", "--root", mav_root, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["records"] == 48 and summary["counts"]["voice"] == {"English": 12, "German": 12}
    result = run("folds", "--manifest", out, "--out", tmp_path / "folds", "--k", "3")
    assert result.exit_code == 0, result.output
    assert "3 folds over 3 identities" in result.output
    assert (tmp_path / "folds" / "fold2" / "German_dev_labels.txt").is_file()


@pytest.mark.parametrize("args,fragments", [
    (["manifest", "--dataset", "mavceleb-v3", "--root", "{tmp}/absent", "--out", "{tmp}/m.jsonl"],
     ["absent not found", "--root"]),
    (["manifest", "--dataset", "mavceleb-v7", "--root", "{mav}", "--out", "{tmp}/m.jsonl"],
     ["unknown dataset 'mavceleb-v7'", "mavceleb-v3"]),
    (["manifest", "--dataset", "mavceleb-v3", "--root", "{mav}", "--split", "klingon", "--out", "{tmp}/m.jsonl"],
     ["unknown split 'klingon'", "german-unheard"]),
    (["folds", "--manifest", "{tmp}/nothing.jsonl", "--out", "{tmp}/f"], ["nothing.jsonl", "fva manifest"]),
    (["extract", "--dataset", "mavceleb-v3", "--cache", "{tmp}/c"], ["give --manifest, or --dataset with --root"]),
])
def test_user_errors_are_one_line(tmp_path: Path, mav_root: Path, args, fragments):
    args = [a.format(tmp=tmp_path, mav=mav_root) for a in args]
    assert_user_error(run(*args), *fragments)
    assert not (tmp_path / "m.jsonl").exists()


def test_bad_list_line_names_file_and_line(tmp_path: Path, mav_root: Path):
    with (mav_root / "English_train.txt").open("a") as fh:
        fh.write("only-one-field\n")
    result = run("manifest", "--dataset", "mavceleb-v3", "--root", mav_root, "--out", tmp_path / "m.jsonl")
    assert_user_error(result, "English_train.txt:13:", "expected 2 fields")


def test_failed_manifest_keeps_existing_file(tmp_path: Path, mav_root: Path):
    out = tmp_path / "m.jsonl"
    assert run("manifest", "--dataset", "mavceleb-v3", "--root", mav_root, "--out", out).exit_code == 0
    before = out.read_bytes()
    (mav_root / "German_test.txt").unlink()
    (mav_root / "English_test.txt").unlink()
    assert_user_error(run("manifest", "--dataset", "mavceleb-v3", "--root", mav_root, "--subset", "test",
                          "--out", out), "no test list")
    assert out.read_bytes() == before


@pytest.mark.parametrize("text,fragments", [
    ("trials: [data\nfiles: {}\n", ["plan.yaml: not valid YAML"]),
    ("- trials\n- files\n", ["plan.yaml: a submission plan must be a mapping", "list"]),
])
def test_a_malformed_submission_plan_is_one_line(tmp_path: Path, text, fragments):
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    result = run("submission", "make", "--plan", plan, "--out", tmp_path / "sub.zip")
    assert_user_error(result, *fragments)
    assert not (tmp_path / "sub.zip").exists()
