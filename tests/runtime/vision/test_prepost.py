"""Host pre/post-processing: the model output as contiguous BGR crops, the paste-back's reused buffers (no
page faults once warm, safe across threads and face sizes), and the pre/post benchmark (both methods
paste every face; the report). The FaceFusion paste-back itself is checked in test_pasteback.py."""

import json
import resource
import sys
import threading

import numpy as np
import pytest

from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.preprocess import tensor_to_bgr

FRONTAL = np.array([[39.73, 51.14], [72.27, 51.14], [56.0, 68.49], [42.46, 87.01], [69.54, 87.01]])


def face_matrix(center, size, angle_deg):
    angle = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return alignment_matrix((FRONTAL - 56) * (size / 112) @ rotation.T + center, "multipose", 224)


def test_tensor_to_bgr_is_the_transposed_scaled_output_contiguous():
    tensor = np.random.default_rng(0).random((3, 3, 224, 224), dtype=np.float32) * 1.4 - 0.2  # out of range too
    crops = tensor_to_bgr(tensor)
    assert crops.dtype == np.float32 and crops.flags.c_contiguous and crops.shape == (3, 224, 224, 3)
    np.testing.assert_array_equal(crops, tensor.transpose(0, 2, 3, 1)[..., ::-1] * np.float32(255))


def faces_on(frame_shape, specs, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((224, 224, 3), dtype=np.float32) * 255, face_matrix(*spec)) for spec in specs]


THREE = [((400, 500), 230, 5), ((960, 500), 230, -8), ((1500, 520), 230, 12)]


def test_paste_back_causes_no_page_faults_once_warm():
    """Only the output frame is allocated per call; with the heap warm that reuses memory instead of asking
    the kernel for fresh pages (the float temporaries of three faces did, about 4000 faults per call)."""
    frame = np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    faces = faces_on(frame.shape, THREE)
    for _ in range(3):
        paste_back(frame, faces)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        paste_back(frame, faces)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5 < 100


def test_reused_buffers_give_the_same_result_in_any_order_and_thread():
    """A large face, then a small one, then the large one again (buffers grown, then used partly), and the
    same calls from two threads at once: every result equals the first call's."""
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    large = faces_on(frame.shape, [((640, 360), 420, 20)], seed=3)
    small = faces_on(frame.shape, [((200, 150), 90, -40), ((1100, 600), 120, 170)], seed=4)
    expected = {"large": paste_back(frame, large), "small": paste_back(frame, small)}
    np.testing.assert_array_equal(paste_back(frame, large), expected["large"])
    np.testing.assert_array_equal(paste_back(frame, small), expected["small"])

    errors = []

    def run(name, faces):
        for _ in range(6):
            if not np.array_equal(paste_back(frame, faces), expected[name]):
                errors.append(name)

    threads = [threading.Thread(target=run, args=args) for args in (("large", large), ("small", small))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_prepost_benchmark_reports_both_methods(tmp_path, monkeypatch):
    from benchmarks import prepost

    output = tmp_path / "prepost.json"
    monkeypatch.setattr(sys, "argv", ["prepost", "--repeats", "2", "--frames", "1", "--output", str(output)])
    prepost.main()
    report = json.loads(output.read_text())
    assert [run["faces"] for run in report["runs"]] == [1, 3]
    for run in report["runs"]:
        assert set(run["results"]) == {"FaceFusion's method", "simswap-trt"}
        for row in run["results"].values():
            assert row["stats"]["runs"] == 2 and row["minor_page_faults_per_frame"] >= 0
    assert report["machine"]["cpu_model"] and report["crop_size"] == 224


@pytest.mark.parametrize("faces", [1, 3])
def test_both_methods_paste_every_face(faces):
    from benchmarks.prepost import FRAME, LANDMARKS, OFFSETS, facefusion_method, ours

    rng = np.random.default_rng(6)
    frame = rng.integers(0, 256, (*FRAME, 3), dtype=np.uint8)
    landmarks = [LANDMARKS + [dx, 0] for dx in OFFSETS[:faces]]
    output = rng.random((faces, 3, 224, 224), dtype=np.float32)
    for method in (ours, facefusion_method):
        changed = np.any(method(frame, landmarks, output) != frame, axis=2)
        columns = np.flatnonzero(changed.any(axis=0))
        assert len(np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)) == faces
