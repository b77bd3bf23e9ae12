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
from simswap_trt.device.tables import crop_to_frame_matrices, pack_pasteback, pasteback_tables, preprocess_tables
from simswap_trt.errors import SimswapError
from simswap_trt.kernels import DeviceKernels, PasteBackTables, PreprocessTables, load_device_kernels
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.preprocess import crops_to_tensor
from simswap_trt.vision.warp import warp_faces

LANDMARKS = np.array([[900, 500], [1000, 508], [948, 562], [905, 612], [993, 618]], float)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "kernels.json")
    return parser.parse_args()


class Inputs:
    """``n`` seeded 1080p frames with one face each, the generator's output for them, and the kernels' tables
    on the device as the device path plans them."""

    def __init__(self, n: int, size: int = 224) -> None:
        rng = np.random.default_rng(0)
        self.n, self.size = n, size
        self.frames = [rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8) for _ in range(n)]
        self.matrices = [alignment_matrix(LANDMARKS + rng.normal(0, 3, (5, 2)), "multipose", size) for _ in range(n)]
        generator_out = rng.random((n, 3, size, size), dtype=np.float32)  # the generator's layout, as the kernel
        self.crops = generator_out.transpose(0, 2, 3, 1)[..., ::-1] * 255  # the CPU paste-back's BGR [0, 255]
        device_frames = [cuda_memory.DeviceBuffer.from_array(f) for f in self.frames]
        planned = preprocess_tables(self.frames, np.arange(n), crop_to_frame_matrices(self.matrices))
        planned["frames"][:] = [b.ptr for b in device_frames]
        placed = {name: cuda_memory.DeviceBuffer.from_array(table).ptr for name, table in planned.items()}
        self.preprocess = PreprocessTables(**placed)
        self.out = cuda_memory.DeviceBuffer(n * 3 * size * size * 4)
        self.batch = pack_pasteback([f.shape for f in self.frames], [[m] for m in self.matrices], size)
        device_crops = cuda_memory.DeviceBuffer.from_array(generator_out)
        crop_table = np.array([device_crops.ptr + i * generator_out[0].nbytes for i in range(n)], np.uint64)
        paste = {
            name: cuda_memory.DeviceBuffer.from_array(t).ptr
            for name, t in pasteback_tables(self.batch, crop_table).items()
        }
        self.pasteback = PasteBackTables(frames=placed["frames"], pitches=placed["pitches"], **paste)
        self.buffers = [*device_frames, device_crops]  # kept alive while the kernels read them


def gpu_times(kernels: DeviceKernels, inputs: Inputs, repeats: int) -> tuple[float, float]:
    """Seconds per launch of the preprocessing and the paste-back, timed with CUDA events."""
    from cuda.core import EventOptions, Stream

    cuda_stream = cuda.Stream()
    stream = Stream.from_handle(cuda_stream.handle)
    timing = EventOptions(timing_enabled=True)  # cuda.core events do not time by default

    def gpu_time(run) -> float:
        start = stream.record(options=timing)
        for _ in range(repeats):
            run()
        end = stream.record(options=timing)
        end.sync()
        return (end - start) / repeats / 1e3  # cuda.core events subtract to milliseconds

    n, size, handle = inputs.n, inputs.size, cuda_stream.handle
    preprocess = gpu_time(lambda: kernels.preprocess(handle, inputs.preprocess, n, size, False, inputs.out.ptr))
    regions = inputs.batch.union_rois
    return preprocess, gpu_time(lambda: kernels.pasteback(handle, inputs.pasteback, regions, size, False))


def cpu_times(inputs: Inputs, repeats: int) -> tuple[float, float]:
    """Median seconds of the CPU pipeline's preprocessing and paste-back of the same frames."""

    def cpu_time(run) -> float:
        seconds = []
        for _ in range(max(3, repeats // 4)):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds)

    frames, matrices, size = inputs.frames, inputs.matrices, inputs.size
    preprocess = cpu_time(lambda: crops_to_tensor(warp_faces(frames, list(enumerate(matrices)), size), size))
    pairs = list(zip(frames, inputs.crops, matrices, strict=True))
    return preprocess, cpu_time(lambda: [paste_back(f, [(c, m)]) for f, c, m in pairs])


def main() -> int:
    args = parse_args()
    try:
        device = cuda.device_info()
        kernels = DeviceKernels(load_device_kernels())
    except SimswapError as exc:
        print(f"skipped: {exc}")
        return 2
    inputs = Inputs(args.frames)
    (preprocess_gpu, pasteback_gpu), (preprocess_cpu, pasteback_cpu) = (
        gpu_times(kernels, inputs, args.repeats),
        cpu_times(inputs, args.repeats),
    )
    rows = {"preprocess": (preprocess_cpu, preprocess_gpu), "paste-back": (pasteback_cpu, pasteback_gpu)}
    print(f"{args.frames} frames 1920x1080, 1 face each; {device.name} ({device.sm})")
    print(f"{'stage':<12}{'CPU ms':>10}{'GPU ms':>10}{'speed-up':>10}")
    for name, (cpu_s, gpu_s) in rows.items():
        print(f"{name:<12}{cpu_s * 1e3:>10.2f}{gpu_s * 1e3:>10.3f}{cpu_s / gpu_s:>9.1f}x")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "kernels",
        "device": device.name,
        "compute_capability": list(device.compute_capability),
        "frames": args.frames,
        "results_s": {k: {"cpu": c, "gpu": g} for k, (c, g) in rows.items()},
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
