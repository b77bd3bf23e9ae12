"""Detection: CenterFace finds the astronaut with sane landmarks in ArcFace order; batching and
letterboxing do not change results; SCRFD decoding follows the anchor/stride formulas."""

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from simswap_trt.errors import EngineError
from simswap_trt.vision.detect import CenterFace, Scrfd, letterbox, nms

# CenterFace landmarks on this photo as published for the model (project reference), +-5 px between runs
ASTRONAUT_LANDMARKS = np.array([[203, 102], [247, 105], [223, 125], [203, 142], [241, 144]], float)


@pytest.fixture(scope="module")
def centerface():
    return CenterFace(threads=2)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., ::-1])


def test_astronaut_face_and_landmarks(centerface, astronaut):
    (face,) = centerface.detect(astronaut)
    assert face.score > 0.8
    x1, y1, x2, y2 = face.box
    lm = face.landmarks
    assert np.all((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2))
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left before image-right
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])  # eyes, then nose, then mouth
    assert np.abs(lm - ASTRONAUT_LANDMARKS).max() <= 5


def test_batch_equals_single_and_scale_is_undone(centerface, astronaut):
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    batch = centerface.detect_batch([astronaut, np.zeros((40, 30, 3), np.uint8), big])
    assert [len(d) for d in batch] == [1, 0, 1]
    single = centerface.detect(astronaut)[0]
    np.testing.assert_allclose(batch[0][0].landmarks, single.landmarks, atol=1e-3)
    np.testing.assert_allclose(batch[2][0].landmarks / 2, single.landmarks, atol=3)


def test_letterbox_keeps_aspect_top_left():
    canvas, scales = letterbox([np.full((100, 300, 3), 255, np.uint8)], 640)
    assert scales[0] == pytest.approx(213 / 100)
    assert canvas[0, :213].min() == 255 and canvas[0, 213:].max() == 0


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], float)
    scores = np.array([0.5, 0.9, 0.7, 0.6])
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 2, 3, 0]


def fake_scrfd(path, hot):
    """An SCRFD-shaped model with constant outputs: one positive anchor per ``hot`` entry
    (stride, anchor index, score, distances[4], keypoint offsets[10])."""
    outputs, nodes, inits = [], [], []
    rows = {8: 80, 16: 40, 32: 20}
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            value = np.zeros((1, rows[stride] ** 2 * 2, width), np.float32)
            for s, anchor, score, dist, kps in hot:
                if s == stride:
                    value[0, anchor] = {"score": [score], "bbox": dist, "kps": kps}[kind]
            name = f"{kind}{stride}"
            inits.append(numpy_helper.from_array(value, f"{name}_const"))
            nodes.append(helper.make_node("Shape", ["input.1"], [f"{name}_n"], end=1))
            nodes.append(helper.make_node("Concat", [f"{name}_n", f"{name}_tail"], [f"{name}_shape"], axis=0))
            inits.append(numpy_helper.from_array(np.array(value.shape[1:], np.int64), f"{name}_tail"))
            nodes.append(helper.make_node("Expand", [f"{name}_const", f"{name}_shape"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "fake_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])],
        outputs,
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_scrfd_decoding(tmp_path):
    # anchor 2*(40*80+50)+1 at stride 8 is location (x=50, y=40), second anchor: centre (400, 320)
    kps = [-2, -1, 2, -1, 0, 0, -1.5, 1.5, 1.5, 1.5]
    hot = [(8, 2 * (40 * 80 + 50) + 1, 0.9, [3, 4, 5, 6], kps), (16, 0, 0.5, [1, 1, 1, 1], kps)]
    detector = Scrfd(fake_scrfd(tmp_path / "det.onnx", hot), threads=1)
    image = np.zeros((1280, 960, 3), np.uint8)  # letterbox scale 0.5
    (face,) = detector.detect(image)  # the 0.5 score is under the official 0.6 threshold
    assert face.score == pytest.approx(0.9)
    np.testing.assert_allclose(face.box, np.array([400 - 24, 320 - 32, 400 + 40, 320 + 48]) / 0.5)
    np.testing.assert_allclose(face.landmarks, (np.array([400, 320]) + np.array(kps).reshape(5, 2) * 8) / 0.5)


def test_wrong_detector_model_is_named(tmp_path):
    path = fake_scrfd(tmp_path / "det.onnx", [])
    with pytest.raises(EngineError, match="is not a CenterFace model: it has 9 outputs, not 4"):
        CenterFace(path)
    (tmp_path / "x.onnx").write_bytes(b"nope")
    with pytest.raises(EngineError, match="is not an ONNX model"):
        Scrfd(tmp_path / "x.onnx")
