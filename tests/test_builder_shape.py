"""The builder's shape: no module over 600 lines, no function over 60, no import cycle (function-level imports
count: they must not hide one), and one module per ``simswap-build`` command."""

import ast
import textwrap
from pathlib import Path

import simswap_build
from simswap_build import cli as build_cli

ROOT = Path(simswap_build.__file__).parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60


def oversized(source: str, name: str) -> list[str]:
    """The module (over ``MAX_MODULE_LINES``) and the functions (over ``MAX_FUNCTION_LINES``) of ``source``."""
    found = [f"{name}: {source.count(chr(10))} lines"] if source.count("\n") > MAX_MODULE_LINES else []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return found


def imports(source: str, package: str, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``source`` imports anywhere (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return found & modules


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph`` (one path each), found by depth-first search."""
    found, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def builder_sources() -> dict[str, str]:
    return {module_name(path): path.read_text() for path in sorted(ROOT.rglob("*.py"))}


def test_no_module_or_function_is_too_long():
    sources = builder_sources()
    assert len(sources) > 50  # every module was read, not an empty walk
    assert [problem for name, source in sources.items() for problem in oversized(source, name)] == []


def test_the_size_check_catches_a_long_function_and_a_long_module():
    long_function = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    assert oversized(long_function, "planted") == [f"planted:1 f: {MAX_FUNCTION_LINES + 1} lines"]
    long_module = "x = 1\n" * (MAX_MODULE_LINES + 1)
    assert oversized(long_module, "planted") == [f"planted: {MAX_MODULE_LINES + 1} lines"]


def test_no_import_cycle_in_the_builder():
    sources = builder_sources()
    graph = {name: imports(source, "simswap_build", set(sources)) - {name} for name, source in sources.items()}
    assert graph["simswap_build.precision.fidelity"]  # the walk sees the imports
    assert cycles(graph) == []


def test_the_cycle_check_sees_a_cycle_hidden_in_a_function():
    modules = {"pkg.a", "pkg.b"}
    a = "from pkg.b import goal\n"
    b = textwrap.dedent(
        """
        def late():
            from pkg.a import thing  # a function-level import hides the cycle at import time

            return thing
        """
    )
    graph = {"pkg.a": imports(a, "pkg", modules), "pkg.b": imports(b, "pkg", modules)}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_each_command_is_one_module_with_add_arguments_and_run():
    parser = build_cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert list(commands) == [command.NAME for command in build_cli.COMMANDS]
    for command in build_cli.COMMANDS:
        assert command.__name__ == f"simswap_build.cli.{command.NAME.replace('-', '_')}"
        assert callable(command.add_arguments) and callable(command.run)
        assert commands[command.NAME].description == command.DESCRIPTION
