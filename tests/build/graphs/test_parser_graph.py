"""The face parser's graph in a bundle (``simswap-build engine --parser``): a dynamic batch and only the
logits, the file it came from recorded, and graphs that are not face parsers refused before the bundle
changes."""

import onnx
import pytest
from onnx import TensorProto, helper

from benchmarks.gpu_check.standins import content_parser
from simswap_build.graphs.parser import add_parser
from simswap_trt.bundle import Bundle
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.errors import ConfigError
from simswap_trt.schema import sha256_of


def copy_of(bundle, tmp_path):
    import shutil

    shutil.copytree(bundle.root, tmp_path / "b")
    return tmp_path / "b"


def test_the_parser_graph_keeps_only_the_logits_with_a_dynamic_batch(tiny_bundle, tmp_path):
    source = content_parser(tmp_path / "parser.onnx")
    model = onnx.load(str(source))  # a second, auxiliary head as BiSeNet exports have
    model.graph.node.append(helper.make_node("Identity", ["logits"], ["aux"]))
    model.graph.output.append(helper.make_tensor_value_info("aux", TensorProto.FLOAT, None))
    onnx.save(model, source)
    bundle = add_parser(copy_of(tiny_bundle, tmp_path), source)
    loaded = Bundle.load(bundle.root)
    assert [s.describe() for s in loaded.parser.inputs + loaded.parser.outputs] == [
        "input: float32[batch, 3, 512, 512]",
        "logits: float32[batch, 19, 512, 512]",
    ]
    assert loaded.parser.source == {"model": "parser.onnx", "sha256": sha256_of(source)}
    engine = OnnxRuntimeEngine(loaded.path_of("parser"))
    assert [o.name for o in engine.outputs] == ["logits"]


def test_a_graph_that_is_not_a_parser_is_refused(tiny_bundle, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["input"], ["logits"], kernel_shape=[2, 2], strides=[2, 2])],
        "halves",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 512, 512])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
    )
    path = tmp_path / "halves.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    root = copy_of(tiny_bundle, tmp_path)
    with pytest.raises(ConfigError, match=r"not a face parser .* shape \[2, 3, 256, 256\]"):
        add_parser(root, path)
    assert Bundle.load(root).parser is None and not (root / "parser.onnx").exists()
