"""The face parser's graph in a bundle, so that ``simswap-build engine --parser`` can build a TensorRT plan
of it and the device path can parse target crops on the GPU.

The graph is the user's face-parsing ONNX (``simswap_trt.vision.parsing``: ImageNet-normalised RGB
[N,3,512,512] in, class logits [N,19,512,512] as its first output) with a dynamic batch and only that first
output (BiSeNet exports also give two auxiliary heads that the mask does not use). It is saved as
``parser.onnx`` and declared under the ``parser`` role, with the file and sha256 it came from, which is how
the runtime knows that a ``FaceParser`` of that file may run on the plan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from simswap_build.convert.bundle_writer import add_model
from simswap_trt.bundle import PARSER, Bundle
from simswap_trt.constants import PARSING_CLASSES, PARSING_SIZE
from simswap_trt.errors import ConfigError
from simswap_trt.schema import sha256_of


def parser_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with input [batch, 3, 512, 512] and only its first output, [batch, 19, 512, 512]."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1:
        raise ConfigError(f"a face parser has one image input, this graph has {len(inputs)}")
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    del model.graph.output[1:]
    for value, channels in ((model.graph.input[0], 3), (model.graph.output[0], PARSING_CLASSES)):
        value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for axis, extent in enumerate(("batch", channels, PARSING_SIZE, PARSING_SIZE)):
            dim = dims.add()
            if axis == 0:
                dim.dim_param = extent
            else:
                dim.dim_value = extent
    return model


def check_parser_graph(graph: onnx.ModelProto, source: Path) -> None:
    """Run ``graph`` once on ONNX Runtime (two zero images): its output must really be [2, 19, 512, 512]."""
    from simswap_trt.engines import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(graph.SerializeToString(), threads=1, name=source.name)
    image = np.zeros((2, 3, PARSING_SIZE, PARSING_SIZE), np.float32)
    shape = engine.run({engine.inputs[0].name: image})[engine.outputs[0].name].shape
    if shape != (2, PARSING_CLASSES, PARSING_SIZE, PARSING_SIZE):
        raise ConfigError(
            f"{source} is not a face parser for --parsing-model: [2, 3, 512, 512] images give a first output of "
            f"shape {list(shape)}, not [2, {PARSING_CLASSES}, 512, 512]"
        )


def add_parser(bundle_root: str | Path, model_path: str | Path) -> Bundle:
    """Write the parser graph of ``model_path`` into the bundle as ``parser.onnx`` and declare it in the
    manifest (replacing a previous parser)."""
    source = Path(model_path)
    if not source.is_file():
        raise ConfigError(f"face-parsing model not found: {source}")
    bundle = Bundle.load(bundle_root)
    graph = parser_graph(onnx.load(str(source)))
    check_parser_graph(graph, source)
    return add_model(bundle, PARSER, graph, "bisenet", {"model": source.name, "sha256": sha256_of(source)})
