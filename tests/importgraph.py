"""The import graph of a package, read from its source: for the no-cycle tests.

An edge is an import at module level or under ``if TYPE_CHECKING:`` (function-level imports are
deliberate lazy loads and do not count). ``from pkg import name`` counts as an import of the
submodule ``pkg.name`` when that is a module of the package, else of ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path


def module_name(root: Path, package: str, path: Path) -> str:
    """The dotted name of the module at ``path`` in the package ``package`` rooted at ``root``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def imports(root: Path, package: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that the module at ``path`` imports (see the module docstring)."""
    name = module_name(root, package, path)
    parent_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pieces = parent_package.split(".")
                    parent = pieces[: len(pieces) - (node.level - 1)]
                    base = ".".join([*parent, *([base] if base else [])])
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    found.add(target if target in modules else base)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)
                if isinstance(node, ast.Try):
                    for handler in node.handlers:
                        visit(handler.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found & modules


def graph(root: Path, package: str) -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports."""
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(root, package, p) for p in paths}
    return {module_name(root, package, p): imports(root, package, p, modules) for p in paths}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-import), sorted
    (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(found)
