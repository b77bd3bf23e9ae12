"""Fused CUDA preprocessing and paste-back: one launch per batch each.

* ``simswap_kernels.cuh``: the per-pixel math, shared by the device kernels and a host build.
* ``simswap_kernels.cu``: ``simswap_preprocess_kernel`` (bilinear inverse-affine sampling of every face of
  a batch, possibly from different frames, BGR→RGB, /255, NCHW float32 straight into the engine's input
  buffer) and ``simswap_pasteback_kernel`` (inverse warp restricted to each face's region, the official
  border mask, blend in order, truncate once).
* ``host.cpp``: the same math in loops, built by CMake (``simswap_kernels_host``) for the CPU tests.

The runtime loads the fatbin that CMake builds (``SIMSWAP_KERNELS_FATBIN`` or ``simswap_kernels.fatbin``
next to this file) with cuda.core; without one it compiles the ``.cu`` source with NVRTC at first use.
The border masks depend only on the geometry and are computed on the CPU (OpenCV, exactly the official
steps) while the generator runs; ``pack_pasteback`` lays them out for the kernel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simswap_trt.errors import EngineError
from simswap_trt.vision.align import invert_affine
from simswap_trt.vision.pasteback import border_mask, face_roi

SOURCE_DIR = Path(__file__).parent
KERNEL_NAMES = ("simswap_preprocess_kernel", "simswap_pasteback_kernel")


@dataclass(frozen=True)
class PasteBackBatch:
    """Everything the paste-back kernel reads besides frames and crops, for a batch of frames."""

    union_rois: np.ndarray  # int32 [frames, 4]: x0, y0, x1, y1 covering every face of the frame
    face_begin: np.ndarray  # int32 [frames + 1]: faces of frame f are face_begin[f]:face_begin[f + 1]
    forward: np.ndarray  # float32 [faces, 6]: frame→crop matrices
    rois: np.ndarray  # int32 [faces, 4]
    masks: np.ndarray  # float32, every face's border mask over its ROI, concatenated
    mask_offsets: np.ndarray  # int64 [faces]


def pack_pasteback(
    frame_shapes: Sequence[tuple[int, ...]], matrices: Sequence[Sequence[np.ndarray]], crop_size: int
) -> PasteBackBatch:
    """Regions, masks and matrices of ``matrices[f]`` (the faces of frame f, in paste order)."""
    union_rois, face_begin, forward, rois, masks, offsets = [], [0], [], [], [], []
    offset = 0
    for shape, faces in zip(frame_shapes, matrices, strict=True):
        placed = [(m, roi) for m in faces if (roi := face_roi(m, crop_size, shape))]
        for matrix, roi in placed:
            mask = border_mask(matrix, crop_size, roi)
            forward.append(np.asarray(matrix, np.float32).reshape(6))
            rois.append(roi)
            masks.append(mask.ravel())
            offsets.append(offset)
            offset += mask.size
        face_begin.append(face_begin[-1] + len(placed))
        if placed:
            r = np.array([roi for _, roi in placed])
            union_rois.append([r[:, 0].min(), r[:, 1].min(), r[:, 2].max(), r[:, 3].max()])
        else:
            union_rois.append([0, 0, 0, 0])
    return PasteBackBatch(
        union_rois=np.array(union_rois, np.int32).reshape(-1, 4),
        face_begin=np.array(face_begin, np.int32),
        forward=np.array(forward, np.float32).reshape(-1, 6),
        rois=np.array(rois, np.int32).reshape(-1, 4),
        masks=np.concatenate(masks).astype(np.float32) if masks else np.zeros(1, np.float32),
        mask_offsets=np.array(offsets, np.int64),
    )


def crop_to_frame_matrices(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """float32 [faces, 6] crop→frame matrices for the preprocessing kernel."""
    return np.array([invert_affine(np.asarray(m, np.float64)).reshape(6) for m in matrices], np.float32)


def load_device_kernels(device: int = 0):
    """The two kernels as cuda.core ``Kernel`` objects: from the CMake-built fatbin when present, else
    compiled from source with NVRTC for this GPU."""
    try:
        from cuda.core import Device, ObjectCode, Program, ProgramOptions
    except ImportError:
        raise EngineError("the CUDA kernels need cuda-python: pip install 'simswap-trt[trt]'") from None
    gpu = Device(device)
    gpu.set_current()
    fatbin = Path(os.environ.get("SIMSWAP_KERNELS_FATBIN", SOURCE_DIR / "simswap_kernels.fatbin"))
    if fatbin.is_file():
        module = ObjectCode.from_fatbin(str(fatbin))
    else:
        arch = "sm_" + "".join(str(v) for v in gpu.compute_capability)
        source = (SOURCE_DIR / "simswap_kernels.cu").read_text()
        options = ProgramOptions(arch=arch, include_path=[str(SOURCE_DIR)], fma=False)  # as nvcc -fmad=false
        program = Program(source, code_type="c++", options=options)
        module = program.compile("cubin")
    return {name: module.get_kernel(name) for name in KERNEL_NAMES}


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
