"""FaceSwapper on a converted bundle reproduces the source PyTorch models, and batching changes nothing."""

import logging

import numpy as np
import pytest
import torch
from support.tiny import random_crops

from simswap_build.convert.bundle import untrained_bundle
from simswap_build.models import identity_latent
from simswap_trt import FaceSwapper
from simswap_trt.errors import InputError
from simswap_trt.vision.preprocess import crops_to_tensor, tensor_to_crops


@pytest.fixture(scope="module")
def swapper(tiny_bundle):
    return FaceSwapper.from_bundle(tiny_bundle.root, threads=2, max_batch=8)


def test_converted_bundle_equals_the_source_models(swapper, tiny_checkpoints, astronaut_crop):
    generator, arcface, _, _ = tiny_checkpoints
    source, targets = astronaut_crop, random_crops(3, seed=1)
    with torch.no_grad():
        latent = identity_latent(arcface, torch.from_numpy(crops_to_tensor(source, 224)))
        expected = generator.forward_rgb01(torch.from_numpy(crops_to_tensor(targets, 224)), latent.expand(3, -1))
    got_latent = swapper.set_source_crops(source)
    np.testing.assert_allclose(got_latent, latent[0].numpy(), atol=1e-5)
    got = swapper.generate(crops_to_tensor(targets, 224), got_latent)
    assert np.abs(got - expected.numpy()).max() <= 1e-4
    np.testing.assert_array_equal(swapper.swap_aligned(targets), tensor_to_crops(got))


def test_batch_of_8_equals_8_single_calls(swapper):
    targets = crops_to_tensor(random_crops(8, seed=2), 224)
    latent = swapper.identity(random_crops(1, seed=3))
    batched = swapper.generate(targets, latent)
    single = np.concatenate([swapper.generate(targets[i : i + 1], latent) for i in range(8)])
    assert np.abs(batched - single).max() <= 1e-5  # float32 [0,1]; stated tolerance for batch invariance


def test_batches_larger_than_max_batch_are_chunked(swapper):
    targets = crops_to_tensor(random_crops(11, seed=4), 224)
    latents = np.stack([swapper.identity(random_crops(1, seed=s)) for s in range(11)])
    chunked = swapper.generate(targets, latents)
    assert np.abs(chunked[9:] - swapper.generate(targets[9:], latents[9:])).max() <= 1e-5


def test_identity_of_several_sources_is_the_normalised_mean(swapper):
    crops = random_crops(3, seed=5)
    singles = np.stack([swapper.identity(c) for c in crops])
    mean = singles.mean(axis=0)
    np.testing.assert_allclose(swapper.identity(crops), mean / np.linalg.norm(mean), atol=1e-6)


def test_input_errors(swapper):
    with pytest.raises(InputError, match="no source identity"):
        FaceSwapper(swapper.bundle, swapper.generator, swapper.arcface).swap_aligned(random_crops(1))
    with pytest.raises(InputError, match=r"crop 1 is uint8\[200, 200, 3\]; aligned crops must be uint8 BGR"):
        swapper.identity([random_crops(1)[0], random_crops(1, size=200)[0]])
    with pytest.raises(InputError, match="crop 0 is float32"):
        swapper.identity(random_crops(1).astype(np.float32))


def test_untrained_bundle_says_so(tmp_path, caplog):
    from support.tiny import TINY_ARCFACE, TINY_GENERATOR

    bundle = untrained_bundle(tmp_path / "u", generator_config=TINY_GENERATOR, arcface_config=TINY_ARCFACE)
    with caplog.at_level(logging.WARNING):
        FaceSwapper.from_bundle(bundle.root)
    assert "UNTRAINED random weights" in caplog.text


class RecordingEngine:
    """Wraps an engine and records the batch size of every run."""

    def __init__(self, engine, sizes):
        self._engine, self._sizes = engine, sizes
        self.inputs, self.outputs, self.backend = engine.inputs, engine.outputs, engine.backend

    def run(self, feeds):
        self._sizes.append(len(next(iter(feeds.values()))))
        return self._engine.run(feeds)


def test_arcface_batches_are_chunked_by_max_batch(tiny_bundle):
    from simswap_trt.engines import OnnxRuntimeEngine

    sizes = []
    arcface = OnnxRuntimeEngine(tiny_bundle.path_of("arcface"), threads=2)
    generator = OnnxRuntimeEngine(tiny_bundle.path_of("generator"), threads=2)
    swapper = FaceSwapper(tiny_bundle, generator, RecordingEngine(arcface, sizes), max_batch=2)
    crops = random_crops(5, seed=7)
    latent = swapper.identity(crops)
    assert sizes == [2, 2, 1]
    # float64 reference from one crop per call on a separate engine
    reference = OnnxRuntimeEngine(tiny_bundle.path_of("arcface"), threads=1)
    singles = np.concatenate([reference.run({"crop": crops_to_tensor(c, 224)})["latent"] for c in crops])
    mean = singles.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(latent, mean / np.linalg.norm(mean), atol=1e-6)


def test_detector_batches_are_chunked_and_equal_single_calls():
    import cv2
    from skimage import data

    from simswap_trt.vision.detect import CenterFace

    sizes = []

    class Recording(CenterFace):
        def _decode(self, canvas, scales, shapes):
            sizes.append(len(canvas))
            return super()._decode(canvas, scales, shapes)

    detector = Recording(threads=2)
    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])
    images = [np.roll(astronaut, 7 * i, axis=1) for i in range(5)] + [cv2.flip(astronaut, 1)]
    batched = detector.detect_batch(images, batch_size=4)
    assert sizes == [4, 2]
    for image, faces in zip(images, batched, strict=True):
        (single,) = detector.detect(image)
        (face,) = faces
        np.testing.assert_allclose(face.landmarks, single.landmarks, atol=1e-3)
        np.testing.assert_allclose(face.box, single.box, atol=1e-3)


def test_device_copies_must_come_with_their_own_frames(swapper):
    """``resident=`` (the frames' copies from ``detect_frames``) holds one entry per image, each of its image's
    shape; on the host path a batch from ``detect_frames`` carries none and swaps as ``swap_faces`` does."""
    from types import SimpleNamespace

    swapper.set_source_crops(random_crops(1, seed=4))
    images = [np.zeros((64, 80, 3), np.uint8), np.zeros((48, 48, 3), np.uint8)]
    batch = swapper.detect_frames(images)
    assert batch.resident is None and list(batch.images) == images
    copies = [SimpleNamespace(shape=(64, 80, 3)), None]
    assert len(swapper.swap_faces(images, batch.faces, resident=copies)) == 2  # the host reads the images
    with pytest.raises(InputError, match=r"resident must hold one entry per image: 1 for 2 images"):
        swapper.swap_faces(images, batch.faces, resident=copies[:1])
    with pytest.raises(InputError, match=r"resident\[1\] is the device copy of a \[64, 80, 3\] frame, not of image 1"):
        swapper.swap_faces(images, batch.faces, resident=[None, copies[0]])
