"""Alignment: the Umeyama fit equals scikit-image's SimilarityTransform, the best template is chosen as
the official code does, and inverses match OpenCV."""

import cv2
import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from simswap_trt.vision.align import (
    FFHQ_TEMPLATE_512,
    MULTIPOSE_TEMPLATES_112,
    alignment_matrix,
    estimate_similarity,
    invert_affine,
    templates,
)


def skimage_fit(src, dst):
    return SimilarityTransform.from_estimate(src, dst).params[:2]


@pytest.mark.parametrize("seed", range(5))
def test_similarity_fit_equals_skimage(seed):
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 500, (5, 2))
    angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 3)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rotation.T + rng.uniform(-100, 100, 2) + rng.normal(0, 2, (5, 2))
    np.testing.assert_allclose(estimate_similarity(src, dst), skimage_fit(src, dst), atol=1e-9)


def test_similarity_fit_without_reflection_equals_skimage_for_mirrored_points():
    """A mirrored point set (the covariance's determinant is negative): both fit the best rotation."""
    rng = np.random.default_rng(7)
    src = rng.uniform(0, 300, (5, 2))
    dst = src * [-1.0, 1.0] + [400, 20] + rng.normal(0, 3, (5, 2))
    np.testing.assert_allclose(estimate_similarity(src, dst), skimage_fit(src, dst), atol=1e-9)


def test_batched_fits_equal_one_fit_per_point_set():
    rng = np.random.default_rng(3)
    src, dst = rng.uniform(0, 500, (5, 2)), rng.uniform(0, 500, (4, 3, 5, 2))
    batched = estimate_similarity(src, dst)
    assert batched.shape == (4, 3, 2, 3)
    for index in np.ndindex(4, 3):
        np.testing.assert_allclose(batched[index], skimage_fit(src, dst[index]), atol=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_alignment_picks_the_template_a_per_template_loop_picks(seed):
    """Random faces (any pose and angle): the batched choice equals fitting each template in turn."""
    rng = np.random.default_rng(seed)
    for _ in range(20):
        landmarks = MULTIPOSE_TEMPLATES_112[rng.integers(5)] * rng.uniform(0.5, 4) + rng.normal(0, 6, (5, 2))
        angle = rng.uniform(-np.pi, np.pi)
        landmarks = landmarks @ np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        fits = [skimage_fit(landmarks, t) for t in MULTIPOSE_TEMPLATES_112 * 2]
        errors = [
            np.linalg.norm(landmarks @ m[:, :2].T + m[:, 2] - t, axis=1).sum()
            for m, t in zip(fits, MULTIPOSE_TEMPLATES_112 * 2, strict=True)
        ]
        np.testing.assert_allclose(
            alignment_matrix(landmarks, "multipose", 224), fits[int(np.argmin(errors))], atol=1e-9
        )


def test_best_template_is_the_one_with_least_summed_error():
    for index, template in enumerate(MULTIPOSE_TEMPLATES_112 * 2):
        landmarks = template * 1.7 + [300, 120]  # a face that is exactly this pose
        matrix = alignment_matrix(landmarks, "multipose", 224)
        np.testing.assert_allclose(matrix, skimage_fit(landmarks, template), atol=1e-9, err_msg=str(index))


def test_ffhq_template_scales_with_crop_size():
    np.testing.assert_allclose(templates("ffhq", 256)[0], FFHQ_TEMPLATE_512 / 2)
    landmarks = FFHQ_TEMPLATE_512 * 0.8 + 40
    mapped = (
        landmarks @ alignment_matrix(landmarks, "ffhq", 512)[:, :2].T + alignment_matrix(landmarks, "ffhq", 512)[:, 2]
    )
    np.testing.assert_allclose(mapped, FFHQ_TEMPLATE_512, atol=1e-9)


def test_invert_affine_equals_opencv():
    matrix = alignment_matrix(
        np.array([[203, 102], [247, 105], [223, 125], [203, 142], [241, 144]], float), "multipose", 224
    )
    np.testing.assert_allclose(invert_affine(matrix), cv2.invertAffineTransform(matrix), atol=1e-12)
