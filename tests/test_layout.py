"""The layout of the code: the runtime package holds only the runtime (importing any of its modules never pulls in
the builder, the benchmarks or the tests); its modules import only their own layer and the layers below it, in
the order stated here, and no two modules import each other (imports inside functions count: they are read
from the sources with ``ast``); no module is over 600 lines and no function over 60 outside the tests; no test
module imports another (what tests share lives in tests/support).

The order of the runtime's layers, lowest first (a module belongs to the layer naming it or the package above
it; the most specific name wins):

  foundation       errors, constants, schema, cache: no imports of the package
  files and CUDA   files, images, plans, the synthetic-media tags (provenance/metadata.py: images writes them),
                   cuda/ (runtime calls, memory)
  kernels          kernels/: sources and launch code
  engines          engines/: ONNX Runtime, OpenVINO, TensorRT, the scheduler
  model choice     bundle (the model files), backends (an engine per model), jetson (what the board offers)
  vision           vision/: host detection, alignment, warps, paste-back, parsing, enhancement
  host stages      stages.py: the stage contract and the host stages
  device           device/: device stages, device detection, resident frames, kernel tables
  swapper          swapper.py and the package's public facade (simswap_trt/__init__.py)
  applications     video/, serving/, distributed/, provenance/ (signing, verifying), doctor
  commands         cli (a module or a package of one module per command), cli_support, the commands of
                   video/ and provenance/ (video/cli.py, provenance/cli.py)
"""

import subprocess
import sys
import textwrap
from fnmatch import fnmatch
from pathlib import Path

import pytest
from support.import_graph import (
    cycles,
    import_graph,
    imports_of_test_modules,
    long_functions,
    long_modules,
    modules_of,
    unplaced,
    upward_imports,
)
from support.paths import ROOT

LAYERS = [  # lowest first; see the module docstring
    ("foundation", ["simswap_trt.errors", "simswap_trt.constants", "simswap_trt.schema", "simswap_trt.cache"]),
    (
        "files and CUDA",
        ["simswap_trt.files", "simswap_trt.images", "simswap_trt.plans", "simswap_trt.provenance.metadata"]
        + ["simswap_trt.cuda"],
    ),
    ("kernels", ["simswap_trt.kernels"]),
    ("engines", ["simswap_trt.engines"]),
    ("model choice", ["simswap_trt.bundle", "simswap_trt.backends", "simswap_trt.jetson"]),
    ("vision", ["simswap_trt.vision"]),
    ("host stages", ["simswap_trt.stages"]),
    ("device", ["simswap_trt.device"]),
    ("swapper", ["simswap_trt", "simswap_trt.swapper"]),
    (
        "applications",
        ["simswap_trt.video", "simswap_trt.serving", "simswap_trt.distributed", "simswap_trt.provenance"]
        + ["simswap_trt.doctor"],
    ),
    ("commands", ["simswap_trt.cli"]),
]

# Import cycles that exist today, each with the change that removes it. The test fails when one is gone, so
# that its line is deleted with the change.
KNOWN_CYCLES: set[tuple[str, str]] = set()

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60  # decorators and docstring included
SIZE_CHECKED = ("simswap_trt", "simswap_build", "benchmarks")

# Modules over MAX_MODULE_LINES today, each with its reason; deleted as each is split. The test fails when a
# listed module is back under the limit, so that this list only shrinks.
LONG_MODULES: dict[str, str] = {}

