"""Checks of the kernels and the cuda layer: the device kernels against the host build and the CPU
pipeline, buffers, streams, events and graphs, and the kernels' times."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from simswap_trt import cuda
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.device.tables import (
    crop_to_frame_matrices,
    letterbox_tables,
    pack_pasteback,
    pasteback_tables,
    preprocess_tables,
)
from simswap_trt.kernels import DeviceKernels, LetterboxTables, PasteBackTables, PreprocessTables
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.preprocess import crops_to_tensor, tensor_to_bgr
from simswap_trt.vision.warp import warp_faces

from .report import Skipped
from .scenes import face_landmarks, smooth_frame

ROOT = Path(__file__).resolve().parents[2]


def build_kernels(folder: Path) -> dict:
    """CMake build of the host library and, with nvcc, the fatbin into ``folder`` (incremental there)."""
    if not shutil.which("cmake"):
        raise Skipped("cmake is not installed: no host build to compare with, no fatbin (NVRTC is still checked)")
    for step in (["cmake", "-S", str(ROOT), "-B", str(folder)], ["cmake", "--build", str(folder), "-j8"]):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(step)} failed: {(done.stdout + done.stderr)[-1500:]}")
    return {"fatbin": (folder / "simswap_kernels.fatbin").is_file()}


def host_library(folder: Path):
    path = folder / "libsimswap_kernels_host.so"
    if not path.is_file():
        return None
    lib = ctypes.CDLL(str(path))
    lib.simswap_preprocess_host.restype = lib.simswap_pasteback_host.restype = None
    return lib


def pointer_table(arrays) -> ctypes.Array:
    return (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])


def address_of(array: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(array.ctypes.data)


def upload_tables(tables: dict[str, np.ndarray]) -> tuple[list[cuda_memory.DeviceBuffer], dict[str, int]]:
    """Each planned table in a device buffer of its own: the buffers (to free) and their addresses by name."""
    buffers = {name: cuda_memory.DeviceBuffer.from_array(table) for name, table in tables.items()}
    return list(buffers.values()), {name: buffer.ptr for name, buffer in buffers.items()}


def pasteback_on_device(
    device: DeviceKernels, stream: cuda.Stream, frames: dict[str, int], batch, crops: np.ndarray, size: int
) -> list[cuda_memory.DeviceBuffer]:
    """One paste-back launch of ``batch`` into the frames at ``frames`` (their ``frames`` and ``pitches``
    tables), reading each face's generator output at ``crops`` (uint64); returns the table buffers to free."""
    buffers, placed = upload_tables(pasteback_tables(batch, crops))
    tables = PasteBackTables(frames=frames["frames"], pitches=frames["pitches"], **placed)
    device.pasteback(stream.handle, tables, batch.union_rois, size, False)
    return buffers


