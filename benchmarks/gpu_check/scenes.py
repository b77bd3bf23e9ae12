"""Scenes of the GPU check: landmarks of faces at a given place, smooth frames, batches of video frames."""

from __future__ import annotations

import numpy as np

from simswap_trt.vision.align import templates


def face_landmarks(center, size: float, angle: float, crop: int, alignment: str = "multipose") -> np.ndarray:
    template = templates(alignment, crop)[-1 if alignment == "ffhq" else 2]
    a = np.deg2rad(angle)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return ((template - crop / 2) * (size / crop) @ rotation.T + np.asarray(center, float)).astype(np.float32)


def smooth_frame(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 100 * np.sin(x / 23 + c) * np.cos(y / 31 - c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def video_batches(count: int, faces_per_frame: int = 2, frames: int = 4, seed: int = 3) -> list:
    """``count`` batches of 1080p frames with ``faces_per_frame`` faces drifting a few pixels per batch."""
    from simswap_trt.swapper import FrameBatch
    from simswap_trt.vision.detect import Detection

    rng = np.random.default_rng(seed)
    images = [smooth_frame(rng, 1080, 1920) for _ in range(frames)]
    batches = []
    for b in range(count):
        faces = [
            [
                Detection(np.zeros(4, np.float32), 0.9, face_landmarks((500 + 300 * f + 3 * b, 520), 220, 4, 224))
                for f in range(faces_per_frame)
            ]
            for _ in images
        ]
        batches.append(FrameBatch(images, faces))
    return batches


def worst_levels(results, expected) -> int:
    return max(
        int(np.abs(g.image.astype(int) - w.image).max())
        for got, want in zip(results, expected, strict=True)
        for g, w in zip(got, want, strict=True)
    )
