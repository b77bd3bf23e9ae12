"""The OpenVINO backend: the same results as ONNX Runtime on every role of a bundle (FP32 within 1e-4), its
asynchronous requests, the compiled-model cache (never stale), the BF16 refusal and gate, the INT8 Q/DQ
graph, and the ``auto`` choice with its logged reason."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from simswap_build.graphs.detector import add_detector
from simswap_build.graphs.parser import add_parser
from simswap_build.precision.fidelity import psnr
from simswap_trt import FaceSwapper
from simswap_trt import backends as backends_module
from simswap_trt.backends import CPU_RULE, open_engine
from simswap_trt.bundle import Bundle
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.engines import openvino as openvino_module
from simswap_trt.engines.openvino import KEY_FILE, OpenVinoEngine, bf16_supported
from simswap_trt.errors import EngineError

pytest.importorskip("openvino")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test compiles into its own cache folder."""
    monkeypatch.setenv("SIMSWAP_TRT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "openvino"


def random_parser(path):
    """A face parser with random weights: 3x3 conv (3->8), ReLU, 1x1 conv (8->19) at 512x512."""
    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Conv", ["r", "w2", "b2"], ["logits"]),
        ],
        "random_parser",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 512, 512])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b1"),
            numpy_helper.from_array(rng.normal(size=(19, 8, 1, 1)).astype(np.float32), "w2"),
            numpy_helper.from_array(rng.normal(size=19).astype(np.float32), "b2"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.fixture(scope="module")
def full_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with every optional role: a CenterFace detector graph (128 canvas) and a parser."""
    root = tmp_path_factory.mktemp("ov") / "b"
    shutil.copytree(tiny_bundle.root, root)
    add_detector(root, canvas=128)
    add_parser(root, random_parser(root.parent / "parser.onnx"))
    return Bundle.load(root)


def role_feeds(engine, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in engine.inputs:
        shape = [batch if isinstance(d, str) else d for d in spec.shape]
        feeds[spec.name] = rng.random(shape, dtype=np.float32) * (255 if spec.name == "input.1" else 1)
    return feeds


@pytest.mark.parametrize("role", ["generator", "arcface", "detector", "parser"])
def test_fp32_matches_onnxruntime_on_every_role(full_bundle, role):
    reference = open_engine(full_bundle, role, "onnxruntime")
    engine = open_engine(full_bundle, role, "openvino")
    assert isinstance(engine, OpenVinoEngine) and engine.backend == "openvino[CPU,f32]"
    assert (engine.inputs, engine.outputs) == (reference.inputs, reference.outputs)
    for batch in (1, 3):  # a dynamic batch
        feeds = role_feeds(engine, batch, seed=batch)
        expected, got = reference.run(feeds), engine.run(feeds)
        assert list(got) == [s.name for s in reference.outputs]
        for name, value in expected.items():
            assert got[name].shape == value.shape
            np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4, err_msg=f"{role} {name} batch {batch}")


def test_submit_collect_overlaps_and_keeps_order(full_bundle):
    engine = open_engine(full_bundle, "generator", "openvino")
    batches = [role_feeds(engine, 2, seed) for seed in range(3)]
    tickets = [engine.submit(feeds) for feeds in batches]  # three requests in flight at once
    for feeds, ticket in zip(batches, tickets, strict=True):
        np.testing.assert_array_equal(engine.collect(ticket)["swapped"], engine.run(feeds)["swapped"])


def test_typed_errors(full_bundle, tmp_path):
    engine = open_engine(full_bundle, "arcface", "openvino")
    with pytest.raises(EngineError, match=r"input 'crop' must be a float32 array, got float64"):
        engine.run({"crop": np.zeros((1, 3, 224, 224))})
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineError, match="the engine is closed"):
        engine.run({"crop": np.zeros((1, 3, 224, 224), np.float32)})
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(EngineError, match="OpenVINO cannot load .*bad.onnx"):
        OpenVinoEngine(tmp_path / "bad.onnx")


def tiny_graph(path, op: str) -> None:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_a_changed_graph_is_not_served_from_the_cache(tmp_path, private_cache):
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    path = tmp_path / "model.onnx"
    tiny_graph(path, "Relu")
    first = OpenVinoEngine(path)
    assert first.cache_dir.parent == private_cache and any(first.cache_dir.glob("*.blob"))
    np.testing.assert_array_equal(first.run({"x": x})["y"], np.maximum(x, 0))
    np.testing.assert_array_equal(OpenVinoEngine(path).run({"x": x})["y"], np.maximum(x, 0))  # from the cache
    tiny_graph(path, "Neg")  # same file name, another graph
    second = OpenVinoEngine(path)
    assert second.cache_dir != first.cache_dir
    np.testing.assert_array_equal(second.run({"x": x})["y"], -x)


def test_a_cache_folder_of_another_key_or_a_broken_blob_is_rebuilt(tmp_path, caplog):
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    path = tmp_path / "model.onnx"
    tiny_graph(path, "Neg")
    folder = OpenVinoEngine(path).cache_dir
    for blob in folder.glob("*.blob"):  # planted: a blob compiled from another graph under this key
        blob.chmod(0o600)
        tiny_graph(tmp_path / "relu.onnx", "Relu")
        other = OpenVinoEngine(tmp_path / "relu.onnx", cache=tmp_path / "other").cache_dir
        blob.write_bytes(next(other.glob("*.blob")).read_bytes())
    record = folder / KEY_FILE
    record.write_text(record.read_text().replace('"openvino": "', '"openvino": "0.0-'))
    with caplog.at_level(logging.WARNING):
        engine = OpenVinoEngine(path)
    assert "was made for" in caplog.text and "rebuilding it" in caplog.text
    np.testing.assert_array_equal(engine.run({"x": x})["y"], -x)
    for blob in folder.glob("*.blob"):  # a truncated blob under the right key
        blob.chmod(0o600)
        blob.write_bytes(blob.read_bytes()[:100])
    np.testing.assert_array_equal(OpenVinoEngine(path).run({"x": x})["y"], -x)


def test_bf16_is_refused_without_bf16_instructions(full_bundle, monkeypatch):
    monkeypatch.setattr(openvino_module, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.raises(EngineError, match=r"--precision bf16 needs a CPU with AVX512_BF16 or AMX_BF16, which this CPU"):
        open_engine(full_bundle, "generator", "openvino", precision="bf16")
    with pytest.raises(EngineError, match="run --precision fp32 \\(the default\\) or int8"):
        open_engine(full_bundle, "generator", "auto", precision="bf16")


def test_bf16_on_other_backends_is_refused(full_bundle):
    with pytest.raises(EngineError, match="bf16 runs on OpenVINO only: --backend openvino or auto"):
        open_engine(full_bundle, "generator", "onnxruntime", precision="bf16")
    with pytest.raises(EngineError, match="bf16 runs on OpenVINO on the CPU; TensorRT runs"):
        open_engine(full_bundle, "generator", "tensorrt", precision="bf16")
    with pytest.raises(EngineError, match="unknown precision 'int4'"):
        open_engine(full_bundle, "generator", "openvino", precision="int4")


@pytest.mark.skipif(not bf16_supported(), reason="the CPU has no AVX512_BF16 or AMX")
def test_bf16_runs_the_fp32_graph_in_bf16(full_bundle):
    reference = open_engine(full_bundle, "generator", "onnxruntime")
    engine = open_engine(full_bundle, "generator", "openvino", precision="bf16")
    assert engine.backend == "openvino[CPU,bf16]"
    feeds = role_feeds(engine, 2, seed=5)
    expected, got = reference.run(feeds)["swapped"], engine.run(feeds)["swapped"]
    error = float(np.abs(expected - got).max())
    assert 1e-5 < error < 0.05  # really rounded to BF16's 8-bit mantissa, and still close
    assert psnr(expected, got) > 40


def qdq_conv(path) -> None:
    """A Q/DQ convolution as the INT8 recipe writes them: per-tensor activations, per-channel weights."""
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    w_scale = (np.abs(weight).reshape(8, -1).max(axis=1) / 127).astype(np.float32)
    initializers = [
        numpy_helper.from_array(np.round(weight / w_scale[:, None, None, None]).astype(np.int8), "wq"),
        numpy_helper.from_array(w_scale, "ws"),
        numpy_helper.from_array(np.zeros(8, np.int8), "wz"),
        numpy_helper.from_array(np.array(1 / 127, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 16, 16])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_int8_qdq_graph_computes_the_graph(tmp_path):
    """OpenVINO's integer kernels give the Q/DQ graph's result (ONNX Runtime running every node as written),
    but for activations that round to the neighbouring level (OpenVINO multiplies by 1/scale): such an output
    is off by at most one level times the largest weight, and they are rare."""
    path = tmp_path / "qdq.onnx"
    qdq_conv(path)
    x = np.random.default_rng(6).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    expected = OnnxRuntimeEngine(path, optimize=False).run({"x": x})["y"]
    got = OpenVinoEngine(path).run({"x": x})["y"]
    model = onnx.load(path)
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    one_level = float(np.abs(weights["wq"] * weights["ws"][:, None, None, None]).max() * weights["xs"])
    difference = np.abs(got - expected)
    assert difference.max() <= one_level * 1.01
    assert np.mean(difference > 1e-4) < 0.05


def test_auto_logs_its_choice(full_bundle, caplog, monkeypatch):
    with caplog.at_level(logging.INFO, logger="simswap_trt.backends"):
        engine = open_engine(full_bundle, "generator", "auto")
    assert isinstance(engine, OnnxRuntimeEngine)
    assert f"auto: the generator runs on onnxruntime (fp32): {CPU_RULE['fp32'][1]}" in caplog.text
    if bf16_supported():
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="simswap_trt.backends"):
            engine = open_engine(full_bundle, "generator", "auto", precision="bf16")
        assert isinstance(engine, OpenVinoEngine)
        assert f"auto: the generator runs on openvino (bf16): {CPU_RULE['bf16'][1]}" in caplog.text
    monkeypatch.setattr(backends_module, "openvino_available", lambda: False)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="simswap_trt.backends"):
        with pytest.raises(EngineError, match="bf16 runs on OpenVINO only"):
            open_engine(full_bundle, "generator", "auto", precision="bf16")
    assert "OpenVINO is not installed (pip install 'simswap-trt[openvino]')" in caplog.text


def test_swapper_runs_every_model_on_openvino(full_bundle, astronaut_crop):
    crops = np.stack([astronaut_crop, astronaut_crop[:, ::-1]])
    with FaceSwapper.from_bundle(full_bundle.root, backend="onnxruntime") as reference:
        reference.set_source_crops(crops[:1])
        expected = reference.swap_aligned(crops)
    with FaceSwapper.from_bundle(full_bundle.root, backend="openvino", threads=1) as swapper:
        assert swapper.generator.backend == swapper.arcface.backend == "openvino[CPU,f32]"
        assert swapper.generator.threads == 1
        assert isinstance(swapper.detector.engine, OpenVinoEngine)
        swapper.set_source_crops(crops[:1])
        got = swapper.swap_aligned(crops)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.skipif(not bf16_supported(), reason="the CPU has no AVX512_BF16 or AMX")
def test_validate_reports_bf16_from_the_engines_outputs(full_bundle, astronaut_crop, monkeypatch):
    from simswap_build.precision import fidelity
    from simswap_trt.vision.preprocess import crops_to_tensor

    crops = np.stack([astronaut_crop, astronaut_crop[::-1], astronaut_crop[:, ::-1]])
    report = fidelity.fidelity_report(full_bundle.root, crops)
    row = report["precisions"]["bf16/openvino"]
    assert row["backend"] == "openvino[CPU,bf16]" and row["goals"] == fidelity.BF16_GOALS
    targets = crops_to_tensor(crops, 224)
    arc = OnnxRuntimeEngine(full_bundle.path_of("arcface"))
    sources = np.roll(arc.run({"crop": targets})["latent"], -1, axis=0)
    feeds = {"target": targets, "latent": sources}
    reference = OnnxRuntimeEngine(full_bundle.path_of("generator")).run(feeds)["swapped"]
    bf16 = OpenVinoEngine(full_bundle.path_of("generator"), precision="bf16").run(feeds)["swapped"]
    mse = np.mean((reference.astype(np.float64) - bf16) ** 2, axis=(1, 2, 3))
    assert row["psnr_min_db"] == pytest.approx(float(np.min(10 * np.log10(1 / mse))), rel=1e-6)
    assert row["meets_goals"] == (row["psnr_min_db"] >= 45 and row["arcface_cosine_min"] >= 0.999)
    monkeypatch.setitem(fidelity.BF16_GOALS, "psnr_min_db", row["psnr_min_db"] + 1)  # a goal it cannot meet
    assert not fidelity.fidelity_report(full_bundle.root, crops)["precisions"]["bf16/openvino"]["meets_goals"]


def test_cli_backend_and_precision_flags(tiny_bundle, tmp_path, capsys, caplog):
    import cv2
    from support.tiny import random_crops

    from simswap_trt.cli import main as trt_main

    cv2.imwrite(str(tmp_path / "src.png"), random_crops(1)[0])
    cv2.imwrite(str(tmp_path / "t.png"), random_crops(1, seed=1)[0])

    def swap(*flags: str) -> int:
        argv = ["-v", "swap-aligned", "--bundle", str(tiny_bundle.root), "--source", str(tmp_path / "src.png")]
        return trt_main([*argv, "--target", str(tmp_path / "t.png"), "--output", str(tmp_path / "o.png"), *flags])

    with caplog.at_level(logging.INFO):
        assert swap("--backend", "openvino", "--threads", "1") == 0
    assert "generator: openvino[CPU,f32], fp32 graph" in caplog.text
    assert "generator.onnx: openvino[CPU,f32], 1 threads" in caplog.text
    assert (tmp_path / "o.png").is_file()
    (tmp_path / "o.png").unlink()
    assert swap("--backend", "onnxruntime", "--precision", "bf16") == 1
    assert capsys.readouterr().err.startswith("error: bf16 runs on OpenVINO only: --backend openvino or auto")
    assert not (tmp_path / "o.png").exists()


def test_host_stream_keeps_the_next_batch_generating_while_one_is_pasted(full_bundle, astronaut_crop):
    """swap_stream on the host path: batch k+1's generator work is submitted before batch k is collected, so an
    asynchronous engine (OpenVINO) computes it while batch k is pasted back; results equal swap_faces'."""
    from simswap_trt.swapper import FrameBatch
    from simswap_trt.vision.detect import Detection

    with FaceSwapper.from_bundle(full_bundle.root, backend="openvino", threads=1) as swapper:
        calls = []
        engine = swapper.generator
        submit, collect = engine.submit, engine.collect
        engine.submit = lambda feeds: calls.append("submit") or submit(feeds)
        engine.collect = lambda ticket: calls.append("collect") or collect(ticket)
        swapper.set_source_crops(astronaut_crop[None])
        frame = np.zeros((300, 300, 3), np.uint8)
        frame[38:262, 38:262] = astronaut_crop
        points = np.array([[108, 128], [192, 128], [150, 170], [115, 210], [185, 210]], np.float32)
        face = Detection(np.array([38, 38, 262, 262], np.float32), 0.9, points)
        batches = [FrameBatch([frame + k], [[face]]) for k in range(3)]
        calls.clear()
        streamed = [r[0].image for r in swapper.swap_stream(batches, depth=2)]
        assert calls == ["submit", "submit", "collect", "submit", "collect", "collect"]
        for k, image in enumerate(streamed):
            np.testing.assert_array_equal(image, swapper.swap_faces([frame + k], [[face]])[0].image)


def test_a_host_parser_without_declared_output_shapes_runs_on_openvino(tmp_path):
    from support.parser_standin import fake_parser

    from simswap_trt.vision.parsing import FaceParser

    path = fake_parser(tmp_path / "parser.onnx", (128, 128, 384, 384))  # its output declares no shape
    targets = np.random.default_rng(2).random((2, 3, 224, 224), dtype=np.float32)
    reference = FaceParser(path, threads=1)
    parser = FaceParser(path, threads=1, backend="openvino")
    assert isinstance(parser.engine, OpenVinoEngine)
    assert parser.engine.outputs[0].shape == ("None", 19, 512, 512)  # as OpenVINO infers it
    swapped = np.random.default_rng(3).random((2, 3, 224, 224), dtype=np.float32)
    np.testing.assert_allclose(parser.blend(swapped, targets), reference.blend(swapped, targets), atol=1e-5)


def test_the_default_detector_finds_the_same_faces_on_openvino():
    import cv2
    from skimage import data

    from simswap_trt.vision.detect import CenterFace

    image = np.ascontiguousarray(cv2.resize(data.astronaut()[..., ::-1], (640, 640)))
    expected = CenterFace(threads=1).detect(image)
    got = CenterFace(threads=1, backend="openvino").detect(image)
    assert len(got) == len(expected) >= 1
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a.box, b.box, atol=0.05)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
        assert a.score == pytest.approx(b.score, abs=1e-4)


