"""The fused CUDA kernels of the device path (one launch per batch each) and their launchers.

* ``simswap_kernels.cuh``: the per-pixel math, shared by the device kernels and a host build.
* ``simswap_kernels.cu``: ``simswap_preprocess_kernel`` (bilinear inverse-affine sampling of every face of
  a batch, possibly from different frames, BGR→RGB, /255, NCHW float32 or float16 straight into the
  engine's input buffer) and ``simswap_pasteback_kernel`` (reads each face's generator output where it
  lies, NCHW RGB [0, 1]; inverse warp restricted to each face's region, the official border mask, blend in
  order, truncate once).
* ``simswap_letterbox_kernel``: makes the face detector's input: every frame of a batch resized onto the
  detector's square canvas (cv2.resize INTER_LINEAR geometry), zero padding, normalised per detector, NCHW
  float32 or float16 straight into the detector engine's input buffer.
* ``simswap_parsing_blend_kernel``: the optional parsing-mask blend (official ``--use_mask``), in crop space:
  each masked face's generator output blended in place with its generator input, before the paste-back.
* ``simswap_parser_input_kernel`` and ``simswap_parser_labels_kernel``: the face parser's input made from
  the generator input (nearest resize to 512, ImageNet normalisation) and its logits reduced to labels.
* ``simswap_enhancer_input_kernel`` and ``simswap_enhance_blend_kernel``: the face enhancer's input made from
  the generator's output where it lies (the composed map into the enhancer's crop, the frame around it) and
  the enhancer's output blended with it in place, before the paste-back reads it.
* ``host.cpp``: the same math in loops, built by CMake (``simswap_kernels_host``) for the CPU tests.

The runtime loads the fatbin that CMake builds (``SIMSWAP_KERNELS_FATBIN`` or ``simswap_kernels.fatbin``
next to this file) with cuda.core; without one it compiles the ``.cu`` source with NVRTC at first use.
The border masks depend only on the geometry and are computed on the CPU while the generator runs
(``simswap_trt.device.tables`` plans every table the kernels read). ``DeviceKernels`` launches each kernel
with one method that takes the device addresses of its tables by name (``PreprocessTables``,
``PasteBackTables``, ``LetterboxTables``, ``ParsingTables``) and computes the grid from the crop size, the
canvas or the regions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simswap_trt import cuda as cuda_module
from simswap_trt.constants import PARSING_SIZE
from simswap_trt.errors import EngineError, SimswapError

SOURCE_DIR = Path(__file__).parent
KERNEL_NAMES = (
    "simswap_preprocess_kernel",
    "simswap_pasteback_kernel",
    "simswap_letterbox_kernel",
    "simswap_parsing_blend_kernel",
    "simswap_parser_input_kernel",
    "simswap_parser_labels_kernel",
    "simswap_enhancer_input_kernel",
    "simswap_enhance_blend_kernel",
)
BLOCK = (16, 16, 1)


def load_device_kernels(device: int | None = None):
    """The kernels as cuda.core ``Kernel`` objects on ``device`` (default: the current one): from the
    CMake-built fatbin when present, else compiled from source with NVRTC for this GPU."""
    try:
        from cuda.core import Device, ObjectCode, Program, ProgramOptions
    except ImportError:
        raise EngineError("the CUDA kernels need cuda-python: pip install 'simswap-trt[trt]'") from None
    fatbin = Path(os.environ.get("SIMSWAP_KERNELS_FATBIN", SOURCE_DIR / "simswap_kernels.fatbin"))
    try:
        gpu = Device(device)
        gpu.set_current()
        if fatbin.is_file():
            module = ObjectCode.from_fatbin(str(fatbin))
        else:
            arch = "sm_" + "".join(str(v) for v in gpu.compute_capability)
            source = (SOURCE_DIR / "simswap_kernels.cu").read_text()
            options = ProgramOptions(arch=arch, include_path=[str(SOURCE_DIR)], fma=False)  # as nvcc -fmad=false
            module = Program(source, code_type="c++", options=options).compile("cubin")
        return {name: module.get_kernel(name) for name in KERNEL_NAMES}
    except SimswapError:
        raise
    except Exception as exc:  # driver missing, libnvrtc missing, compile or load errors: all name their cause
        how = f"loading {fatbin}" if fatbin.is_file() else "compiling simswap_kernels.cu with NVRTC"
        raise EngineError(
            f"the CUDA kernels are not usable ({how}): {type(exc).__name__}: {exc}. Build the fatbin with CMake "
            "(SIMSWAP_KERNELS_FATBIN=build/simswap_kernels.fatbin) or install libnvrtc (pip install nvidia-cuda-nvrtc)"
        ) from exc


def launch(stream: int, kernel, grid: tuple[int, int, int], args: Sequence[np.generic]) -> None:
    """Launch ``kernel`` on the CUDA stream handle ``stream`` with ``BLOCK``-sized blocks."""
    from cuda.core import LaunchConfig, Stream
    from cuda.core import launch as launch_kernel

    try:
        launch_kernel(Stream.from_handle(stream), LaunchConfig(grid=grid, block=BLOCK), kernel, *args)
    except Exception as exc:  # cuda.core raises its own CUDAError (the driver's launch error, checked at launch)
        raise cuda_module.KernelLaunchError(f"launch of a kernel on grid {grid} failed: {exc}") from exc


def _blocks(extent: int, block: int) -> int:
    return max(1, -(-int(extent) // block))


def preprocess_grid(size: int, faces: int) -> tuple[int, int, int]:
    """One thread per crop pixel, one grid layer per face, for any crop size."""
    return _blocks(size, BLOCK[0]), _blocks(size, BLOCK[1]), faces


def pasteback_grid(union_rois: np.ndarray) -> tuple[int, int, int]:
    """One thread per pixel of the widest and tallest region, one grid layer per frame."""
    extent = union_rois[:, 2:] - union_rois[:, :2]
    return _blocks(extent[:, 0].max(), BLOCK[0]), _blocks(extent[:, 1].max(), BLOCK[1]), len(union_rois)


def letterbox_grid(canvas: int, frames: int) -> tuple[int, int, int]:
    """One thread per canvas pixel, one grid layer per frame."""
    return _blocks(canvas, BLOCK[0]), _blocks(canvas, BLOCK[1]), frames


@dataclass(frozen=True)
class PreprocessTables:
    """Device addresses of the tables the preprocessing kernel reads (planned by ``simswap_trt.device.tables``):
    per frame its address (uint64), row pitch, width and height (int32); per face its frame (int32) and its
    crop→frame matrix (float32 [6])."""

    frames: int
    pitches: int
    widths: int
    heights: int
    frame_of_face: int
    inverse: int


@dataclass(frozen=True)
class PasteBackTables:
    """Device addresses of the tables the paste-back kernel reads: per frame its address and row pitch, its
    union region (int32 [4]) and its first face (int32 [frames + 1]); per face its generator output's address
    (uint64), frame→crop matrix (float32 [6]), region (int32 [4]) and its border mask's offset (int64) in
    ``masks`` (float32, every face's mask over its region)."""

    frames: int
    pitches: int
    union_rois: int
    face_begin: int
    crops: int
    forward: int
    rois: int
    masks: int
    mask_offsets: int


@dataclass(frozen=True)
class LetterboxTables:
    """Device addresses of the tables the detector-input kernel reads: per frame its address, row pitch, width
    and height, its resized width and height on the canvas (int32 [2]) and its source / resized size ratios
    (float32 [2])."""

    frames: int
    pitches: int
    widths: int
    heights: int
    resized: int
    scales: int


@dataclass(frozen=True)
class ParsingTables:
    """Device addresses of the parsing-mask blend's tables: the masks (float32 [count, size, size]) and the
    batch position of each masked face (int32 [count])."""

    masks: int
    faces: int
    count: int


@dataclass(frozen=True)
class EnhancerTables:
    """Device addresses of the tables the enhancer-input kernel reads: the preprocessing's per-frame tables and
    frame of each face, and per face its enhancer crop→frame matrix (``inverse``) and enhancer crop→generator
    crop matrix (``to_swap``), float32 [6] each."""

    frames: int
    pitches: int
    widths: int
    heights: int
    frame_of_face: int
    inverse: int
    to_swap: int


def _pointers(*addresses: int) -> list[np.uint64]:
    return [np.uint64(address) for address in addresses]


class DeviceKernels:
    """The eight kernels, each launched by one method from named tables of device addresses (see
    ``simswap_kernels.cu``), with grids computed from the crop size, canvas or regions. A launch for no
    face or frame does nothing."""

    def __init__(self, kernels=None, device: int | None = None) -> None:
        self.kernels = kernels if kernels is not None else load_device_kernels(device)

    def preprocess(self, stream: int, tables: PreprocessTables, faces: int, size: int, half: bool, out: int) -> None:
        """Every face of a batch into ``out`` (NCHW RGB [0, 1], float16 with ``half``), one launch."""
        if faces:
            t = tables
            args = _pointers(t.frames, t.pitches, t.widths, t.heights, t.frame_of_face, t.inverse)
            args += [np.int32(size), np.int32(half), np.uint64(out)]
            launch(stream, self.kernels["simswap_preprocess_kernel"], preprocess_grid(size, faces), args)

    def pasteback(self, stream: int, tables: PasteBackTables, regions: np.ndarray, size: int, half: bool) -> None:
        """Every face of a batch of frames into its frame, one launch, reading each face's generator output
        (NCHW RGB [0, 1], float16 with ``half``) where it lies. ``regions``: the union regions on the host
        (int32 [frames, 4]), for the launch grid."""
        if len(regions):
            t = tables
            args = _pointers(t.frames, t.pitches, t.union_rois, t.face_begin, t.crops)
            args += [np.int32(size), np.int32(half), *_pointers(t.forward, t.rois, t.masks, t.mask_offsets)]
            launch(stream, self.kernels["simswap_pasteback_kernel"], pasteback_grid(regions), args)

    def detector_input(
        self,
        stream: int,
        tables: LetterboxTables,
        count: int,
        canvas: int,
        normalisation: tuple[bool, float, float],
        half: bool,
        out: int,
    ) -> None:
        """Every frame of a batch letterboxed onto the detector canvas in ``out`` (NCHW, float16 with
        ``half``), one launch. ``normalisation``: (BGR→RGB, mean, scale) of the detector
        (``FaceDetector.normalisation``)."""
        if count:
            swap_rb, mean, scale = normalisation
            t = tables
            args = _pointers(t.frames, t.pitches, t.widths, t.heights, t.resized, t.scales)
            args += [np.int32(canvas), np.int32(swap_rb), np.float32(mean), np.float32(scale), np.int32(half)]
            args += [np.uint64(out)]
            launch(stream, self.kernels["simswap_letterbox_kernel"], letterbox_grid(canvas, count), args)

    def parsing_blend(
        self, stream: int, tables: ParsingTables, size: int, swapped: int, half_out: bool, targets: int, half_in: bool
    ) -> None:
        """Blend the masked faces of the generator output ``swapped`` with the generator input ``targets``
        (each float16 with its ``half_*``) by their parsing masks, one launch; the output is rewritten in
        place."""
        if tables.count:
            args = [np.uint64(swapped), np.int32(half_out), np.uint64(targets), np.int32(half_in)]
            args += [*_pointers(tables.masks, tables.faces), np.int32(size)]
            launch(stream, self.kernels["simswap_parsing_blend_kernel"], preprocess_grid(size, tables.count), args)

    def parser_input(self, stream: int, targets: int, half: bool, count: int, size: int, out: int) -> None:
        """The face parser's float32 input [count, 3, 512, 512] at ``out`` from the generator input ``targets``
        (float16 with ``half``): nearest resize to 512 and ImageNet normalisation, one launch."""
        if count:
            args = [np.uint64(targets), np.int32(half), np.int32(size), np.uint64(out)]
            launch(stream, self.kernels["simswap_parser_input_kernel"], preprocess_grid(PARSING_SIZE, count), args)

    def parser_labels(self, stream: int, logits: int, count: int, labels: int) -> None:
        """uint8 labels [count, 512, 512] at ``labels``: the argmax of the parser's float32 logits, one launch."""
        if count:
            grid = preprocess_grid(PARSING_SIZE, count)
            launch(stream, self.kernels["simswap_parser_labels_kernel"], grid, _pointers(logits, labels))

    def enhancer_input(
        self,
        stream: int,
        tables: EnhancerTables,
        faces: int,
        swap: tuple[int, int, bool],
        size: int,
        half: bool,
        out: int,
    ) -> None:
        """Every face's enhancer input into ``out`` (NCHW RGB [0, 1], ``size`` crops, float16 with ``half``), one
        launch: ``swap`` = (address, crop size, float16) of the generator's output, placed by the composed map,
        the frame around it."""
        if faces:
            t, (swapped, swap_size, half_in) = tables, swap
            args = _pointers(t.frames, t.pitches, t.widths, t.heights, t.frame_of_face, t.inverse, t.to_swap)
            args += [np.uint64(swapped), np.int32(half_in), np.int32(swap_size), np.int32(size), np.int32(half)]
            args += [np.uint64(out)]
            launch(stream, self.kernels["simswap_enhancer_input_kernel"], preprocess_grid(size, faces), args)

    def enhance_blend(
        self, stream: int, enhanced: int, half_out: bool, inputs: int, half_in: bool, blend: float, count: int
    ) -> None:
        """``blend``·enhanced + (1 − ``blend``)·input over ``count`` values, rewriting the enhancer's output
        ``enhanced`` in place (each float16 with its ``half_*``), one launch."""
        if count:
            args = [np.uint64(enhanced), np.int32(half_out), np.uint64(inputs), np.int32(half_in)]
            args += [np.float32(blend), np.int64(count)]
            grid = (_blocks(count, BLOCK[0] * BLOCK[1]), 1, 1)
            launch(stream, self.kernels["simswap_enhance_blend_kernel"], grid, args)


def fatbin_targets(path: str | Path) -> list[tuple[str, int]]:
    """(``"sass"`` or ``"ptx"``, compute capability as e.g. 86) of every image in a CUDA fatbin file."""
    import struct

    data = Path(path).read_bytes()
    magic, _, header_size, size = struct.unpack_from("<IHHQ", data, 0)
    if magic != 0xBA55ED50:
        raise EngineError(f"{path} is not a CUDA fatbin")
    targets, offset = [], header_size
    while offset < header_size + size:
        kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, offset)
        targets.append(("ptx" if kind == 1 else "sass", struct.unpack_from("<I", data, offset + 28)[0]))
        offset += entry_header + payload
    return targets
