"""The static TensorRT check passes our graphs and fails planted bad ones, naming the node and why."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.tiny import TINY_ARCFACE, TINY_GENERATOR

from simswap_build.convert.architectures import arcface_keys, generator_keys
from simswap_build.convert.bundle import random_weights
from simswap_build.graphs.export import arcface_graph, generator_graph
from simswap_build.tensorrt.compat import TARGETS, check_model


@pytest.mark.parametrize("target", list(TARGETS))
def test_our_graphs_pass(target):
    assert (
        check_model(generator_graph(random_weights(generator_keys(TINY_GENERATOR), 0), TINY_GENERATOR, 64), target)
        == []
    )
    assert check_model(arcface_graph(random_weights(arcface_keys(TINY_ARCFACE), 0), TINY_ARCFACE, 112), target) == []


def graph(nodes, initializers=(), opset=17, input_shape=("batch", 3, 8, 8), input_type=TensorProto.FLOAT):
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "planted",
            [helper.make_tensor_value_info("x", input_type, list(input_shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            list(initializers),
        ),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    return model


def reasons(model, target="11.x"):
    return [str(p) for p in check_model(model, target)]


def test_computed_reflect_pads_are_refused():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="pad_shape"),
        helper.make_node("Pad", ["x", "s"], ["y"], name="bad_pad", mode="reflect"),
    ]
    assert reasons(graph(nodes)) == [
        "[TensorRT 11.x] node 'bad_pad' (Pad): pads ('s') must be a constant initializer; fold constants first"
    ]


def test_dynamic_quantize_is_refused():
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"], name="dq")]
    assert reasons(graph(nodes)) == [
        "[TensorRT 11.x] node 'dq' (DynamicQuantizeLinear): "
        "dynamic quantization is not supported; use static symmetric Q/DQ"
    ]


def test_asymmetric_zero_point_is_refused():
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
        numpy_helper.from_array(np.array(3, np.int8), "zp"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["y"], name="q")]
    assert reasons(graph(nodes, inits)) == [
        "[TensorRT 11.x] node 'q' (QuantizeLinear): zero point must be 0 (symmetric quantization only)"
    ]


def test_opset_outside_the_10_3_range():
    model = graph([helper.make_node("Relu", ["x"], ["y"], name="r")], opset=21)
    assert reasons(model, "11.x") == []
    assert reasons(model, "10.3") == ["[TensorRT 10.3] model (-): opset 21 is outside the parser's range 9..20"]


def test_dynamic_spatial_axis_and_double_input():
    model = graph(
        [helper.make_node("Relu", ["x"], ["y"], name="r")],
        input_shape=("batch", 3, "height", 8),
        input_type=TensorProto.DOUBLE,
    )
    assert reasons(model) == [
        "[TensorRT 11.x] input 'x' (-): dtype DOUBLE is not a TensorRT I/O type",
        "[TensorRT 11.x] input 'x' (-): axis 2 is dynamic; only the batch axis may be dynamic",
    ]


def test_unknown_op_and_antialiased_resize():
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["r"], name="aa", mode="linear", antialias=1),
        helper.make_node("Col2Im", ["r", "r", "r"], ["y"], name="c2i"),
    ]
    assert reasons(graph(nodes, inits)) == [
        "[TensorRT 11.x] node 'aa' (Resize): antialiased resize is not supported",
        "[TensorRT 11.x] node 'c2i' (Col2Im): Col2Im is not in the TensorRT ONNX parser's support table",
    ]


def test_check_model_accepts_loaded_files(tmp_path):
    model = generator_graph(random_weights(generator_keys(TINY_GENERATOR), 0), TINY_GENERATOR, 64)
    onnx.save(model, tmp_path / "g.onnx")
    assert check_model(onnx.load(tmp_path / "g.onnx"), "10.3") == []
