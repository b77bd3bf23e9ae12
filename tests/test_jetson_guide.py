"""Every simswap-trt / simswap-build command in docs/jetson.md parses with the real CLI parsers (subcommand,
flags, choices, required arguments), every repository path it names exists, and its sample of doctor's Jetson
lines is what doctor prints for that device."""

import argparse
import re
import shlex
from pathlib import Path

import pytest
from fake_gpu import install_fake_cuda
from test_jetson_doctor import ORIN_RELEASE, doctor, fake_commands, fake_files, fake_tensorrt

from simswap_build.cli import build_parser as build_cli_parser
from simswap_trt.cli import build_parser as runtime_cli_parser

ROOT = Path(__file__).parents[1]
GUIDE = ROOT / "docs" / "jetson.md"
PARSERS = {"simswap-trt": runtime_cli_parser, "simswap-build": build_cli_parser}


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), re.S)


def guide_commands():
    """Our commands from the guide's bash blocks: continuations joined, comments dropped."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] in PARSERS:
                commands.append(argv)
    return commands


COMMANDS = guide_commands()


def subcommands(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def test_the_guide_has_the_commands_it_promises():
    used = {(argv[0], argv[1]) for argv in COMMANDS}
    assert {
        ("simswap-trt", "doctor"),
        ("simswap-build", "engine"),
        ("simswap-build", "precision"),
        ("simswap-trt", "video"),
    } <= used
    assert any("--dla-core" in argv for argv in COMMANDS)


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(argv[:2]) for argv in COMMANDS])
def test_guide_command_parses(argv):
    parser = PARSERS[argv[0]]()
    if argv[1] not in subcommands(parser):
        pytest.fail(f"{argv[0]} has no subcommand {argv[1]!r}")
    try:
        parser.parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{' '.join(argv)} does not parse (see the usage message above)")


def test_repository_paths_in_the_guide_exist():
    paths = set(re.findall(r"\b((?:deploy|docs|tests)/[\w./-]+\.(?:txt|py|md))", GUIDE.read_text()))
    assert "deploy/jetson/requirements.txt" in paths
    assert [p for p in sorted(paths) if not (ROOT / p).is_file()] == []
    modules = set(re.findall(r"python -m ([\w.]+)", GUIDE.read_text()))
    assert "benchmarks.host_memory" in modules
    assert [m for m in sorted(modules) if not (ROOT / (m.replace(".", "/") + ".py")).is_file()] == []


def test_doctor_sample_is_what_doctor_prints_on_that_orin(tmp_path, monkeypatch, capsys):
    (sample,) = [b for b in blocks("text") if b.startswith("Jetson")]
    fake_files(tmp_path, monkeypatch, ORIN_RELEASE, "NVIDIA Jetson AGX Orin Developer Kit\0")
    fake_commands(tmp_path, monkeypatch, {"nvidia-l4t-core": "36.4.3-20250107174145", "nvidia-jetpack": "6.2+b77"})
    install_fake_cuda(monkeypatch, compute_capability=(8, 7), name="Orin", integrated=True)
    fake_tensorrt(monkeypatch, dla_cores=2)
    printed = doctor(capsys)
    assert sample.splitlines() and [line for line in sample.splitlines() if line not in printed] == []
