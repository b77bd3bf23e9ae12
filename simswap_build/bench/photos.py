"""Photo sets for calibration and validation without downloads: randomly framed, rotated, flipped and
re-lit versions of scikit-image's public-domain astronaut and CC0 camera photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from simswap_trt.images import write_image


def face_photo_set(folder: Path, count: int, seed: int) -> list[Path]:
    """Write ``count`` augmented photos (PNG) into ``folder``; the same ``seed`` gives the same files."""
    from skimage import data

    sources = [np.ascontiguousarray(data.astronaut()[..., ::-1]), cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)]
    centers = [(225, 120), (245, 160)]  # approximate face centres
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        k = i % len(sources)
        image = sources[k]
        angle, scale = rng.uniform(-15, 15), rng.uniform(0.8, 1.3)
        matrix = cv2.getRotationMatrix2D(centers[k], angle, scale)
        image = cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT)
        if rng.random() < 0.5:
            image = cv2.flip(image, 1)
        gain, offset = rng.uniform(0.75, 1.25), rng.uniform(-20, 20)
        image = np.clip(image.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
        path = folder / f"face{i:03d}.png"
        write_image(path, image, synthetic=False)
        paths.append(path)
    return paths


def people_photo_set(folder: Path, start: int, count: int) -> list[Path]:
    """Write photos of ``count`` different people (PNG): faces ``start``, ``start + 1``, ... of scikit-image's
    LFW subset (25x25 grey crops), enlarged to 200 px on a grey 400 px canvas so that the detector finds
    them. Other people than the astronaut and camera photos, for checks on faces a recipe never saw."""
    from skimage import data

    faces = data.lfw_subset()[:100]  # the first 100 entries are faces
    if start < 0 or start + count > len(faces):
        raise ValueError(f"the LFW subset has {len(faces)} faces; asked for {start}..{start + count - 1}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        face = cv2.resize((faces[i] * 255).astype(np.uint8), (200, 200), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((400, 400), 128, np.uint8)
        canvas[100:300, 100:300] = face
        path = folder / f"person{i:03d}.png"
        write_image(path, cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR), synthetic=False)
        paths.append(path)
    return paths
