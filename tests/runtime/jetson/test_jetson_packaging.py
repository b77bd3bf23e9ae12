"""The JetPack 6 install recipe (deploy/jetson/requirements.txt): it resolves from PyPI for aarch64 / CPython 3.10
with every pin part of the closure, a planted dependency without an aarch64 wheel makes it fail, it satisfies the
project's declared dependencies, and the runtime imports and swaps with exactly the pinned versions.

The resolution tests need PyPI (CI has it); they skip, saying so, only when pip cannot connect at all. "The pinned
versions on this machine" means the same versions as x86_64 wheels, for CPython 3.10 where this machine has it (else
the interpreter running the tests): what runs is our code against those library versions (APIs, NumPy 1.x,
cuda-python 12.x, no site-packages); the aarch64 wheels themselves are only resolved."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from support.paths import ROOT

CHECK = ROOT / "deploy" / "jetson" / "check.py"
_spec = importlib.util.spec_from_file_location("jetson_check", CHECK)
check = sys.modules["jetson_check"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

OFFLINE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution")


def resolve_or_skip(requirements, **kwargs):
    resolution = check.resolve(requirements, **kwargs)
    if not resolution.ok and any(sign in resolution.log for sign in OFFLINE):
        pytest.skip("PyPI is unreachable from here; the resolution check needs it")
    return resolution


@pytest.fixture(scope="module")
def recipe():
    return resolve_or_skip(check.REQUIREMENTS)


def test_recipe_resolves_for_jetpack6_and_is_the_whole_closure(recipe):
    assert recipe.ok, recipe.log
    assert check.closure_problems(recipe, check.read_pins(check.REQUIREMENTS)) == []
    assert recipe.installs["cuda-python"].startswith("12.")  # CUDA 12 driver on JetPack 6
    assert {"cuda-core", "onnxruntime", "opencv-python-headless"} <= set(recipe.installs)


def test_closure_check_uses_the_jetson_python_markers(tmp_path):
    """Without its pin, pip (running on 3.11 here) leaves out cuda-core's Python < 3.11 dependency and is content;
    the closure check, evaluating markers for the Jetson's Python 3.10, is not."""
    lines = [line for line in check.REQUIREMENTS.read_text().splitlines() if not line.startswith("backports.strenum")]
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(lines) + "\n")
    resolution = resolve_or_skip(requirements)
    assert resolution.ok, resolution.log
    assert "backports-strenum" not in resolution.installs
    assert check.closure_problems(resolution, check.read_pins(requirements)) == [
        "cuda-core needs backports.strenum on Python 3.10, the file pins None"
    ]


def test_planted_dependency_without_an_aarch64_wheel_fails(tmp_path):
    planted = "tensorrt-cu12-bindings==10.3.0"  # PyPI has it for x86_64 only
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(check.REQUIREMENTS.read_text() + f"\n{planted}\n")
    resolution = resolve_or_skip(requirements)
    assert not resolution.ok
    assert "No matching distribution found for tensorrt-cu12-bindings==10.3.0" in resolution.log
    # the same pin on its own resolves for x86_64: the failure is the platform, not the name or version
    alone = tmp_path / "alone.txt"
    alone.write_text(planted + "\n")
    x86 = resolve_or_skip(alone, platforms=["manylinux_2_17_x86_64"])
    assert x86.ok, x86.log
    assert x86.installs["tensorrt-cu12-bindings"] == "10.3.0"


def _declared():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["jetson"]]


def test_pins_satisfy_the_declared_runtime_and_jetson_dependencies():
    pins = check.read_pins(check.REQUIREMENTS)
    declared = [r for r in _declared() if canonicalize_name(r.name) != "simswap-trt"]
    assert {"numpy", "onnxruntime", "cuda-python", "cuda-core"} <= {canonicalize_name(r.name) for r in declared}
    for requirement in declared:
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None and pinned in requirement.specifier, (str(requirement), pinned)


