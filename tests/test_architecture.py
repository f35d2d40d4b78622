"""The package's layers, read from its source: which module may import which, and no import cycle.

Layers, bottom up: ``drmime_pl.core`` (pure torch/numpy) < ``drmime_pl.io`` (files) < ``drmime_pl.training``
(Lightning) < ``drmime_pl.evaluation`` < ``drmime_pl.cli`` and the entry modules. A module may import its own layer
and those below it, never one above. Imports are read with ``ast`` wherever they stand: at module level and inside
functions (a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "drmime_pl"
LIGHTNING = ("pytorch_lightning", "lightning", "lightning_fabric")
#: Libraries that read or write image and plot files: the core handles tensors only.
FILE_LIBRARIES = ("PIL", "tifffile", "matplotlib", "torchvision.io", "SimpleITK")
#: Calls that read or write files.
FILE_CALLS = ("open", "read_text", "write_text", "read_bytes", "write_bytes", "save", "load", "imwrite", "savefig")

#: The drmime_pl modules each layer may import (its own and those below it; ``errors`` is everyone's).
ALLOWED = {
    "drmime_pl.core": ("drmime_pl.core", "drmime_pl.errors"),
    "drmime_pl.io": ("drmime_pl.core", "drmime_pl.io", "drmime_pl.errors"),
    "drmime_pl.training": ("drmime_pl.core", "drmime_pl.io", "drmime_pl.training", "drmime_pl.errors",
                           "drmime_pl.config", "drmime_pl.paths", "drmime_pl._version"),
    "drmime_pl.evaluation": ("drmime_pl.core", "drmime_pl.io", "drmime_pl.training", "drmime_pl.evaluation",
                             "drmime_pl.errors", "drmime_pl.config", "drmime_pl.paths"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: Dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> Iterator[Tuple[str, int]]:
    """``(imported module, line)`` for every import in module ``name``, at any depth of its source. ``from X import
    y`` counts as an import of ``X.y`` when that is a module of the package, else of ``X``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), node.lineno


def layer_of(name: str) -> Optional[str]:
    return next((layer for layer in ALLOWED if name == layer or name.startswith(layer + ".")), None)


def modules_of(layer: str) -> List[str]:
    """The modules of a layer; a layer that does not exist (the flat package of old) fails the test."""
    names = [name for name in MODULES if layer_of(name) == layer]
    assert names, f"{layer} does not exist: the package is not split into its layers"
    return names


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def where(name: str, line: int) -> str:
    return f"{MODULES[name].relative_to(REPO)}:{line}"


def test_the_layers_exist():
    for layer in ALLOWED:
        assert layer in MODULES, f"{layer} is missing: the package is not split into its layers"
        assert any(layer_of(m) == layer and m != layer for m in MODULES), f"{layer} holds no module"


def test_every_internal_import_names_a_module_of_the_package():
    wrong = [f"{where(name, line)} imports {target}" for name in MODULES for target, line in imports_of(name)
             if target.split(".")[0] == "drmime_pl" and target not in MODULES]
    assert not wrong, "imports of modules that do not exist:\n" + "\n".join(wrong)


@pytest.mark.parametrize("layer", list(ALLOWED))
def test_layer_imports_only_itself_and_the_layers_below(layer):
    wrong = []
    for name in modules_of(layer):
        for target, line in imports_of(name):
            if target.split(".")[0] == "drmime_pl" and not within(target, ALLOWED[layer]):
                wrong.append(f"{where(name, line)} imports {target}")
            if layer == "drmime_pl.core" and within(target, LIGHTNING + FILE_LIBRARIES):
                wrong.append(f"{where(name, line)} imports {target}")
    assert not wrong, f"{layer} may import only {', '.join(ALLOWED[layer])}:\n" + "\n".join(wrong)


def test_core_reads_and_writes_no_files():
    calls = []
    for name in modules_of("drmime_pl.core"):
        for node in ast.walk(ast.parse(MODULES[name].read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if called in FILE_CALLS:
                    calls.append(f"{where(name, node.lineno)} calls {called}()")
    assert not calls, "the core must not touch files:\n" + "\n".join(calls)


def test_importing_the_core_loads_no_lightning():
    core = sorted(modules_of("drmime_pl.core"))
    code = "import sys\n" + "".join(f"import {m}\n" for m in core) + (
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {LIGHTNING!r})\n"
        "assert not loaded, loaded\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle of the graph as ``[a, b, ..., a]``, or None (depth-first search, three colours)."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    graph = {name: {target for target, _ in imports_of(name) if target in MODULES and target != name}
             for name in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
