"""The enhancer's device kernels (host build of their per-pixel math): the enhancer input made from the swap
where it lies equals the host path's composed warp (simswap_trt.vision.enhance.to_enhancer_crops) within one
level, and the blend equals the host's NumPy expression."""

from __future__ import annotations

import ctypes

import cv2
import numpy as np
import pytest

from simswap_trt.vision.align import FFHQ_TEMPLATE_512, alignment_matrix, invert_affine
from simswap_trt.vision.enhance import compose_affine, to_enhancer_crops


def soft(shape, seed):
    """A smooth random float32 image in [0, 1] (like a generator's output)."""
    noise = cv2.GaussianBlur(np.random.default_rng(seed).random(shape).astype(np.float32), (0, 0), 6.0)
    return (noise - noise.min()) / (noise.max() - noise.min())


def landmarks_at(center, eye_distance, angle):
    template = FFHQ_TEMPLATE_512 - FFHQ_TEMPLATE_512[:2].mean(0)
    scale = eye_distance / (FFHQ_TEMPLATE_512[1, 0] - FFHQ_TEMPLATE_512[0, 0])
    c, s = np.cos(angle), np.sin(angle)
    return (template * scale) @ np.array([[c, s], [-s, c]]) + center


def pointer(array: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(array.ctypes.data)


@pytest.fixture(scope="module")
def scene():
    """Two frames, three faces (one near a border so the enhancer crop reaches outside the frame), swaps."""
    frames = [(soft((300, 400, 3), seed) * 255).astype(np.uint8) for seed in (1, 2)]
    faces = [
        (0, landmarks_at((120, 140), 60, 0.1)),
        (0, landmarks_at((370, 60), 40, -0.3)),
        (1, landmarks_at((200, 150), 90, 0.05)),
    ]
    generator = [alignment_matrix(points, "multipose", 224) for _, points in faces]
    enhancer = [alignment_matrix(points, "ffhq", 512) for _, points in faces]
    swapped = np.stack([soft((224, 224, 3), 10 + k).transpose(2, 0, 1) for k in range(3)]).astype(np.float32)
    return frames, [i for i, _ in faces], generator, enhancer, np.ascontiguousarray(swapped)


@pytest.mark.parametrize("half_in, half_out", [(0, 0), (1, 0), (0, 1)])
def test_enhancer_input_equals_the_host_composed_warp_within_one_level(host, scene, half_in, half_out):
    frames, frame_of_face, generator, enhancer, swapped = scene
    reference = to_enhancer_crops(frames, list(zip(frame_of_face, generator, strict=True)), enhancer, swapped, 512)
    tables = [
        np.array([f.ctypes.data for f in frames], np.uint64),
        np.array([f.strides[0] for f in frames], np.int32),
        np.array([f.shape[1] for f in frames], np.int32),
        np.array([f.shape[0] for f in frames], np.int32),
        np.array(frame_of_face, np.int32),
        np.array([invert_affine(e).reshape(6) for e in enhancer], np.float32),
        np.array(
            [
                invert_affine(compose_affine(e, invert_affine(g))).reshape(6)
                for g, e in zip(generator, enhancer, strict=True)
            ],
            np.float32,
        ),
    ]
    source = np.ascontiguousarray(swapped.astype(np.float16) if half_in else swapped)
    out = np.zeros(reference.shape, np.float16 if half_out else np.float32)
    host.simswap_enhancer_input_host.restype = None
    host.simswap_enhancer_input_host(
        *map(pointer, tables),
        pointer(source),
        ctypes.c_int(half_in),
        ctypes.c_int(224),
        ctypes.c_int(len(frame_of_face)),
        ctypes.c_int(512),
        ctypes.c_int(half_out),
        pointer(out),
    )
    difference = np.abs(out.astype(np.float32) - reference) * 255
    # one level: the frame around the swap is rounded to a level, as the host's uint8 warp; FP16 adds its step
    assert difference.max() <= 1.0 + (0.25 if half_in or half_out else 1e-3)
    assert difference.mean() < (0.05 if half_in or half_out else 1e-3)  # FP16 steps average about 0.02 level
    # a planted error in the composed map moves the face: the check above would see it
    shifted = np.roll(reference, 3, axis=-1)
    assert (np.abs(shifted - reference) * 255).max() > 1.0


@pytest.mark.parametrize("blend", [0.0, 0.3, 0.8, 1.0])
def test_enhance_blend_equals_the_host_expression(host, blend):
    rng = np.random.default_rng(int(blend * 10))
    enhanced, inputs = rng.random((2, 3, 8, 8), np.float32), rng.random((2, 3, 8, 8), np.float32)
    expected = np.float32(blend) * enhanced + np.float32(1 - blend) * inputs
    out = enhanced.copy()
    host.simswap_enhance_blend_host.restype = None
    host.simswap_enhance_blend_host(
        pointer(out),
        ctypes.c_int(0),
        pointer(inputs),
        ctypes.c_int(0),
        ctypes.c_float(blend),
        ctypes.c_longlong(out.size),
    )
    np.testing.assert_allclose(out, expected, atol=1e-6)
    if blend == 0.0:
        np.testing.assert_array_equal(out, inputs)
