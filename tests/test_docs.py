"""Every command of ours in the shell blocks of README.md and docs/*.md parses with the real argument parser, so
the docs cannot drift from the CLI: `simswap-trt` / `simswap-build` (and `python -m simswap_trt.cli` /
`simswap_build.cli`) through their `build_parser()`, `python -m benchmarks...` and other modules through the
module's own `main`, stopped as soon as its parser has parsed (nothing runs). A command with a `...` placeholder
may leave required arguments out; any other error (an unknown option, a bad choice or value, a missing
subcommand) fails. Also: the README fits on a screen and links every docs/ page, and relative links resolve."""

import argparse
import re
import runpy
import shlex
import sys

import pytest
from support.paths import ROOT

from simswap_build.cli import build_parser as build_cli_parser
from simswap_trt.cli import build_parser as runtime_cli_parser

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", re.S)
INDENTED_BLOCK = re.compile(r"(?:^|\n)\n((?:(?: {4}.*)?\n)+)")  # a Markdown code block by indentation
INLINE_COMMAND = re.compile(r"`((?:simswap-trt|simswap-build|python3? -m [\w.]+) [^`]*--[^`]*)`")  # with an option
PARSERS = {"simswap-trt": runtime_cli_parser, "simswap-build": build_cli_parser}
MODULE_PARSERS = {"simswap_trt.cli": runtime_cli_parser, "simswap_build.cli": build_cli_parser}
OUR_MODULES = ("simswap_trt", "simswap_build", "benchmarks")
SEPARATORS = {"&&", "||", ";", "|"}
PLACEHOLDER = "..."


class ParseError(Exception):
    """An argument parser rejected the command line."""


class Parsed(Exception):
    """A module's parser accepted the command line (raised to stop its main before it does anything)."""


