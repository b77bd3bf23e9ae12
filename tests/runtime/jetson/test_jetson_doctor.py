"""`simswap-trt doctor` on a Jetson, from fake L4T files and fake `dpkg-query` / `nvpmodel` commands: module,
L4T and JetPack release, power mode, integrated memory and the engines' host memory, DLA cores (from the
strict TensorRT runtime stand-in); and what it says on a discrete GPU and where nothing is readable."""

import pytest
from support.fake_gpu import install_fake_cuda
from support.jetson_standin import ORIN_RELEASE, doctor, fake_commands, fake_files, fake_tensorrt

from simswap_trt import jetson

lean = pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


def test_doctor_on_an_orin(tmp_path, monkeypatch, capsys):
    fake_files(tmp_path, monkeypatch, ORIN_RELEASE, "NVIDIA Jetson AGX Orin Developer Kit\0")
    fake_commands(tmp_path, monkeypatch, {"nvidia-l4t-core": "36.4.3-20250107174145", "nvidia-jetpack": "6.2+b77"})
    install_fake_cuda(monkeypatch, compute_capability=(8, 7), name="Orin", integrated=True)
    fake_tensorrt(monkeypatch, dla_cores=2)
    out = doctor(capsys)
    assert "Jetson        NVIDIA Jetson AGX Orin Developer Kit: L4T 36.4.3, JetPack 6.2" in out
    assert "power mode    MAXN (mode 0)" in out
    assert "GPU memory    integrated: shared with the CPU; engines use mapped pinned host memory, no copies" in out
    assert "DLA cores     2 (build with: simswap-build engine B --dla-core 0)" in out
    # the release file answered, so dpkg was asked only for the JetPack version
    assert (tmp_path / "dpkg-queries").read_text().split() == ["nvidia-jetpack"]


def test_jetpack_from_the_l4t_release_and_unreadable_power_mode(tmp_path, monkeypatch, capsys):
    """No release file, no nvidia-jetpack package, no nvpmodel: L4T from nvidia-l4t-core, JetPack from the table."""
    fake_files(tmp_path, monkeypatch)
    fake_commands(tmp_path, monkeypatch, {"nvidia-l4t-core": "36.3.0-20240506102626"}, nvpmodel=None)
    install_fake_cuda(monkeypatch, compute_capability=(8, 7), name="Orin", integrated=True)
    fake_tensorrt(monkeypatch, dla_cores=0)
    out = doctor(capsys)
    assert "Jetson        unknown module: L4T 36.3.0, JetPack 6.0" in out
    assert (tmp_path / "dpkg-queries").read_text().split() == ["nvidia-l4t-core", "nvidia-jetpack"]
    assert "power mode    not readable (nvpmodel -q)" in out
    assert "DLA cores     0" in out  # Orin Nano / NX 8GB: no DLA


def test_doctor_on_a_discrete_gpu_says_nothing_about_jetson(tmp_path, monkeypatch, capsys):
    fake_files(tmp_path, monkeypatch)
    fake_commands(tmp_path, monkeypatch, {})
    install_fake_cuda(monkeypatch, compute_capability=(9, 0), name="H100", integrated=False)
    fake_tensorrt(monkeypatch, dla_cores=0)
    out = doctor(capsys)
    assert "GPU memory    discrete: engines stage copies through pinned host buffers" in out
    assert not [line for line in out if line.startswith(("Jetson", "power mode", "DLA cores"))]


@pytest.mark.parametrize(
    "release,package,expected",
    [
        ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64", None, "36.4.0"),
        ("# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64", None, "35.5.0"),
        ("# R36 (release), REVISION: 4", None, "36.4.0"),
        (None, "36.4.4-20250616085344", "36.4.4"),
        ("garbage", None, None),
    ],
)
def test_l4t_release_parsing(release, package, expected):
    assert jetson.l4t_release(release, package) == expected


@pytest.mark.parametrize(
    "output,expected",
    [
        ("NV Power Mode: 15W\n1\n", "15W (mode 1)"),
        ("NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN_SUPER\n2\n", "MAXN_SUPER (mode 2)"),
        ("", None),
        (None, None),
    ],
)
def test_power_mode_parsing(output, expected):
    assert jetson.power_mode(output) == expected
