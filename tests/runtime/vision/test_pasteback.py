"""Fast ROI paste-back equals the official full-frame float64 method within 1 level on random frames,
faces and transforms, including odd frame sizes, faces at or beyond the frame border, 90° rotations and
overlapping faces; pixels outside every face region are untouched."""

import numpy as np
import pytest

from simswap_build.bench.official_style import paste_back_official
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.pasteback import face_roi, paste_back

FRONTAL = np.array([[39.73, 51.14], [72.27, 51.14], [56.0, 68.49], [42.46, 87.01], [69.54, 87.01]])


def face_matrix(center, size, angle_deg):
    """frame→crop matrix of a face of ``size`` px centred at ``center`` rotated by ``angle_deg``."""
    angle = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = (FRONTAL - 56) * (size / 112) @ rotation.T + center
    return alignment_matrix(landmarks, "multipose", 224)


def compare(frame, swaps, matrices):
    crops = [(s[..., ::-1] * 255).astype(np.float32) for s in swaps]
    fast = paste_back(frame, list(zip(crops, matrices, strict=True)))
    official = paste_back_official(frame, swaps, matrices)
    diff = np.abs(fast.astype(int) - official.astype(int))
    return fast, diff


CASES = {
    "centre": ((481, 641), [((320, 240), 180, 0)]),
    "odd-size-rotated-90": ((333, 517), [((250, 170), 150, 90)]),
    "partly-outside-left-top": ((300, 400), [((20, 10), 160, 17)]),
    "at-bottom-right-border": ((301, 401), [((395, 296), 120, -35)]),
    "overlapping-three": ((480, 640), [((300, 240), 200, 0), ((380, 250), 180, 180), ((340, 300), 90, 45)]),
}


@pytest.mark.parametrize("seed,case", list(enumerate(CASES)))
def test_fast_equals_official(seed, case):
    rng = np.random.default_rng(seed)
    (h, w), faces = CASES[case]
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    swaps = [rng.random((224, 224, 3), dtype=np.float32) for _ in faces]
    matrices = [face_matrix(*f) for f in faces]
    fast, diff = compare(frame, swaps, matrices)
    assert diff.max() <= 1  # stated tolerance: 1 level (float32 ROI arithmetic vs float64 full frame)
    assert (diff > 0).mean() < 5e-3  # and rare: values that sit on an integer boundary
    assert np.abs(fast.astype(int) - frame.astype(int)).max() > 100  # the faces really were pasted

    outside = np.ones((h, w), bool)
    for m in matrices:
        x0, y0, x1, y1 = face_roi(m, 224, frame.shape)
        outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(fast[outside], frame[outside])


def test_face_entirely_outside_the_frame_changes_nothing():
    frame = np.random.default_rng(1).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    matrix = face_matrix((900, 900), 100, 0)
    assert face_roi(matrix, 224, frame.shape) is None
    np.testing.assert_array_equal(paste_back(frame, [(np.zeros((224, 224, 3), np.float32), matrix)]), frame)


def test_the_crop_mask_baseline_equals_its_method_on_the_whole_frame():
    """The benchmark's FaceFusion-method baseline blends only inside the box the warped crop covers: equal to
    the same method evaluated over the whole frame (mask and crop warped to the full frame), so the
    box loses nothing; and it really pastes."""
    import cv2

    from benchmarks.pasteback import box_mask, paste_back_crop_mask

    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    faces = [
        (rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), face_matrix(center, 120, angle))
        for center, angle in (((150, 140), 10), ((380, 280), -30))  # the second crosses the frame border
    ]
    expected = frame
    for crop, matrix in faces:
        inverse = cv2.invertAffineTransform(matrix)
        mask = cv2.warpAffine(box_mask(224), inverse, (420, 300)).clip(0, 1)[..., None]
        warped = cv2.warpAffine(crop, inverse, (420, 300), borderMode=cv2.BORDER_REPLICATE)
        expected = (expected * (1 - mask) + warped * mask).astype(np.uint8)
    got = paste_back_crop_mask(frame, faces)
    assert np.abs(got.astype(int) - expected).max() <= 1
    assert np.abs(got.astype(int) - frame).max() > 100


