"""Frames uploaded once per batch: with detection on the device, the frames it uploaded stay there and the swap
given their copies (FaceSwapper.detect_frames → resident=) reads them (simswap_trt.device.frames), on the CPU
stand-in of the GPU (tests/support/fake_gpu.py: streams run out of order unless events order them; ``UPLOADED``
holds the bytes of every upload). References: the same swapper with the frames uploaded again for the swap (what it did
before: bit for bit), and the host path given the same detections (within 1 level)."""

import cv2
import numpy as np
import pytest
from support import device_detection, fake_gpu
from support.device_detection import PLANS, detector_bundle
from support.device_path import latent
from support.fake_gpu import FakeStream, fake_cudart, install_fake_cuda, strict_runtime_module

from simswap_trt import FaceSwapper, cuda
from simswap_trt.device.frames import FrameSlot, ResidentFrames
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.engines import tensorrt as trt_engine
from simswap_trt.video.stream import VideoOptions, swap_frames

lean = pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")
photos = device_detection.photos  # the fixture: public-domain photos with 1, 2 and 4 faces, of odd sizes


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with CenterFace's detector graph and plans for the generator, detector and ArcFace."""
    return detector_bundle(tiny_bundle, tmp_path_factory.mktemp("frames") / "b", ("generator", "detector", "arcface"))