def check_kernels(kernels: dict, host, size: int) -> dict:
    """Both kernels on the device vs the host build (bit-exact) and the CPU pipeline (1 level)."""
    device = DeviceKernels(kernels)
    rng = np.random.default_rng(size)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((481, 643), (333, 517), (300, 401))]
    faces = [(0, (320, 240), 180, 0), (1, (250, 170), 150, 90), (0, (20, 10), 160, 17), (2, (395, 296), 120, -35)]
    matrices = [alignment_matrix(face_landmarks(c, s, a, size), "multipose", size) for _, c, s, a in faces]
    frame_of_face = np.array([f for f, *_ in faces], np.int32)
    stream = cuda.Stream()
    on_device = [cuda_memory.DeviceBuffer.from_array(f) for f in frames]
    tables = preprocess_tables(frames, frame_of_face, crop_to_frame_matrices(matrices))
    tables["frames"][:] = [b.ptr for b in on_device]
    table_buffers, placed = upload_tables(tables)
    out = cuda_memory.DeviceBuffer(len(faces) * 3 * size * size * 4)
    device.preprocess(stream.handle, PreprocessTables(**placed), len(faces), size, False, out.ptr)
    stream.synchronize()
    got = out.to_array(np.empty((len(faces), 3, size, size), np.float32))
    cpu = crops_to_tensor(warp_faces(frames, list(zip(frame_of_face.tolist(), matrices, strict=True)), size), size)
    details = {"preprocess_max_levels_vs_cpu": float(np.abs(got - cpu).max() * 255)}
    if details["preprocess_max_levels_vs_cpu"] > 1.001:
        raise AssertionError(f"preprocess differs from the CPU crop by {details['preprocess_max_levels_vs_cpu']}")
    if host is not None:
        expected = np.zeros_like(got)
        names = ("pitches", "widths", "heights", "frame_of_face", "inverse")
        host.simswap_preprocess_host(
            pointer_table(frames), *[address_of(tables[n]) for n in names], len(faces), size, 0, address_of(expected)
        )
        if not np.array_equal(got, expected):
            raise AssertionError(f"preprocess is not bit-exact with the host build: {np.abs(got - expected).max()}")
        details["preprocess_bit_exact"] = True

    generator_out = rng.random((len(faces), 3, size, size), dtype=np.float32)
    order = np.argsort(frame_of_face, kind="stable")
    per_frame = [[matrices[i] for i in order if frame_of_face[i] == f] for f in range(len(frames))]
    batch = pack_pasteback([f.shape for f in frames], per_frame, size)
    crops = cuda_memory.DeviceBuffer.from_array(generator_out[order])
    crop_table = np.array([crops.ptr + i * generator_out[0].nbytes for i in range(len(faces))], np.uint64)
    paste_buffers = pasteback_on_device(device, stream, placed, batch, crop_table, size)
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
    pinned = cuda_memory.PinnedBuffer(data.shape, np.uint8)
    pinned.array[...] = data
    device = cuda_memory.DeviceBuffer(data.nbytes)
    first, second = cuda.Stream(), cuda.Stream()
    uploaded = cuda.Event(timing=False)
    start, end = cuda.Event(), cuda.Event()
    start.record(first)
    device.upload(pinned.array, first)
    uploaded.record(first)
    second.wait(uploaded)  # the download on the other stream starts after the upload
    region = cuda_memory.PinnedBuffer((100, 57 * 3), np.uint8)
    device.download_rows(region.array, second, offset=40 * data.strides[0] + 30 * 3, pitch=data.strides[0])
    end.record(second)
    end.synchronize()
    if not np.array_equal(region.array.reshape(100, 57, 3), data[40:140, 30:87]):
        raise AssertionError("a rectangle downloaded on a second stream after an event is wrong")
    elapsed = end.elapsed_ms(start)
    if not elapsed >= 0:
        raise AssertionError(f"event timing gave {elapsed}")
    try:
        cuda_memory.DeviceBuffer(1 << 52)
        raise AssertionError("a 4 PiB allocation did not fail")
    except cuda.CudaOutOfMemory:
        cuda.runtime().cudaGetLastError()  # reset the error state before the next checks

    # a captured graph replays a download (nothing runs during the capture)
    back = cuda_memory.PinnedBuffer(data.shape, np.uint8)
    back.array[...] = 0
    graph = cuda.Graph.capture(first, lambda: device.download(back.array, first))
    first.synchronize()
    if back.array.any():
        raise AssertionError("the capture ran the download instead of recording it")
    graph.launch(first)
    first.synchronize()
    graph.free()
    if not np.array_equal(back.array, data):
        raise AssertionError("the replayed graph did not copy the buffer back")
    for owner in (pinned, device, region, back, uploaded, start, end, first, second):
        owner.free()
    return {"copy_and_download_ms": round(elapsed, 4)}


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
    frames = [cuda_memory.DeviceBuffer.from_array(frame) for _ in range(faces)]
    tables = preprocess_tables([frame] * faces, np.arange(faces), crop_to_frame_matrices(matrices))
    tables["frames"][:] = [b.ptr for b in frames]
    table_buffers, placed = upload_tables(tables)
    out = cuda_memory.DeviceBuffer(faces * 3 * size * size * 4)
    batch = pack_pasteback([frame.shape] * faces, [[m] for m in matrices], size)
    crop_table = np.array([out.ptr + i * 3 * size * size * 4 for i in range(faces)], np.uint64)
    paste_buffers, paste = upload_tables(pasteback_tables(batch, crop_table))
    paste_tables = PasteBackTables(frames=placed["frames"], pitches=placed["pitches"], **paste)
    stream = cuda.Stream()
    preprocess_tables_on_device = PreprocessTables(**placed)
    preprocess_ms = event_timed(
        stream,
        lambda: device.preprocess(stream.handle, preprocess_tables_on_device, faces, size, False, out.ptr),
        repeats,
    )
    pasteback_ms = event_timed(
        stream, lambda: device.pasteback(stream.handle, paste_tables, batch.union_rois, size, False), repeats
    )
    for buffer in (*frames, *table_buffers, out, *paste_buffers):
        buffer.free()
    stream.free()
    return {"faces": faces, "preprocess_ms": round(preprocess_ms, 4), "pasteback_ms": round(pasteback_ms, 4)}