def split_commands(line):
    """The simple commands of one shell line: split at `&&`, `||`, `;`, `|`; comments, `$ ` prompts and
    leading VAR=value assignments dropped."""
    lexer = shlex.shlex(line.removeprefix("$ "), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    for argv in commands:
        while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
            argv.pop(0)
    return [argv for argv in commands if argv]


def program(argv):
    """The program a command runs, when it is ours: `simswap-trt`, `simswap-build` or a module (`-m X`)."""
    if argv[0] in PARSERS:
        return argv[0], argv[1:]
    if argv[0] in ("python", "python3") and len(argv) > 2 and argv[1] == "-m" and argv[2].startswith(OUR_MODULES):
        return argv[2], argv[3:]
    return None


def commands(text):
    """(program, arguments, source line) for each of our commands in the shell blocks of a page (fenced or
    indented), and in inline code that names an option: inline code is a fragment, as if it ended in `...`."""
    fenced = SHELL_BLOCK.findall(text)
    indented = INDENTED_BLOCK.findall(SHELL_BLOCK.sub("", text))
    found = []
    for block in fenced + indented:
        for line in block.replace("\\\n", " ").splitlines():
            for argv in split_commands(line.strip()):
                ours = program(argv)
                if ours:
                    found.append((*ours, " ".join(argv)))
    for span in INLINE_COMMAND.findall(text):
        ours = program(span.split())
        if ours:
            found.append((ours[0], [*ours[1], PLACEHOLDER], span))
    return found


def all_commands():
    return [(page.relative_to(ROOT).as_posix(), *command) for page in PAGES for command in commands(page.read_text())]


COMMANDS = all_commands()


@pytest.fixture
def strict_parsers(monkeypatch):
    """Parser errors raise ParseError with the message instead of printing usage and exiting."""

    def error(parser, message):
        raise ParseError(f"{parser.prog}: {message}")

    monkeypatch.setattr(argparse.ArgumentParser, "error", error)


def cli_parser(name, args):
    """The parser of one of our two CLIs; `simswap-trt bench ...` is handed to `simswap-build bench ...`."""
    parser = PARSERS.get(name) or MODULE_PARSERS[name]
    if parser is runtime_cli_parser and next((a for a in args if not a.startswith("-")), None) == "bench":
        return build_cli_parser
    return parser


def parse(name, args, monkeypatch):
    """Parse `args` with the parser of program `name`; nothing else runs."""
    if name in PARSERS or name in MODULE_PARSERS:
        cli_parser(name, args)().parse_args(args)
        return
    real_parse_known_args = argparse.ArgumentParser.parse_known_args

    def parse_known_args(parser, args=None, namespace=None):
        namespace, extras = real_parse_known_args(parser, args, namespace)
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        raise Parsed(namespace)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
    monkeypatch.setattr(sys, "argv", [name, *args])
    with pytest.raises(Parsed):
        runpy.run_module(name, run_name="__main__", alter_sys=False)


def check(name, args, monkeypatch):
    """Parse; with a placeholder, missing required arguments are allowed (the placeholder stands for them)."""
    placeholder = PLACEHOLDER in args
    try:
        parse(name, [a for a in args if a != PLACEHOLDER], monkeypatch)
    except ParseError as error:
        if not (placeholder and "the following arguments are required" in str(error)):
            raise


@pytest.mark.parametrize(("page", "name", "args", "line"), COMMANDS, ids=[f"{c[0]}: {c[3][:60]}" for c in COMMANDS])
def test_documented_command_parses(page, name, args, line, strict_parsers, monkeypatch):
    try:
        check(name, args, monkeypatch)
    except ParseError as error:
        pytest.fail(f"{page}: `{line}` does not parse: {error}")


def test_commands_are_found_in_every_kind_of_block():
    pages = {c[0] for c in COMMANDS}
    names = {c[1] for c in COMMANDS}
    assert {"README.md", "docs/usage.md", "docs/jetson.md", "docs/tensorrt.md", "docs/benchmarks.md"} <= pages
    assert {"simswap-trt", "simswap-build", "benchmarks.pasteback", "benchmarks.kernels"} <= names
    assert len(COMMANDS) > 50


def test_a_planted_unknown_option_fails(strict_parsers, monkeypatch):
    text = "```bash\nsimswap-trt swap --bundle B --source a --target b \\\n  --output c --no-such-option 3\n```\n"
    ((name, args, _),) = commands(text)
    with pytest.raises(ParseError, match="--no-such-option"):
        check(name, args, monkeypatch)
    with pytest.raises(ParseError, match="--no-such-option"):
        check("benchmarks.pasteback", ["--no-such-option"], monkeypatch)
    with pytest.raises(ParseError, match="invalid choice"):
        check("simswap-build", ["no-such-command", "B"], monkeypatch)


def test_a_placeholder_excuses_only_missing_required_arguments(strict_parsers, monkeypatch):
    check("simswap-trt", ["swap", "--bundle", "B", PLACEHOLDER, "--backend", "tensorrt"], monkeypatch)
    with pytest.raises(ParseError, match="required"):
        check("simswap-trt", ["swap", "--bundle", "B", "--backend", "tensorrt"], monkeypatch)
    with pytest.raises(ParseError, match="invalid choice"):
        check("simswap-trt", ["swap", "--bundle", "B", PLACEHOLDER, "--backend", "no-such-backend"], monkeypatch)


def test_shell_lines_are_split_into_our_commands():
    line = "SIMSWAP_KERNELS_FATBIN=build/k.fatbin python -m benchmarks.kernels --x 1 && simswap-trt demo # note"
    assert split_commands(line) == [["python", "-m", "benchmarks.kernels", "--x", "1"], ["simswap-trt", "demo"]]
    assert [c[:2] for c in commands("```bash\npip install . && simswap-trt demo\n```\n")] == [("simswap-trt", ["demo"])]


def test_the_readme_fits_on_a_screen_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", readme))
    assert sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name not in linked) == []


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_relative_links_resolve(page):
    targets = re.findall(r"\]\((?!https?:|#|mailto:)([^)#\s]+)", page.read_text())
    assert [t for t in targets if not (page.parent / t).exists()] == []