# Functions over MAX_FUNCTION_LINES today (module: function names), each with its reason; deleted as each is
# split. The test fails when a listed function is back under the limit.
LONG_FUNCTIONS: dict[str, set[str]] = {}

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    import simswap_trt
    names = [m.name for m in pkgutil.walk_packages(simswap_trt.__path__, "simswap_trt.")]
    for name in names:
        importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("simswap_build", "benchmarks", "tests"))
    print(len(names), leaked)
    """
)


def test_importing_the_runtime_never_imports_builder_benchmarks_or_tests():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    count, leaked = result.stdout.strip().split(" ", 1)
    assert int(count) >= 20  # every module was imported, not an empty walk
    assert leaked == "[]"


def test_runtime_sources_do_not_name_the_builder():
    """Lazy imports inside functions count too: the runtime reaches the builder only through its CLI."""
    import simswap_trt

    root = Path(simswap_trt.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if any(
            line.lstrip().startswith(
                ("import simswap_build", "from simswap_build", "import benchmarks", "from benchmarks")
            )
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []


@pytest.fixture(scope="module")
def runtime_graph():
    return import_graph(modules_of(ROOT / "simswap_trt"))


def test_every_runtime_module_has_a_layer(runtime_graph):
    assert len(runtime_graph) >= 40  # the whole package was read
    assert unplaced(runtime_graph, LAYERS) == [], "name the new module's layer in LAYERS (tests/test_layout.py)"


def test_no_runtime_module_imports_a_higher_layer(runtime_graph):
    assert upward_imports(runtime_graph, LAYERS) == []


@pytest.mark.parametrize("package", ["simswap_trt", "simswap_build", "benchmarks"])
def test_no_import_cycles(package):
    found = {tuple(cycle) for cycle in cycles(import_graph(modules_of(ROOT / package)))}
    known = {cycle for cycle in KNOWN_CYCLES if cycle[0].split(".")[0] == package}
    assert found - known == set(), "modules that import each other"
    assert known - found == set(), "gone: delete these from KNOWN_CYCLES"


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


PLANTED_LAYERS = [("low", ["pkg", "pkg.low"]), ("middle", ["pkg.middle"]), ("high", ["pkg.high", "pkg.cli"])]


@pytest.mark.parametrize(
    "source",
    [
        "from pkg.high import thing\n",
        "def late():\n    from pkg.high import thing\n",  # inside a function
        "from ..high import thing\n",  # relative
        "import pkg.high.sub\n",
        "from pkg import high\n",
    ],
)
def test_a_planted_upward_import_is_found(tmp_path, source):
    package = write_package(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "low.py": "",
            "middle/__init__.py": "from pkg.low import x\n",
            "middle/part.py": source,
            "high/__init__.py": "from pkg.middle import x\nthing = 1\n",
            "high/sub.py": "",
            "cli.py": "from pkg.high import thing\n",
        },
    )
    graph = import_graph(modules_of(package))
    assert unplaced(graph, PLANTED_LAYERS) == []
    found = upward_imports(graph, PLANTED_LAYERS)
    assert len(found) == 1 and found[0].startswith("pkg.middle.part (middle) -> pkg.high"), found
    (package / "middle" / "part.py").write_text("from pkg.low import x\n")  # the same package, no breach
    assert upward_imports(import_graph(modules_of(package)), PLANTED_LAYERS) == []


def test_the_real_order_reversed_is_all_breaches(runtime_graph):
    """The check is not vacuous on the real code: with the layers upside down, every import between
    different layers is a breach."""
    assert len(upward_imports(runtime_graph, LAYERS[::-1])) > 100


def test_a_planted_cycle_through_a_function_level_import_is_found(tmp_path):
    package = write_package(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "a.py": "from pkg.b import f\n",
            "b.py": "def f():\n    from pkg import c\n",
            "c.py": "import pkg.a\n",
            "d.py": "from pkg.a import x\n",
        },
    )
    assert cycles(import_graph(modules_of(package))) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_cli_may_be_a_module_or_a_package(tmp_path):
    """``simswap_trt.cli`` as a package of one module per command sits in the commands layer as cli.py does."""
    package = write_package(
        tmp_path / "simswap_trt",
        {"__init__.py": "", "errors.py": "", "cli/__init__.py": "", "cli/swap.py": "from simswap_trt import errors\n"},
    )
    graph = import_graph(modules_of(package))
    assert unplaced(graph, LAYERS) == [] and upward_imports(graph, LAYERS) == []
    (package / "errors.py").write_text("from simswap_trt.cli.swap import run\n")
    assert upward_imports(import_graph(modules_of(package)), LAYERS) == [
        "simswap_trt.errors (foundation) -> simswap_trt.cli.swap (commands)"
    ]


def sources() -> list[Path]:
    return sorted(path for package in SIZE_CHECKED for path in (ROOT / package).rglob("*.py"))


def test_no_module_is_over_600_lines():
    found = {str(path.relative_to(ROOT)) for path in long_modules(sources(), MAX_MODULE_LINES)}
    assert found - LONG_MODULES.keys() == set(), f"split these under {MAX_MODULE_LINES} lines"
    assert LONG_MODULES.keys() - found == set(), "under the limit now: delete these from LONG_MODULES"


def test_no_function_is_over_60_lines():
    found = {}
    for path in sources():
        names = set(long_functions(path, MAX_FUNCTION_LINES))
        if names:
            found[str(path.relative_to(ROOT))] = names
    new = {module: names - LONG_FUNCTIONS.get(module, set()) for module, names in found.items()}
    gone = {module: names - found.get(module, set()) for module, names in LONG_FUNCTIONS.items()}
    assert {m: n for m, n in new.items() if n} == {}, f"split these under {MAX_FUNCTION_LINES} lines"
    assert {m: n for m, n in gone.items() if n} == {}, "under the limit now: delete these from LONG_FUNCTIONS"


def test_planted_sizes_are_found(tmp_path):
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "m.py"
    path.write_text("class C:\n    def long(self):\n" + body + "\n\ndef short():\n    pass\n")
    assert long_functions(path, MAX_FUNCTION_LINES) == {"C.long": MAX_FUNCTION_LINES + 1}
    lines = MAX_FUNCTION_LINES + 6
    assert long_modules([path], lines - 1) == {path: lines} and long_modules([path], lines) == {}


def test_no_imports_of_test_modules_another():
    """Shared stand-ins, fixtures and helpers live in tests/support; a test module imports only from there."""
    tests = ROOT / "tests"
    files = sorted(path for path in tests.rglob("*.py") if "data" not in path.relative_to(tests).parts)
    assert len(files) > 60  # the whole tree was read
    assert imports_of_test_modules(files) == {}


def test_a_planted_import_of_a_test_module_is_found(tmp_path):
    planted = {
        "test_a.py": "from test_b import helper\n",
        "test_c.py": "def f():\n    import conftest\n",
        "test_d.py": "from support import fake_gpu\nfrom support.tiny import random_crops\n",
    }
    for name, text in planted.items():
        (tmp_path / name).write_text(text)
    found = imports_of_test_modules(sorted(tmp_path.iterdir()))
    assert found == {
        str(tmp_path / "test_a.py"): ["test_b", "test_b.helper"],
        str(tmp_path / "test_c.py"): ["conftest"],
    }


def unwalked_test_folders(tests: Path, patterns: list[str]) -> list[str]:
    """Folders of ``tests`` holding test modules that pytest does not walk into (``norecursedirs``)."""
    folders = [path for path in tests.rglob("*") if path.is_dir() and any(path.glob("test_*.py"))]
    return sorted(
        str(folder.relative_to(tests))
        for folder in folders
        if any(fnmatch(part, pattern) for part in folder.relative_to(tests).parts for pattern in patterns)
    )


def test_pytest_walks_every_folder_of_tests(pytestconfig):
    """pytest's default ``norecursedirs`` skips folders named build: tests/build would silently not run."""
    tests = ROOT / "tests"
    assert unwalked_test_folders(tests, pytestconfig.getini("norecursedirs")) == []
    assert unwalked_test_folders(tests, ["build"]) == ["build", "build/bench", "build/convert", "build/graphs"] + [
        "build/precision",
        "build/training",
        "build/trt",
    ]


# Top-level modules the code imports that are optional or namespace packages: a folder of tests with one of
# these names, on sys.path as pytest's rootdir-based imports put it, would be imported in their place.
IMPORTED_MODULES = {"tensorrt", "tensorrt_lean", "cuda", "onnx", "onnxruntime", "openvino", "av", "ray", "c2pa"}


def test_no_folder_of_tests_shadows_a_module_the_code_imports():
    tests = ROOT / "tests"
    names = {path.name for path in tests.rglob("*") if path.is_dir()}
    assert names & IMPORTED_MODULES == set()
