"""Measurement primitives of the benchmark harness: timing statistics over fresh inputs, the machine's
measured compute ceiling, a graph's FLOP count, and resident-memory sampling."""
# The ceiling is measured with ONNX Runtime's own convolution rather than numpy's BLAS: numpy's speed
# depends on which BLAS build and core-type settings the machine has, and is not what the engine uses.

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx


@dataclass(frozen=True)
class Stats:
    """Seconds per call over ``runs`` timed calls (after warm-up): median and spread."""

    median: float
    p10: float
    p90: float
    minimum: float
    maximum: float
    runs: int

    @classmethod
    def of(cls, seconds: list[float]) -> Stats:
        ordered = sorted(seconds)
        p10, p90 = np.percentile(ordered, [10, 90])
        return cls(statistics.median(ordered), float(p10), float(p90), ordered[0], ordered[-1], len(ordered))

    def to_json(self) -> dict:
        return asdict(self)


def measure(call: Callable[[Any], Any], make_input: Callable[[int], Any], repeats: int, warmup: int = 1) -> Stats:
    """Time ``call(make_input(i))`` ``repeats`` times after ``warmup`` untimed calls. Inputs are made
    outside the timed region and are fresh for every call (index ``i``), so no cache sees the same data twice."""
    for i in range(warmup):
        call(make_input(-1 - i))
    seconds = []
    for i in range(repeats):
        data = make_input(i)
        start = time.perf_counter()
        call(data)
        seconds.append(time.perf_counter() - start)
    return Stats.of(seconds)


def generator_feeds(seed: int, batch: int, size: int) -> dict[str, np.ndarray]:
    """Random generator inputs for timing: a [batch,3,size,size] target in [0,1] and unit latents."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(batch, 512)).astype(np.float32)
    return {
        "target": rng.random((batch, 3, size, size), dtype=np.float32),
        "latent": latent / np.linalg.norm(latent, axis=1, keepdims=True),
    }


def conv_ceiling_flops_per_second(repeats: int = 5) -> float:
    """Measured throughput of the generator's dominant operation on ONNX Runtime's CPU kernels: a
    512→512 3x3 convolution at 28x28 (the ID blocks), batch 8, with all available threads."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from simswap_trt.engines.onnxruntime import available_cpus

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(512, 512, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "ceiling",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 512, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 512, 28, 28])],
        [weight],
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = available_cpus()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = rng.random((8, 512, 28, 28), dtype=np.float32)
    stats = measure(lambda _: session.run(None, {"x": x}), lambda i: None, repeats)
    return 2.0 * 8 * 512 * 512 * 9 * 28 * 28 / stats.median


def conv_flops(model: onnx.ModelProto) -> float:
    """Multiply-add FLOPs (2 per MAC) of every Conv and Gemm for one batch item, from inferred shapes."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    total = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out_channels, in_channels, kh, kw = weights[node.input[1]]
            _, _, height, width = shapes[node.output[0]]
            total += 2.0 * out_channels * in_channels * kh * kw * height * width
        elif node.op_type == "Gemm":
            total += 2.0 * np.prod(weights[node.input[1]])
    return total


def resident_kib() -> int:
    """Current resident set size of this process, in KiB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against their index (units per step)."""
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values)), np.asarray(values, float), 1)[0])


def machine() -> dict:
    """What a figure was measured on: CPU model and flags (from /proc/cpuinfo, empty where unavailable),
    the CPUs this process may use, and the platform."""
    import platform

    from simswap_trt.engines.onnxruntime import available_cpus

    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return {
        "cpu_model": info.get("model name", platform.processor() or platform.machine()),
        "cpu_flags": info.get("flags", ""),
        "cpus": available_cpus(),
        "platform": platform.platform(),
    }
