"""The package's modules depend one way: no import cycle inside ``fva``, lazy (function-level) imports included."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fva

PACKAGE = Path(fva.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The fva modules that ``path`` imports anywhere in its body (``from a import b`` counts as a.b when
    a.b is a module, else as a)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # a name inside a module: the module
                name = name.rpartition(".")[0]
            if name and name != this:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walker_sees_lazy_and_relative_imports_and_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    edges = import_graph()
    assert "fva.heads.trainer" in edges["fva.commands.heads"]  # imported inside a command function
    assert "fva.extract.encoders.speaker_ecapa" in edges["fva.extract.encoders"]  # from package import module


def test_no_import_cycle_inside_fva():
    assert cycles(import_graph()) == []


def test_the_cli_starts_without_the_numeric_stack():
    """`fva --help` and every command's parsing stay quick: importing the CLI loads neither numpy, h5py nor
    torch (commands import what they need when they run)."""
    import subprocess
    import sys

    probe = "import sys, fva.cli; print(sorted(m for m in ('numpy', 'h5py', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_api_from_the_top_level_without_torch_at_import():
    """`import fva` loads no torch; `from fva import FaceVoiceVerifier` is the API's own class (loaded then)."""
    probe = ("import sys, fva; before = 'torch' in sys.modules; from fva import FaceVoiceVerifier, verify_pair; "
             "import fva.api; print(before, FaceVoiceVerifier is fva.api.FaceVoiceVerifier, "
             "verify_pair is fva.api.verify_pair, 'FaceVoiceVerifier' in dir(fva))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True", "True"]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        fva.nothing  # noqa: B018
