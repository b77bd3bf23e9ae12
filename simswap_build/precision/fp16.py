"""The FP16 recipe: convolutions, their weights and the activations between them in FP16 (onnxconverter-common's
float16 converter); instance norms, the identity-injection (style) arithmetic, the input normalisation and the
latent's L2 normalisation stay FP32 behind Cast nodes (eps 1e-8 is 0 in FP16 and the mean of squares can
overflow). Graph inputs and outputs stay FP32, so every precision has one contract. The enhancer's FP16 graph
is checked against its FP32 graph before it is kept."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx

from simswap_build.precision.fidelity import psnr_per_face
from simswap_build.precision.goals import ENHANCER_FP16_GOAL_DB, PrecisionGoalError
from simswap_build.precision.qdq import session

log = logging.getLogger(__name__)

ENHANCER_CHECK_FACES = 2


def fp32_islands(model: onnx.ModelProto) -> list[str]:
    """Nodes kept in FP32 by the FP16 recipe (names from the graph writer). Enhancer graphs have none."""
    if {p.key: p.value for p in model.metadata_props}.get("simswap_trt.role") == "enhancer":
        return []
    keep = ("InstanceNormalization",)
    markers = (".style", "normalize.", "denormalize.", "l2norm.", "subsample.")
    return [n.name for n in model.graph.node if n.op_type in keep or any(m in n.name for m in markers)]


def fp16_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The FP16 variant of an FP32 graph written by ``onnx_graphs`` (FP32 I/O, FP32 islands)."""
    from onnxconverter_common import float16  # optional (the 'build' extra): the command line works without it

    with warnings.catch_warnings(record=True) as clamped:  # one warning per weight below FP16's range
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=fp32_islands(model))
    if clamped:
        log.info("FP16: %d weights of magnitude < 1e-7 were set to +-1e-7 by the converter", len(clamped))
    onnx.checker.check_model(converted)
    return converted


def enhancer_fp16(model: onnx.ModelProto, alignment: str, license: str) -> tuple[onnx.ModelProto, dict]:
    """The FP16 enhancer graph and its manifest source: checked against the FP32 graph on seeded random
    faces (the hardest input: every pixel independent), each at least ``ENHANCER_FP16_GOAL_DB`` PSNR, else
    ``PrecisionGoalError``. INT8 is not offered for the enhancer."""
    graph = fp16_graph(model)
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    faces = np.random.default_rng(0).random((ENHANCER_CHECK_FACES, 3, size, size), dtype=np.float32)
    reference = session(model).run(None, {"face": faces})[0]
    psnr = psnr_per_face(reference, session(graph).run(None, {"face": faces})[0])
    report = {"psnr_min_db": float(psnr.min()), "goal_db": ENHANCER_FP16_GOAL_DB, "check": "seeded uniform noise"}
    if psnr.min() < ENHANCER_FP16_GOAL_DB:
        raise PrecisionGoalError(
            f"FP16 enhancer: {psnr.min():.1f} dB against FP32, the goal is {ENHANCER_FP16_GOAL_DB} dB", report
        )
    log.info("FP16 enhancer: %.1f dB against FP32", psnr.min())
    return graph, {"alignment": alignment, "license": license, "fp16_check": report}
