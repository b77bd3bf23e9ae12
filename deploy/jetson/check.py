"""Does deploy/jetson/requirements.txt install on JetPack 6? Resolve it for aarch64 / CPython 3.10 /
glibc 2.35 with pip, without installing anything, and check that the pins are the whole dependency closure.

    python deploy/jetson/check.py [requirements.txt]

pip's ``--dry-run --only-binary=:all: --platform ... --python-version 3.10`` finds a wheel for every
requirement and resolves their dependencies, but it evaluates environment markers for the interpreter that
runs it; so the closure is checked again here with the markers of the Jetson's Python. Needs network access
to PyPI. The machine's pip configuration (local wheel folders, constraints) is ignored: the question is
what a Jetson gets from PyPI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
PYTHON = "3.10"
GLIBC_MINOR = 35  # Ubuntu 22.04, the base of L4T r36 (JetPack 6)
# the environment markers of JetPack 6's Python
JETSON_MARKERS = {
    "python_version": PYTHON,
    "python_full_version": f"{PYTHON}.12",
    "platform_machine": "aarch64",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
# pip variables that point at this machine's own wheel folders and constraints
LOCAL_PIP_VARIABLES = ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_TARGET")


def platform_tags(glibc_minor: int = GLIBC_MINOR) -> list[str]:
    """Every manylinux tag a glibc 2.``glibc_minor`` aarch64 system accepts (pip does not expand them itself)."""
    return [f"manylinux_2_{minor}_aarch64" for minor in range(glibc_minor, 16, -1)] + ["manylinux2014_aarch64"]


def read_pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of the ``name==version`` lines of a requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


@dataclass(frozen=True)
class Resolution:
    ok: bool
    installs: dict[str, str]  # canonical name -> version pip would install
    requires: dict[str, list[str]]  # canonical name -> its Requires-Dist lines
    log: str  # pip's error output when not ok


def resolve(requirements: Path, glibc_minor: int = GLIBC_MINOR, platforms: list[str] | None = None) -> Resolution:
    """pip's answer for ``requirements`` on a Jetson (or on ``platforms``), nothing installed."""
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_PIP_VARIABLES}
    env["PIP_CONFIG_FILE"] = os.devnull
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        command += ["--only-binary=:all:", "--report", str(report), "--target", str(Path(folder) / "target")]
        for tag in platforms or platform_tags(glibc_minor):
            command += ["--platform", tag]
        command += ["--python-version", PYTHON, "--implementation", "cp", "--abi", f"cp{PYTHON.replace('.', '')}"]
        result = subprocess.run([*command, "-r", str(requirements)], capture_output=True, text=True, env=env)
        if result.returncode != 0:
            return Resolution(False, {}, {}, result.stderr)
        installs = json.loads(report.read_text())["install"]
    metadata = [item["metadata"] for item in installs]
    return Resolution(
        True,
        {canonicalize_name(m["name"]): m["version"] for m in metadata},
        {canonicalize_name(m["name"]): list(m.get("requires_dist") or []) for m in metadata},
        "",
    )


def closure_problems(resolution: Resolution, pins: dict[str, str]) -> list[str]:
    """What keeps ``pins`` from being exactly the set a Jetson installs: versions pip chose differently,
    packages pip added, and dependencies (under the Jetson's markers) that no pin satisfies."""
    problems = [
        f"{name}: pip resolves {version}, the file pins {pins.get(name, 'nothing')}"
        for name, version in sorted(resolution.installs.items())
        if pins.get(name) != version
    ]
    for name, lines in sorted(resolution.requires.items()):
        for line in lines:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate(JETSON_MARKERS):
                continue
            pinned = pins.get(canonicalize_name(requirement.name))
            if pinned is None or pinned not in requirement.specifier:
                problems.append(f"{name} needs {line.split(';')[0]} on Python {PYTHON}, the file pins {pinned}")
    return problems


def main(argv: list[str]) -> int:
    requirements = Path(argv[0]) if argv else REQUIREMENTS
    resolution = resolve(requirements)
    if not resolution.ok:
        print(f"{requirements} does not resolve for JetPack 6 (aarch64, CPython {PYTHON}):\n{resolution.log}")
        return 1
    problems = closure_problems(resolution, read_pins(requirements))
    for problem in problems:
        print(problem)
    print(f"{requirements}: {len(resolution.installs)} aarch64 / CPython {PYTHON} wheels, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
