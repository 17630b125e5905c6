"""The installed stack is the committed lock, the lock satisfies pyproject's ranges, and an inconsistent stack
stops fva (and pytest) with one line naming the versions and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from fva import environment
from conftest import make_mavceleb
from fva.environment import (DEEPFACE_PYTORCH_SINCE, LOCK_FILE, installed_version, lock_drift, read_lock,
                             unmet_ranges)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    return read_lock(REPO / LOCK_FILE)


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_installed_versions_are_the_locked_ones(pins):
    assert {"torch", "torchaudio", "speechbrain", "deepface", "pytest", "pip"} <= set(pins)
    assert lock_drift(pins) == [], "the environment drifted from requirements.lock: run make install"


def test_lock_satisfies_pyprojects_ranges(pins, pyproject):
    requirements = list(pyproject["dependencies"])
    for extra, reqs in pyproject["optional-dependencies"].items():
        requirements += [f"{r}; extra == '{extra}'" for r in reqs]
    assert unmet_ranges(requirements, pins, extras=("test",)) == [], "pyproject.toml changed: run make lock"
    assert "fva" not in pins  # the project itself is installed from the checkout, not from the lock


def test_pyproject_pins_the_torch_pair_and_deepfaces_pytorch_backend(pyproject, pins):
    reqs = {Requirement(r).name: Requirement(r) for r in pyproject["dependencies"]}
    torch_spec, audio_spec = (list(reqs[name].specifier) for name in ("torch", "torchaudio"))
    assert [s.operator for s in torch_spec + audio_spec] == ["==", "=="]
    assert torch_spec[0].version == audio_spec[0].version == pins["torch"] == pins["torchaudio"]
    assert str(reqs["deepface"].specifier) == f">={DEEPFACE_PYTORCH_SINCE}"


def test_lock_reader_refuses_a_loose_line(tmp_path):
    lock = tmp_path / "r.lock"
    lock.write_text("torch==2.11.0\nnumpy>=1.24\n")
    with pytest.raises(environment.FvaError, match=r"r.lock:2: numpy is not pinned to one version"):
        read_lock(lock)


def test_drift_names_each_package_that_moved(monkeypatch):
    found = {"torch": "2.11.0", "torchaudio": "2.11.1"}
    monkeypatch.setattr(environment, "installed_version", found.get)
    assert lock_drift({"torch": "2.11.0", "torchaudio": "2.11.0", "av": "18.1.0"}) == [
        "av: locked 18.1.0, not installed", "torchaudio: locked 2.11.0, installed 2.11.1"]


# ----------------------------------------------------------------------- an inconsistent stack, end to end

def fake_distribution(site: Path, name: str, version: str, files: tuple[str, ...] = ()) -> None:
    """A dist-info folder that importlib.metadata finds before the real one (first on sys.path)."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files + (f"{info.name}/METADATA",)))


def run_with(site: Path, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def shown(path: str | Path) -> str:
    """A path as fva's fix line shows it, run from the checkout: relative when under it, else absolute."""
    absolute = Path(os.path.abspath(path))
    return os.path.relpath(absolute, REPO) if absolute.is_relative_to(REPO) else str(absolute)


def newer_patch(version: str) -> str:
    major, minor, patch = (version.split("+")[0].split(".") + ["0", "0"])[:3]
    return f"{major}.{minor}.{int(patch) + 1}"


def test_torchaudio_of_another_torch_release_is_one_line_and_exit_2(tmp_path):
    torch_version = installed_version("torch")
    other = newer_patch(torch_version)
    fake_distribution(tmp_path / "site", "torchaudio", other)
    result = run_with(tmp_path / "site", "-m", "fva.cli", "demo-checkpoints", "--out", str(tmp_path / "ck"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0] == (f"Error: torch {torch_version} and torchaudio {other} do not belong together "
                        f"(torchaudio {other} loads only against torch {other}); fix: "
                        f"{shown(sys.executable)} -m pip install --require-hashes --no-deps -r {LOCK_FILE}")
    assert not (tmp_path / "ck").exists()


def test_pytest_stops_with_the_same_line_before_collecting(tmp_path):
    other = newer_patch(installed_version("torch"))
    fake_distribution(tmp_path / "site", "torchaudio", other)
    result = run_with(tmp_path / "site", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_media.py")
    assert result.returncode == 2
    assert f"torchaudio {other} do not belong together" in result.stdout + result.stderr
    assert "libtorchaudio" not in result.stdout + result.stderr
    assert " passed" not in result.stdout


def test_deepface_without_its_pytorch_backend_is_one_line_and_exit_2(tmp_path):
    make_mavceleb(tmp_path / "mav")
    fake_distribution(tmp_path / "site", "deepface", "0.0.100", files=("deepface/__init__.py",))
    manifest = run_with(tmp_path / "site", "-m", "fva.cli", "manifest", "--dataset", "mavceleb-v3", "--root", "mav",
                        "--out", "m.jsonl", cwd=tmp_path)
    assert manifest.returncode == 0, manifest.stderr  # what does not touch deepface still runs
    result = run_with(tmp_path / "site", "-m", "fva.cli", "extract", "--manifest", "m.jsonl", "--cache", "cache",
                      "--encoders", "vggface", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Error: deepface 0.0.100 has no PyTorch backend (fva needs deepface >= {DEEPFACE_PYTORCH_SINCE}); fix: "
        f"{Path(sys.executable).absolute()} -m pip install --require-hashes --no-deps -r {REPO / LOCK_FILE}"]