def full_roi_mask(matrix, size, roi):
    """The official mask steps over the whole ROI (the reference for the box the fast path uses)."""
    import cv2

    from simswap_trt.vision.pasteback import ERODE_SIZE, _roi_inverse

    x0, y0, x1, y1 = roi
    mask = cv2.warpAffine(np.full((size, size), 255, np.float32), _roi_inverse(matrix, roi), (x1 - x0, y1 - y0))
    mask[mask > 20] = 255
    mask = cv2.erode(mask, np.ones((ERODE_SIZE, ERODE_SIZE), np.uint8))
    return cv2.GaussianBlur(mask, (41, 41), 0) / 255


def test_mask_built_on_its_box_equals_the_mask_over_the_whole_roi():
    """The mask box holds every non-zero value of the official mask, the paint box (where the face is
    blended) too, and the values built on the box equal those built over the whole ROI (within one float32
    step: the warp's origin moves), for random faces of every size (up to three frame pixels per crop
    pixel), angle and position, inside the frame (the mask built on the paint box, zero border) and at and
    beyond its border (on the grown box, reflected border)."""
    import cv2

    from simswap_trt.vision.pasteback import _boxes, border_mask, mask_box

    rng = np.random.default_rng(11)
    checked, borders = 0, set()
    for _ in range(160):
        h, w = (int(v) for v in rng.integers(150, 1400, 2))
        center = (rng.uniform(-60, w + 60), rng.uniform(-60, h + 60))
        matrix = face_matrix(center, rng.uniform(50, 680), rng.uniform(-180, 180))
        roi = face_roi(matrix, 224, (h, w, 3))
        if roi is None:
            continue
        reference = full_roi_mask(matrix, 224, roi)
        (bx0, by0, bx1, by1), inner = mask_box(matrix, 224, roi)
        _, (px0, py0, px1, py1), border = _boxes(matrix, 224, roi)
        outside = np.ones(reference.shape, bool)
        outside[by0 - roi[1] : by1 - roi[1], bx0 - roi[0] : bx1 - roi[0]] = False
        assert not reference[outside].any()  # nothing of the mask is lost outside the box
        unpainted = np.ones(reference.shape, bool)
        unpainted[py0 - roi[1] : py1 - roi[1], px0 - roi[0] : px1 - roi[0]] = False
        assert not reference[unpainted].any()  # nor outside the paint box
        np.testing.assert_allclose(border_mask(matrix, 224, roi), reference, rtol=0, atol=2.5e-7)
        np.testing.assert_allclose(inner, reference[~outside].reshape(inner.shape), rtol=0, atol=2.5e-7)
        checked += reference.any()
        borders.add(border)
    assert checked > 80 and borders == {cv2.BORDER_CONSTANT, cv2.BORDER_REFLECT_101}


@pytest.mark.parametrize("scale", [1.0, 2.0, 3.0, 4.5])
def test_mask_of_a_face_larger_than_its_crop(scale):
    """A crop pixel covers ``scale`` frame pixels: the warped crop's bilinear edge reaches that far beyond
    its corners (here on whole pixels, the worst case), and the mask built on the paint box still equals
    the mask over the whole ROI."""
    from simswap_trt.vision.pasteback import border_mask

    matrix = np.array([[1 / scale, 0, -100 / scale], [0, 1 / scale, -100 / scale]])  # frame→crop
    size = int(224 * scale) + 200
    roi = face_roi(matrix, 224, (size, size, 3))
    np.testing.assert_allclose(border_mask(matrix, 224, roi), full_roi_mask(matrix, 224, roi), rtol=0, atol=2.5e-7)
