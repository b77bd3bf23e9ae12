"""Static TensorRT compatibility check of an ONNX graph, runnable without TensorRT or a GPU.

It applies the ONNX parser's documented rules (onnx-tensorrt ``docs/operators.md`` for TensorRT 10.x,
the TensorRT 11 ONNX opset guide, and the facts collected in the project's TensorRT reference) to every
node, attribute, dtype and graph input, for the two TensorRT generations the product targets. A graph
that fails gets one ``Problem`` per offending node, naming the node, its op and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, numpy_helper


@dataclass(frozen=True)
class TrtTarget:
    """One TensorRT generation: the ONNX opsets its parser documents."""

    name: str
    min_opset: int
    max_opset: int


TARGETS = {
    # JetPack 6 ships 10.3. Its parser table covers opsets up to 20 (ONNX 1.16-era release); kept conservative.
    "10.3": TrtTarget("10.3", 9, 20),
    # TensorRT 11 ONNX opset guide: "Maximum opset 25", backward compatible to opset 9.
    "11.x": TrtTarget("11.x", 9, 25),
}

# Ops the parser imports in both generations (subset of operators.md relevant to convolutional image
# models); restrictions that can be checked statically are enforced in ``_node_rules``.
SUPPORTED_OPS = frozenset(
    """Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Constant ConstantOfShape
    Conv ConvTranspose DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand Flatten Floor
    Gather GatherElements GatherND Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual GridSample
    HardSigmoid HardSwish Identity InstanceNormalization LayerNormalization LeakyRelu Less LessOrEqual Log
    LogSoftmax MatMul Max MaxPool Mean Min Mod Mul Neg Not Or Pad Pow PRelu QuantizeLinear Range Reciprocal
    ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
    Reshape Resize Round Selu Shape Sigmoid Sign Sin Size Slice Softmax Softplus Softsign SpaceToDepth Split
    Sqrt Squeeze Sub Sum Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Where Xor""".split()
)
# Never imported: the QOperator / dynamic quantization formats and AffineGrid.
UNSUPPORTED_OPS = {
    "DynamicQuantizeLinear": "dynamic quantization is not supported; use static symmetric Q/DQ",
    "QLinearConv": "QOperator format is not supported; use QDQ",
    "QLinearMatMul": "QOperator format is not supported; use QDQ",
    "ConvInteger": "integer convolution is not supported; use QDQ",
    "MatMulInteger": "integer MatMul is not supported; use QDQ",
    "AffineGrid": "not in the parser's support table; build the grid from MatMul/Reshape",
}
PAD_MODES = {"constant", "reflect", "edge", "wrap"}
RESIZE_MODES = {"nearest", "linear", "cubic"}
RESIZE_COORDINATES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
IO_DTYPES = {
    TensorProto.FLOAT,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
    TensorProto.INT8,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.BOOL,
    TensorProto.UINT8,
}


@dataclass(frozen=True)
class Problem:
    """Why one node (or graph input, or the model) would not import into TensorRT."""

    target: str
    where: str
    op: str
    reason: str

    def __str__(self) -> str:
        return f"[TensorRT {self.target}] {self.where} ({self.op}): {self.reason}"


def check_model(model: onnx.ModelProto, target: str | TrtTarget) -> list[Problem]:
    """Every problem TensorRT ``target`` ("10.3" or "11.x") would have with ``model``; empty if none."""
    t = TARGETS[target] if isinstance(target, str) else target
    problems = [Problem(t.name, "model", "-", reason) for reason in _model_rules(model, t)]
    problems += [Problem(t.name, f"input {name!r}", "-", reason) for name, reason in _input_rules(model)]
    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        for reason in _node_rules(node, initializers, model):
            problems.append(Problem(t.name, f"node {node.name or '<unnamed>'!r}", node.op_type, reason))
    return problems


def _model_rules(model: onnx.ModelProto, t: TrtTarget) -> list[str]:
    reasons = []
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            if not t.min_opset <= opset.version <= t.max_opset:
                reasons.append(f"opset {opset.version} is outside the parser's range {t.min_opset}..{t.max_opset}")
        else:
            reasons.append(f"custom op domain {opset.domain!r} needs a TensorRT plugin")
    return reasons


def _input_rules(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """Only the leading (batch) axis may be dynamic; profiles then cover it. Dtypes must exist in TensorRT."""
    initializer_names = {init.name for init in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in initializer_names:
            continue
        tensor = value.type.tensor_type
        if tensor.elem_type not in IO_DTYPES:
            out.append((value.name, f"dtype {TensorProto.DataType.Name(tensor.elem_type)} is not a TensorRT I/O type"))
        for axis, dim in enumerate(tensor.shape.dim):
            static = dim.HasField("dim_value") and dim.dim_value > 0
            if axis > 0 and not static:
                out.append((value.name, f"axis {axis} is dynamic; only the batch axis may be dynamic"))
    return out


class _NodeCheck:
    """The reasons one node breaks a parser rule, collected by the checks of its op."""

    def __init__(self, node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> None:
        self.node, self.initializers = node, initializers
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        self.reasons: list[str] = []

    def text(self, name: str, default: str) -> str:
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def must_be_initializer(self, index: int, what: str) -> None:
        inputs = self.node.input
        if len(inputs) > index and inputs[index] and inputs[index] not in self.initializers:
            self.reasons.append(f"{what} ({inputs[index]!r}) must be a constant initializer; fold constants first")


def _node_rules(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto], model: onnx.ModelProto) -> list[str]:
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return [f"op from domain {node.domain!r} needs a TensorRT plugin"]
    if op in UNSUPPORTED_OPS:
        return [UNSUPPORTED_OPS[op]]
    if op not in SUPPORTED_OPS:
        return [f"{op} is not in the TensorRT ONNX parser's support table"]
    check = _NodeCheck(node, initializers)
    if op == "Pad":
        if check.text("mode", "constant") not in PAD_MODES:
            check.reasons.append(f"pad mode {check.text('mode', 'constant')!r} is not supported")
        check.must_be_initializer(1, "pads")
    elif op == "Resize":
        _resize_rules(check)
    elif op == "InstanceNormalization":
        check.must_be_initializer(1, "scale")
        check.must_be_initializer(2, "bias")
    elif op == "Clip":
        check.must_be_initializer(1, "min")
        check.must_be_initializer(2, "max")
    elif op in ("QuantizeLinear", "DequantizeLinear"):
        _quantize_rules(check)
    elif op == "GridSample":
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset >= 20:
            check.reasons.append("opset >= 20 GridSample silently falls back to nearest in the parser; export at 16-19")
    elif op == "Cast" and check.attrs.get("to") == TensorProto.DOUBLE:
        check.reasons.append("casts to float64; TensorRT has no double precision")
    for name in node.input:
        if name in initializers and initializers[name].data_type == TensorProto.DOUBLE:
            check.reasons.append(f"initializer {name!r} is float64; TensorRT has no double precision")
    return check.reasons


def _resize_rules(check: _NodeCheck) -> None:
    mode, coords = check.text("mode", "nearest"), check.text("coordinate_transformation_mode", "half_pixel")
    if mode not in RESIZE_MODES:
        check.reasons.append(f"resize mode {mode!r} is not supported")
    if coords not in RESIZE_COORDINATES:
        check.reasons.append(f"coordinate_transformation_mode {coords!r} is not supported")
    if mode == "nearest" and check.text("nearest_mode", "round_prefer_floor") not in NEAREST_MODES:
        check.reasons.append(f"nearest_mode {check.text('nearest_mode', '')!r} is not supported")
    if check.attrs.get("antialias", 0):
        check.reasons.append("antialiased resize is not supported")
    if check.text("keep_aspect_ratio_policy", "stretch") != "stretch":
        check.reasons.append("only keep_aspect_ratio_policy='stretch' is supported")
    check.must_be_initializer(2, "scales")
    check.must_be_initializer(3, "sizes")


def _quantize_rules(check: _NodeCheck) -> None:
    """Constant scales and zero points, the zero points 0 (TensorRT quantizes symmetrically)."""
    check.must_be_initializer(1, "scale")
    inputs = check.node.input
    zero_point = inputs[2] if len(inputs) > 2 and inputs[2] else None
    if zero_point is not None:
        if zero_point not in check.initializers:
            check.reasons.append("zero point must be a constant initializer")
        elif numpy_helper.to_array(check.initializers[zero_point]).any():
            check.reasons.append("zero point must be 0 (symmetric quantization only)")
