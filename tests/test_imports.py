"""The package's import structure: no cycles (function-local imports included, so that none
hides one) and a core that never imports the application (``pyro_vae.app``)."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyro_vae

PACKAGE = Path(pyro_vae.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The package's modules that an import statement names (``from a import b``: ``a.b`` when it is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "pyro_vae"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".")[: len(module.split(".")) - node.level + is_package]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != "pyro_vae":
        return []
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body (functions included)."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = set()
        for node in ast.walk(tree):  # imports under ``if TYPE_CHECKING:`` count too: they are a dependency
            found.update(_targets(node, module, path.name == "__init__.py"))
        # a package's own ancestors (``pyro_vae``) are loaded by Python first: no edge back to them
        graph[module] = {t for t in found if t in MODULES and t != module and not module.startswith(t + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a path, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # ``import pyro_vae.x`` runs ``pyro_vae/__init__`` first, which imports most of the package:
    # the package's own re-exports are the public API, not a dependency of its modules.
    return {m: {t for t in ts if t != "pyro_vae"} for m, ts in graph.items() if m != "pyro_vae"}


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_without_package_inits(import_graph()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_core_never_imports_the_application():
    graph = import_graph()
    entry_points = {"pyro_vae", "pyro_vae.__main__"}  # ``python -m pyro_vae`` runs the application
    core = [m for m in graph if m not in entry_points and not m.startswith("pyro_vae.app")]
    offending = {m: sorted(t for t in graph[m] if t.startswith("pyro_vae.app")) for m in core}
    assert not {m: t for m, t in offending.items() if t}


def test_the_graph_sees_function_local_imports():
    """A check that cannot fail is no check: an import inside a function is an edge."""
    tree = ast.parse("def f():\n    from pyro_vae import model\n")
    targets = [t for node in ast.walk(tree) for t in _targets(node, "pyro_vae.x", False)]
    assert targets == ["pyro_vae.model"]
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


@pytest.mark.parametrize("old", sorted(pyro_vae._MOVED))
def test_a_moved_module_keeps_its_old_name(old):
    """``import pyro_vae.training`` and ``pyro_vae.step`` still work and are the moved modules themselves."""
    new = importlib.import_module(f"pyro_vae.{pyro_vae._MOVED[old]}")
    assert importlib.import_module(f"pyro_vae.{old}") is new
    assert getattr(pyro_vae, old) is new
    assert not (PACKAGE / f"{old}.py").exists()  # no second copy left behind


def test_old_names_work_in_a_fresh_interpreter():
    code = "from pyro_vae.training import fit; from pyro_vae.step import ReplayedELBO; import pyro_vae.threads as t; print(t.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "pyro_vae.infer.thread_policy"


def test_the_architecture_page_lists_every_module():
    """The page that explains the layout cannot drift from it."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   (pyro_vae[\w.]*)$", page, re.M))
    assert listed == set(MODULES) - {
        "pyro_vae",
        "pyro_vae.__main__",
        "pyro_vae.diagnostics._convert",
        "pyro_vae.app",
    }
