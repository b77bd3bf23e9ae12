"""Fused CUDA kernels vs the CPU path, on a batch of 1920x1080 frames with one face each.

    cmake -S . -B build && cmake --build build       # the fatbin (else NVRTC compiles at first use)
    SIMSWAP_KERNELS_FATBIN=build/simswap_kernels.fatbin python -m benchmarks.kernels [--frames 8]

GPU times are CUDA-event times of one launch per batch (inputs already on the device); CPU times are the
OpenCV/NumPy path (warp_faces + crops_to_tensor; paste_back) on the same data. Writes
benchmarks/results/kernels.json. Without a GPU it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from simswap_trt import cuda
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.device.tables import crop_to_frame_matrices, pack_pasteback
from simswap_trt.errors import SimswapError
from simswap_trt.kernels import DeviceKernels, load_device_kernels
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.preprocess import crops_to_tensor
from simswap_trt.vision.warp import warp_faces

LANDMARKS = np.array([[900, 500], [1000, 508], [948, 562], [905, 612], [993, 618]], float)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "kernels.json")
    args = parser.parse_args()
    try:
        device = cuda.device_info()
        kernels = DeviceKernels(load_device_kernels())
    except SimswapError as exc:
        print(f"skipped: {exc}")
        return 2
    from cuda.core import EventOptions, Stream

    rng = np.random.default_rng(0)
    size, n = 224, args.frames
    frames = [rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8) for _ in range(n)]
    matrices = [alignment_matrix(LANDMARKS + rng.normal(0, 3, (5, 2)), "multipose", size) for _ in range(n)]
    generator_out = rng.random((n, 3, size, size), dtype=np.float32)  # the generator's layout, as the kernel reads it
    crops = generator_out.transpose(0, 2, 3, 1)[..., ::-1] * 255  # the CPU paste-back's BGR [0, 255] crops
    cuda_stream = cuda.Stream()
    stream = Stream.from_handle(cuda_stream.handle)
    timing = EventOptions(timing_enabled=True)  # cuda.core events do not time by default

    device_frames = [cuda_memory.DeviceBuffer.from_array(f) for f in frames]
    pointers = cuda_memory.DeviceBuffer.from_array(np.array([b.ptr for b in device_frames], np.uint64))
    pitches = cuda_memory.DeviceBuffer.from_array(np.full(n, 1920 * 3, np.int32))
    widths, heights = (
        cuda_memory.DeviceBuffer.from_array(np.full(n, 1920, np.int32)),
        cuda_memory.DeviceBuffer.from_array(np.full(n, 1080, np.int32)),
    )
    frame_of_face, inverse = (
        cuda_memory.DeviceBuffer.from_array(np.arange(n, dtype=np.int32)),
        cuda_memory.DeviceBuffer.from_array(crop_to_frame_matrices(matrices)),
    )
    out = cuda_memory.DeviceBuffer(n * 3 * size * size * 4)
    batch = pack_pasteback([f.shape for f in frames], [[m] for m in matrices], size)
    device_crops = cuda_memory.DeviceBuffer.from_array(generator_out)
    crop_table = np.array([device_crops.ptr + i * generator_out[0].nbytes for i in range(n)], np.uint64)
    tables = [
        cuda_memory.DeviceBuffer.from_array(a)
        for a in (batch.union_rois, batch.face_begin, crop_table, batch.forward, batch.rois, batch.masks)
    ] + [cuda_memory.DeviceBuffer.from_array(batch.mask_offsets)]

    def gpu_time(run) -> float:
        start = stream.record(options=timing)
        for _ in range(args.repeats):
            run()
        end = stream.record(options=timing)
        end.sync()
        return (end - start) / args.repeats / 1e3  # cuda.core events subtract to milliseconds

    preprocess_gpu = gpu_time(
        lambda: kernels.preprocess(
            cuda_stream.handle,
            *[b.ptr for b in (pointers, pitches, widths, heights, frame_of_face, inverse)],
            n,
            size,
            False,
            out.ptr,
        )
    )
    pasteback_gpu = gpu_time(
        lambda: kernels.pasteback(
            cuda_stream.handle,
            pointers.ptr,
            pitches.ptr,
            batch.union_rois,
            *[t.ptr for t in tables[:3]],
            size,
            False,
            *[t.ptr for t in tables[3:]],
        )
    )

    def cpu_time(run) -> float:
        seconds = []
        for _ in range(max(3, args.repeats // 4)):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds)

    preprocess_cpu = cpu_time(lambda: crops_to_tensor(warp_faces(frames, list(enumerate(matrices)), size), size))
    pasteback_cpu = cpu_time(lambda: [paste_back(f, [(c, m)]) for f, c, m in zip(frames, crops, matrices, strict=True)])
    rows = {"preprocess": (preprocess_cpu, preprocess_gpu), "paste-back": (pasteback_cpu, pasteback_gpu)}
    print(f"{n} frames 1920x1080, 1 face each; {device.name} ({device.sm})")
    print(f"{'stage':<12}{'CPU ms':>10}{'GPU ms':>10}{'speed-up':>10}")
    for name, (cpu_s, gpu_s) in rows.items():
        print(f"{name:<12}{cpu_s * 1e3:>10.2f}{gpu_s * 1e3:>10.3f}{cpu_s / gpu_s:>9.1f}x")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "kernels",
                "device": device.name,
                "compute_capability": list(device.compute_capability),
                "frames": n,
                "results_s": {k: {"cpu": c, "gpu": g} for k, (c, g) in rows.items()},
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
