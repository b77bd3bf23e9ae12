"""Precision recipes: the graphs have exactly the structure TensorRT needs, calibration is deterministic
and fails clearly on bad folders, and the fidelity report recomputes its numbers and fails a bad graph."""

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import TINY_ARCFACE, TINY_GENERATOR
from onnx import TensorProto, numpy_helper
from skimage.metrics import peak_signal_noise_ratio

from simswap_build.bench.photos import face_photo_set
from simswap_build.cli import main as build_main
from simswap_build.convert import reestimated_bundle
from simswap_build.engine_builder import register_variants
from simswap_build.fidelity import fidelity_report, psnr
from simswap_build.precision import add_precisions, calibration_crops, fp16_graph
from simswap_build.trt_compat import check_model
from simswap_trt.bundle import Bundle
from simswap_trt.errors import BundleError, InputError
from simswap_trt.preprocess import crops_to_tensor


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    face_photo_set(root / "calibration", 6, seed=0)
    face_photo_set(root / "held-out", 4, seed=1)
    return root


@pytest.fixture(scope="module")
def precision_bundle(photos, tmp_path_factory):
    crops = calibration_crops(photos / "calibration", "multipose", 224)
    bundle = reestimated_bundle(
        tmp_path_factory.mktemp("p") / "b", crops, generator_config=TINY_GENERATOR, arcface_config=TINY_ARCFACE
    )
    add_precisions(bundle.root, photos / "calibration", keep_fp32={"generator": 1, "arcface": 1})
    return Bundle.load(bundle.root)


def value_types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    }
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def test_fp16_graph_keeps_sensitive_arithmetic_in_fp32(precision_bundle):
    model = onnx.load(precision_bundle.path_of("generator", "fp16"))
    types = value_types(model)
    nodes = {n.name: n for n in model.graph.node}
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    assert norms and all(
        types[n.input[0]] == TensorProto.FLOAT and types[n.output[0]] == TensorProto.FLOAT for n in norms
    )
    style = [n for name, n in nodes.items() if ".style" in name and n.op_type != "Cast"]  # not the added casts
    assert style and all(types[o] == TensorProto.FLOAT for n in style for o in n.output)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(types[n.input[1]] == TensorProto.FLOAT16 for n in convs)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT] * 2
    assert check_model(model, "10.3") == [] and check_model(model, "11.x") == []


def test_int8_graph_is_symmetric_per_channel_qdq(precision_bundle):
    model = onnx.load(precision_bundle.path_of("generator", "int8"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"QLinearConv", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    for node in qdq:
        assert len(node.input) == 3 and not inits[node.input[2]].any(), node.name  # zero point 0
        assert inits[node.input[2]].dtype == np.int8
    producers = {o: n for n in model.graph.node for o in n.output}
    fp32_layers = next(p.value for p in model.metadata_props if p.key == "simswap_trt.fp32_layers").split(",")
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        weight_source = producers.get(conv.input[1])
        if conv.name in fp32_layers:
            assert weight_source is None  # the kept layer reads its FP32 initializer directly
            continue
        assert weight_source.op_type == "DequantizeLinear"
        weight_quantize = producers[weight_source.input[0]]  # Q/DQ pair on the FP32 weight, as TensorRT folds it
        assert weight_quantize.op_type == "QuantizeLinear"
        out_channels = inits[weight_quantize.input[0]].shape[0]
        assert inits[weight_source.input[1]].shape == (out_channels,)  # one scale per output channel
    assert len(fp32_layers) == 1
    assert check_model(model, "10.3") == [] and check_model(model, "11.x") == []


def test_calibration_is_deterministic(photos, tmp_path, precision_bundle):
    first = calibration_crops(photos / "calibration", "multipose", 224, cache_dir=tmp_path / "a")
    second = calibration_crops(photos / "calibration", "multipose", 224, cache_dir=tmp_path / "b")
    np.testing.assert_array_equal(first, second)
    root = tmp_path / "again"
    shutil.copytree(precision_bundle.root, root)
    add_precisions(root, photos / "calibration", ["int8"], keep_fp32={"generator": 1, "arcface": 1})
    assert (root / "generator.int8.onnx").read_bytes() == (precision_bundle.root / "generator.int8.onnx").read_bytes()


def test_bad_calibration_folders(tmp_path):
    with pytest.raises(InputError, match="calibration folder not found"):
        calibration_crops(tmp_path / "missing", "multipose", 224)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images in the calibration folder"):
        calibration_crops(tmp_path / "empty", "multipose", 224)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "bad" / "b.jpg").write_bytes(np.full(100, 7, np.uint8).tobytes())
    with pytest.raises(InputError, match="no usable face in the 2 calibration image"):
        calibration_crops(tmp_path / "bad", "multipose", 224)


def test_fidelity_numbers_are_recomputed_from_outputs(precision_bundle, photos):
    held = calibration_crops(photos / "held-out", "multipose", 224)
    report = fidelity_report(precision_bundle.root, held)
    targets = crops_to_tensor(held, 224)

    def run(role, precision, feeds):
        options = ort.SessionOptions()
        if precision == "int8":  # Q/DQ as written (fake quantization), as the report runs it
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        path = str(precision_bundle.path_of(role, precision))
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    latents = run("arcface", "fp32", {"crop": targets})
    sources = np.roll(latents, -1, axis=0)
    reference = run("generator", "fp32", {"target": targets, "latent": sources})
    for precision in ("fp16", "int8"):
        out = run("generator", precision, {"target": targets, "latent": sources})
        expected = peak_signal_noise_ratio(reference.astype(np.float64), out.astype(np.float64), data_range=1.0)
        assert report["precisions"][precision]["psnr_db"] == pytest.approx(expected, rel=1e-6)
        assert report["precisions"][precision]["max_abs_error"] == pytest.approx(np.abs(reference - out).max())
    assert report["precisions"]["fp16"]["meets_goals"]  # FP16 keeps >= 45 dB even on this tiny model
    assert psnr(np.zeros(4), np.full(4, 0.1)) == pytest.approx(20.0)


def test_planted_bad_graph_fails_the_report_and_validate(precision_bundle, photos, tmp_path, capsys):
    root = tmp_path / "bad"
    shutil.copytree(precision_bundle.root, root)
    bundle = Bundle.load(root)
    graph = fp16_graph(onnx.load(bundle.path_of("generator")))
    for init in graph.graph.initializer:
        if init.name == "last_layer.conv.bias":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float16(0.5), init.name))
    register_variants(bundle, {("generator", "fp16"): graph}, {})
    code = build_main(["validate", str(root), "--images", str(photos / "held-out")])
    out = capsys.readouterr().out
    assert code == 1
    line = next(line for line in out.splitlines() if line.startswith("fp16"))
    assert "NOT met" in line and float(line.split()[1]) < 45


def test_tampered_variant_is_refused(precision_bundle, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(precision_bundle.root, root)
    with open(root / "arcface.int8.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="arcface.int8.onnx does not match the sha256"):
        Bundle.load(root)
    with pytest.raises(BundleError, match="has no int4 generator graph; create it with 'simswap-build precision"):
        Bundle.load(root, verify_hashes=False).model("generator", "int4")