RUN_PINNED = textwrap.dedent(
    """
    import json, re, sys
    target, repo, bundle, crops_file, out_file = sys.argv[1:]
    sys.path[:0] = [target, repo]
    from importlib.metadata import version
    import numpy as np
    from cuda.core import Device, LaunchConfig, ObjectCode, Program, ProgramOptions, launch  # the kernels' names
    from simswap_trt import FaceSwapper, cuda
    from onnxconverter_common import float16  # simswap-build precision (FP16) on the device
    import simswap_build.tensorrt.builder, simswap_build.precision.recipe  # noqa: E401 - the builder without torch
    used = set()  # cudart.X.Y chains and device attribute names in the runtime's sources
    for path in __import__("pathlib").Path(repo, "simswap_trt").rglob("*.py"):
        text = path.read_text()
        used |= set(re.findall(r"(?:cudart|runtime\\(\\))((?:\\.\\w+)+)", text))
        used |= {".cudaDeviceAttr." + name for name in re.findall(r'"(cudaDevAttr\\w+)"', text)}

    def exists(chain):
        owner = cuda.runtime()
        for name in chain.strip(".").split("."):
            if not hasattr(owner, name):
                return False
            owner = getattr(owner, name)
        return True
    try:
        cuda.device_info()
        gpu = "present"
    except cuda.CudaError as exc:
        gpu = exc.name
    swapper = FaceSwapper.from_bundle(bundle, threads=1, backend="onnxruntime")
    crops = np.load(crops_file)
    swapper.set_source_crops(crops[:1])
    np.save(out_file, swapper.swap_aligned(crops))
    names = ("numpy", "onnx", "onnxruntime", "opencv-python-headless", "cuda-bindings", "cuda-core")
    names += ("onnxconverter-common",)
    print(json.dumps({
        "versions": {name: version(name) for name in names},
        "numpy_from": np.__file__,
        "missing": sorted(chain for chain in used if not exists(chain)),
        "used": len(used),
        "gpu": gpu,
    }))
    """
)


def jetson_python() -> str:
    """A CPython 3.10 (JetPack 6's Python) with pip, if this machine has one (on PATH or from pyenv), else this
    interpreter."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for candidate in [shutil.which("python3.10"), *sorted(pyenv.glob("versions/3.10*/bin/python3.10"))]:
        probe = "import sys, pip; assert sys.version_info[:2] == (3, 10)"
        if candidate and subprocess.run([candidate, "-c", probe], capture_output=True).returncode == 0:
            return str(candidate)
    return sys.executable


def test_runtime_runs_with_the_pinned_versions(tmp_path, tiny_bundle, astronaut_crop):
    python = jetson_python()
    target = tmp_path / "pinned"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--only-binary=:all:"]
        + ["--target", str(target), "-r", str(check.REQUIREMENTS)],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
    )
    if install.returncode and any(sign in install.stderr for sign in OFFLINE):
        pytest.skip("PyPI is unreachable from here")
    assert install.returncode == 0, install.stderr
    crops = np.stack([astronaut_crop, astronaut_crop[:, ::-1], astronaut_crop[::-1]])
    np.save(tmp_path / "crops.npy", crops)
    args = [str(target), str(ROOT), str(tiny_bundle.root), str(tmp_path / "crops.npy"), str(tmp_path / "out.npy")]
    # -S: no site-packages at all, so every import comes from the pinned folder (or the standard library)
    result = subprocess.run([python, "-S", "-c", RUN_PINNED, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    pins = check.read_pins(check.REQUIREMENTS)
    assert report["versions"] == {name: pins[name] for name in report["versions"]}
    assert report["numpy_from"].startswith(str(target))
    assert report["used"] > 10 and report["missing"] == []  # every cuda.bindings.runtime name we call exists in 12.x
    assert report["gpu"] in ("present", "cudaErrorInsufficientDriver", "cudaErrorNoDevice")
    # the same swap with this environment's (newer) libraries: ONNX Runtime and NumPy versions differ
    from simswap_trt import FaceSwapper

    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=1, backend="onnxruntime")
    swapper.set_source_crops(crops[:1])
    expected = swapper.swap_aligned(crops)
    pinned = np.load(tmp_path / "out.npy")
    assert pinned.shape == expected.shape and pinned.dtype == np.uint8
    assert np.abs(pinned.astype(int) - expected).max() <= 1  # float rounding across library versions
