"""The GFPGAN v1 clean restorer: architecture against an independent reference written here from the
published equations, strict loading of planted bad checkpoints, the ONNX graph against the torch model,
and ``add-enhancer`` / ``convert --enhancer``."""

from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from support.enhancer_formats import TINY_GFPGAN, bundle_with_enhancer, make_gfpgan, save_gfpgan

from simswap_build.convert.checkpoints import load_enhancer
from simswap_build.convert.enhancers import GFPGANv1Clean, detect_restorer
from simswap_build.graphs.enhancer import enhancer_graph
from simswap_build.tensorrt.compat import TARGETS, check_model
from simswap_trt.bundle import MANIFEST_NAME, Bundle
from simswap_trt.errors import BundleError, CheckpointError, UnsafeCheckpointError

# -- an independent reference, from the GFPGAN and StyleGAN2 papers, over the raw state_dict --------------


def _lrelu(x):
    return torch.where(x >= 0, x, 0.2 * x)


def _bilinear(x, factor):
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def _modulated_conv(sd, prefix, x, style, demodulate, upsample):
    """Per sample: w'[o,i,k] = w[o,i,k]·s[i] with s = A·style + b; demodulated w'/sqrt(Σ w'² + 1e-8)."""
    weight = sd[f"{prefix}.weight"][0]
    s = style @ sd[f"{prefix}.modulation.weight"].T + sd[f"{prefix}.modulation.bias"]
    outs = []
    for n in range(x.shape[0]):
        w = weight * s[n][None, :, None, None]
        if demodulate:
            w = w / torch.sqrt((w**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xn = _bilinear(x[n : n + 1], 2) if upsample else x[n : n + 1]
        outs.append(F.conv2d(xn, w, padding=w.shape[-1] // 2))
    return torch.cat(outs)


def _style_conv(sd, prefix, x, style, noise, upsample):
    out = _modulated_conv(sd, f"{prefix}.modulated_conv", x, style, True, upsample) * math.sqrt(2)
    return _lrelu(out + sd[f"{prefix}.weight"] * noise + sd[f"{prefix}.bias"])


def _to_rgb(sd, prefix, x, style, skip):
    out = _modulated_conv(sd, f"{prefix}.modulated_conv", x, style, False, False) + sd[f"{prefix}.bias"]
    return out if skip is None else out + _bilinear(skip, 2)


def _conv(sd, prefix, x):
    w = sd[f"{prefix}.weight"]
    return F.conv2d(x, w, sd.get(f"{prefix}.bias"), padding=w.shape[-1] // 2)


def _res_block(sd, prefix, x, factor):
    y = _lrelu(_conv(sd, f"{prefix}.conv1", x))
    y = _lrelu(_conv(sd, f"{prefix}.conv2", _bilinear(y, factor)))
    return y + _conv(sd, f"{prefix}.skip", _bilinear(x, factor))


def reference_gfpgan(sd: dict, config: GFPGANv1Clean, image: torch.Tensor) -> torch.Tensor:
    """GFPGAN on RGB [-1, 1]: U-Net → per-layer styles and SFT (scale, shift) on half the channels of a
    StyleGAN2 decoder with the stored noise."""
    levels = config.log_size - 2
    feat = _lrelu(_conv(sd, "conv_body_first", image))
    skips = []
    for i in range(levels):
        feat = _res_block(sd, f"conv_body_down.{i}", feat, 0.5)
        skips.append(feat)
    feat = _lrelu(_conv(sd, "final_conv", feat))
    latent = feat.flatten(1) @ sd["final_linear.weight"].T + sd["final_linear.bias"]
    styles = latent.view(len(image), config.num_latent, config.num_style_feat)
    conditions = []
    for i in range(levels):
        feat = _res_block(sd, f"conv_body_up.{i}", feat + skips[levels - 1 - i], 2)
        branch = [
            _conv(sd, f"{b}.{i}.2", _lrelu(_conv(sd, f"{b}.{i}.0", feat)))
            for b in ("condition_scale", "condition_shift")
        ]
        conditions.append(branch)
    d = "stylegan_decoder"
    noise = [sd[f"{d}.noises.noise{k}"] for k in range(config.num_noise)]
    x = sd[f"{d}.constant_input.weight"].expand(len(image), -1, -1, -1)
    x = _style_conv(sd, f"{d}.style_conv1", x, styles[:, 0], noise[0], False)
    rgb = _to_rgb(sd, f"{d}.to_rgb1", x, styles[:, 1], None)
    for level in range(levels):
        j = 2 * level + 1
        x = _style_conv(sd, f"{d}.style_convs.{2 * level}", x, styles[:, j], noise[j], True)
        half = x.shape[1] // 2
        scale, shift = conditions[level]
        x = torch.cat([x[:, :half], x[:, half:] * scale + shift], dim=1)
        x = _style_conv(sd, f"{d}.style_convs.{2 * level + 1}", x, styles[:, j + 1], noise[j + 1], False)
        rgb = _to_rgb(sd, f"{d}.to_rgbs.{level}", x, styles[:, j + 2], rgb)
    return rgb


SMALL_CONFIGS = [
    TINY_GFPGAN,
    GFPGANv1Clean(out_size=32, num_style_feat=16, narrow=1 / 16, num_mlp=1),
]


@pytest.mark.parametrize("config", SMALL_CONFIGS, ids=["64px", "32px"])
def test_architecture_equals_the_reference_from_the_equations(config):
    model = make_gfpgan(config, seed=3)
    sd = dict(model.state_dict())
    image = torch.rand(2, 3, config.size, config.size) * 2 - 1
    with torch.no_grad():
        ours, ref = model(image), reference_gfpgan(sd, config, image)
    assert ref.std() > 0.05  # a live network, not a constant
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("key", ["stylegan_decoder.noises.noise3", "condition_shift.1.2.bias", "final_linear.bias"])
def test_the_reference_sees_noise_conditions_and_styles(key):
    """The comparison above could not miss these terms: planting a change in each changes the output."""
    sd = dict(make_gfpgan(TINY_GFPGAN, seed=3).state_dict())
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        base = reference_gfpgan(sd, TINY_GFPGAN, image)
        planted = reference_gfpgan({**sd, key: sd[key] + 1.0}, TINY_GFPGAN, image)
    assert (planted - base).abs().max() > 1e-3


@pytest.mark.slow
def test_full_size_512_architecture_equals_the_reference():
    config = GFPGANv1Clean()
    model = make_gfpgan(config, seed=4)
    assert sum(v.numel() for v in model.state_dict().values()) == 87_143_276  # the released file: ~348 MB fp32
    image = torch.rand(1, 3, 512, 512) * 2 - 1
    with torch.no_grad():
        ours, ref = model(image), reference_gfpgan(dict(model.state_dict()), config, image)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_released_configuration_keys_and_detection():
    keys = dict(GFPGANv1Clean().keys())
    assert len(keys) == 285
    assert keys["final_linear.weight"] == (16 * 512, 256 * 16)  # 16 styles from the 4x4x256 U-Net bottleneck
    assert keys["stylegan_decoder.noises.noise14"] == (1, 1, 512, 512)
    assert keys["condition_scale.6.2.weight"] == (32, 32, 3, 3)  # SFT on half of the 64 decoder channels
    multiplier_1 = GFPGANv1Clean(out_size=128, num_style_feat=8, channel_multiplier=1, narrow=1 / 32, num_mlp=3)
    for config in (GFPGANv1Clean(), multiplier_1, *SMALL_CONFIGS):
        assert detect_restorer(dict(config.keys())) == config


# -- strict loading ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    return make_gfpgan(TINY_GFPGAN, seed=5)


def _save_state(path, state, key="params_ema"):
    torch.save({key: state}, path)
    return path


def test_loads_params_ema_strictly(tiny_model, tmp_path):
    loaded = load_enhancer(save_gfpgan(tiny_model, tmp_path / "GFPGANv1.4.pth"))
    assert loaded.restorer == TINY_GFPGAN
    assert set(loaded.weights) == set(tiny_model.state_dict())


@pytest.mark.parametrize(
    "plant, message",
    [
        (lambda s: s.pop("stylegan_decoder.noises.noise3"), "1 missing: stylegan_decoder.noises.noise3"),
        (
            lambda s: s.pop("stylegan_decoder.style_conv1.modulated_conv.modulation.weight"),
            "1 missing: stylegan_decoder.style_conv1.modulated_conv.modulation.weight",
        ),
        (lambda s: s.update({"extra.weight": torch.zeros(2)}), "1 unexpected: extra.weight"),
        (
            lambda s: s.update({"condition_scale.1.2.weight": torch.zeros(4, 4, 3, 3)}),
            "mis-shaped: condition_scale.1.2.weight: checkpoint (4, 4, 3, 3)",
        ),
    ],
    ids=["missing", "missing-modulation", "unexpected", "mis-shaped"],
)
def test_planted_bad_keys_are_errors_naming_key_and_file(tiny_model, tmp_path, plant, message):
    state = dict(tiny_model.state_dict())
    plant(state)
    path = _save_state(tmp_path / "bad.pth", state)
    with pytest.raises(CheckpointError) as err:
        load_enhancer(path)
    assert message in str(err.value) and "bad.pth" in str(err.value)


def test_wrong_entry_and_foreign_files_are_refused(tiny_model, tmp_path):
    with pytest.raises(CheckpointError, match="'params_ema'.*found 'params'"):
        load_enhancer(_save_state(tmp_path / "params.pth", tiny_model.state_dict(), key="params"))
    with pytest.raises(CheckpointError, match="not a known face-restorer"):
        load_enhancer(_save_state(tmp_path / "other.pth", {"conv.weight": torch.zeros(3)}))
    broken = {**tiny_model.state_dict(), "stylegan_decoder.constant_input.weight": torch.zeros(4)}
    with pytest.raises(CheckpointError, match="impossible configuration"):
        load_enhancer(_save_state(tmp_path / "broken.pth", broken))
    with pytest.raises(CheckpointError, match="not found"):
        load_enhancer(tmp_path / "absent.pth")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch " + str(_Exploit.marker),))


def test_malicious_pickle_runs_nothing(tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": {"x": _Exploit()}}, path, pickle_module=pickle)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        load_enhancer(path)
    assert not _Exploit.marker.exists()


# -- ONNX graph --------------------------------------------------------------------------------------------


def test_onnx_graph_equals_the_torch_model_and_is_deterministic(tiny_model):
    weights = {k: v.numpy() for k, v in tiny_model.state_dict().items()}
    graph = enhancer_graph(weights, TINY_GFPGAN)
    assert not [p for target in TARGETS for p in check_model(graph, target)]
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    faces = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    out = session.run(None, {"face": faces})[0]
    with torch.no_grad():
        ref = tiny_model.forward_rgb01(torch.from_numpy(faces)).numpy()
    assert ref.std() > 0.05
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(session.run(None, {"face": faces})[0], out)  # fixed noise
    single = session.run(None, {"face": faces[1:2]})[0]
    np.testing.assert_allclose(single, out[1:2], atol=1e-6, rtol=0)


def test_graph_writer_refuses_leftover_weights(tiny_model):
    weights = {k: v.numpy() for k, v in tiny_model.state_dict().items()}
    weights["stylegan_decoder.surplus"] = np.zeros(1, np.float32)
    with pytest.raises(Exception, match="unused"):
        enhancer_graph(weights, TINY_GFPGAN)


# -- bundle role -------------------------------------------------------------------------------------------


def test_add_enhancer_declares_role_alignment_and_licence(tiny_bundle, tiny_model, tmp_path, capsys):
    from simswap_build.cli import main

    checkpoint = save_gfpgan(tiny_model, tmp_path / "GFPGANv1.4.pth")
    bundle = bundle_with_enhancer(tiny_bundle.root, checkpoint, tmp_path)
    entry = bundle.require_enhancer()
    assert entry.architecture == "gfpgan-v1-clean"
    assert entry.source["alignment"] == "ffhq" and entry.source["license"].startswith("Apache-2.0")
    assert entry.inputs[0].shape == ("batch", 3, 64, 64)
    assert main(["check", str(bundle.root)]) == 0
    from simswap_trt.cli import main as trt_main

    assert trt_main(["info", str(bundle.root)]) == 0
    assert "ffhq alignment, licence Apache-2.0" in capsys.readouterr().out
    # a tampered signature is refused when the bundle loads
    manifest = json.loads((bundle.root / MANIFEST_NAME).read_text())
    manifest["models"]["enhancer"]["outputs"][0]["shape"] = ["batch", 3, 32, 32]
    (bundle.root / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="enhancer graph must"):
        Bundle.load(bundle.root)


def test_bundle_without_enhancer_names_the_command(tiny_bundle):
    with pytest.raises(BundleError, match="simswap-build add-enhancer"):
        tiny_bundle.require_enhancer()


def test_convert_with_enhancer(tiny_checkpoints, tiny_model, tmp_path):
    from simswap_build.cli import main

    _, _, generator, arcface = tiny_checkpoints
    checkpoint = save_gfpgan(tiny_model, tmp_path / "GFPGANv1.4.pth")
    out = tmp_path / "bundle"
    args = ["convert", "--generator", str(generator), "--arcface", str(arcface), "--output", str(out)]
    assert main([*args, "--enhancer", str(checkpoint), "--no-weights"]) == 0
    assert Bundle.load(out).require_enhancer().source["sha256"]


def test_fp16_enhancer_variant_meets_45_db_or_is_refused(tiny_bundle, tiny_model, tmp_path, monkeypatch):
    from simswap_build.precision import fp16, recipe
    from simswap_build.precision.goals import PrecisionGoalError

    checkpoint = save_gfpgan(tiny_model, tmp_path / "GFPGANv1.4.pth")
    bundle = bundle_with_enhancer(tiny_bundle.root, checkpoint, tmp_path)
    monkeypatch.setattr(fp16, "ENHANCER_FP16_GOAL_DB", 200.0)  # unreachable: no FP16 enhancer is written
    with pytest.raises(PrecisionGoalError, match="FP16 enhancer"):
        recipe.add_precisions(bundle.root, None, ["fp16"])
    kept = Bundle.load(bundle.root).variants  # the graphs that met their goals are kept
    assert "enhancer" not in kept and set(kept) == {"generator", "arcface"}
    monkeypatch.undo()
    recipe.add_precisions(bundle.root, None, ["fp16"])
    variant = Bundle.load(bundle.root).model("enhancer", "fp16")
    assert variant.source["fp16_check"]["psnr_min_db"] >= 45 and variant.source["alignment"] == "ffhq"
    faces = np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)
    fp32 = ort.InferenceSession(bundle.root / "enhancer.onnx").run(None, {"face": faces})[0]
    fp16 = ort.InferenceSession(bundle.root / variant.file).run(None, {"face": faces})[0]
    assert 10 * np.log10(1 / np.mean((fp32 - fp16) ** 2)) >= 45


def test_triton_repo_exports_the_enhancer(tiny_bundle, tiny_model, tmp_path):
    from simswap_build.tensorrt.triton_repo import write_triton_repo

    bundle = bundle_with_enhancer(tiny_bundle.root, save_gfpgan(tiny_model, tmp_path / "g.pth"), tmp_path)
    configs = write_triton_repo(bundle.root, tmp_path / "repo")
    config = (tmp_path / "repo" / "simswap_enhancer_onnx" / "config.pbtxt").read_text()
    assert len(configs) == 3 and 'name: "face"' in config and 'name: "enhanced"' in config
    assert (tmp_path / "repo" / "simswap_enhancer_onnx" / "1" / "model.onnx").is_file()
