"""The runtime package holds only the runtime: importing any of its modules never pulls in the builder,
the benchmarks or the tests."""

import subprocess
import sys
import textwrap

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
    from pathlib import Path

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
