"""Write the discriminator-free inference graphs as ONNX, directly from a state_dict of numpy arrays.

The graphs are written node by node instead of traced, so that every decision TensorRT cares about is
explicit and needs no clean-up pass: reflect-pad sizes are initializers, instance norm is the native
``InstanceNormalization`` (scale 1, bias 0, eps 1e-8: the upstream formula), eval-mode BatchNorm is
folded into the preceding convolution in float64, only the batch axis is dynamic, and node names follow
the upstream module paths (``BottleNeck.3.conv1``) so precision recipes can address them.

Contract of the graphs (also written into each file's ``metadata_props``):

* generator: ``target`` [N,3,S,S] RGB in [0,1] and ``latent`` [N,512] L2-normalised → ``swapped``
  [N,3,S,S] RGB in [0,1]. The training-code family's ImageNet normalisation is folded in.
* arcface: ``crop`` [N,3,S,S] RGB in [0,1] (the generator's aligned crop) → ``latent`` [N,512]: nearest
  subsampling to 112 with index ``floor(i*S/112)`` (as ``F.interpolate``), ImageNet normalisation,
  IR-SE network, L2 normalisation (eps 1e-12). Subsampling before normalising is exact: both are per pixel.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from simswap_build.convert.architectures import ArcFaceConfig, GeneratorConfig
from simswap_trt.constants import ARCFACE_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD, INSTANCE_NORM_EPS
from simswap_trt.errors import BuildError, ConfigError

OPSET = 17  # parsed by TensorRT 10.x (JetPack 6's 10.3) and 11.x; Resize half_pixel needs >= 11
IR_VERSION = 8  # the IR version that introduced opset 17; older parsers reject newer IR versions
BATCH = "batch"
BN_EPS = 1e-5
L2_EPS = 1e-12


class _Graph:
    """Accumulates nodes and initializers; every checkpoint tensor must be consumed exactly once."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self.weights = weights
        self.unused = {k for k in weights if not k.endswith("num_batches_tracked")}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def weight(self, key: str) -> np.ndarray:
        self.unused.discard(key)
        return np.asarray(self.weights[key], dtype=np.float64)

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, name: str, conv: str, bn: str | None, stride: int = 1, pad: int = 0) -> str:
        """Conv with an optional eval-mode BatchNorm folded in (float64 arithmetic, float32 result)."""
        w = self.weight(f"{conv}.weight")
        b = self.weight(f"{conv}.bias") if f"{conv}.bias" in self.weights else np.zeros(w.shape[0])
        if bn is not None:
            scale, shift = self.bn_affine(bn)
            w, b = w * scale[:, None, None, None], b * scale + shift
        return self.op(
            "Conv",
            [x, self.const(f"{name}.weight", w.astype(np.float32)), self.const(f"{name}.bias", b.astype(np.float32))],
            name,
            kernel_shape=list(w.shape[2:]),
            strides=[stride, stride],
            pads=[pad] * 4,
        )

    def bn_affine(self, bn: str) -> tuple[np.ndarray, np.ndarray]:
        scale = self.weight(f"{bn}.weight") / np.sqrt(self.weight(f"{bn}.running_var") + BN_EPS)
        return scale, self.weight(f"{bn}.bias") - self.weight(f"{bn}.running_mean") * scale

    def batch_norm(self, x: str, bn: str) -> str:
        """A BatchNorm that cannot be folded (it precedes a zero-padded conv, or nothing)."""
        params = [
            self.const(f"{bn}.{p}", self.weight(f"{bn}.{p}").astype(np.float32))
            for p in ("weight", "bias", "running_mean", "running_var")
        ]
        return self.op("BatchNormalization", [x, *params], bn, epsilon=BN_EPS)

    def reflect_pad(self, x: str, name: str, pad: int) -> str:
        pads = self.const(f"{name}.pads", np.array([0, 0, pad, pad, 0, 0, pad, pad], dtype=np.int64))
        return self.op("Pad", [x, pads], name, mode="reflect")

    def prelu(self, x: str, name: str, key: str) -> str:
        return self.op("PRelu", [x, self.const(name + ".slope", self.weight(key).astype(np.float32))], name)

    def finish(self, name: str, inputs: list, outputs: list, metadata: dict[str, str]) -> onnx.ModelProto:
        if self.unused:
            raise BuildError(f"graph writer left checkpoint tensors unused: {sorted(self.unused)[:5]}")
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="simswap-trt", ir_version=IR_VERSION
        )
        helper.set_model_props(model, metadata)
        onnx.checker.check_model(model, full_check=True)
        return model


