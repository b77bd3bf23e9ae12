"""Precision recipes: the graphs have exactly the structure TensorRT needs, calibration is deterministic
and fails clearly on bad folders, the INT8 search keeps a layer made fragile on purpose (and only it) in
FP32, stops with a report on an impossible goal, never calibrates on a check face, the range methods
agree with independent float64 computations, and the fidelity report recomputes its numbers."""

import math
import shutil
import statistics

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper
from skimage.metrics import peak_signal_noise_ratio
from support.tiny import TINY_ARCFACE, TINY_GENERATOR

import simswap_build.precision.scoring as scoring_module
import simswap_build.precision.search as search_module
from simswap_build.bench.photos import face_photo_set
from simswap_build.cli import main as build_main
from simswap_build.cli import validate as validate_command
from simswap_build.convert.bundle import reestimated_bundle
from simswap_build.precision.calibration import calibration_crops
from simswap_build.precision.fidelity import fidelity_report, psnr, psnr_per_face
from simswap_build.precision.fp16 import fp16_graph
from simswap_build.precision.goals import Goals, PrecisionGoalError
from simswap_build.precision.qdq import activation_histograms, quantizable_convs, run_batched, session
from simswap_build.precision.ranges import entropy_amax, max_amax, mse_amax, percentile_amax
from simswap_build.precision.recipe import add_precisions, feeds_for
from simswap_build.precision.search import arcface_for_int8, int8_search
from simswap_build.precision.split import (
    MIN_CALIBRATION,
    VARIANTS,
    check_count,
    face_sha256,
    face_variants,
    split_faces,
)
from simswap_build.precision.tolerance import lower_bound, tolerance_factor
from simswap_build.tensorrt.builder import register_variants
from simswap_build.tensorrt.compat import check_model
from simswap_trt.backends import open_engine
from simswap_trt.bundle import Bundle
from simswap_trt.engines import onnxruntime as onnxruntime_engine
from simswap_trt.engines.onnxruntime import int8_kernels_exact
from simswap_trt.errors import BundleError, EngineError, InputError
from simswap_trt.vision.preprocess import crops_to_tensor


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    face_photo_set(root / "calibration", 12, seed=0)  # the default split holds out 6, calibrates on the rest
    face_photo_set(root / "held-out", 4, seed=1)
    return root


@pytest.fixture(scope="module")
def recipe(photos, tmp_path_factory):
    """A tiny bundle with BatchNorm statistics from real faces, through the INT8 recipe with default goals;
    records the crops every calibration (histogram) pass saw."""
    crops = calibration_crops(photos / "calibration", "multipose", 224)
    bundle = reestimated_bundle(
        tmp_path_factory.mktemp("p") / "b", crops, generator_config=TINY_GENERATOR, arcface_config=TINY_ARCFACE
    )
    seen = []

    def recording(model, tensors, feeds, *args):
        seen.append(next(iter(feeds.values())))
        return activation_histograms(model, tensors, feeds, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_module, "activation_histograms", recording)
        report = add_precisions(bundle.root, photos / "calibration")
    return Bundle.load(bundle.root), report, seen


@pytest.fixture(scope="module")
def precision_bundle(recipe):
    return recipe[0]


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
    fp32_layers = [
        name
        for name in next(p.value for p in model.metadata_props if p.key == "simswap_trt.fp32_layers").split(",")
        if name
    ]
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
    recorded = precision_bundle.model("generator", "int8").source["recipe"]["fp32_layers"]
    assert fp32_layers == recorded and len(fp32_layers) < len(
        quantizable_convs(onnx.load(precision_bundle.path_of("generator")))
    )
    assert check_model(model, "10.3") == [] and check_model(model, "11.x") == []


def test_calibration_is_deterministic(photos, tmp_path, precision_bundle):
    first = calibration_crops(photos / "calibration", "multipose", 224, cache_dir=tmp_path / "a")
    second = calibration_crops(photos / "calibration", "multipose", 224, cache_dir=tmp_path / "b")
    np.testing.assert_array_equal(first, second)
    root = tmp_path / "again"
    shutil.copytree(precision_bundle.root, root)
    add_precisions(root, photos / "calibration", ["int8"])
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


