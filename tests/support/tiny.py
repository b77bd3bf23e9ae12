"""Reduced widths of the models, the upstream key lists, and random crops. Reduced widths keep the suite
fast; full-size models are used where size is the point (key lists, parity at 224)."""

from __future__ import annotations

import numpy as np

from simswap_build.convert.architectures import ArcFaceConfig, GeneratorConfig
from support.paths import DATA

TINY_GENERATOR = GeneratorConfig(ngf=8, n_blocks=2)
TINY_ARCFACE = ArcFaceConfig(layers=(1, 1, 1, 1), width=16)
KEYS_DIR = DATA / "keys"


def reference_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """A key list from tests/data/keys (copied from the project's model reference)."""
    out = []
    for line in (KEYS_DIR / f"{name}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            out.append((key, tuple(int(d) for d in shape.strip("()").split(",") if d.strip())))
    return out


def random_crops(count: int, size: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