def _channel_vector(values: tuple[float, float, float]) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(1, 3, 1, 1)


def generator_graph(weights: Mapping[str, np.ndarray], config: GeneratorConfig, crop_size: int) -> onnx.ModelProto:
    """The generator inference graph for ``config`` at a fixed ``crop_size`` and dynamic batch."""
    if crop_size % config.size_multiple:
        raise ConfigError(
            f"{config.name} generators need a crop size divisible by {config.size_multiple}, got {crop_size}: "
            "choose another --crop-size"
        )
    g = _Graph(weights)
    x = _generator_encoder(g, config)
    x = _id_blocks(g, x, config)
    _generator_decoder(g, x, config)

    image = [BATCH, 3, crop_size, crop_size]
    return g.finish(
        f"simswap_generator_{config.name}",
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, image),
            helper.make_tensor_value_info("latent", TensorProto.FLOAT, [BATCH, config.latent_size]),
        ],
        [helper.make_tensor_value_info("swapped", TensorProto.FLOAT, image)],
        {
            "simswap_trt.role": "generator",
            "simswap_trt.architecture": config.name,
            "simswap_trt.contract": json.dumps(
                {
                    "target": "RGB [0,1] NCHW aligned crop",
                    "latent": "L2-normalised ArcFace embedding",
                    "swapped": "RGB [0,1] NCHW",
                }
            ),
        },
    )


def _generator_encoder(g: _Graph, config: GeneratorConfig) -> str:
    """Input normalisation (training-code family), the first layer and the downsampling stages."""
    x = "target"
    if config.family == "train":
        x = g.op("Sub", [x, g.const("imagenet_mean", _channel_vector(IMAGENET_MEAN))], "normalize.sub")
        x = g.op("Div", [x, g.const("imagenet_std", _channel_vector(IMAGENET_STD))], "normalize.div")
    x = g.conv(g.reflect_pad(x, "first_layer.pad", 3), "first_layer.conv", "first_layer.1", "first_layer.2")
    x = g.op("Relu", [x], "first_layer.relu")
    for stage, _, _ in config.down_stages:
        x = g.op("Relu", [g.conv(x, f"{stage}.conv", f"{stage}.0", f"{stage}.1", stride=2, pad=1)], f"{stage}.relu")
    return x


def _id_blocks(g: _Graph, x: str, config: GeneratorConfig) -> str:
    """The ID-injection residual blocks: conv, instance norm and the latent's style, twice per block."""
    dim = config.ngf * 8
    norm_scale = g.const("instance_norm.scale", np.ones(dim, np.float32))
    norm_bias = g.const("instance_norm.bias", np.zeros(dim, np.float32))
    spatial_axes = g.const("spatial_axes", np.array([2, 3], dtype=np.int64))
    for i in range(config.n_blocks):
        block, y = f"BottleNeck.{i}", x
        for n in (1, 2):
            y = g.conv(g.reflect_pad(y, f"{block}.conv{n}.pad", 1), f"{block}.conv{n}", f"{block}.conv{n}.1", None)
            y = g.op("InstanceNormalization", [y, norm_scale, norm_bias], f"{block}.norm{n}", epsilon=INSTANCE_NORM_EPS)
            y = _apply_style(g, y, "latent", f"{block}.style{n}", dim, spatial_axes)
            if n == 1:
                y = g.op("Relu", [y], f"{block}.act1")
        x = g.op("Add", [x, y], f"{block}.add")
    return x


