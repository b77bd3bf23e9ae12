"""A Jetson as `simswap-trt doctor` sees it: fake L4T files, fake `dpkg-query` / `nvpmodel` commands and the
strict TensorRT runtime stand-in with DLA cores."""

import stat

import pytest

from simswap_trt import cli, jetson
from simswap_trt.engines import tensorrt as trt_engine
from support.fake_gpu import strict_runtime_module

lean = pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


ORIN_RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 2025\n"


NVPMODEL = 'echo "NV Power Mode: MAXN"; echo 0'


def fake_commands(tmp_path, monkeypatch, packages, nvpmodel=NVPMODEL):
    """A PATH holding only a fake dpkg-query (answering for ``packages``) and, if given, a fake nvpmodel."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cases = "".join(f'  {name}) printf "%s" "{version}";;\n' for name, version in packages.items())
    queries = tmp_path / "dpkg-queries"
    scripts = {"dpkg-query": f'#!/bin/sh\necho "$3" >> {queries}\ncase "$3" in\n{cases}  *) exit 1;;\nesac\n'}
    if nvpmodel:
        scripts["nvpmodel"] = f'#!/bin/sh\n[ "$1" = "-q" ] || exit 2\n{nvpmodel}\n'
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", str(bin_dir))


def fake_files(tmp_path, monkeypatch, release=None, model=None):
    for attribute, name, text in (("TEGRA_RELEASE", "nv_tegra_release", release), ("MODEL_FILE", "model", model)):
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        monkeypatch.setattr(jetson, attribute, path)


def fake_tensorrt(monkeypatch, dla_cores):
    module = strict_runtime_module(lean, [], lambda inputs: {})
    module.Runtime.num_DLA_cores = dla_cores  # a name the real tensorrt_lean.Runtime has
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, False))


def doctor(capsys):
    assert cli.main(["doctor"]) == 0
    return capsys.readouterr().out.splitlines()
