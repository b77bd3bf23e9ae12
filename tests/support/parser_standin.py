"""A stand-in face parser graph with a known answer."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def fake_parser(path, face_box):
    """A parser ONNX whose argmax is class 1 (skin) inside ``face_box`` of the 512 grid, else 0."""
    logits = np.zeros((1, 19, 512, 512), np.float32)
    logits[0, 0] = 1
    x0, y0, x1, y1 = face_box
    logits[0, 1, y0:y1, x0:x1] = 2
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["z", "logits"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fake_parser",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 512, 512])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(logits, "logits"), numpy_helper.from_array(np.zeros(1, np.float32), "zero")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path
