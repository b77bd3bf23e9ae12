"""Fixtures (a pytest plugin): reduced-width random checkpoints in the official formats, bundles made from
them through the real conversion path, and a real photo."""

from __future__ import annotations

import numpy as np
import pytest

from support.tiny import TINY_ARCFACE, TINY_GENERATOR


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """(generator model, arcface model, generator .pth, arcface .tar) at reduced widths, official formats."""
    from support.official_formats import make_arcface, make_generator, save_arcface_pickled_module, save_generator

    folder = tmp_path_factory.mktemp("checkpoints")
    generator, arcface = make_generator(TINY_GENERATOR, seed=1), make_arcface(TINY_ARCFACE, seed=2)
    return (
        generator,
        arcface,
        save_generator(generator, folder / "latest_net_G.pth"),
        save_arcface_pickled_module(arcface, folder / "arcface_checkpoint.tar"),
    )


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoints, tmp_path_factory):
    """A bundle converted from the tiny checkpoints, 224 px crops."""
    from simswap_build.convert.bundle import convert_checkpoints

    _, _, generator_path, arcface_path = tiny_checkpoints
    return convert_checkpoints(generator_path, arcface_path, tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="session")
def astronaut_crop() -> np.ndarray:
    """A real photo: the face region of skimage's public-domain astronaut, 224x224 uint8 BGR."""
    import cv2
    from skimage import data

    face = data.astronaut()[40:220, 130:310, ::-1]
    return np.ascontiguousarray(cv2.resize(face, (224, 224), interpolation=cv2.INTER_AREA))