def test_validate_backend_flag_selects_the_rows(full_bundle, tmp_path, capsys, monkeypatch):
    from simswap_build.cli import main as build_main
    from simswap_build.precision import fidelity

    seen = []
    real = fidelity.fidelity_report

    def recording(root, crops, backends=("onnxruntime", "openvino"), enhancer_crops=None):
        seen.append(backends)
        return real(root, crops, backends, enhancer_crops)

    monkeypatch.setattr(fidelity, "fidelity_report", recording)
    monkeypatch.setattr(
        "simswap_build.precision.calibration.calibration_crops", lambda *a, **k: np.zeros((2, 224, 224, 3), np.uint8)
    )
    argv = ["validate", str(full_bundle.root), "--images", str(tmp_path), "--backend"]
    assert build_main([*argv, "onnxruntime"]) == 1  # no FP16/INT8 graphs: nothing of ONNX Runtime's to check
    error = capsys.readouterr().err
    assert "has no FP16 / INT8 graphs to validate" in error and seen == []
    assert ("(or check BF16 alone with --backend openvino)" in error) == bf16_supported()
    if bf16_supported():
        build_main([*argv, "openvino"])
        assert seen == [("openvino",)] and "bf16/openvino" in capsys.readouterr().out
    else:
        assert build_main([*argv, "openvino"]) == 1


