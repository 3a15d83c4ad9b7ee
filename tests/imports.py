"""Reading the first-party imports from the source (ast), for the architecture rules.

`graph()` maps each module (dotted name) to the first-party modules it imports; `circles()`
finds the strongly connected groups of that graph; `deferred_imports()` lists imports written
inside a function, the usual way to hide a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "policies", "transports", "verification")


def modules() -> dict[str, Path]:
    """Every first-party module: dotted name -> file."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _first_party(name: str, known: dict[str, Path]) -> str | None:
    """The first-party module `name` refers to (itself or its nearest known parent)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> Iterator[tuple[str, int, str]]:
    """(imported name, line, where: "top", "deferred" or "type-checking") for each import."""
    tree = ast.parse(path.read_text("utf-8"))

    def walk(node: ast.AST, where: str) -> Iterator[tuple[str, int, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for inner in child.body:
                    yield from walk_one(inner, "type-checking")
                for inner in child.orelse:
                    yield from walk_one(inner, where)
                continue
            yield from walk_one(child, where)

    def walk_one(node: ast.AST, where: str) -> Iterator[tuple[str, int, str]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, where
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno, where
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno, where
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from walk(node, "deferred")
        else:
            yield from walk(node, where)

    yield from walk(tree, "top")


def graph(*, include_deferred: bool, include_type_checking: bool) -> dict[str, set[str]]:
    """module -> the first-party modules it imports (a package's `__init__` counts as the
    package)."""
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for imported, _, where in imports_of(path):
            if where == "deferred" and not include_deferred:
                continue
            if where == "type-checking" and not include_type_checking:
                continue
            target = _first_party(imported, known)
            if target is not None and target != name and not name.startswith(target + "."):
                edges[name].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or round a loop (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def deferred_imports() -> list[str]:
    """"module:line imported" for every first-party import statement inside a function."""
    known = modules()
    found: dict[tuple[str, int], str] = {}
    for name, path in known.items():
        for imported, line, where in imports_of(path):
            if where == "deferred" and _first_party(imported, known) is not None:
                found.setdefault((name, line), imported)
    return [f"{name}:{line} {imported}" for (name, line), imported in sorted(found.items())]