def _generator_decoder(g: _Graph, x: str, config: GeneratorConfig) -> str:
    """The upsampling stages, the last layer and the output "swapped" as RGB in [0, 1]."""
    scales = g.const("upsample.scales", np.array([1, 1, 2, 2], dtype=np.float32))
    for stage, _, _ in config.up_stages:
        x = g.op(
            "Resize", [x, "", scales], f"{stage}.upsample", mode="linear", coordinate_transformation_mode="half_pixel"
        )
        x = g.op("Relu", [g.conv(x, f"{stage}.conv", f"{stage}.1", f"{stage}.2", pad=1)], f"{stage}.relu")
    x = g.conv(g.reflect_pad(x, "last_layer.pad", 3), "last_layer.conv", "last_layer.1", None)
    if config.family == "official":
        x = g.op("Tanh", [x], "last_layer.tanh")
        x = g.op("Add", [x, g.const("one", np.array(1.0, np.float32))], "to_rgb01.add")
        return g.op("Mul", [x, g.const("half", np.array(0.5, np.float32))], "swapped")
    x = g.op("Mul", [x, g.const("imagenet_std_out", _channel_vector(IMAGENET_STD))], "denormalize.mul")
    x = g.op("Add", [x, g.const("imagenet_mean_out", _channel_vector(IMAGENET_MEAN))], "denormalize.add")
    return g.op(
        "Clip",
        [x, g.const("zero", np.array(0.0, np.float32)), g.const("one", np.array(1.0, np.float32))],
        "swapped",
    )


def _apply_style(g: _Graph, x: str, latent: str, style: str, dim: int, spatial_axes: str) -> str:
    """``x * (1 + scale) + shift`` with the "+1" folded into the scale half of the Linear's bias."""
    w, b = g.weight(f"{style}.linear.weight"), g.weight(f"{style}.linear.bias")
    parts = {"scale": (w[:dim], b[:dim] + 1.0), "shift": (w[dim:], b[dim:])}
    out = {}
    for part, (wp, bp) in parts.items():
        gemm = g.op(
            "Gemm",
            [
                latent,
                g.const(f"{style}.{part}.weight", wp.astype(np.float32)),
                g.const(f"{style}.{part}.bias", bp.astype(np.float32)),
            ],
            f"{style}.{part}",
            transB=1,
        )
        out[part] = g.op("Unsqueeze", [gemm, spatial_axes], f"{style}.{part}.unsqueeze")
    return g.op("Add", [g.op("Mul", [x, out["scale"]], f"{style}.mul"), out["shift"]], f"{style}.add")


def arcface_graph(weights: Mapping[str, np.ndarray], config: ArcFaceConfig, crop_size: int) -> onnx.ModelProto:
    """The identity graph: aligned ``crop_size`` crop in, L2-normalised latent out (dynamic batch)."""
    if crop_size < ARCFACE_INPUT_SIZE:
        raise ConfigError(f"ArcFace crops must be at least {ARCFACE_INPUT_SIZE} px, got {crop_size}: raise --crop-size")
    g = _Graph(weights)
    index = g.const(
        "subsample.index", (np.arange(ARCFACE_INPUT_SIZE) * crop_size // ARCFACE_INPUT_SIZE).astype(np.int64)
    )
    x = g.op("Gather", ["crop", index], "subsample.rows", axis=2)
    x = g.op("Gather", [x, index], "subsample.cols", axis=3)
    x = g.op("Sub", [x, g.const("imagenet_mean", _channel_vector(IMAGENET_MEAN))], "normalize.sub")
    x = g.op("Div", [x, g.const("imagenet_std", _channel_vector(IMAGENET_STD))], "normalize.div")
    x = g.prelu(g.conv(x, "conv1", "conv1", "bn1"), "prelu", "prelu.weight")
    x = g.op("MaxPool", [x], "maxpool", kernel_shape=[2, 2], strides=[2, 2])

    for stage, _, _, stride in config.stages():
        for b in range(config.layers[stage - 1]):
            x = _ir_block(g, x, f"layer{stage}.{b}", stride if b == 0 else 1)
    _arcface_head(g, x)

    return g.finish(
        f"simswap_arcface_{config.name}",
        [helper.make_tensor_value_info("crop", TensorProto.FLOAT, [BATCH, 3, crop_size, crop_size])],
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, [BATCH, config.embedding_size])],
        {
            "simswap_trt.role": "arcface",
            "simswap_trt.architecture": config.name,
            "simswap_trt.contract": json.dumps(
                {
                    "crop": "RGB [0,1] NCHW aligned crop (generator alignment)",
                    "latent": "L2-normalised identity embedding",
                }
            ),
        },
    )


