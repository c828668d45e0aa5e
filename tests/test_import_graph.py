# Copyright (c) DAST bundles contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
The package is layered: the import graph of ``dast_components`` has no cycle, and no function imports a
``dast_components`` module (a function-local import is how a cycle gets hidden). Read from the source with ``ast``,
nothing is imported. Function-local imports of optional third-party packages (matplotlib, tensorboard, onnxruntime)
are fine and not checked.

Edges: ``import a.b`` and ``from a.b import x`` give ``-> a.b``; ``from a import b`` gives ``-> a.b`` when ``b`` is a
submodule of ``a`` and ``-> a`` otherwise (a name of ``a/__init__.py``). Importing ``a.b`` runs ``a/__init__`` first,
but that is not counted as an edge: a package ``__init__`` re-exporting its submodules is the normal layout, and it
only closes a cycle when a submodule takes names from its own package's ``__init__``. Imports under
``if TYPE_CHECKING:`` count too (a type-only cycle is still a layering error). The layers: docs/design.md, "Package
layers".
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "dast_components"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package (a package is its ``__init__``)."""
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of a (possibly relative) ``from ... import``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, mods: dict[str, Path]) -> set[str]:
    """Package modules an import statement depends on."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
        return {n for n in names if n in mods}
    src = _absolute(module, is_package, node)
    if src not in mods:
        return set()
    out = set()
    for alias in node.names:
        sub = f"{src}.{alias.name}"
        out.add(sub if sub in mods else src)
    return out


def _is_function(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))


def _scan(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """The import graph (module-level imports) and the function-local imports of package modules."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    local: list[str] = []
    for module, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        # walk with the enclosing-function flag
        stack: list[tuple[ast.AST, bool]] = [(tree, False)]
        while stack:
            node, in_function = stack.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = _targets(module, is_package, node, mods)
                if in_function and targets:
                    where = path.relative_to(ROOT.parent).as_posix()
                    local.extend(f"{where} imports {t}" for t in sorted(targets))
                elif not in_function:
                    graph[module] |= targets - {module}
            for child in ast.iter_child_nodes(node):
                stack.append((child, in_function or _is_function(node)))
    return graph, local


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


@pytest.fixture(scope="module")
def scanned() -> tuple[dict[str, set[str]], list[str]]:
    return _scan(_modules())


def test_import_graph_is_acyclic(scanned: tuple[dict[str, set[str]], list[str]]) -> None:
    graph, _ = scanned
    assert len(graph) > 30, "the package modules were not found"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_function_local_package_imports(scanned: tuple[dict[str, set[str]], list[str]]) -> None:
    _, local = scanned
    found = sorted(set(local))
    assert not found, "function-local imports of package modules (move them to module level):\n" + "\n".join(found)


def test_cycle_finder_sees_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_networks_layers(scanned: tuple[dict[str, set[str]], list[str]]) -> None:
    """The ops (and their memory costs) sit below the network classes, whole-network estimates above them."""
    graph, _ = scanned
    net = f"{PACKAGE}.networks"
    below = {f"{net}.{m}" for m in ("blocks", "transformer", "costs", "cells", "arch_io")}
    for m in below & set(graph):
        assert not graph[m] & {f"{net}.nets", f"{net}.search_space", f"{net}.memory", net}, m
