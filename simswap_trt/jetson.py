"""What ``simswap-trt doctor`` says about edge devices: the Jetson module, its L4T and JetPack release and power
mode, whether the GPU shares memory with the CPU (and so which host memory the engines use), and the DLA cores.

Everything is read from the device's own files and commands when they are there and readable; what is not is
reported as such, so doctor runs the same everywhere."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.cuda.memory import host_memory_strategy
from simswap_trt.errors import SimswapError

TEGRA_RELEASE = Path("/etc/nv_tegra_release")  # "# R36 (release), REVISION: 4.3, GCID: ..., BOARD: ..."
MODEL_FILE = Path("/proc/device-tree/model")  # "NVIDIA Jetson AGX Orin Developer Kit"
# JetPack releases by L4T release, for systems without the nvidia-jetpack meta-package (NVIDIA's JetPack archive)
JETPACK_OF_L4T = {"36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1"}


def _command(*argv: str) -> str | None:
    """stdout of ``argv``, or None when it is missing, fails or hangs."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def _package_version(name: str) -> str | None:
    version = (_command("dpkg-query", "-W", "-f=${Version}", name) or "").strip()
    return version or None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


@dataclass(frozen=True)
class JetsonInfo:
    model: str | None  # e.g. "NVIDIA Jetson AGX Orin Developer Kit"
    l4t: str | None  # e.g. "36.4.3"
    jetpack: str | None  # e.g. "6.2"
    power_mode: str | None  # e.g. "MAXN (mode 0)"; None when nvpmodel is missing or unreadable


def l4t_release(release_text: str | None, core_package: str | None) -> str | None:
    """The L4T release from /etc/nv_tegra_release, else from the nvidia-l4t-core package version."""
    match = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", release_text or "")
    if match:
        revision = match[2].split(".") + ["0"]
        return f"{match[1]}.{revision[0]}.{revision[1]}"
    if core_package:
        return core_package.split("-", 1)[0]
    return None


def power_mode(nvpmodel_output: str | None) -> str | None:
    """``"NAME (mode N)"`` from ``nvpmodel -q`` ("NV Power Mode: NAME" then the mode number)."""
    match = re.search(r"NV Power Mode:\s*(\S.*?)\s*\n\s*(\d+)", nvpmodel_output or "")
    return f"{match[1]} (mode {match[2]})" if match else None


def jetson_info() -> JetsonInfo | None:
    """The Jetson's facts, or None when this is not a Jetson (no L4T release file or package)."""
    # dpkg-query only when the release file does not answer (it takes a while on a loaded board)
    l4t = l4t_release(_read(TEGRA_RELEASE), None) or l4t_release(None, _package_version("nvidia-l4t-core"))
    if l4t is None:
        return None
    jetpack = _package_version("nvidia-jetpack")
    model = _read(MODEL_FILE)
    return JetsonInfo(
        model=model.strip("\0\n ") if model else None,
        l4t=l4t,
        jetpack=jetpack.split("+", 1)[0].split("-", 1)[0] if jetpack else JETPACK_OF_L4T.get(l4t),
        power_mode=power_mode(_command("nvpmodel", "-q")),
    )


def dla_cores() -> int | None:
    """DLA cores TensorRT can use here (``Runtime.num_DLA_cores``), None without TensorRT."""
    from simswap_trt.engines.tensorrt import import_tensorrt

    try:
        trt, _ = import_tensorrt()
        return int(trt.Runtime(trt.Logger(trt.Logger.WARNING)).num_DLA_cores)
    except SimswapError:
        return None


def doctor_lines() -> list[str]:
    """Doctor's lines about the Jetson, the GPU's memory and the DLA (none on a machine without a GPU)."""
    lines = []
    info = jetson_info()
    if info is not None:
        jetpack = f"JetPack {info.jetpack}" if info.jetpack else "JetPack unknown"
        lines.append(f"Jetson        {info.model or 'unknown module'}: L4T {info.l4t}, {jetpack}")
        lines.append(f"power mode    {info.power_mode or 'not readable (nvpmodel -q)'}")
    try:
        traits = cuda_memory.memory_traits()
    except SimswapError:
        return lines
    if traits.integrated:
        strategy = host_memory_strategy(traits)
        how = "mapped pinned host memory, no copies" if strategy == "mapped" else "staged copies (not I/O coherent)"
        lines.append(f"GPU memory    integrated: shared with the CPU; engines use {how}")
    else:
        lines.append("GPU memory    discrete: engines stage copies through pinned host buffers")
    cores = dla_cores()
    if cores is not None and (cores or info is not None):
        lines.append(f"DLA cores     {cores}" + (" (build with: simswap-build engine B --dla-core 0)" if cores else ""))
    return lines