def _ir_block(g: _Graph, x: str, p: str, stride: int) -> str:
    """One improved-residual block ``p`` (BN, conv, PReLU, conv, squeeze-excite, plus the shortcut)."""
    y = g.batch_norm(x, f"{p}.bn0")
    y = g.prelu(g.conv(y, f"{p}.conv1", f"{p}.conv1", f"{p}.bn1", pad=1), f"{p}.prelu1", f"{p}.prelu.weight")
    y = g.conv(y, f"{p}.conv2", f"{p}.conv2", f"{p}.bn2", stride=stride, pad=1)
    y = _squeeze_excite(g, y, f"{p}.se")
    residual = x
    if f"{p}.downsample.0.weight" in g.weights:
        residual = g.conv(x, f"{p}.downsample", f"{p}.downsample.0", f"{p}.downsample.1", stride=stride)
    x = g.op("Add", [y, residual], f"{p}.add")
    return g.op("PRelu", [x, f"{p}.prelu1.slope"], f"{p}.prelu2")  # the same PReLU, applied twice


def _arcface_head(g: _Graph, x: str) -> str:
    """BN, flatten, the fully connected layer with the last BN folded in, and the L2 normalisation: "latent"."""
    x = g.op("Flatten", [g.batch_norm(x, "bn2")], "flatten", axis=1)
    w, bias = g.weight("fc.weight"), g.weight("fc.bias")
    scale, shift = g.bn_affine("bn3")
    x = g.op(
        "Gemm",
        [
            x,
            g.const("fc.weight", (w * scale[:, None]).astype(np.float32)),
            g.const("fc.bias", (bias * scale + shift).astype(np.float32)),
        ],
        "fc",
        transB=1,
    )
    norm = g.op("ReduceL2", [x], "l2norm.norm", axes=[1], keepdims=1)
    norm = g.op("Max", [norm, g.const("l2norm.eps", np.array(L2_EPS, np.float32))], "l2norm.clamp")
    return g.op("Div", [x, norm], "latent")


def _squeeze_excite(g: _Graph, x: str, se: str) -> str:
    """SE as 1x1 convolutions on the pooled map, so no reshapes are needed."""
    y = g.op("GlobalAveragePool", [x], f"{se}.pool")
    for fc in ("fc.0", "fc.2"):
        w = g.weight(f"{se}.{fc}.weight")
        y = g.op(
            "Conv",
            [
                y,
                g.const(f"{se}.{fc}.weight", w[:, :, None, None].astype(np.float32)),
                g.const(f"{se}.{fc}.bias", g.weight(f"{se}.{fc}.bias").astype(np.float32)),
            ],
            f"{se}.{fc}",
            kernel_shape=[1, 1],
        )
        if fc == "fc.0":
            y = g.prelu(y, f"{se}.prelu", f"{se}.fc.1.weight")
    return g.op("Mul", [x, g.op("Sigmoid", [y], f"{se}.sigmoid")], f"{se}.scale")
