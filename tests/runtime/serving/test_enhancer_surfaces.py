"""The enhancer on the batch job, per served request, and at the pipeline's precision: a served request's
``enhance`` share equals a swapper made with that share, a server without an enhancer refuses the input in
one line, a Ray batch with ``enhance`` equals the single-process enhancing swapper, and ``--precision`` picks
the enhancer's FP16 graph when the bundle has one (else FP32, logged; INT8 is never used for it)."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from support.enhancer_formats import bundle_with_enhancer, make_gfpgan, save_gfpgan

from simswap_trt import FaceSwapper
from simswap_trt.bundle import Bundle
from simswap_trt.errors import ConfigError
from simswap_trt.serving import ERROR, SwapImage
from simswap_trt.vision.detect import CenterFace
from simswap_trt.vision.enhance import FaceEnhancer, enhancer_precision


@pytest.fixture(scope="module")
def enhanced_bundle(tiny_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("enhancer")
    checkpoint = save_gfpgan(make_gfpgan(seed=7), folder / "GFPGANv1.4.pth")
    return bundle_with_enhancer(tiny_bundle.root, checkpoint, folder)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., ::-1])


@pytest.fixture(scope="module")
def face(astronaut):
    return cv2.resize(astronaut, (256, 256))


def _swapper(bundle, astronaut, **kwargs):
    swapper = FaceSwapper.from_bundle(bundle.root, threads=1, detector=CenterFace(threads=1), **kwargs)
    swapper.set_source(astronaut)
    return swapper


def png(image, enhance=None):
    request = {"image": np.array([[cv2.imencode(".png", image)[1].tobytes()]], dtype=object)}
    return request if enhance is None else request | {"enhance": np.array([[enhance]], np.float32)}


def decoded(reply):
    return cv2.imdecode(np.frombuffer(reply["image"][0, 0], np.uint8), cv2.IMREAD_COLOR)


def refusal(reply):
    assert set(reply) == {ERROR}, set(reply)
    return tuple(bytes(v).decode() for v in reply[ERROR].reshape(-1))


def test_served_requests_choose_their_enhance_share(enhanced_bundle, astronaut, face):
    server = _swapper(enhanced_bundle, astronaut, enhance=True, enhance_blend=0.0)  # enhances only on request
    plain = _swapper(enhanced_bundle, astronaut).swap(face).image
    half = _swapper(enhanced_bundle, astronaut, enhance=True, enhance_blend=0.5).swap(face).image
    full = _swapper(enhanced_bundle, astronaut, enhance=True, enhance_blend=1.0).swap(face).image
    assert np.abs(half.astype(int) - plain).max() > 5  # the share shows
    replies = SwapImage(server)([png(face), png(face, 0.5), png(face, 1.0), png(face, 1.5), png(face, 0.0)])
    np.testing.assert_array_equal(decoded(replies[0]), plain)  # no 'enhance': the server's share, 0
    np.testing.assert_array_equal(decoded(replies[1]), half)
    np.testing.assert_array_equal(decoded(replies[2]), full)
    code, message = refusal(replies[3])
    assert code == "INVALID_ARG" and "input 'enhance' must be float32 [1, 1] between 0 and 1" in message
    np.testing.assert_array_equal(decoded(replies[4]), plain)  # 0: the swap bit-exact
    assert server.enhancer is None  # the requests' shares did not change the server's


def test_a_server_started_with_a_share_serves_it_by_default(enhanced_bundle, astronaut, face):
    server = _swapper(enhanced_bundle, astronaut, enhance=True, enhance_blend=0.5)
    half = server.swap(face).image
    replies = SwapImage(server)([png(face), png(face, 0.0)])
    np.testing.assert_array_equal(decoded(replies[0]), half)
    np.testing.assert_array_equal(decoded(replies[1]), _swapper(enhanced_bundle, astronaut).swap(face).image)


def test_a_server_without_an_enhancer_refuses_the_input_in_one_line(enhanced_bundle, astronaut, face):
    replies = SwapImage(_swapper(enhanced_bundle, astronaut))([png(face, 0.5), png(face)])
    code, message = refusal(replies[0])
    assert code == "INVALID_ARG" and "\n" not in message
    assert "input 'enhance': this server has no face enhancer" in message and "serve --enhancer" in message
    assert replies[1]["swapped"].tolist() == [[1]]  # the other request is served


def test_with_enhance_blend_needs_an_enhancer(enhanced_bundle, astronaut):
    with pytest.raises(ConfigError, match="no face enhancer"):
        _swapper(enhanced_bundle, astronaut).with_enhance_blend(0.5)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        _swapper(enhanced_bundle, astronaut, enhance=True).with_enhance_blend(float("nan"))


def test_batch_job_with_enhancer_equals_the_single_process_swapper(enhanced_bundle, astronaut, face, tmp_path):
    ray = pytest.importorskip("ray", reason="the batch job needs the 'ray' extra")
    from simswap_trt.distributed import JobOptions, run_job
    from simswap_trt.images import read_image

    cv2.imwrite(str(tmp_path / "face.png"), face)
    reference = FaceSwapper.from_bundle(enhanced_bundle.root, threads=1, enhance=True, enhance_blend=0.6)
    reference.set_source(astronaut)
    options = JobOptions(actors=1, batch=2, gpus_per_actor=0, threads=1, enhance=True, enhance_blend=0.6)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        pairs = [(str(tmp_path / "face.png"), str(tmp_path / "out" / "face.png"))]
        (report,) = run_job(enhanced_bundle.root, reference.source_latent, pairs, options)
    finally:
        ray.shutdown()
    assert report.status == "written", report.message
    plain = FaceSwapper.from_bundle(enhanced_bundle.root, threads=1)
    plain.source_latent = reference.source_latent
    got, want = read_image(pairs[0][1]), reference.swap(face).image
    assert np.abs(got.astype(int) - want).max() <= 1
    assert np.abs(got.astype(int) - plain.swap(face).image).max() > 5  # enhanced, not the plain swap


def test_cli_batch_enhancer_without_one_names_the_command(tiny_bundle, face, tmp_path, capsys):
    from simswap_trt.cli import main

    cv2.imwrite(str(tmp_path / "face.png"), face)
    args = ["batch", "--bundle", str(tiny_bundle.root), "--source", str(tmp_path / "face.png")]
    code = main([*args, "--input", str(tmp_path / "face.png"), "--output", str(tmp_path / "out"), "--enhancer"])
    err = capsys.readouterr().err
    assert code != 0 and "simswap-build add-enhancer" in err and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def fp16_bundle(enhanced_bundle, tmp_path_factory):
    import shutil

    from simswap_build.precision import recipe as precision

    root = tmp_path_factory.mktemp("fp16") / "bundle"
    shutil.copytree(enhanced_bundle.root, root)
    precision.add_precisions(root, None, ["fp16"])
    return Bundle.load(root)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_fp16_pipeline_runs_the_fp16_enhancer_graph(fp16_bundle, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    enhancer = FaceEnhancer.from_bundle(fp16_bundle, backend=backend, threads=1, precision="fp16")
    assert enhancer.engine.graph["precision"] == "fp16"
    assert enhancer.engine.graph["file"] == fp16_bundle.model("enhancer", "fp16").file


def test_enhancer_precision_falls_back_with_a_log_line(enhanced_bundle, fp16_bundle, caplog):
    with caplog.at_level(logging.WARNING, "simswap_trt.vision.enhance"):
        assert enhancer_precision(enhanced_bundle, "fp16") is None
        assert "no FP16 enhancer graph" in caplog.text and "runs its FP32 graph" in caplog.text
        caplog.clear()
        assert enhancer_precision(fp16_bundle, "int8") == "fp16"
        assert "INT8 is not offered for the face restorer; it runs its fp16 graph" in caplog.text
        caplog.clear()
        assert enhancer_precision(enhanced_bundle, "int8") is None
        assert "it runs its fp32 graph" in caplog.text
        caplog.clear()
        assert enhancer_precision(fp16_bundle, None) is None and enhancer_precision(fp16_bundle, "bf16") == "bf16"
        assert not caplog.text


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    from simswap_build.bench.photos import face_photo_set

    folder = tmp_path_factory.mktemp("held") / "photos"
    face_photo_set(folder, 3, seed=5)
    return folder


def _validate(bundle_root, held_out, tmp_path, monkeypatch):
    import json

    from simswap_build.cli import main as build_main
    from simswap_trt.cache import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    report = tmp_path / "report.json"
    code = build_main(["validate", str(bundle_root), "--images", str(held_out), "--json", str(report)])
    return code, json.loads(report.read_text())


def test_validate_reports_the_fp16_enhancer_on_held_out_faces(fp16_bundle, held_out, tmp_path, monkeypatch):
    import onnxruntime as ort
    from skimage.metrics import peak_signal_noise_ratio

    from simswap_build.precision.calibration import calibration_crops

    code, report = _validate(fp16_bundle.root, held_out, tmp_path, monkeypatch)
    row = report["enhancer"]["fp16"]
    assert code == 0 and row["meets_goals"] and row["goals"] == {"psnr_min_db": 45.0}
    # independently: the held-out faces in the enhancer's own crops, through both graphs
    crops = calibration_crops(held_out, "ffhq", 64, cache_dir=tmp_path / "independent")
    faces = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2), np.float32) / 255
    fp32, fp16 = (
        ort.InferenceSession(fp16_bundle.root / fp16_bundle.model("enhancer", p).file).run(None, {"face": faces})[0]
        for p in ("fp32", "fp16")
    )
    expected = [
        peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64), data_range=1.0)
        for a, b in zip(fp32, fp16, strict=True)
    ]
    assert report["faces"] == len(crops) == 3
    # the engines' sessions (threads, optimisations) round differently at ~1e-7: 0.01 dB at 85 dB
    assert row["psnr_min_db"] == pytest.approx(min(expected), abs=0.01)
    assert row["max_abs_error"] == pytest.approx(np.abs(fp32 - fp16).max(), rel=0.01)


def test_validate_fails_a_planted_bad_fp16_enhancer(fp16_bundle, held_out, tmp_path, monkeypatch, capsys):
    import shutil

    import onnx
    from onnx import numpy_helper

    from simswap_build.precision.fp16 import fp16_graph
    from simswap_build.tensorrt.builder import register_variants

    root = tmp_path / "bad"
    shutil.copytree(fp16_bundle.root, root)
    bundle = Bundle.load(root)
    graph = fp16_graph(onnx.load(bundle.path_of("enhancer")))
    last = [i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16 and "bias" in i.name][-1]
    last.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(last) + np.float16(0.3), last.name))
    register_variants(
        bundle, {("enhancer", "fp16"): graph}, {("enhancer", "fp16"): bundle.model("enhancer", "fp16").source}
    )
    code, report = _validate(root, held_out, tmp_path, monkeypatch)
    assert code == 1 and not report["enhancer"]["fp16"]["meets_goals"]
    assert report["precisions"]["fp16"]["meets_goals"]  # only the enhancer's row fails
    assert "NOT met" in capsys.readouterr().out.split("enhancer vs its FP32 graph")[1]
