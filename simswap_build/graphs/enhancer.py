"""Write face-restorer inference graphs as ONNX, node by node from a numpy state_dict (as
``simswap_build.graphs.export`` does for the generator): only the batch axis is dynamic, node names follow
the checkpoint's module paths, and every checkpoint tensor is consumed or explicitly declared unused.

Contract of every restorer graph: ``face`` float32 [N,3,E,E] RGB in [0,1] (the face aligned to the
restorer's template at E px) → ``enhanced`` float32 [N,3,E,E] RGB in [0,1].

GFPGAN's modulated convolutions are written with ordinary convolutions, so that the weights stay
constants and the batch stays dynamic: scaling the input channels by the style ``s`` before a convolution
equals convolving with ``w·s``, and the demodulation factor ``1/sqrt(Σ_{i,k}(w[o,i,k]·s[i])² + eps)`` is
``1/sqrt(s² · Σ_k w[o,:,k]² + eps)``, one matrix product. The ``sqrt(2)`` gain of the style convolutions
is folded into that factor, and the noise is the checkpoint's fixed noise maps (deterministic output).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from simswap_build.convert.enhancers import DEMOD_EPS, SLOPE, GFPGANv1Clean, Restorer
from simswap_build.graphs.export import BATCH, _Graph
from simswap_trt.errors import ConfigError

ENHANCER_INPUT = "face"
ENHANCER_OUTPUT = "enhanced"


def enhancer_graph(weights: Mapping[str, np.ndarray], restorer: Restorer) -> onnx.ModelProto:
    """The inference graph of ``restorer`` with ``weights`` (keys already checked against it)."""
    if isinstance(restorer, GFPGANv1Clean):
        return _gfpgan_graph(weights, restorer)
    raise ConfigError(f"no graph writer for restorer {restorer.architecture!r}")


class _GFPGANWriter:
    def __init__(self, weights: Mapping[str, np.ndarray], config: GFPGANv1Clean) -> None:
        self.g, self.config = _Graph(weights), config
        g = self.g
        self.up = g.const("resize.up", np.array([1, 1, 2, 2], np.float32))
        self.down = g.const("resize.down", np.array([1, 1, 0.5, 0.5], np.float32))
        self.spatial = g.const("spatial_axes", np.array([2, 3], np.int64))
        self.styles: dict[str, str] = {}

    def leaky(self, x: str, name: str) -> str:
        return self.g.op("LeakyRelu", [x], name, alpha=SLOPE)

    def resize(self, x: str, name: str, scales: str) -> str:
        return self.g.op("Resize", [x, "", scales], name, mode="linear", coordinate_transformation_mode="half_pixel")

    def res_block(self, x: str, prefix: str, scales: str) -> str:
        g = self.g
        y = self.leaky(g.conv(x, f"{prefix}.conv1", f"{prefix}.conv1", None, pad=1), f"{prefix}.act1")
        y = g.conv(self.resize(y, f"{prefix}.resize", scales), f"{prefix}.conv2", f"{prefix}.conv2", None, pad=1)
        y = self.leaky(y, f"{prefix}.act2")
        skip = g.conv(self.resize(x, f"{prefix}.skip.resize", scales), f"{prefix}.skip", f"{prefix}.skip", None)
        return g.op("Add", [y, skip], f"{prefix}.add")

    def style(self, latent: str, layer: int) -> str:
        """Style vector ``layer`` [N, F] of the encoder's [N, L·F] latent (a to-RGB layer and the next
        level's first convolution read the same one)."""
        name = f"style{layer}"
        if name not in self.styles:
            feat = self.config.num_style_feat
            bounds = [
                self.g.const(f"{name}.{n}", np.array([v], np.int64))
                for n, v in (("start", layer * feat), ("end", (layer + 1) * feat), ("axis", 1))
            ]
            self.styles[name] = self.g.op("Slice", [latent, *bounds], name)
        return self.styles[name]

    def modulated(self, x: str, style: str, prefix: str, demod_gain: float | None, upsample: bool = False) -> str:
        """Modulated conv ``prefix`` (``demod_gain`` None: no demodulation) on ``x`` with ``style``."""
        g = self.g
        conv = f"{prefix}.modulated_conv"
        s = g.op(
            "Gemm",
            [
                style,
                g.const(f"{conv}.modulation.weight", g.weight(f"{conv}.modulation.weight").astype(np.float32)),
                g.const(f"{conv}.modulation.bias", g.weight(f"{conv}.modulation.bias").astype(np.float32)),
            ],
            f"{conv}.modulation",
            transB=1,
        )
        x = g.op("Mul", [x, g.op("Unsqueeze", [s, self.spatial], f"{conv}.style")], f"{conv}.modulate")
        if upsample:
            x = self.resize(x, f"{conv}.upsample", self.up)
        w = g.weight(f"{conv}.weight")[0]  # [out, in, k, k]
        k = w.shape[-1]
        y = g.op(
            "Conv",
            [x, g.const(f"{conv}.weight", w.astype(np.float32))],
            f"{conv}.conv",
            kernel_shape=[k, k],
            pads=[k // 2] * 4,
        )
        if demod_gain is None:
            return y
        # demod·gain = 1 / sqrt((s² · Σ_k w² + eps) / gain²)
        sq = (w**2).sum(axis=(2, 3)) / demod_gain**2
        energy = g.op(
            "Gemm",
            [
                g.op("Mul", [s, s], f"{conv}.style_sq"),
                g.const(f"{conv}.weight_sq", sq.astype(np.float32)),
                g.const(f"{conv}.eps", np.full(w.shape[0], DEMOD_EPS / demod_gain**2, np.float32)),
            ],
            f"{conv}.energy",
            transB=1,
        )
        demod = g.op("Reciprocal", [g.op("Sqrt", [energy], f"{conv}.norm")], f"{conv}.demod")
        return g.op("Mul", [y, g.op("Unsqueeze", [demod, self.spatial], f"{conv}.demod4d")], f"{conv}.out")

    def style_conv(self, x: str, style: str, prefix: str, noise: int, upsample: bool) -> str:
        g = self.g
        y = self.modulated(x, style, prefix, 2**0.5, upsample)
        noise_map = g.weight(f"{prefix}.weight")[0] * g.weight(f"stylegan_decoder.noises.noise{noise}")
        y = g.op("Add", [y, g.const(f"{prefix}.noise", noise_map.astype(np.float32))], f"{prefix}.add_noise")
        y = g.op(
            "Add", [y, g.const(f"{prefix}.bias", g.weight(f"{prefix}.bias").astype(np.float32))], f"{prefix}.add_bias"
        )
        return self.leaky(y, f"{prefix}.act")

    def to_rgb(self, x: str, style: str, prefix: str, skip: str | None) -> str:
        g = self.g
        y = self.modulated(x, style, prefix, None)
        y = g.op("Add", [y, g.const(f"{prefix}.bias", g.weight(f"{prefix}.bias").astype(np.float32))], f"{prefix}.out")
        if skip is None:
            return y
        return g.op("Add", [y, self.resize(skip, f"{prefix}.skip_up", self.up)], f"{prefix}.add_skip")

    def sft(self, x: str, scale: str, shift: str, level: int, channels: int) -> str:
        g = self.g
        name = f"sft.{level}"
        split = g.const(f"{name}.sizes", np.array([channels // 2, channels - channels // 2], np.int64))
        g.nodes.append(helper.make_node("Split", [x, split], [f"{name}.same", f"{name}.mod"], name=name, axis=1))
        mod = g.op("Add", [g.op("Mul", [f"{name}.mod", scale], f"{name}.mul"), shift], f"{name}.add")
        return g.op("Concat", [f"{name}.same", mod], f"{name}.concat", axis=1)

    def condition(self, feat: str, prefix: str) -> str:
        g = self.g
        y = self.leaky(g.conv(feat, f"{prefix}.0", f"{prefix}.0", None, pad=1), f"{prefix}.1")
        return g.conv(y, f"{prefix}.2", f"{prefix}.2", None, pad=1)


def _gfpgan_unet(w: _GFPGANWriter, x: str, levels: int) -> tuple[str, list[tuple[str, str]]]:
    """The U-Net: down to the style latent, then up, with each level's spatial-feature-transform conditions
    (scale, shift)."""
    g = w.g
    feat = w.leaky(g.conv(x, "conv_body_first", "conv_body_first", None), "conv_body_first.act")
    skips = []
    for i in range(levels):
        feat = w.res_block(feat, f"conv_body_down.{i}", w.down)
        skips.insert(0, feat)
    feat = w.leaky(g.conv(feat, "final_conv", "final_conv", None, pad=1), "final_conv.act")
    latent = g.op(
        "Gemm",
        [
            g.op("Flatten", [feat], "flatten", axis=1),
            g.const("final_linear.weight", g.weight("final_linear.weight").astype(np.float32)),
            g.const("final_linear.bias", g.weight("final_linear.bias").astype(np.float32)),
        ],
        "final_linear",
        transB=1,
    )
    conditions = []
    for i in range(levels):
        feat = w.res_block(g.op("Add", [feat, skips[i]], f"unet_skip.{i}"), f"conv_body_up.{i}", w.up)
        conditions.append((w.condition(feat, f"condition_scale.{i}"), w.condition(feat, f"condition_shift.{i}")))
    return latent, conditions


def _gfpgan_decoder(w: _GFPGANWriter, latent: str, conditions: list[tuple[str, str]], config: GFPGANv1Clean) -> str:
    """The StyleGAN2 decoder, modulated by ``conditions`` at each level; the RGB skip branch's last output."""
    g, d = w.g, "stylegan_decoder"
    out = g.const(f"{d}.constant_input.weight", g.weight(f"{d}.constant_input.weight").astype(np.float32))
    out = w.style_conv(out, w.style(latent, 0), f"{d}.style_conv1", 0, upsample=False)
    skip = w.to_rgb(out, w.style(latent, 1), f"{d}.to_rgb1", None)
    channels = sorted(config.decoder_channels.items())[1:]
    for level, ((scale, shift), (_, c)) in enumerate(zip(conditions, channels, strict=True)):
        i = 2 * level + 1
        out = w.style_conv(out, w.style(latent, i), f"{d}.style_convs.{2 * level}", i, upsample=True)
        out = w.sft(out, scale, shift, level, c)
        out = w.style_conv(out, w.style(latent, i + 1), f"{d}.style_convs.{2 * level + 1}", i + 1, upsample=False)
        skip = w.to_rgb(out, w.style(latent, i + 2), f"{d}.to_rgbs.{level}", skip)
    # not used at inference: the mapping MLP (latents come from the encoder) and the auxiliary RGB heads
    g.unused -= {k for k in g.unused if k.startswith((f"{d}.style_mlp.", "toRGB."))}
    return skip


def _gfpgan_graph(weights: Mapping[str, np.ndarray], config: GFPGANv1Clean) -> onnx.ModelProto:
    w = _GFPGANWriter(weights, config)
    g = w.g
    x = g.op("Mul", [ENHANCER_INPUT, g.const("two", np.array(2.0, np.float32))], "to_signed.mul")
    x = g.op("Sub", [x, g.const("one", np.array(1.0, np.float32))], "to_signed.sub")
    latent, conditions = _gfpgan_unet(w, x, len(config.decoder_channels) - 1)  # levels: 8 .. out_size
    skip = _gfpgan_decoder(w, latent, conditions, config)
    x = g.op("Clip", [skip, g.const("minus_one", np.array(-1.0, np.float32)), "one"], "clamp")
    x = g.op("Add", [x, "one"], "to_unit.add")
    g.op("Mul", [x, g.const("half", np.array(0.5, np.float32))], ENHANCER_OUTPUT)

    image = [BATCH, 3, config.size, config.size]
    return g.finish(
        f"enhancer_{config.architecture}",
        [helper.make_tensor_value_info(ENHANCER_INPUT, TensorProto.FLOAT, image)],
        [helper.make_tensor_value_info(ENHANCER_OUTPUT, TensorProto.FLOAT, image)],
        {
            "simswap_trt.role": "enhancer",
            "simswap_trt.architecture": config.architecture,
            "simswap_trt.alignment": config.alignment,
            "simswap_trt.license": config.license,
            "simswap_trt.contract": json.dumps(
                {
                    ENHANCER_INPUT: f"RGB [0,1] NCHW face aligned to the {config.alignment} template",
                    ENHANCER_OUTPUT: "RGB [0,1] NCHW",
                }
            ),
        },
    )