SIGNAL_AFTER_ENGINES = """
import gc, os, signal, sys
import numpy as np, onnx
from onnx import TensorProto, helper
from simswap_trt.engines.openvino import OpenVinoEngine
from simswap_trt.files import Terminated, terminate_as_interrupt

graph = helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"])], "relu",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 8, 8])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
first, second = (OpenVinoEngine(model, threads=1, cache=False) for _ in range(2))
first.run({"x": np.ones((1, 3, 8, 8), np.float32)})
for engine in (first, second):  # released in creation order, as a swapper's models are
    engine.close()
del first, second, engine
gc.collect()
try:
    with terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
except Terminated:
    print("terminated cleanly")
"""


def test_a_signal_after_engines_are_released_is_handled_not_a_crash():
    """Engines released out of creation order once left the thread's alternate signal stack on freed memory
    (OpenVINO's CPU plugin sets one per Core), and the next SIGTERM or Ctrl-C crashed the process."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_ENGINES], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "terminated cleanly" in result.stdout, (result.returncode, result.stderr[-2000:])


def test_batches_of_changing_size_reach_openvino_as_one_shape(full_bundle, monkeypatch):
    """OpenVINO prepares kernels per new input shape (seconds at full size): a video's changing faces per batch
    must not make it prepare again, so every request gets one sample, and the results match batch by batch."""
    engine = open_engine(full_bundle, "generator", "openvino")
    reference = open_engine(full_bundle, "generator", "onnxruntime")
    shapes = set()
    start = engine._start

    def counting(feeds):
        shapes.add(tuple(tuple(a.shape) for a in feeds.values()))
        return start(feeds)

    monkeypatch.setattr(engine, "_start", counting)
    for batch in (3, 1, 5, 2, 3):
        feeds = role_feeds(engine, batch, seed=batch)
        np.testing.assert_allclose(engine.run(feeds)["swapped"], reference.run(feeds)["swapped"], rtol=1e-4, atol=1e-4)
    assert len(shapes) == 1, shapes
