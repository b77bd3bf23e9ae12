"""GPU check for a short lease: every GPU line that runs without TensorRT, in a few minutes.

    python -m benchmarks.gpu_check [--faces 64] [--stream-batches 8] [--repeats 20]

Needs an NVIDIA GPU with a CUDA 13 driver, cuda-python (cuda.bindings, cuda.core) and torch with CUDA;
CuPy is recorded when present. TensorRT is not needed; where it is installed, the ``-m gpu`` test suite
runs as well. Checks, in order:

1. kernels: the CMake fatbin (when cmake and nvcc exist) and NVRTC, against the host build of the same
   per-pixel code (bit-exact) and against the CPU pipeline (within 1 level), for 224 and 512 crops;
2. the cuda layer: device and pinned buffers, rectangle downloads, two streams ordered by an event, event
   timing, CUDA graph capture and replay, the out-of-memory error;
3. the device path of FaceSwapper (DeviceStages) with a torch stand-in for the TensorRT generator
   (an elementwise function of the crop and latent, run on the device buffers it is given) against the
   CPU path with the same function, on frames with several faces, faces at and beyond the border;
4. a frame-stream loop (``swap_stream``, two batches in flight) on 1080p frames;
5. kernel throughput: preprocess and paste-back of ``--faces`` faces from 1080p frames (target: each
   <= 1 ms on an H100/H200-class GPU);
6. the detector-input kernel (letterbox + normalisation, CenterFace and SCRFD, FP32 and FP16) from the
   fatbin and NVRTC against the host build (bit-exact) and the CPU detector's input (within 1 level), and
   its time for 8 1080p frames onto the 640 canvas;
7. detection on the device (``DeviceDetector``) with a torch stand-in for the detector plan (an average
   pool of the canvas, run on the device buffers it is given) against the same function of the CPU
   detector's input, and its time for 8 1080p frames.
8. devices: every visible device listed, a bad id refused naming them, with several GPUs the device
   path on the last one (``FaceSwapper(device=N)``);
9. the parsing-mask blend kernel vs the host build (bit-exact) and the device path with a face parser vs
   the CPU path;
10. CUDA graphs of the whole per-batch sequence (``cuda_graphs=True``, a CUDA-kernel stand-in generator
    that can be captured) vs the eager sequence: equal outputs, a graph per batch size, time per batch;
11. frames uploaded once: detection on the device (the stand-in detector plan) then the swap of the same
    frames (two batches in flight) finds every frame on the device, equals the CPU path within 1 level, and
    detect + swap of 1080p batches is timed against the same with the frames uploaded again for the swap.

Writes benchmarks/results/gpu-check.json (device, driver, versions, figures, each check's outcome). Without
a usable GPU it says why and exits 2; a failed check exits 1.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from simswap_trt import cuda
from simswap_trt.bundle import contract
from simswap_trt.errors import SimswapError
from simswap_trt.kernels import (
    DeviceKernels,
    crop_to_frame_matrices,
    frame_tables,
    load_device_kernels,
    pack_pasteback,
)
from simswap_trt.preprocess import crops_to_tensor, tensor_to_bgr
from simswap_trt.vision.align import alignment_matrix, templates
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.warp import warp_faces

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "gpu-check.json"


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=positive, default=64, help="faces per batch for kernel throughput (64)")
    parser.add_argument("--stream-batches", type=positive, default=8, help="batches in the frame-stream loop (8)")
    parser.add_argument("--repeats", type=positive, default=20, help="timed repeats per kernel (20)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    return parser.parse_args(argv)


# -- the stand-in generator: the same elementwise function on the CPU (NumPy) and on the device (torch) ------


def standin_numpy(target: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """What the stand-in generator computes: a smooth, crop- and latent-dependent change of the crop."""
    shift = latent.mean(axis=1, dtype=np.float32)[:, None, None, None]
    return np.clip(1.0 - target * np.float32(0.8) + shift, 0.0, 1.0).astype(np.float32)


def standin_torch(target, latent):
    import torch

    shift = latent.mean(dim=1)[:, None, None, None]
    return torch.clamp(1.0 - target * 0.8 + shift, 0.0, 1.0)


class StandinEngine:
    """A TensorRT-shaped generator engine (``execute_device`` on device addresses, ordered on the caller's
    stream) computing ``standin_torch`` with torch on the device buffers it is given, without copies."""

    backend = "torch stand-in"

    def __init__(self, crop_size: int, max_batch: int = 16) -> None:
        self.inputs, self.outputs = contract("generator", crop_size)
        self.crop_size, self.min_batch, self.max_batch = crop_size, 1, max_batch
        self.calls = 0

    def execute_device(self, addresses, batch: int, stream) -> None:
        import torch

        size = self.crop_size

        def tensor(address: int, shape: tuple[int, ...]):
            view = _ArrayInterface(address, shape)
            return torch.as_tensor(view, device="cuda")

        with torch.cuda.stream(torch.cuda.ExternalStream(stream.handle)):  # in order on the caller's stream
            target = tensor(addresses["target"], (batch, 3, size, size))
            latent = tensor(addresses["latent"], (batch, 512))
            tensor(addresses["swapped"], (batch, 3, size, size)).copy_(standin_torch(target, latent))
        self.calls += 1

    def run(self, feeds):
        return {"swapped": standin_numpy(feeds["target"], feeds["latent"])}

    def close(self) -> None:
        pass


class _ArrayInterface:
    """float32 device memory at ``address`` described by ``__cuda_array_interface__`` (for torch / CuPy)."""

    def __init__(self, address: int, shape: tuple[int, ...]) -> None:
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": "<f4",
            "data": (address, False),
            "strides": None,
            "version": 3,
            "stream": None,
        }


# -- scenes --------------------------------------------------------------------------------------------------


def face_landmarks(center, size: float, angle: float, crop: int, alignment: str = "multipose") -> np.ndarray:
    template = templates(alignment, crop)[-1 if alignment == "ffhq" else 2]
    a = np.deg2rad(angle)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return ((template - crop / 2) * (size / crop) @ rotation.T + np.asarray(center, float)).astype(np.float32)


def smooth_frame(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 100 * np.sin(x / 23 + c) * np.cos(y / 31 - c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


# -- checks --------------------------------------------------------------------------------------------------


class Report:
    """Outcomes and figures of the checks, printed as they come."""

    def __init__(self) -> None:
        self.checks: dict[str, dict] = {}
        self.figures: dict[str, float] = {}

    def run(self, name: str, check: Callable[[], dict | None]) -> None:
        start = time.perf_counter()
        try:
            details = check() or {}
            outcome = {"ok": True, **details}
        except Exception as exc:  # a check that fails is reported, and the others still run
            outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        outcome["seconds"] = round(time.perf_counter() - start, 2)
        self.checks[name] = outcome
        print(f"{'ok  ' if outcome['ok'] else 'FAIL'} {name} ({outcome['seconds']} s) {outcome.get('error', '')}")

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks.values())


def build_kernels(folder: Path) -> dict:
    """CMake build of the host library and, with nvcc, the fatbin."""
    if not shutil.which("cmake"):
        return {"skipped": "cmake is not installed: no host build to compare with"}
    for step in (["cmake", "-S", str(ROOT), "-B", str(folder)], ["cmake", "--build", str(folder), "-j8"]):
        subprocess.run(step, check=True, capture_output=True, text=True)
    return {"fatbin": (folder / "simswap_kernels.fatbin").is_file()}


def host_library(folder: Path):
    path = folder / "libsimswap_kernels_host.so"
    if not path.is_file():
        return None
    lib = ctypes.CDLL(str(path))
    lib.simswap_preprocess_host.restype = lib.simswap_pasteback_host.restype = None
    return lib


def _pointers(arrays) -> ctypes.Array:
    return (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])


def _ptr(array: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(array.ctypes.data)


def check_kernels(kernels: dict, host, size: int) -> dict:
    """Both kernels on the device vs the host build (bit-exact) and the CPU pipeline (1 level)."""
    device = DeviceKernels(kernels)
    rng = np.random.default_rng(size)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((481, 643), (333, 517), (300, 401))]
    faces = [(0, (320, 240), 180, 0), (1, (250, 170), 150, 90), (0, (20, 10), 160, 17), (2, (395, 296), 120, -35)]
    matrices = [alignment_matrix(face_landmarks(c, s, a, size), "multipose", size) for _, c, s, a in faces]
    frame_of_face = np.array([f for f, *_ in faces], np.int32)
    stream = cuda.Stream()
    on_device = [cuda.DeviceBuffer.from_array(f) for f in frames]
    tables = frame_tables(frames) + [frame_of_face, crop_to_frame_matrices(matrices)]
    tables[0][:] = [b.ptr for b in on_device]
    table_buffers = [cuda.DeviceBuffer.from_array(t) for t in tables]
    out = cuda.DeviceBuffer(len(faces) * 3 * size * size * 4)
    device.preprocess(stream.handle, *[b.ptr for b in table_buffers], len(faces), size, False, out.ptr)
    stream.synchronize()
    got = out.to_array(np.empty((len(faces), 3, size, size), np.float32))
    cpu = crops_to_tensor(warp_faces(frames, list(zip(frame_of_face.tolist(), matrices, strict=True)), size), size)
    details = {"preprocess_max_levels_vs_cpu": float(np.abs(got - cpu).max() * 255)}
    if details["preprocess_max_levels_vs_cpu"] > 1.001:
        raise AssertionError(f"preprocess differs from the CPU crop by {details['preprocess_max_levels_vs_cpu']}")
    if host is not None:
        expected = np.zeros_like(got)
        host.simswap_preprocess_host(
            _pointers(frames), *[_ptr(t) for t in tables[1:]], len(faces), size, 0, _ptr(expected)
        )
        if not np.array_equal(got, expected):
            raise AssertionError(f"preprocess is not bit-exact with the host build: {np.abs(got - expected).max()}")
        details["preprocess_bit_exact"] = True

    generator_out = rng.random((len(faces), 3, size, size), dtype=np.float32)
    order = np.argsort(frame_of_face, kind="stable")
    per_frame = [[matrices[i] for i in order if frame_of_face[i] == f] for f in range(len(frames))]
    batch = pack_pasteback([f.shape for f in frames], per_frame, size)
    crops = cuda.DeviceBuffer.from_array(generator_out[order])
    crop_table = np.array([crops.ptr + i * generator_out[0].nbytes for i in range(len(faces))], np.uint64)
    paste_tables = [batch.union_rois, batch.face_begin, crop_table, batch.forward, batch.rois, batch.masks]
    paste_buffers = [cuda.DeviceBuffer.from_array(t) for t in (*paste_tables, batch.mask_offsets)]
    device.pasteback(
        stream.handle,
        table_buffers[0].ptr,
        table_buffers[1].ptr,
        batch.union_rois,
        *[b.ptr for b in paste_buffers[:3]],
        size,
        False,
        *[b.ptr for b in paste_buffers[3:]],
    )
    stream.synchronize()
    swaps = tensor_to_bgr(generator_out)
    worst = 0
    for f, frame in enumerate(frames):
        got_frame = on_device[f].to_array(frame)
        mine = [i for i in order if frame_of_face[i] == f]
        cpu_frame = paste_back(frame, [(swaps[i], matrices[i]) for i in mine])
        worst = max(worst, int(np.abs(got_frame.astype(int) - cpu_frame).max()))
    details["pasteback_max_levels_vs_cpu"] = worst
    if worst > 1:
        raise AssertionError(f"paste-back differs from the CPU paste-back by {worst} levels")
    for buffer in (*on_device, *table_buffers, out, crops, *paste_buffers):
        buffer.free()
    stream.free()
    return details


def check_cuda_layer() -> dict:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (301, 433, 3), dtype=np.uint8)
    pinned = cuda.PinnedBuffer(data.shape, np.uint8)
    pinned.array[...] = data
    device = cuda.DeviceBuffer(data.nbytes)
    first, second = cuda.Stream(), cuda.Stream()
    uploaded = cuda.Event(timing=False)
    start, end = cuda.Event(), cuda.Event()
    start.record(first)
    device.upload(pinned.array, first)
    uploaded.record(first)
    second.wait(uploaded)  # the download on the other stream starts after the upload
    region = cuda.PinnedBuffer((100, 57 * 3), np.uint8)
    device.download_rows(region.array, second, offset=40 * data.strides[0] + 30 * 3, pitch=data.strides[0])
    end.record(second)
    end.synchronize()
    if not np.array_equal(region.array.reshape(100, 57, 3), data[40:140, 30:87]):
        raise AssertionError("a rectangle downloaded on a second stream after an event is wrong")
    elapsed = end.elapsed_ms(start)
    if not elapsed >= 0:
        raise AssertionError(f"event timing gave {elapsed}")
    try:
        cuda.DeviceBuffer(1 << 52)
        raise AssertionError("a 4 PiB allocation did not fail")
    except cuda.CudaOutOfMemory:
        cuda.runtime().cudaGetLastError()  # reset the error state before the next checks

    # a captured graph replays an upload + download
    cudart = cuda.runtime()
    back = cuda.PinnedBuffer(data.shape, np.uint8)
    cuda.cuda_call(
        "cudaStreamBeginCapture",
        cudart.cudaStreamBeginCapture(first.handle, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
    )
    device.download(back.array, first)
    graph = cuda.cuda_call("cudaStreamEndCapture", cudart.cudaStreamEndCapture(first.handle))
    executable = cuda.cuda_call("cudaGraphInstantiate", cudart.cudaGraphInstantiate(graph, 0))
    cuda.cuda_call("cudaGraphLaunch", cudart.cudaGraphLaunch(executable, first.handle))
    first.synchronize()
    cuda.cuda_call("cudaGraphExecDestroy", cudart.cudaGraphExecDestroy(executable))
    cuda.cuda_call("cudaGraphDestroy", cudart.cudaGraphDestroy(graph))
    if not np.array_equal(back.array, data):
        raise AssertionError("the replayed graph did not copy the buffer back")
    for owner in (pinned, device, region, back, uploaded, start, end, first, second):
        owner.free()
    return {"copy_and_download_ms": round(elapsed, 4)}


def swappers(crop_size: int, folder: Path, max_batch: int = 16):
    """A host-path and a device-path FaceSwapper over an untrained bundle with the stand-in generator."""
    from simswap_build.architectures import ArcFaceConfig, GeneratorConfig
    from simswap_build.convert import untrained_bundle
    from simswap_trt import FaceSwapper
    from simswap_trt.bundle import Bundle
    from simswap_trt.engines import OnnxRuntimeEngine

    arch = "224" if crop_size == 224 else "512"
    root = folder / f"bundle-{crop_size}"
    small = GeneratorConfig.from_name(arch, ngf=8, n_blocks=1), ArcFaceConfig(layers=(1, 1, 1, 1), width=16)
    bundle = Bundle.load(root) if root.is_dir() else untrained_bundle(root, arch, None, 0, *small)  # graphs unused
    arcface = OnnxRuntimeEngine(bundle.path_of("arcface"))
    latent = np.random.default_rng(1).normal(size=512).astype(np.float32)
    latent /= np.linalg.norm(latent)
    host = FaceSwapper(bundle, StandinEngine(crop_size, max_batch), arcface, device_path=False)
    device = FaceSwapper(bundle, StandinEngine(crop_size, max_batch), arcface, device_path=True)
    host.source_latent = device.source_latent = latent
    return host, device


def check_device_path(folder: Path, crop_size: int) -> dict:
    from simswap_trt.swapper import FrameBatch
    from simswap_trt.vision.detect import Detection

    host, device = swappers(crop_size, folder, max_batch=3)
    alignment = host.bundle.alignment
    rng = np.random.default_rng(2)

    def face(center, size, angle):
        landmarks = face_landmarks(center, size, angle, crop_size, alignment)
        return Detection(np.r_[landmarks.min(0), landmarks.max(0)].astype(np.float32), 0.9, landmarks)

    first_faces = [  # a face fully outside between two inside, a face at the border, a frame without faces
        [face((100, 120), 120, 0), face((5000, 90), 120, 0), face((330, 160), 100, 12)],
        [face((12, 20), 110, 90)],
        [],
    ]
    batches = [
        FrameBatch(
            [smooth_frame(rng, 301, 433), smooth_frame(rng, 257, 389), smooth_frame(rng, 120, 170)], first_faces
        ),
        FrameBatch([smooth_frame(rng, 211, 307)], [[face((150, 100), 140, 180), face((170, 120), 100, 5)]]),
    ]
    worst = 0
    for batch, results in zip(batches, device.swap_stream(batches), strict=True):
        for want, got in zip(host.swap_faces(batch.images, batch.faces), results, strict=True):
            worst = max(worst, int(np.abs(got.image.astype(int) - want.image).max()))
    device.close()
    host.close()
    if worst > 1:
        raise AssertionError(f"the device path differs from the CPU path by {worst} levels")
    return {"max_levels_vs_cpu": worst}


def check_frame_stream(folder: Path, batches: int) -> dict:
    """``swap_stream`` over 1080p frames, 4 frames of 2 faces per batch, two batches in flight."""
    from simswap_trt.swapper import FrameBatch
    from simswap_trt.vision.detect import Detection

    host, device = swappers(224, folder)
    rng = np.random.default_rng(3)
    frames = [smooth_frame(rng, 1080, 1920) for _ in range(4)]
    faces = [
        [
            Detection(np.zeros(4, np.float32), 0.9, face_landmarks((600 + 40 * k, 500), 230, 5, 224)),
            Detection(np.zeros(4, np.float32), 0.9, face_landmarks((1300 - 40 * k, 560), 200, -8, 224)),
        ]
        for k in range(4)
    ]
    stream = [FrameBatch(frames, faces) for _ in range(batches)]
    first = next(iter(device.swap_stream(stream[:1])))  # warm-up, and the output against the CPU path
    worst = max(
        int(np.abs(g.image.astype(int) - w.image).max())
        for g, w in zip(first, host.swap_faces(frames, faces), strict=True)
    )
    start = time.perf_counter()
    for _ in device.swap_stream(stream):
        pass
    seconds = time.perf_counter() - start
    device.close()
    host.close()
    if worst > 1:
        raise AssertionError(f"the streamed output differs from the CPU path by {worst} levels")
    return {"frames_per_s": round(batches * len(frames) / seconds, 1), "max_levels_vs_cpu": worst}


def event_timed(stream: cuda.Stream, run: Callable[[], None], repeats: int) -> float:
    """Milliseconds per call of ``run`` (after one warm-up call) between two timing events on ``stream``."""
    begin, end = cuda.Event(), cuda.Event()
    run()
    begin.record(stream)
    for _ in range(repeats):
        run()
    end.record(stream)
    end.synchronize()
    milliseconds = end.elapsed_ms(begin) / repeats
    begin.free()
    end.free()
    return milliseconds


def check_throughput(kernels: dict, faces: int, repeats: int) -> dict:
    """Preprocess and paste-back of ``faces`` faces from 1080p frames (one face per frame), event-timed."""
    device = DeviceKernels(kernels)
    rng = np.random.default_rng(4)
    size, frame = 224, rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    matrices = [alignment_matrix(face_landmarks((900 + rng.normal(0, 20), 560), 230, 3, size), "multipose", size)]
    matrices *= faces
    frames = [cuda.DeviceBuffer.from_array(frame) for _ in range(faces)]
    tables = frame_tables([frame] * faces) + [np.arange(faces, dtype=np.int32), crop_to_frame_matrices(matrices)]
    tables[0][:] = [b.ptr for b in frames]
    table_buffers = [cuda.DeviceBuffer.from_array(t) for t in tables]
    out = cuda.DeviceBuffer(faces * 3 * size * size * 4)
    batch = pack_pasteback([frame.shape] * faces, [[m] for m in matrices], size)
    crop_table = np.array([out.ptr + i * 3 * size * size * 4 for i in range(faces)], np.uint64)
    paste = [
        cuda.DeviceBuffer.from_array(t)
        for t in (batch.union_rois, batch.face_begin, crop_table, batch.forward, batch.rois, batch.masks)
    ] + [cuda.DeviceBuffer.from_array(batch.mask_offsets)]
    stream = cuda.Stream()
    preprocess_ms = event_timed(
        stream,
        lambda: device.preprocess(stream.handle, *[b.ptr for b in table_buffers], faces, size, False, out.ptr),
        repeats,
    )
    pasteback_ms = event_timed(
        stream,
        lambda: device.pasteback(
            stream.handle,
            table_buffers[0].ptr,
            table_buffers[1].ptr,
            batch.union_rois,
            *[b.ptr for b in paste[:3]],
            size,
            False,
            *[b.ptr for b in paste[3:]],
        ),
        repeats,
    )
    for buffer in (*frames, *table_buffers, out, *paste):
        buffer.free()
    stream.free()
    return {"faces": faces, "preprocess_ms": round(preprocess_ms, 4), "pasteback_ms": round(pasteback_ms, 4)}


# -- detection on the device ----------------------------------------------------------------------------------


def letterbox_on_device(kernels: dict, frames: list[np.ndarray], canvas: int, normalisation, half: bool):
    """The letterbox kernel on ``frames``: the output (float32, or float16 with ``half``) [N, 3, C, C]."""
    from simswap_trt.kernels import letterbox, letterbox_tables

    on_device = [cuda.DeviceBuffer.from_array(f) for f in frames]
    tables = frame_tables(frames) + letterbox_tables(frames, canvas)
    tables[0][:] = [b.ptr for b in on_device]
    buffers = [cuda.DeviceBuffer.from_array(t) for t in tables]
    dtype = np.float16 if half else np.float32
    out = cuda.DeviceBuffer(len(frames) * 3 * canvas * canvas * np.dtype(dtype).itemsize)
    stream = cuda.Stream()
    device = DeviceKernels(kernels)
    letterbox(device, stream.handle, *[b.ptr for b in buffers], len(frames), canvas, normalisation, half, out.ptr)
    stream.synchronize()
    result = out.to_array(np.empty((len(frames), 3, canvas, canvas), dtype))
    for buffer in (*on_device, *buffers, out):
        buffer.free()
    stream.free()
    return result, tables


def check_letterbox(kernels: dict, host) -> dict:
    """The detector-input kernel vs the host build (bit-exact) and the CPU detector's input (OpenCV's
    fixed-point resize: within 1 level), for both detectors, FP32 and FP16, odd frame sizes."""
    from simswap_trt.vision.detect import CenterFace, Scrfd, letterbox, normalise

    rng = np.random.default_rng(5)
    frames = [smooth_frame(rng, h, w) for h, w in ((301, 433), (433, 301), (97, 61), (1080, 1921))]
    canvas, details = 160, {}
    for kind, normalisation in (("centerface", CenterFace.normalisation), ("scrfd", Scrfd.normalisation)):
        cpu = normalise(letterbox(frames, canvas)[0], normalisation)
        for half in (False, True):
            got, tables = letterbox_on_device(kernels, frames, canvas, normalisation, half)
            levels = float(np.abs(got.astype(np.float32) - cpu).max() / normalisation[2])
            details[f"{kind}_{'fp16' if half else 'fp32'}_max_levels_vs_cpu"] = round(levels, 4)
            if levels > (1.07 if half else 1.001):  # FP16 rounds values of 128..255 by up to 1/16 level
                raise AssertionError(f"{kind} letterbox differs from the CPU detector input by {levels} levels")
            if host is not None:
                expected = np.zeros_like(got)
                host.simswap_letterbox_host.restype = None
                swap_rb, mean, scale = normalisation
                host.simswap_letterbox_host(
                    _pointers(frames),
                    *[_ptr(t) for t in tables[1:]],
                    len(frames),
                    canvas,
                    int(swap_rb),
                    ctypes.c_float(mean),
                    ctypes.c_float(scale),
                    int(half),
                    _ptr(expected),
                )
                if not np.array_equal(got, expected):
                    raise AssertionError(f"{kind} letterbox is not bit-exact with the host build")
                details["bit_exact_with_host_build"] = True
    return details


def check_letterbox_throughput(kernels: dict, repeats: int, count: int = 8, canvas: int = 640) -> dict:
    """The letterbox kernel for ``count`` 1080p frames onto the detector canvas, event-timed."""
    from simswap_trt.kernels import letterbox, letterbox_tables
    from simswap_trt.vision.detect import CenterFace

    frame = np.random.default_rng(6).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    frames = [cuda.DeviceBuffer.from_array(frame) for _ in range(count)]
    tables = frame_tables([frame] * count) + letterbox_tables([frame] * count, canvas)
    tables[0][:] = [b.ptr for b in frames]
    buffers = [cuda.DeviceBuffer.from_array(t) for t in tables]
    out = cuda.DeviceBuffer(count * 3 * canvas * canvas * 4)
    stream, device = cuda.Stream(), DeviceKernels(kernels)

    def run() -> None:
        pointers = [b.ptr for b in buffers]
        letterbox(device, stream.handle, *pointers, count, canvas, CenterFace.normalisation, False, out.ptr)

    milliseconds = event_timed(stream, run, repeats)
    for buffer in (*frames, *buffers, out):
        buffer.free()
    stream.free()
    return {"frames": count, "canvas": canvas, "letterbox_ms": round(milliseconds, 4)}


def detector_standin_numpy(blob: np.ndarray) -> list[np.ndarray]:
    """What the stand-in detector computes from its input: CenterFace-shaped outputs whose heatmap is the
    4x4 average of the first input channel / 255, the other maps zero."""
    n, _, c, _ = blob.shape
    heat = blob[:, :1].reshape(n, 1, c // 4, 4, c // 4, 4).mean(axis=(3, 5), dtype=np.float64) / 255
    zeros = [np.zeros((n, k, c // 4, c // 4), np.float32) for k in (2, 2, 10)]
    return [heat.astype(np.float32), *zeros]


class StandinDetectorEngine:
    """A TensorRT-shaped detector engine computing ``detector_standin_numpy`` with torch on the device
    buffers it is given (``execute_device``, ordered on the caller's stream), without copies."""

    backend = "torch stand-in"

    def __init__(self, canvas: int, max_batch: int = 4) -> None:
        from simswap_trt.schema import TensorSpec

        maps = canvas // 4
        self.canvas, self.min_batch, self.max_batch = canvas, 1, max_batch
        self.inputs = (TensorSpec("input.1", "float32", ("batch", 3, canvas, canvas)),)
        self.outputs = tuple(
            TensorSpec(name, "float32", ("batch", k, maps, maps))
            for name, k in (("537", 1), ("538", 2), ("539", 2), ("540", 10))
        )
        self.calls = 0

    def execute_device(self, addresses, batch: int, stream) -> None:
        import torch

        def tensor(name: str, shape: tuple[int, ...]):
            return torch.as_tensor(_ArrayInterface(addresses[name], shape), device="cuda")

        c, m = self.canvas, self.canvas // 4
        with torch.cuda.stream(torch.cuda.ExternalStream(stream.handle)):
            blob = tensor("input.1", (batch, 3, c, c))
            pooled = torch.nn.functional.avg_pool2d(blob[:, :1].double(), 4) / 255
            tensor("537", (batch, 1, m, m)).copy_(pooled.float())
            for spec in self.outputs[1:]:
                tensor(spec.name, (batch, spec.shape[1], m, m)).zero_()
        self.calls += 1

    def close(self) -> None:
        pass


class RecordingDecoder:
    """A CenterFace-like decoder that keeps the detector outputs it is given (and finds no face)."""

    def __init__(self, canvas: int) -> None:
        from simswap_trt.vision.detect import CenterFace

        self.input_size, self.normalisation, self.engine = canvas, CenterFace.normalisation, StandinDetectorEngine(32)
        self.outputs: list[list[np.ndarray]] = []

    def decode(self, outputs, scales, shapes):
        self.outputs.append(outputs)
        return [[] for _ in shapes]


def check_device_detection(kernels: dict, canvas: int = 640) -> dict:
    """``DeviceDetector`` (upload, letterbox kernel, stand-in plan on its buffers, output download) vs the
    stand-in's function of the CPU detector's input: the heatmap within 1/255 (each canvas level within 1)."""
    from simswap_trt.device_detect import DeviceDetector
    from simswap_trt.vision.detect import letterbox, normalise

    rng = np.random.default_rng(7)
    frames = [smooth_frame(rng, h, w) for h, w in ((301, 433), (433, 301), (97, 61), (720, 1281), (211, 157))]
    decoder = RecordingDecoder(canvas)
    engine = StandinDetectorEngine(canvas, max_batch=4)
    detector = DeviceDetector(decoder, engine, DeviceKernels(kernels))
    try:
        detector.detect_batch(frames)  # two calls of the plan: 4 + 1 frames
        got = np.concatenate([outputs[0] for outputs in decoder.outputs])
        expected = detector_standin_numpy(normalise(letterbox(frames, canvas)[0], decoder.normalisation))[0]
        worst = float(np.abs(got - expected).max() * 255)
        if worst > 1.001 or engine.calls != 2:
            raise AssertionError(f"device detection's heatmap differs by {worst} levels ({engine.calls} plan calls)")
        big = [smooth_frame(rng, 1080, 1920) for _ in range(8)]
        detector.detect_batch(big)  # warm-up
        start = time.perf_counter()
        detector.detect_batch(big, batch_size=4)
        milliseconds = (time.perf_counter() - start) * 1e3
    finally:
        detector.close()
    return {"max_heatmap_levels_vs_cpu": round(worst, 4), "detect_8_1080p_frames_ms": round(milliseconds, 2)}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name, module in (
        ("cuda-bindings", "cuda.bindings"),
        ("cuda-core", "cuda.core"),
        ("torch", "torch"),
        ("cupy", "cupy"),
        ("tensorrt", "tensorrt"),
    ):
        try:
            found[name] = __import__(module, fromlist=["__version__"]).__version__
        except Exception:  # not installed, or broken: recorded as absent
            found[name] = None
    nvcc = shutil.which("nvcc")
    if nvcc:
        found["nvcc"] = (
            subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().split("\n")[-1]
        )
    return found


def usable_gpu() -> tuple[cuda.DeviceInfo | None, str]:
    """The GPU's properties, or None and why the check cannot run."""
    try:
        info = cuda.device_info()
    except SimswapError as exc:
        return None, f"no usable CUDA device: {exc}"
    try:
        import torch

        if not torch.cuda.is_available():
            return None, "torch has no CUDA support here (the device-path check runs its stand-in engine on torch)"
    except ImportError:
        return None, "torch is not installed (the device-path check runs its stand-in engine on torch)"
    return info, ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info, reason = usable_gpu()
    if info is None:
        print(f"skipped: {reason}")
        return 2
    print(f"{info.name} ({info.sm}), driver {info.driver_version}, runtime {info.runtime_version}")
    report = Report()
    with tempfile.TemporaryDirectory(prefix="simswap-gpu-check-") as scratch:
        folder = Path(scratch)
        report.run("build kernels (CMake)", lambda: build_kernels(folder / "build"))
        host = host_library(folder / "build")
        fatbin = folder / "build" / "simswap_kernels.fatbin"
        sources = [("fatbin", fatbin)] if fatbin.is_file() else []
        sources.append(("nvrtc", Path("/nonexistent")))
        loaded = {}
        for name, path in sources:

            def load(path=path, name=name):
                os.environ["SIMSWAP_KERNELS_FATBIN"] = str(path)  # a missing file means: compile with NVRTC
                loaded[name] = load_device_kernels()

            report.run(f"load kernels ({name})", load)
            for size in (224, 512):
                if name in loaded:
                    report.run(f"kernels {name} {size}", lambda n=name, s=size: check_kernels(loaded[n], host, s))
        report.run("cuda layer", check_cuda_layer)
        for size in (224, 512):
            report.run(f"device path {size}", lambda s=size: check_device_path(folder, s))
        report.run("frame stream", lambda: check_frame_stream(folder, args.stream_batches))
        kernels = next(iter(loaded.values()), None)
        if kernels is not None:
            report.run("kernel throughput", lambda: check_throughput(kernels, args.faces, args.repeats))
        for name, loaded_kernels in loaded.items():
            report.run(f"letterbox {name}", lambda k=loaded_kernels: check_letterbox(k, host))
        if kernels is not None:
            report.run("letterbox throughput", lambda: check_letterbox_throughput(kernels, args.repeats))
            report.run("device detection", lambda: check_device_detection(kernels))
        report.run("devices", lambda: check_devices(folder))
        if kernels is not None:
            report.run("parsing blend", lambda: check_parsing_blend(kernels, host, folder))
        report.run("graphs of the whole sequence", lambda: check_graphs(folder, args.stream_batches))
        report.run("frames uploaded once", lambda: check_resident_frames(folder, args.stream_batches))
        if versions()["tensorrt"]:
            report.run("pytest -m gpu (TensorRT)", _gpu_suite)
    result = {
        "benchmark": "gpu-check",
        "device": info.name,
        "compute_capability": list(info.compute_capability),
        "driver_version": info.driver_version,
        "runtime_version": info.runtime_version,
        "versions": versions(),
        "ok": report.ok,
        "checks": report.checks,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_name(args.output.name + ".tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    temporary.replace(args.output)
    print(f"{'all checks passed' if report.ok else 'SOME CHECKS FAILED'}; results in {args.output}")
    return 0 if report.ok else 1


def _gpu_suite() -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "gpu")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    if result.returncode:
        raise AssertionError(result.stdout[-2000:])
    return {"summary": result.stdout.strip().splitlines()[-1]}


if __name__ == "__main__":
    sys.exit(main())


# -- device choice, the parsing-mask blend, graphs of the whole per-batch sequence -------------------------

STANDIN_KERNEL = r"""
extern "C" __global__ void standin_generator(const float* target, const float* latent, float* out, int size) {
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y, n = blockIdx.z;
    if (x >= size || y >= size) return;
    float sum = 0.0f;
    for (int i = 0; i < 512; ++i) sum += latent[n * 512 + i];
    for (int c = 0; c < 3; ++c) {
        long long i = ((long long)(n * 3 + c) * size + y) * size + x;
        out[i] = fminf(fmaxf(1.0f - target[i] * 0.8f + sum / 512.0f, 0.0f), 1.0f);
    }
}
"""


def standin_kernel(device: int | None = None):
    """``standin_numpy`` as a CUDA kernel (NVRTC) on ``device``: unlike torch, it can be captured in a graph."""
    from cuda.core import Device, Program, ProgramOptions

    gpu = Device(device)
    gpu.set_current()
    options = ProgramOptions(arch="sm_" + "".join(str(v) for v in gpu.compute_capability))
    return Program(STANDIN_KERNEL, code_type="c++", options=options).compile("cubin").get_kernel("standin_generator")


class KernelStandinEngine(StandinEngine):
    """The stand-in generator as one kernel launch on the caller's stream, with ``device_context`` (what
    the device stages capture in a CUDA graph with ``cuda_graphs=True``)."""

    backend = "CUDA-kernel stand-in"

    def __init__(self, crop_size: int, max_batch: int = 16, kernel=None, device: int | None = None) -> None:
        super().__init__(crop_size, max_batch)
        self.kernel, self.device = kernel, device

    def execute_device(self, addresses, batch: int, stream) -> None:
        self.launch(addresses, batch, stream)
        self.calls += 1

    def launch(self, addresses, batch: int, stream) -> None:
        from simswap_trt.kernels import launch, preprocess_grid

        pointers = [np.uint64(addresses[name]) for name in ("target", "latent", "swapped")]
        grid = preprocess_grid(self.crop_size, batch)
        launch(stream.handle, self.kernel, grid, [*pointers, np.int32(self.crop_size)])

    def device_context(self) -> StandinContext:
        return StandinContext(self)


class StandinContext:
    """``TensorRTEngine.device_context``'s interface for the kernel stand-in."""

    def __init__(self, engine: KernelStandinEngine) -> None:
        self.engine, self.batch = engine, -1

    def enqueue(self, addresses, batch: int, stream) -> bool:
        changed, self.batch = batch != self.batch, batch
        self.engine.launch(addresses, batch, stream)
        return changed

    def free(self) -> None:
        pass


def content_parser(path: Path) -> Path:
    """A face-parser ONNX whose labels follow the crop's content (a 1x1 convolution): skin (1) where the
    normalised red channel is above 0, inner mouth (11) where green is above 0.8 and red is not, else 0."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((19, 3, 1, 1), np.float32)
    bias = np.full(19, -100.0, np.float32)
    weight[1, 0], bias[1] = 1.0, 0.0
    weight[11, 1], bias[11] = 1.0, -0.8
    bias[0] = 0.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["logits"])],
        "content_parser",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 512, 512])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def kernel_swappers(folder: Path, crop_size: int = 224, max_batch: int = 16, **device_options):
    """A host-path FaceSwapper and a device-path one (``device_options``: ``device``, ``parser``,
    ``cuda_graphs``) with the kernel stand-in generator, over ``swappers``' untrained bundle."""
    from simswap_trt import FaceSwapper

    base, torch_device = swappers(crop_size, folder, max_batch)
    for swapper in (base, torch_device):
        swapper.close()
    bundle, arcface, parser, on = base.bundle, base.arcface, device_options.get("parser"), device_options.get("device")
    host = FaceSwapper(bundle, StandinEngine(crop_size, max_batch), arcface, parser=parser, device_path=False)
    engine = KernelStandinEngine(crop_size, max_batch, standin_kernel(on), on)
    device = FaceSwapper(bundle, engine, arcface, device_path=True, **device_options)
    host.source_latent = device.source_latent = base.source_latent
    return host, device


def video_batches(count: int, faces_per_frame: int = 2, frames: int = 4, seed: int = 3) -> list:
    """``count`` batches of 1080p frames with ``faces_per_frame`` faces drifting a few pixels per batch."""
    from simswap_trt.swapper import FrameBatch
    from simswap_trt.vision.detect import Detection

    rng = np.random.default_rng(seed)
    images = [smooth_frame(rng, 1080, 1920) for _ in range(frames)]
    batches = []
    for b in range(count):
        faces = [
            [
                Detection(np.zeros(4, np.float32), 0.9, face_landmarks((500 + 300 * f + 3 * b, 520), 220, 4, 224))
                for f in range(faces_per_frame)
            ]
            for _ in images
        ]
        batches.append(FrameBatch(images, faces))
    return batches


def worst_levels(results, expected) -> int:
    return max(
        int(np.abs(g.image.astype(int) - w.image).max())
        for got, want in zip(results, expected, strict=True)
        for g, w in zip(got, want, strict=True)
    )


def check_devices(folder: Path) -> dict:
    """Every visible device listed; a bad id refused naming them; with several, the device path on the last."""
    count = cuda.device_count()
    listed = [f"{d}: {cuda.device_info(d).name}" for d in range(count)]
    try:
        cuda.check_device(count)
        raise AssertionError(f"device id {count} was accepted with {count} devices")
    except cuda.DeviceNotFoundError as exc:
        if listed and listed[0].split(": ")[1] not in str(exc):
            raise AssertionError(f"the error does not name the devices: {exc}") from None
    details: dict = {"devices": listed}
    if count > 1:
        last = count - 1
        host, device = kernel_swappers(folder, device=last, max_batch=4)
        batches = video_batches(2)
        worst = worst_levels(device.swap_stream(batches), [host.swap_faces(b.images, b.faces) for b in batches])
        device.close()
        host.close()
        if worst > 1:
            raise AssertionError(f"the device path on device {last} differs from the CPU path by {worst} levels")
        details.update(device_path_on=last, max_levels_vs_cpu=worst)
    return details


def check_parsing_blend(kernels: dict, host, folder: Path) -> dict:
    """The blend kernel vs the host build (bit-exact, float32 and float16 buffers), then the device path with
    a face parser vs the CPU path with it."""
    from simswap_trt.kernels import parsing_blend
    from simswap_trt.vision.parsing import FaceParser

    device_kernels, rng, size = DeviceKernels(kernels), np.random.default_rng(5), 224
    stream = cuda.Stream()
    exact = []
    for half_in, half_out in ((False, False), (True, True)):
        swapped = rng.random((3, 3, size, size), dtype=np.float32).astype(np.float16 if half_out else np.float32)
        targets = rng.random((3, 3, size, size), dtype=np.float32).astype(np.float16 if half_in else np.float32)
        masks, faces = rng.random((2, size, size), dtype=np.float32), np.array([2, 0], np.int32)
        buffers = [cuda.DeviceBuffer.from_array(a) for a in (swapped, targets, masks, faces)]
        parsing_blend(device_kernels, stream.handle, buffers[0].ptr, half_out, buffers[1].ptr, half_in,
                      buffers[2].ptr, buffers[3].ptr, 2, size)  # fmt: skip
        stream.synchronize()
        got = buffers[0].to_array(swapped)
        if host is not None:
            expected = swapped.copy()
            host.simswap_parsing_blend_host.restype = None
            host.simswap_parsing_blend_host(_ptr(expected), int(half_out), _ptr(targets), int(half_in), _ptr(masks),
                                            _ptr(faces), 2, size)  # fmt: skip
            if not np.array_equal(got, expected):
                raise AssertionError(f"the blend (half {half_in}/{half_out}) is not bit-exact with the host build")
            exact.append(True)
        for buffer in buffers:
            buffer.free()
    exact.append(check_parser_kernels(device_kernels, host, stream) if host is not None else True)
    stream.free()
    parser = FaceParser(content_parser(folder / "parser.onnx"))
    host_swapper, device = kernel_swappers(folder, max_batch=4, parser=parser)
    batches = video_batches(2)
    worst = worst_levels(device.swap_stream(batches), [host_swapper.swap_faces(b.images, b.faces) for b in batches])
    device.close()
    host_swapper.close()
    if worst > 1:
        raise AssertionError(f"the device path with a parser differs from the CPU path by {worst} levels")
    return {"blend_bit_exact": bool(exact) and all(exact), "parser_max_levels_vs_cpu": worst}


def check_parser_kernels(device_kernels: DeviceKernels, host, stream) -> bool:
    """The parser's input and labels kernels vs the host build, bit-exact (a float16 generator input)."""
    from simswap_trt.kernels import parser_input, parser_labels

    rng, size, count = np.random.default_rng(6), 224, 3
    targets = rng.random((count, 3, size, size), dtype=np.float32).astype(np.float16)
    logits = rng.integers(-3, 4, (count, 19, 512, 512)).astype(np.float32)  # with ties
    buffers = [cuda.DeviceBuffer.from_array(a) for a in (targets, logits)]
    out, labels = cuda.DeviceBuffer(count * 3 * 512 * 512 * 4), cuda.DeviceBuffer(count * 512 * 512)
    parser_input(device_kernels, stream.handle, buffers[0].ptr, True, count, size, out.ptr)
    parser_labels(device_kernels, stream.handle, buffers[1].ptr, count, labels.ptr)
    stream.synchronize()
    got_input = out.to_array(np.empty((count, 3, 512, 512), np.float32))
    got_labels = labels.to_array(np.empty((count, 512, 512), np.uint8))
    want_input, want_labels = np.empty_like(got_input), np.empty_like(got_labels)
    host.simswap_parser_input_host.restype = host.simswap_parser_labels_host.restype = None
    host.simswap_parser_input_host(_ptr(targets), 1, count, size, _ptr(want_input))
    host.simswap_parser_labels_host(_ptr(logits), count, _ptr(want_labels))
    for buffer in (*buffers, out, labels):
        buffer.free()
    if not np.array_equal(got_input, want_input) or not np.array_equal(got_labels, want_labels):
        raise AssertionError("the parser's input or labels kernel is not bit-exact with the host build")
    return True


def check_graphs(folder: Path, batches: int) -> dict:
    """The whole per-batch sequence replayed as CUDA graphs vs the same sequence enqueued eagerly: equal
    outputs, a graph per batch size, and the time per batch of both (two batch sizes of 1080p frames)."""
    launches = []
    launch = cuda.Graph.launch

    def counted(graph, stream):
        launches.append(graph)
        launch(graph, stream)

    host, eager = kernel_swappers(folder, max_batch=8)
    _, graphed = kernel_swappers(folder, max_batch=8, cuda_graphs=True)
    stream = video_batches(batches) + video_batches(batches, faces_per_frame=1)  # 8, then 4 faces per batch
    timings = {}
    cuda.Graph.launch = counted
    try:
        results = {}
        for name, swapper in (("eager", eager), ("graphs", graphed)):
            list(swapper.swap_stream(stream[:1]))  # warm-up (and the first capture)
            start = time.perf_counter()
            results[name] = list(swapper.swap_stream(stream))
            timings[name] = (time.perf_counter() - start) / len(stream) * 1e3
    finally:
        cuda.Graph.launch = launch
    captured = sum(len(ws.graphs) for ws in graphed._stages.workspaces)
    worst = worst_levels(results["graphs"], results["eager"])
    cpu = worst_levels(results["graphs"][:1], [host.swap_faces(stream[0].images, stream[0].faces)])
    for swapper in (host, eager, graphed):
        swapper.close()
    if worst or cpu > 1:
        raise AssertionError(f"graph replays differ from the eager sequence by {worst} levels (CPU path: {cpu})")
    if not launches or captured < 2:
        raise AssertionError(f"{len(launches)} replays, {captured} graphs: expected replays and a graph per size")
    return {
        "graphs": captured,
        "replays": len(launches),
        "eager_ms_per_batch": round(timings["eager"], 3),
        "graph_ms_per_batch": round(timings["graphs"], 3),
        "graph_vs_eager": round(timings["graphs"] / timings["eager"], 3),
    }


def check_resident_frames(folder: Path, batches: int, canvas: int = 640, rounds: int = 3) -> dict:
    """Detection on the device (``DeviceDetector`` with the stand-in detector plan, sharing the device stages'
    ``frames``), then ``swap_stream`` of the same frames, two batches in flight: the swap must find every
    frame on the device and equal the CPU path within 1 level. Then ``batches`` batches of 4 1080p frames
    are detected and swapped ``rounds`` times, alternately with the frames found on the device and uploaded
    again for the swap (as before); the medians give the speed-up."""
    from simswap_trt.device_detect import DeviceDetector
    from simswap_trt.swapper import FrameBatch

    host, device = swappers(224, folder)
    stages = device._stages
    pool, detector_engine = stages.frames, StandinDetectorEngine(canvas, max_batch=4)
    detector = DeviceDetector(RecordingDecoder(canvas), detector_engine, stages.kernels, frames=pool)
    stream = [FrameBatch([image.copy() for image in b.images], b.faces) for b in video_batches(batches)]
    find, found = pool.find, []

    def counted(images, consume):
        result = find(images, consume)
        found.extend(r is not None for r in result)
        return result

    def detected(batches):  # each batch detected on the device just before it is started, as in the video loop
        for batch in batches:
            detector.detect_batch(batch.images)
            yield batch

    seconds: dict[str, list[float]] = {"resident": [], "uploaded_again": []}
    try:
        pool.find = counted
        first = list(device.swap_stream(detected(stream[:2])))
        worst = worst_levels(first, [host.swap_faces(b.images, b.faces) for b in stream[:2]])
        if worst > 1 or not found or not all(found):
            raise AssertionError(f"{sum(found)} of {len(found)} frames found on the device, {worst} levels off")
        for _ in range(rounds):
            for mode, lookup in (("uploaded_again", lambda images, consume: [None] * len(images)), ("resident", find)):
                pool.find = lookup
                start = time.perf_counter()
                for _ in device.swap_stream(detected(stream)):
                    pass
                seconds[mode].append(time.perf_counter() - start)
    finally:
        pool.find = find
        detector.close()
        device.close()
        host.close()
    frames = sum(len(b.images) for b in stream)
    medians = {mode: float(np.median(values)) for mode, values in seconds.items()}
    return {
        "frames_found_on_device": f"{sum(found)}/{len(found)}",
        "max_levels_vs_cpu": worst,
        "frames_per_s_resident": round(frames / medians["resident"], 1),
        "frames_per_s_uploaded_again": round(frames / medians["uploaded_again"], 1),
        "speedup": round(medians["uploaded_again"] / medians["resident"], 3),
    }