# -- INT8 search ---------------------------------------------------------------------------------------------


def make_fragile(model: onnx.ModelProto, conv_name: str) -> onnx.ModelProto:
    """The same function with one convolution made fragile: its input gains a constant channel of 1000 with
    weight 0.01 (the bias compensates exactly in FP32). A per-tensor INT8 range either spans 1000 and
    erases the real channels, or clips the constant and breaks the compensation."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    index, conv = next((i, n) for i, n in enumerate(out.graph.node) if n.name == conv_name)
    weight = numpy_helper.to_array(inits[conv.input[1]])
    bias = numpy_helper.to_array(inits[conv.input[2]])
    extra = np.full((weight.shape[0], 1, *weight.shape[2:]), 0.01, np.float32)
    inits[conv.input[1]].CopyFrom(numpy_helper.from_array(np.concatenate([weight, extra], 1), conv.input[1]))
    inits[conv.input[2]].CopyFrom(numpy_helper.from_array(bias - np.float32(1000 * extra[0].sum()), conv.input[2]))
    x = conv.input[0]
    constants = {"fragile_start": [0], "fragile_end": [1], "fragile_axis": [1]}
    for name, value in constants.items():
        out.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    out.graph.initializer.append(numpy_helper.from_array(np.array(0, np.float32), "fragile_zero"))
    out.graph.initializer.append(numpy_helper.from_array(np.array(1000, np.float32), "fragile_big"))
    nodes = [
        onnx.helper.make_node("Slice", [x, *constants], ["fragile_slice"], "fragile_slice"),
        onnx.helper.make_node("Mul", ["fragile_slice", "fragile_zero"], ["fragile_zeros"], "fragile_mul"),
        onnx.helper.make_node("Add", ["fragile_zeros", "fragile_big"], ["fragile_const"], "fragile_add"),
        onnx.helper.make_node("Concat", [x, "fragile_const"], ["fragile_input"], "fragile_concat", axis=1),
    ]
    conv.input[0] = "fragile_input"
    for offset, node in enumerate(nodes):
        out.graph.node.insert(index + offset, node)
    onnx.checker.check_model(out)
    return out


@pytest.fixture(scope="module")
def generator_feeds(precision_bundle, photos):
    split = split_faces(calibration_crops(photos / "calibration", "multipose", 224))
    return tuple(feeds["generator"] for feeds in feeds_for(precision_bundle.root, split.calibration, split.check))


def test_search_keeps_exactly_the_fragile_layer_in_fp32(recipe, generator_feeds):
    bundle, report, _ = recipe
    calibration, check = generator_feeds
    model = onnx.load(bundle.path_of("generator"))
    fragile = make_fragile(model, "BottleNeck.0.conv2")
    reference = run_batched(session(model), check)[0]
    np.testing.assert_allclose(run_batched(session(fragile), check)[0], reference, atol=2e-4)  # same function
    # every layer in INT8 on the honest model (same faces, clip-free ranges, which the search tries first):
    # the goal sits 2 dB below its lower tolerance bound
    honest = report["generator"]["method_scores"]["max"]
    goals = Goals(psnr_db=honest - 2.0)
    graph, report = int8_search(fragile, "generator", calibration, check, goals)
    assert report["fp32_layers"] == ["BottleNeck.0.conv2"]
    assert report["trail"]["0"]["worst"] < goals.psnr_db - 5  # the fragile layer in INT8 breaks the output
    swapped = run_batched(session(graph), check)[0]
    faces = psnr_per_face(run_batched(session(fragile), check)[0], swapped)
    on_ort = report["check"]["backends"]["onnxruntime"]
    assert on_ort["worst"] == pytest.approx(faces.min(), abs=1e-6)
    k = report["bound"]["k"]
    assert on_ort["bound"] == pytest.approx(faces.mean() - k * faces.std(ddof=1), abs=1e-6)
    assert min(on_ort["bound"], faces.min()) >= goals.psnr_db
    limiting = min(report["check"]["backends"].values(), key=lambda f: min(f["bound"], f["worst"]))
    assert report["check"]["bound"] == limiting["bound"] and report["check"]["worst"] == limiting["worst"]
    fp32 = next(p.value for p in graph.metadata_props if p.key == "simswap_trt.fp32_layers")
    assert fp32 == "BottleNeck.0.conv2"


def test_search_chooses_fallbacks_that_pass_on_every_backend(recipe, generator_feeds, monkeypatch):
    """A second backend that rounds worse (planted: noise on its output unless at least 3 convolutions stay
    FP32) makes the search keep more FP32 convolutions than ONNX Runtime alone needs; both backends' figures
    are reported and meet the goal."""
    bundle, report, _ = recipe
    calibration, check = generator_feeds
    model = onnx.load(bundle.path_of("generator"))
    goals = Goals(psnr_db=report["generator"]["method_scores"]["max"] - 2.0)  # all-INT8 passes on ONNX Runtime
    honest = scoring_module.run_on

    def rounding_worse(backend, graph, feeds, batch=4):
        out = honest("onnxruntime", graph, feeds, batch)
        fp32 = next(p.value for p in graph.metadata_props if p.key == "simswap_trt.fp32_layers")
        if backend == "openvino" and len([n for n in fp32.split(",") if n]) < 3:
            out = out + np.random.default_rng(0).normal(0, 0.25, out.shape).astype(np.float32)
        return out

    monkeypatch.setattr(scoring_module, "run_on", rounding_worse)
    _, alone = int8_search(model, "generator", calibration, check, goals, backends=("onnxruntime",))
    assert alone["fp32_layers"] == [] and alone["backends"] == ["onnxruntime"]
    _, both = int8_search(model, "generator", calibration, check, goals, backends=("onnxruntime", "openvino"))
    assert len(both["fp32_layers"]) == 3 and both["backends"] == ["onnxruntime", "openvino"]
    assert both["trail"]["0"]["backends"]["openvino"]["worst"] < goals.psnr_db  # the planted rounding is caught
    for figures in both["check"]["backends"].values():
        assert min(figures["bound"], figures["worst"]) >= goals.psnr_db


def test_impossible_goal_stops_with_the_report(precision_bundle, photos, tmp_path, capsys):
    root = tmp_path / "b"
    shutil.copytree(precision_bundle.root, root)
    manifest = (root / "manifest.json").read_bytes()
    args = ["precision", str(root), "--images", str(photos / "calibration"), "--precisions", "int8", "--overwrite"]
    code = build_main([*args, "--goal-psnr", "200", "--max-fp32-generator", "2", "--range-method", "percentile"])
    captured = capsys.readouterr()
    assert code == 1
    assert "lower bounds tried 0 FP32:" in captured.out and "2 FP32:" in captured.out
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("error: INT8 generator") and "up to 2 of 12 convolutions in FP32" in error
    assert "goal is 200.0" in error
    assert (root / "manifest.json").read_bytes() == manifest  # nothing written


def test_check_split_never_contains_a_calibration_face(recipe, photos, astronaut_crop):
    bundle, report, seen = recipe
    crops = calibration_crops(photos / "calibration", "multipose", 224)
    split = report["split"]
    assert not set(split["check_sha256"]) & set(split["calibration_sha256"])
    assert set(split["check_sha256"]) | set(split["calibration_sha256"]) == {face_sha256(c) for c in crops}
    assert bundle.model("generator", "int8").source["calibration"] == split  # recorded in the manifest
    check_faces = np.stack([c for c in crops if face_sha256(c) in split["check_sha256"]])
    check_tensors = crops_to_tensor(face_variants(check_faces), 224)  # and none of their variants
    assert len(seen) == 2  # one calibration pass per model, none on check faces
    for calibrated in seen:
        assert len(calibrated) == split["calibration_faces"] * len(VARIANTS)
        assert not any(np.array_equal(face, check) for face in calibrated for check in check_tensors)
    # duplicates (the same face twice) can never straddle the split
    distinct = [np.roll(astronaut_crop, shift, axis=1) for shift in range(10)]
    faces = np.stack([*distinct, distinct[3], distinct[7]])
    parts = split_faces(faces)
    assert (len(parts.check), len(parts.calibration)) == (6, 4)
    assert not {face_sha256(c) for c in parts.check} & {face_sha256(c) for c in parts.calibration}
    assert list(parts.check_sha256) == sorted({face_sha256(c) for c in faces})[:6]


def test_recipe_records_goals_and_meets_them_on_the_check_split(recipe):
    bundle, report, _ = recipe
    generator = bundle.model("generator", "int8").source
    assert generator["goals"] == {"psnr_db": 35.0, "cosine": 0.98, "coverage": 0.95, "confidence": 0.9}
    assert generator["calibration"]["check_faces"] == 6  # 40 % of 12 faces is fewer than the minimum of 6
    check, bound = generator["recipe"]["check"], generator["recipe"]["bound"]
    assert min(check["bound"], check["worst"]) >= 35.0 and check["bound"] < check["mean"]
    assert bound["k"] == pytest.approx(3.0919, abs=1e-4) and bound["check_faces"] == 6  # k for n = 6: Natrella A-7
    assert generator["recipe"]["method"] in ("max", "percentile", "entropy", "mse")
    backends = list(scoring_module.scoring_backends())  # OpenVINO too where it is installed
    for role in ("generator", "arcface"):
        recipe = bundle.model(role, "int8").source["recipe"]
        assert recipe["backends"] == backends and list(recipe["check"]["backends"]) == backends
        goal = recipe["goal"]
        assert all(min(f["bound"], f["worst"]) >= goal for f in recipe["check"]["backends"].values())
    assert set(generator["recipe"]["method_scores"]) == {"max", "percentile", "entropy", "mse"}
    arcface = bundle.model("arcface", "int8").source["recipe"]
    assert min(arcface["check"]["bound"], arcface["check"]["worst"]) >= 0.98 and arcface["graph"] in ("int8", "fp16")
    assert set(arcface["ms_per_face"]) == {"fp32", arcface["graph"]}


# -- the acceptance bound and the split rule --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "coverage", "confidence", "table"),
    [(6, 0.95, 0.90, 3.091), (10, 0.95, 0.90, 2.568), (20, 0.95, 0.90, 2.208), (10, 0.95, 0.95, 2.911)],
)
def test_tolerance_factor_matches_the_published_table(n, coverage, confidence, table):
    # one-sided normal tolerance factors, Natrella (1963) Table A-7 (its last digit may differ by 1)
    assert tolerance_factor(n, coverage, confidence) == pytest.approx(table, abs=1e-3)  # 3 decimals


def test_tolerance_bound_covers_as_stated():
    # the definition, by simulation: mean - k*sd of n normal draws lies below the population's
    # (1 - coverage) quantile in `confidence` of the draws
    rng = np.random.default_rng(3)
    n, coverage, confidence = 6, 0.95, 0.90
    samples = rng.normal(size=(200_000, n))
    bounds = samples.mean(1) - tolerance_factor(n, coverage, confidence) * samples.std(1, ddof=1)
    quantile = statistics.NormalDist().inv_cdf(1 - coverage)
    assert np.mean(bounds <= quantile) == pytest.approx(confidence, abs=0.004)


def test_lower_bounds_on_fixed_scores():
    psnr = [37.2, 38.9, 36.4, 39.5, 37.8, 38.1, 36.9]
    k = tolerance_factor(7)
    assert k == pytest.approx(2.894, abs=6e-4)  # Natrella A-7: n = 7, 95 % coverage, 90 % confidence
    expected = statistics.fmean(psnr) - k * statistics.stdev(psnr)
    assert lower_bound("generator", np.array(psnr)) == pytest.approx(expected, rel=1e-12)
    cos = [0.991, 0.987, 0.9935, 0.989, 0.9902, 0.9861, 0.9925]
    distances = [math.log(1 - c) for c in cos]
    expected = 1 - math.exp(statistics.fmean(distances) + k * statistics.stdev(distances))
    assert lower_bound("arcface", np.array(cos)) == pytest.approx(expected, rel=1e-12)
    assert lower_bound("arcface", np.array(cos)) < min(cos)  # wider than the sample, as n = 7 asks
    with pytest.raises(ValueError, match="at least 2 samples"):
        lower_bound("generator", np.array([40.0]))


def test_face_variants_and_worst_variant_scores(astronaut_crop):
    variants = face_variants(np.stack([astronaut_crop, astronaut_crop[::-1]]))
    assert variants.shape == (2 * len(VARIANTS), 224, 224, 3)
    np.testing.assert_array_equal(variants[0], astronaut_crop)
    np.testing.assert_array_equal(variants[1], cv2.flip(astronaut_crop, 1))
    darker = cv2.addWeighted(astronaut_crop, 0.8, astronaut_crop, 0.0, -16)  # saturating, as OpenCV rounds
    brighter = cv2.addWeighted(astronaut_crop, 1.2, astronaut_crop, 0.0, 16)
    assert np.abs(variants[2].astype(int) - darker).max() <= 1 and np.abs(variants[3].astype(int) - brighter).max() <= 1
    np.testing.assert_array_equal(variants[len(VARIANTS)], astronaut_crop[::-1])
    # a face scores the worst of its variants: errors 0.01, 0.1 (face 0) and 0.001, 0.02 (face 1)
    reference = np.zeros((4, 3, 2, 2))
    output = reference + np.array([0.01, 0.1, 0.001, 0.02])[:, None, None, None]
    scores = scoring_module.per_face_scores("generator", reference, output)
    np.testing.assert_allclose(scoring_module.worst_variant(scores, 2), [20.0, 10 * np.log10(1 / 0.02**2)])


def test_default_check_split_rule():
    # 40 % of the distinct faces, at least 6, at least 4 left for calibration
    assert [check_count(n) for n in (10, 12, 15, 16, 20, 30)] == [6, 6, 6, 6, 8, 12]
    assert MIN_CALIBRATION == 4
    with pytest.raises(InputError, match="INT8 needs at least 10 distinct faces .6 for the check split, 4 for"):
        check_count(9)
    assert check_count(9, fraction=0.3, min_check=4) == 4


# -- range methods against independent float64 computations on a fixed histogram ------------------------


@pytest.fixture(scope="module")
def histogram():
    rng = np.random.default_rng(7)
    values = np.abs(np.concatenate([rng.laplace(0, 1.0, 200_000), rng.normal(0, 12.0, 300)]))
    counts, edges = np.histogram(values, bins=512, range=(0, values.max()))
    return counts.astype(np.float64), edges[1] - edges[0]


def test_max_range_is_the_largest_value(histogram):
    counts, width = histogram
    rng = np.random.default_rng(7)  # the fixture's sample
    values = np.abs(np.concatenate([rng.laplace(0, 1.0, 200_000), rng.normal(0, 12.0, 300)]))
    assert max_amax(counts, width) == pytest.approx(values.max(), rel=1e-12)
    assert max_amax(np.array([3.0, 0, 1, 0, 0]), 0.5) == 1.5  # the last non-empty bin's upper edge


def test_percentile_range_matches_a_sorted_sample_count(histogram):
    counts, width = histogram
    for percentile in (99.0, 99.9, 99.99):
        needed = percentile / 100 * counts.sum()
        running, edge = 0.0, 0
        while running < needed:  # walk the bins until enough values lie below the edge
            running += counts[edge]
            edge += 1
        assert percentile_amax(counts, width, percentile) == pytest.approx(edge * width, rel=1e-12)


def test_entropy_range_matches_a_direct_kl_minimisation(histogram):
    from scipy.stats import entropy

    counts, width = histogram
    best = (np.inf, None)
    for edge in range(128, len(counts) + 1):
        reference = counts[:edge].tolist()
        reference[-1] += counts[edge:].sum()
        candidate = np.zeros(edge)
        for level in range(128):  # bins [level*edge/128, (level+1)*edge/128) merge into one level
            members = [j for j in range(edge) if level * edge <= j * 128 < (level + 1) * edge]
            nonempty = [j for j in members if counts[j] > 0]
            for j in nonempty:
                candidate[j] = sum(counts[m] for m in members) / len(nonempty)
        divergence = entropy(reference, candidate) if candidate.sum() else np.inf
        if divergence <= best[0]:
            best = (divergence, edge)
    assert entropy_amax(counts, width) == pytest.approx(best[1] * width, rel=1e-12)


def test_mse_range_matches_a_direct_error_sum(histogram):
    counts, width = histogram
    centres = [(j + 0.5) * width for j in range(len(counts))]
    errors = []
    for edge in range(1, len(counts) + 1):
        amax = edge * width
        step = amax / 127
        total = 0.0
        for centre, count in zip(centres, counts, strict=True):
            quantized = min(127, max(-127, int(np.floor(centre / step + 0.5)))) * step
            total += count * (centre - quantized) ** 2
        errors.append(total)
    assert mse_amax(counts, width) == pytest.approx((int(np.argmin(errors)) + 1) * width, rel=1e-12)


# -- INT8 on the CPU -------------------------------------------------------------------------------------------


def test_cpu_int8_needs_exact_kernels(precision_bundle, monkeypatch):
    assert int8_kernels_exact(frozenset({"avx2", "avx512_vnni"})) and int8_kernels_exact(frozenset({"amx_int8"}))
    assert not int8_kernels_exact(frozenset({"avx2", "avx512f", "fma"}))
    monkeypatch.setattr(onnxruntime_engine, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    with pytest.raises(EngineError, match="INT8 on this CPU: ONNX Runtime's INT8 kernels need one of avx512_vnni"):
        open_engine(precision_bundle, "generator", "onnxruntime", precision="int8")
    monkeypatch.setattr(onnxruntime_engine, "cpu_flags", lambda: frozenset({"avx_vnni"}))
    engine = open_engine(precision_bundle, "generator", "onnxruntime", precision="int8")
    assert engine.backend == "onnxruntime[CPUExecutionProvider]"


@pytest.mark.skipif(not int8_kernels_exact(), reason="this CPU has neither VNNI nor AMX")
def test_cpu_int8_kernels_follow_the_qdq_graph(precision_bundle, generator_feeds):
    _, check = generator_feeds
    reference = run_batched(session(onnx.load(precision_bundle.path_of("generator"))), check)[0]
    as_written = run_batched(session(onnx.load(precision_bundle.path_of("generator", "int8"))), check)[0]
    kernels = open_engine(precision_bundle, "generator", "onnxruntime", precision="int8").run(check)["swapped"]
    assert psnr_per_face(as_written, kernels).min() > 38  # the optimized run computes the graph
    # and lose no more than 0.5 dB against FP32 than the graph itself does
    assert psnr_per_face(reference, kernels).min() >= psnr_per_face(reference, as_written).min() - 0.5


def test_arcface_stays_fp16_where_int8_costs_identity(precision_bundle, photos):
    split = split_faces(calibration_crops(photos / "calibration", "multipose", 224))
    feeds = [f["arcface"] for f in feeds_for(precision_bundle.root, split.calibration, split.check)]
    model = onnx.load(precision_bundle.path_of("arcface"))
    strict = Goals(cosine=0.9999)  # beyond INT8 with no FP32 fallback allowed
    graph, report = arcface_for_int8(model, *feeds, strict, 0, "auto", "auto")
    assert report["graph"] == "fp16" and not report["met"] and report["trail"]["0"]["worst"] < 0.9999
    types = value_types(graph)
    assert all(types[n.input[1]] == TensorProto.FLOAT16 for n in graph.graph.node if n.op_type == "Conv")
    check = crops_to_tensor(split.check, 224)
    reference = session(model).run(None, {"crop": check})[0]
    cosine = np.sum(reference * session(graph).run(None, {"crop": check})[0], 1)  # unit-length latents
    assert report["check"]["worst"] == pytest.approx(cosine.min(), abs=1e-5) and cosine.min() >= 0.9999
    with pytest.raises(PrecisionGoalError, match="INT8 arcface"):
        arcface_for_int8(model, *feeds, strict, 0, "int8", "auto")


def test_int8_report_printout(recipe, capsys):
    from simswap_build.cli.precision import print_int8_report

    _, report, _ = recipe
    print_int8_report(report)
    lines = capsys.readouterr().out.splitlines()
    split = report["split"]
    assert lines[0].startswith(f"int8: {split['calibration_faces']} calibration faces, {split['check_faces']} check")
    generator = report["generator"]
    assert lines[1].startswith("  generator: psnr_min_db >= 35.0 on the check split: met, bound ")
    assert f"with {len(generator['fp32_layers'])} of 12 convolutions in FP32" in lines[1]
    assert "reference selection runs ArcFace once per target face: fp32 " in lines[-1]


def test_bench_has_a_cpu_int8_row_only_where_the_kernels_are_exact(precision_bundle, monkeypatch):
    from simswap_build.bench.run import throughput

    monkeypatch.setattr(onnxruntime_engine, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    rows, skipped, _ = throughput(precision_bundle, [1], 1, gflop=1.0)
    assert skipped["onnxruntime-cpu-int8"].startswith("INT8 on this CPU")
    ort_rows = {r["backend"] for r in rows if r["backend"].startswith("onnxruntime")}
    assert ort_rows == {"onnxruntime-cpu-fp32", "onnxruntime-cpu-fp16"}
    monkeypatch.setattr(onnxruntime_engine, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    rows, skipped, _ = throughput(precision_bundle, [1], 1, gflop=1.0)
    assert "onnxruntime-cpu-int8" not in skipped
    assert [r["engine"] for r in rows if r["backend"] == "onnxruntime-cpu-int8"] == [
        "onnxruntime[CPUExecutionProvider]"
    ]


def test_runtime_precision_flag_reaches_the_engines(tiny_bundle, astronaut_crop, tmp_path, capsys):
    from simswap_trt.cli import main as trt_main

    crop = tmp_path / "crop.png"
    assert cv2.imwrite(str(crop), astronaut_crop)
    argv = ["swap-aligned", "--bundle", str(tiny_bundle.root), "--source", str(crop), "--target", str(crop)]
    assert trt_main([*argv, "--output", str(tmp_path / "out.png"), "--precision", "fp16"]) == 1
    assert "has no fp16 generator graph; create it with 'simswap-build precision" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()
    assert trt_main([*argv, "--output", str(tmp_path / "out.png"), "--precision", "fp32"]) == 0


def test_int8_is_validated_on_openvino_too(precision_bundle, photos):
    """The report runs the INT8 graph on OpenVINO's integer kernels as well, with the recipe's goals."""
    pytest.importorskip("openvino")
    from simswap_trt.engines import OnnxRuntimeEngine
    from simswap_trt.engines.openvino import OpenVinoEngine

    held = calibration_crops(photos / "held-out", "multipose", 224)
    report = fidelity_report(precision_bundle.root, held)
    row = report["precisions"]["int8/openvino"]
    assert row["backend"] == "openvino[CPU,f32]" and row["goals"] == report["precisions"]["int8"]["goals"]
    targets = crops_to_tensor(held, 224)
    latents = OnnxRuntimeEngine(precision_bundle.path_of("arcface")).run({"crop": targets})["latent"]
    feeds = {"target": targets, "latent": np.roll(latents, -1, axis=0)}
    reference = OnnxRuntimeEngine(precision_bundle.path_of("generator")).run(feeds)["swapped"]
    out = OpenVinoEngine(precision_bundle.path_of("generator", "int8")).run(feeds)["swapped"]
    assert row["psnr_db"] == pytest.approx(psnr(reference, out), rel=1e-6)


# -- the bundle's validated default precision ------------------------------------------------------------------


def test_validate_sets_the_default_only_where_it_met_its_goals(precision_bundle, photos, tmp_path, capsys):
    import json

    from simswap_trt.swapper import FaceSwapper

    root = tmp_path / "d"
    shutil.copytree(precision_bundle.root, root)
    assert "default_precision" not in json.loads((root / "manifest.json").read_text())  # absent unless set
    assert FaceSwapper.from_bundle(root, backend="onnxruntime").generator.graph["precision"] == "fp32"
    report = tmp_path / "report.json"
    args = ["validate", str(root), "--images", str(photos / "held-out"), "--json", str(report), "--set-default"]
    build_main([*args, "int8"])
    rows = json.loads(report.read_text())["precisions"]
    met = {
        b for b, key in (("onnxruntime", "int8"), ("openvino", "int8/openvino")) if rows.get(key, {}).get("meets_goals")
    }
    assert met, "the INT8 graphs of this bundle should meet their goals on held-out faces"
    bundle = Bundle.load(root)
    assert set(bundle.default_precision) == met
    for backend in met:
        record = bundle.default_precision[backend]
        row = rows["int8" if backend == "onnxruntime" else "int8/openvino"]
        assert record["precision"] == "int8" and record["gate"] == row["goals"]
        assert all(record["measured"][k] >= v for k, v in record["gate"].items())
    if "openvino" in met:
        assert FaceSwapper.from_bundle(root, backend="openvino").generator.graph["precision"] == "int8"
        forced = FaceSwapper.from_bundle(root, backend="openvino", precision="fp32")
        assert forced.generator.graph["precision"] == "fp32" and forced.arcface.graph["precision"] == "fp32"
    # a precision that fails its goals is not set, and removes a default set before on that backend
    failing = {"faces": 4, "precisions": {k: {**r, "meets_goals": False} for k, r in rows.items()}}
    assert not validate_command.set_default(bundle, failing, "int8", ("onnxruntime", "openvino"))
    assert Bundle.load(root).default_precision == {}
    assert "int8 is not the default on any backend" in capsys.readouterr().out


def test_default_precision_is_used_only_where_this_machine_runs_it(precision_bundle, tmp_path, monkeypatch):
    import json

    from simswap_trt.backends import default_precision

    root = tmp_path / "d"
    shutil.copytree(precision_bundle.root, root)
    manifest = json.loads((root / "manifest.json").read_text())
    record = {"precision": "int8", "gate": {"psnr_min_db": 35.0}, "faces": 4, "set_by": "test"}
    manifest["default_precision"] = {"onnxruntime": record}
    (root / "manifest.json").write_text(json.dumps(manifest))
    bundle = Bundle.load(root)
    monkeypatch.setattr(onnxruntime_engine, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    assert default_precision(bundle, "onnxruntime") == "int8"
    assert default_precision(bundle, "openvino") is None  # set for ONNX Runtime only
    monkeypatch.setattr(onnxruntime_engine, "cpu_flags", lambda: frozenset({"avx2"}))
    assert default_precision(bundle, "onnxruntime") is None  # INT8 kernels not exact on this CPU: FP32
    # a default the manifest cannot back is refused when the bundle loads
    for bad in ({"onnxruntime": {**record, "precision": "bf16"}}, {"openvino": {**record, "precision": "fp16"}}):
        manifest["default_precision"] = bad
        (root / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match="default precision"):
            Bundle.load(root)
    # replacing the INT8 graphs drops the default validated on the old ones
    manifest["default_precision"] = {"onnxruntime": record}
    (root / "manifest.json").write_text(json.dumps(manifest))
    bundle = register_variants(
        Bundle.load(root), {("generator", "int8"): onnx.load(bundle.path_of("generator", "int8"))}
    )
    assert bundle.default_precision == {}
