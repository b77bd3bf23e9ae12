"""INT8 Q/DQ graphs in the form TensorRT's strongly typed builds take: around each chosen convolution, a
QuantizeLinear/DequantizeLinear pair on its input activation (symmetric, per tensor, zero point 0) and
on its FP32 weight initializer (symmetric, per output channel, zero point 0). Biases and every other
node stay FP32. Also: histograms of the convolution inputs, and running graphs with Q/DQ as written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from simswap_build.precision.ranges import BINS, amax_from_histogram


def quantizable_convs(model: onnx.ModelProto) -> dict[str, str]:
    """``{conv name: input activation}`` for the convolutions whose weight is an initializer, in graph order."""
    initializers = {i.name for i in model.graph.initializer}
    return {n.name: n.input[0] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in initializers}


def session(model: onnx.ModelProto, outputs: Sequence[str] = ()):
    """An ONNX Runtime CPU session that runs every node as written (no fusion: Q/DQ is fake quantization),
    with the extra ``outputs`` exposed."""
    import onnxruntime as ort

    if outputs:
        exposed = onnx.ModelProto()
        exposed.CopyFrom(model)
        known = {o.name for o in exposed.graph.output}
        exposed.graph.output.extend(
            helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in dict.fromkeys(outputs) if t not in known
        )
        model = exposed
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_batched(
    model_session, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, batch: int = 4
) -> list[np.ndarray]:
    """Run ``feeds`` (batched arrays) in chunks of ``batch``; outputs concatenated along the batch axis."""
    count = len(next(iter(feeds.values())))
    chunks = [
        model_session.run(outputs, {k: v[i : i + batch] for k, v in feeds.items()}) for i in range(0, count, batch)
    ]
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def activation_histograms(
    model: onnx.ModelProto, tensors: Iterable[str], feeds: Mapping[str, np.ndarray], bins: int = BINS
) -> dict[str, tuple[np.ndarray, float]]:
    """``{tensor: (counts, bin width)}``: the histogram of |x| over [0, max |x|] on ``feeds``, two passes
    (maxima, then counts) so that every face lands in the same bins."""
    from tqdm import tqdm

    names = list(dict.fromkeys(tensors))
    runner = session(model, names)
    count = len(next(iter(feeds.values())))
    maxima = dict.fromkeys(names, 0.0)
    counts = {name: np.zeros(bins, np.float64) for name in names}
    for sweep in ("max", "count"):
        for i in tqdm(range(count), desc=f"INT8 activation {sweep} pass", unit="sample", leave=False):
            values = runner.run(names, {k: v[i : i + 1] for k, v in feeds.items()})
            for name, value in zip(names, values, strict=True):
                magnitude = np.abs(value)
                if sweep == "max":
                    maxima[name] = max(maxima[name], float(magnitude.max()))
                elif maxima[name] > 0:
                    counts[name] += np.histogram(magnitude, bins=bins, range=(0.0, maxima[name]))[0]
    return {name: (counts[name], maxima[name] / bins) for name in names}


def activation_ranges(histograms: Mapping[str, tuple[np.ndarray, float]], method: str) -> dict[str, float]:
    """``{tensor: amax}`` by ``method`` (see ``simswap_build.precision.ranges``)."""
    return {name: amax_from_histogram(method, counts, width) for name, (counts, width) in histograms.items()}


def _scale(amax: np.ndarray) -> np.ndarray:
    return np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)  # an all-zero tensor takes any scale


def qdq_graph(model: onnx.ModelProto, ranges: Mapping[str, float], quantize: Iterable[str]) -> onnx.ModelProto:
    """``model`` with the convolutions named in ``quantize`` in INT8 (activation amax from ``ranges``, keyed
    by input tensor); the others read their FP32 input and weight unchanged. The names of the FP32
    convolutions are recorded in the metadata ``simswap_trt.fp32_layers``."""
    inputs = quantizable_convs(model)
    chosen = set(quantize)
    unknown = chosen - set(inputs)
    if unknown:
        raise ValueError(f"not quantizable convolutions: {sorted(unknown)}")
    weights = {i.name: i for i in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    added: list[TensorProto] = []
    quantized_activations: dict[str, str] = {}

    def qdq_pair(source: str, scale: np.ndarray, axis: int | None) -> list[onnx.NodeProto]:
        added.append(numpy_helper.from_array(scale, f"{source}_scale"))
        added.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{source}_zero_point"))
        q_args = [source, f"{source}_scale", f"{source}_zero_point"]
        dq_args = [f"{source}_quantized", f"{source}_scale", f"{source}_zero_point"]
        extra = {} if axis is None else {"axis": axis}
        return [
            helper.make_node("QuantizeLinear", q_args, [f"{source}_quantized"], f"{source}_QuantizeLinear", **extra),
            helper.make_node(
                "DequantizeLinear", dq_args, [f"{source}_dequantized"], f"{source}_DequantizeLinear", **extra
            ),
        ]

    for node in model.graph.node:
        if node.name in chosen:
            activation, weight = node.input[0], node.input[1]
            if activation not in quantized_activations:
                out.graph.node.extend(qdq_pair(activation, _scale(np.asarray(ranges[activation])), None))
                quantized_activations[activation] = f"{activation}_dequantized"
            values = numpy_helper.to_array(weights[weight])
            out.graph.node.extend(qdq_pair(weight, _scale(np.abs(values).reshape(len(values), -1).max(1)), 0))
            conv = onnx.NodeProto()
            conv.CopyFrom(node)
            conv.input[0], conv.input[1] = quantized_activations[activation], f"{weight}_dequantized"
            out.graph.node.append(conv)
        else:
            out.graph.node.append(node)
    out.graph.initializer.extend(added)
    fp32 = [name for name in inputs if name not in chosen]
    kept = [p for p in out.metadata_props if p.key != "simswap_trt.fp32_layers"]
    del out.metadata_props[:]
    out.metadata_props.extend(kept)
    out.metadata_props.add(key="simswap_trt.fp32_layers", value=",".join(fp32))
    return out