def letterbox_on_device(kernels: dict, frames: list[np.ndarray], canvas: int, normalisation, half: bool):
    """The letterbox kernel on ``frames``: the output (float32, or float16 with ``half``) [N, 3, C, C], and the
    planned tables (by name)."""
    on_device = [cuda_memory.DeviceBuffer.from_array(f) for f in frames]
    tables = letterbox_tables(frames, canvas)
    tables["frames"][:] = [b.ptr for b in on_device]
    buffers, placed = upload_tables(tables)
    dtype = np.float16 if half else np.float32
    out = cuda_memory.DeviceBuffer(len(frames) * 3 * canvas * canvas * np.dtype(dtype).itemsize)
    stream = cuda.Stream()
    device = DeviceKernels(kernels)
    count = len(frames)
    device.detector_input(stream.handle, LetterboxTables(**placed), count, canvas, normalisation, half, out.ptr)
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
                    pointer_table(frames),
                    *[address_of(tables[n]) for n in ("pitches", "widths", "heights", "resized", "scales")],
                    len(frames),
                    canvas,
                    int(swap_rb),
                    ctypes.c_float(mean),
                    ctypes.c_float(scale),
                    int(half),
                    address_of(expected),
                )
                if not np.array_equal(got, expected):
                    raise AssertionError(f"{kind} letterbox is not bit-exact with the host build")
                details["bit_exact_with_host_build"] = True
    return details


def check_letterbox_throughput(kernels: dict, repeats: int, count: int = 8, canvas: int = 640) -> dict:
    """The letterbox kernel for ``count`` 1080p frames onto the detector canvas, event-timed."""
    from simswap_trt.vision.detect import CenterFace

    frame = np.random.default_rng(6).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    frames = [cuda_memory.DeviceBuffer.from_array(frame) for _ in range(count)]
    tables = letterbox_tables([frame] * count, canvas)
    tables["frames"][:] = [b.ptr for b in frames]
    buffers, placed = upload_tables(tables)
    out = cuda_memory.DeviceBuffer(count * 3 * canvas * canvas * 4)
    stream, device = cuda.Stream(), DeviceKernels(kernels)
    letterboxed = LetterboxTables(**placed)

    def run() -> None:
        device.detector_input(stream.handle, letterboxed, count, canvas, CenterFace.normalisation, False, out.ptr)

    milliseconds = event_timed(stream, run, repeats)
    for buffer in (*frames, *buffers, out):
        buffer.free()
    stream.free()
    return {"frames": count, "canvas": canvas, "letterbox_ms": round(milliseconds, 4)}


def check_parser_kernels(device_kernels: DeviceKernels, host, stream) -> bool:
    """The parser's input and labels kernels vs the host build, bit-exact (a float16 generator input)."""
    rng, size, count = np.random.default_rng(6), 224, 3
    targets = rng.random((count, 3, size, size), dtype=np.float32).astype(np.float16)
    logits = rng.integers(-3, 4, (count, 19, 512, 512)).astype(np.float32)  # with ties
    buffers = [cuda_memory.DeviceBuffer.from_array(a) for a in (targets, logits)]
    out, labels = cuda_memory.DeviceBuffer(count * 3 * 512 * 512 * 4), cuda_memory.DeviceBuffer(count * 512 * 512)
    device_kernels.parser_input(stream.handle, buffers[0].ptr, True, count, size, out.ptr)
    device_kernels.parser_labels(stream.handle, buffers[1].ptr, count, labels.ptr)
    stream.synchronize()
    got_input = out.to_array(np.empty((count, 3, 512, 512), np.float32))
    got_labels = labels.to_array(np.empty((count, 512, 512), np.uint8))
    want_input, want_labels = np.empty_like(got_input), np.empty_like(got_labels)
    host.simswap_parser_input_host.restype = host.simswap_parser_labels_host.restype = None
    host.simswap_parser_input_host(address_of(targets), 1, count, size, address_of(want_input))
    host.simswap_parser_labels_host(address_of(logits), count, address_of(want_labels))
    for buffer in (*buffers, out, labels):
        buffer.free()
    if not np.array_equal(got_input, want_input) or not np.array_equal(got_labels, want_labels):
        raise AssertionError("the parser's input or labels kernel is not bit-exact with the host build")
    return True
