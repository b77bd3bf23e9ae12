"""Measurement primitives of the benchmark harness: timing statistics over fresh inputs, interleaved runs of
compared calls and the ratios between them, the machine's measured compute ceiling, a graph's FLOP count,
and resident-memory sampling."""
# The ceiling is measured with ONNX Runtime's own convolution rather than numpy's BLAS: numpy's speed
# depends on which BLAS build and core-type settings the machine has, and is not what the engine uses.

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx

from simswap_trt.engines.onnxruntime import available_cpus


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


def interleaved(
    calls: Mapping[str, Callable[[Any], Any]], make_input: Callable[[int], Any], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Time every call of ``calls`` on the same fresh input ``make_input(i)``, round by round (A B C, B C A, ...:
    the order rotates so that no call always runs first), after ``warmup`` untimed rounds. Compared calls thus
    see the same machine state, which on a shared or throttling machine changes between runs. Returns each
    call's seconds in round order, so that ratios can be taken round by round (``ratio_stats``)."""
    names = list(calls)
    for i in range(warmup):
        data = make_input(-1 - i)
        for name in names:
            calls[name](data)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        data = make_input(i)
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            start = time.perf_counter()
            calls[name](data)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def ratio_stats(numerator: list[float], denominator: list[float]) -> Stats:
    """The ratio ``numerator[i] / denominator[i]`` of each round of an interleaved run, as median and spread
    (a speed-up of B over A is A's seconds over B's)."""
    return Stats.of([n / d for n, d in zip(numerator, denominator, strict=True)])


def generator_feeds(seed: int, batch: int, size: int) -> dict[str, np.ndarray]:
    """Random generator inputs for timing: a [batch,3,size,size] target in [0,1] and unit latents."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(batch, 512)).astype(np.float32)
    return {
        "target": rng.random((batch, 3, size, size), dtype=np.float32),
        "latent": latent / np.linalg.norm(latent, axis=1, keepdims=True),
    }


CEILING_FLOPS = 2.0 * 8 * 512 * 512 * 9 * 28 * 28  # per call of the ceiling convolution


def ceiling_conv() -> Callable[[Any], Any]:
    """One call of the generator's dominant operation on ONNX Runtime's CPU kernels (``CEILING_FLOPS``): a
    512→512 3x3 convolution at 28x28 (the ID blocks), batch 8, with all available threads. Timed interleaved
    with the generator, it gives the ceiling at the same moment."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

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
    return lambda _: session.run(None, {"x": x})


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
