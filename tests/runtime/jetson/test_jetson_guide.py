"""docs/jetson.md has the commands it promises (tests/test_docs.py parses every command of every page with the
real CLI parsers), every repository path it names exists, and its sample of doctor's Jetson lines is what
doctor prints for that device."""

import re
import shlex

from support.fake_gpu import install_fake_cuda
from support.jetson_standin import ORIN_RELEASE, doctor, fake_commands, fake_files, fake_tensorrt
from support.paths import ROOT

GUIDE = ROOT / "docs" / "jetson.md"
OURS = ("simswap-trt", "simswap-build")


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), re.S)


def guide_commands():
    """Our commands from the guide's bash blocks: continuations joined, comments dropped."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] in OURS:
                commands.append(argv)
    return commands


COMMANDS = guide_commands()


def test_the_guide_has_the_commands_it_promises():
    used = {(argv[0], argv[1]) for argv in COMMANDS}
    assert {
        ("simswap-trt", "doctor"),
        ("simswap-build", "engine"),
        ("simswap-build", "precision"),
        ("simswap-trt", "video"),
    } <= used
    assert any("--dla-core" in argv for argv in COMMANDS)


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
