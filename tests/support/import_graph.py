"""The import graph of a package read from its sources with ``ast`` (imports inside functions and under
``TYPE_CHECKING`` count too: they are dependencies all the same), checked against a stated layer order, for
cycles, and for the sizes of modules and functions."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. "simswap_trt.cuda.memory"; a package is named by its __init__
    path: Path
    is_package: bool


def modules_of(root: Path) -> dict[str, Module]:
    """Every module of the package at ``root`` (a folder with ``__init__.py``), by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        found[name] = Module(name, path, is_package)
    return found


def _imported_names(module: Module) -> Iterable[tuple[str, str | None]]:
    """(module named by an import statement, name imported from it or None) for every import statement."""
    base = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                source = f"{anchor}.{source}" if source else anchor
            yield from ((source, alias.name) for alias in node.names)


def _nearest(name: str, modules: Mapping[str, Module]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: Mapping[str, Module]) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports. ``from pkg import sub`` names the submodule
    ``pkg.sub`` when there is one, else the package ``pkg`` (its ``__init__``)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, module in modules.items():
        for source, imported in _imported_names(module):
            full = f"{source}.{imported}" if imported else source
            target = full if full in modules else _nearest(source, modules)
            if target and target != name:
                graph[name].add(target)
    return graph


def layer_of(module: str, layers: Sequence[tuple[str, Sequence[str]]]) -> int | None:
    """The index of the layer that names ``module``, a package above it, or (for a package's ``__init__``) the
    package itself; the longest such name wins. None where no layer names it."""
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def unplaced(graph: Mapping[str, set[str]], layers: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    return sorted(module for module in graph if layer_of(module, layers) is None)


def upward_imports(graph: Mapping[str, set[str]], layers: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """'importer (layer) -> imported (higher layer)' for every import of a higher layer."""
    found = []
    for importer, targets in sorted(graph.items()):
        low = layer_of(importer, layers)
        for target in sorted(targets):
            high = layer_of(target, layers)
            if low is not None and high is not None and high > low:
                found.append(f"{importer} ({layers[low][0]}) -> {target} ({layers[high][0]})")
    return found


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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
    return sorted(found)


def long_modules(paths: Iterable[Path], limit: int) -> dict[Path, int]:
    """Source files of more than ``limit`` lines, with their line counts."""
    counts = {path: len(path.read_text().splitlines()) for path in paths}
    return {path: count for path, count in counts.items() if count > limit}


def long_functions(path: Path, limit: int) -> dict[str, int]:
    """Functions (and methods, nested ones by their dotted path) of more than ``limit`` lines, decorators
    and docstring included."""
    found: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    if child.end_lineno - start + 1 > limit:
                        found[name] = child.end_lineno - start + 1
                walk(child, name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(path.read_text(), str(path)), "")
    return found


def imports_of_test_modules(paths: Iterable[Path]) -> dict[str, list[str]]:
    """File -> the test modules (``test_*``) and conftest files it imports, at any depth of the file."""
    found = {}
    for path in paths:
        names = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names += [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
        bad = sorted({n for n in names if any(p.startswith("test_") or p == "conftest" for p in n.split("."))})
        if bad:
            found[str(path)] = bad
    return found