def install_device(monkeypatch, host, bundle, **gpu_options):
    """The stand-in GPU and a fake TensorRT whose plans run the bundle's graphs on ONNX Runtime."""
    gpu = install_fake_cuda(monkeypatch, host_lib=host, **gpu_options)
    engines = {
        role: OnnxRuntimeEngine(bundle.path_of(role), threads=2) for role in ("generator", "arcface", "detector")
    }
    size, canvas, detector = bundle.crop_size, bundle.detector_canvas, engines["detector"]
    io = [("target", "in", (-1, 3, size, size)), ("latent", "in", (-1, 512)), ("swapped", "out", (-1, 3, size, size))]
    maps = [(spec.name, "out", (-1, spec.shape[1], canvas // 4, canvas // 4)) for spec in detector.outputs]
    plans = {
        PLANS["detector"]: ([(detector.inputs[0].name, "in", (-1, 3, canvas, canvas)), *maps], detector.run),
        PLANS["arcface"]: ([("crop", "in", (-1, 3, size, size)), ("latent", "out", (-1, 512))], engines["arcface"].run),
    }
    module = strict_runtime_module(lean, io, engines["generator"].run, plans=plans)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    return gpu, module


def uploads_of(frame: np.ndarray, since: int = 0) -> int:
    """How many uploads (from the ``since``-th on) carried the whole frame."""
    pixels = np.ascontiguousarray(frame).tobytes()
    return sum(pixels in data for data in fake_gpu.UPLOADED[since:])


def not_resident(monkeypatch):
    """The swap no longer takes the copies of the frames detection uploaded: it uploads them again (as before)."""
    monkeypatch.setattr(ResidentFrames, "take", lambda self, resident, consume: [None] * len(resident))


def device_swapper(bundle, **options) -> FaceSwapper:
    swapper = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", **options)
    assert swapper.stages.startswith("device") and swapper.detector.name.startswith("device")
    swapper.source_latent = latent()
    return swapper


@pytest.fixture(scope="module")
def host_swapper(bundle):
    swapper = FaceSwapper.from_bundle(bundle.root, threads=2, backend="onnxruntime")
    swapper.source_latent = latent()
    return swapper


def test_each_frame_goes_up_once_and_the_output_is_unchanged(bundle, photos, host, host_swapper, monkeypatch):
    gpu, _ = install_device(monkeypatch, host, bundle)
    with device_swapper(bundle) as swapper:
        before = len(fake_gpu.COPIES)
        results = swapper.swap_batch(photos)
        uploads = [c for c in fake_gpu.COPIES[before:] if c[0] == "upload"]
        frame_uploads = [uploads_of(photo) for photo in photos]
        detections = swapper.detect(photos)
    assert not gpu.live
    # one upload of the three frames (one detector chunk), then the swap's tables and its masks
    assert frame_uploads == [1, 1, 1] and len(uploads) == 3
    assert sum(photo.nbytes for photo in photos) <= uploads[0][1] < 2 * sum(photo.nbytes for photo in photos)

    install_device(monkeypatch, host, bundle)
    not_resident(monkeypatch)
    with device_swapper(bundle) as swapper:
        before_change = swapper.swap_batch(photos)
        assert [uploads_of(photo) for photo in photos] == [2, 2, 2]  # for detection, and again for the swap
    expected = host_swapper.swap_faces(photos, detections)
    for result, old, want, photo in zip(results, before_change, expected, photos, strict=True):
        np.testing.assert_array_equal(result.image, old.image)
        assert np.abs(result.image.astype(int) - want.image).max() <= 1
        assert np.abs(result.image.astype(int) - photo).max() > 50  # faces were really swapped
        assert [f.swapped for f in result.faces] == [True] * len(want.faces)


def test_two_batches_in_flight_keep_their_frames(bundle, photos, host, monkeypatch):
    """swap_stream detects batch 2 while batch 1 is in flight. With a single slot for the detection uploads,
    batch 2's upload must wait for batch 1's paste-back and download; without that wait (on the
    out-of-order stand-in) batch 1 reads batch 2's frames."""
    flipped = [cv2.flip(photo, 1) for photo in photos]  # same sizes, other pixels
    outputs = {}
    for case in ("before", "one slot", "one slot, no wait", "default"):
        gpu, _ = install_device(monkeypatch, host, bundle)
        if case == "before":
            not_resident(monkeypatch)
        if case == "one slot, no wait":
            monkeypatch.setattr(FrameSlot, "wait_idle", lambda self: None)
        with device_swapper(bundle) as swapper:
            if case.startswith("one slot"):
                swapper._stages.frames.capacity = 1
            batches = (swapper.detect_frames(frames) for frames in (photos, flipped))
            outputs[case] = [r.image for results in swapper.swap_stream(batches, depth=2) for r in results]
            slots = len(swapper._stages.frames.slots)
        monkeypatch.undo()
        if case != "before":
            assert [uploads_of(frame) for frame in photos + flipped] == [1] * 6
            assert slots == (2 if case == "default" else 1)
    for case in ("one slot", "default"):
        for got, want in zip(outputs[case], outputs["before"], strict=True):
            np.testing.assert_array_equal(got, want)
    first_batch = zip(outputs["one slot, no wait"][:3], outputs["before"][:3], strict=True)
    assert max(np.abs(got.astype(int) - want).max() for got, want in first_batch) > 50


def test_frames_whose_slot_was_reused_are_uploaded_by_the_swap(bundle, photos, host, monkeypatch):
    flipped = [cv2.flip(photo, 1) for photo in photos]
    install_device(monkeypatch, host, bundle)
    with device_swapper(bundle) as swapper:
        swapper._stages.frames.capacity = 1
        batch = swapper.detect_frames(photos)
        swapper.detect(flipped)  # reuses the only slot: the photos are no longer on the device
        got = [r.image for r in swapper.swap_faces(photos, batch.faces, resident=batch.resident)]
        assert [uploads_of(photo) for photo in photos] == [2, 2, 2]
        faces = batch.faces
    install_device(monkeypatch, host, bundle)
    not_resident(monkeypatch)
    with device_swapper(bundle) as swapper:
        want = [r.image for r in swapper.swap_faces(photos, faces)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_the_swap_waits_for_the_upload_of_the_frames(bundle, photos, host, monkeypatch):
    """Frames put on the device by an asynchronous producer (as detection does, without its host wait): the
    swap orders itself after their upload; without that one wait it reads memory not yet written."""
    outputs = {}
    for ordered in (True, False):
        install_device(monkeypatch, host, bundle)
        with device_swapper(bundle) as swapper:
            faces = swapper.detect(photos)  # their frames' copies are consumed below: give it fresh arrays
            frames, start = [photo.copy() for photo in photos], len(fake_gpu.UPLOADED)
            pool, producer = swapper._stages.frames, cuda.Stream()
            slot = pool.acquire()
            addresses = slot.staging.layout([f.nbytes for f in frames])
            for address, frame in zip(addresses, frames, strict=True):
                slot.staging.write(address, frame)
            slot.staging.upload(producer)
            slot.uploaded.record(producer)
            resident = pool.keep(slot, frames, addresses)
            if not ordered:

                def wait(stream, event, ordered_wait=FakeStream.wait, upload=slot.uploaded):
                    if event is not upload:
                        ordered_wait(stream, event)

                monkeypatch.setattr(FakeStream, "wait", wait)
            outputs[ordered] = [r.image for r in swapper.swap_faces(frames, faces, resident=resident)]
            producer.free()
            assert [uploads_of(frame, start) for frame in frames] == [1, 1, 1]  # the producer's only
        monkeypatch.undo()
    install_device(monkeypatch, host, bundle)
    not_resident(monkeypatch)
    with device_swapper(bundle) as swapper:
        expected = [r.image for r in swapper.swap_faces(photos, faces)]
    for got, want in zip(outputs[True], expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert max(np.abs(got.astype(int) - want).max() for got, want in zip(outputs[False], expected, strict=True)) > 50


def test_a_second_swap_of_the_same_frames_uploads_them_again(bundle, photos, host, monkeypatch):
    """The paste-back wrote into the device copy: a second swap must not read the first one's output."""
    install_device(monkeypatch, host, bundle)
    with device_swapper(bundle) as swapper:
        batch = swapper.detect_frames(photos)
        first = swapper.swap_faces(photos, batch.faces, resident=batch.resident)
        second = swapper.swap_faces(photos, batch.faces, resident=batch.resident)
        assert [uploads_of(photo) for photo in photos] == [2, 2, 2]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.image, b.image)


def test_reference_selection_reads_the_detected_frames_for_arcface_and_the_swap(
    bundle, photos, host, host_swapper, monkeypatch
):
    """ArcFace on the device reads the detected frames (without using them up), then the swap does."""
    host_swapper.set_reference([photos[0]])
    install_device(monkeypatch, host, bundle)
    with device_swapper(bundle) as swapper:
        assert swapper.arcface.backend.startswith("tensorrt")
        swapper.reference_latent = host_swapper.reference_latent
        batch = swapper.detect_frames(photos)
        detections, resident = batch.faces, batch.resident
        similarities = np.concatenate(swapper.similarities(photos, detections, resident))
        np.testing.assert_allclose(
            similarities, np.concatenate(host_swapper.similarities(photos, detections)), atol=1e-5
        )
        ranked = np.sort(similarities)  # an untrained ArcFace finds every face alike: split at the widest gap
        gap = int(np.argmax(np.diff(ranked)))
        assert ranked[gap + 1] - ranked[gap] > 1e-4  # far wider than the two paths' difference
        threshold = float(ranked[gap] + ranked[gap + 1]) / 2
        results = swapper.swap_faces(photos, detections, "reference", threshold, resident)
        assert [uploads_of(photo) for photo in photos] == [1, 1, 1]
    expected = host_swapper.swap_faces(photos, detections, "reference", threshold)
    assert 0 < sum(f.swapped for result in expected for f in result.faces) < 7  # some faces, not all
    for result, want in zip(results, expected, strict=True):
        assert [f.swapped for f in result.faces] == [f.swapped for f in want.faces]
        assert np.abs(result.image.astype(int) - want.image).max() <= 1


def test_graphs_replay_the_detected_frames_equal_to_the_eager_sequence(bundle, photos, host, monkeypatch):
    brighter = [np.clip(photo.astype(int) + 40, 0, 255).astype(np.uint8) for photo in photos]
    outputs, kinds = {}, []
    for graphs in (False, True):
        _, module = install_device(monkeypatch, host, bundle)
        cudart = fake_cudart(module.calls)
        monkeypatch.setattr(cuda, "runtime", lambda cudart=cudart: cudart)
        with device_swapper(bundle, cuda_graphs=graphs) as swapper:
            outputs[graphs], faces = [], None
            for frames in (photos, brighter):
                found = swapper.detect_frames(frames)  # the brighter frames go to a slot of their own
                faces = found.faces if faces is None else faces  # the photos' faces for both: one launch signature
                before = len(module.calls)
                outputs[graphs] += [r.image for r in swapper.swap_faces(frames, faces, resident=found.resident)]
                new = [c[0] for c in module.calls[before:]]
                kinds.append("capture" if "end capture" in new else "replay" if "graph launch" in new else "eager")
            assert [uploads_of(frame) for frame in photos + brighter] == [1] * 6
        monkeypatch.undo()
    assert kinds == ["eager", "eager", "capture", "replay"]
    for got, want in zip(outputs[True], outputs[False], strict=True):
        np.testing.assert_array_equal(got, want)
    assert np.abs(outputs[True][3].astype(int) - outputs[True][0]).max() > 20  # the replay read the new frames


def test_integrated_gpus_copy_no_frame_at_all(bundle, photos, host, monkeypatch):
    results = {}
    for integrated in (False, True):
        gpu, _ = install_device(monkeypatch, host, bundle, integrated=integrated)
        with device_swapper(bundle) as swapper:
            results[integrated] = [r.image for r in swapper.swap_batch(photos)]
        assert not gpu.live
        uploads = [c for c in fake_gpu.COPIES if c[0] == "upload"]
        assert len(uploads) == (0 if integrated else 3)
    for got, want in zip(results[True], results[False], strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("every", [1, 4])
def test_the_video_loop_uploads_each_frame_once(bundle, photos, host, monkeypatch, every):
    """swap_frames (detection, tracking, smoothing, swap of the frames with faces) on the device; with
    ``full_detect_every=4`` frames 1 to 3 are searched in regions only (their windows go up, not the frames),
    and their swap uploads them."""
    base = photos[1]
    frames = [np.roll(base, 3 * k, axis=1) for k in range(5)] + [np.zeros_like(base)]  # the last one: no face
    options = VideoOptions(batch=4, full_detect_every=every)
    searched_whole = [True] * 5 if every == 1 else [True, False, False, False, True]
    outputs = {}
    for resident in (True, False):
        install_device(monkeypatch, host, bundle)
        if not resident:
            not_resident(monkeypatch)
        with device_swapper(bundle) as swapper:
            outputs[resident] = list(swap_frames(swapper, frames, options=options))
            counts = [uploads_of(frame) for frame in frames[:5]]
        monkeypatch.undo()
        assert counts == [1] * 5 if resident else [2 if whole else 1 for whole in searched_whole]
    for got, want in zip(outputs[True], outputs[False], strict=True):
        np.testing.assert_array_equal(got, want)
    assert np.abs(outputs[True][0].astype(int) - frames[0]).max() > 50
    assert outputs[True][5] is frames[5]
