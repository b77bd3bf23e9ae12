"""Whole-image swapping: geometry end to end, batching, face selection, parsing masks."""

import cv2
import numpy as np
import pytest
import torch
from support.parser_standin import fake_parser

from simswap_trt import FaceSwapper
from simswap_trt.bundle import contract
from simswap_trt.engines import Engine, OnnxRuntimeEngine
from simswap_trt.errors import InputError, NoFaceError
from simswap_trt.vision.detect import CenterFace
from simswap_trt.vision.parsing import FaceParser, soft_erosion
from simswap_trt.vision.pasteback import face_roi


class PassThroughGenerator(Engine):
    """Returns its input crop: a swap that changes nothing, to check align → warp → paste-back geometry."""

    def __init__(self, crop_size):
        self.inputs, self.outputs = contract("generator", crop_size)
        self.backend = "pass-through"

    def _run_impl(self, feeds):
        return {"swapped": feeds["target"].copy()}


@pytest.fixture(scope="module")
def detector():
    return CenterFace(threads=2)


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])
    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    return astronaut, camera


@pytest.fixture(scope="module")
def swapper(tiny_bundle, detector, photos):
    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=2, max_batch=4, detector=detector)
    swapper.set_source(photos[0])
    return swapper


def test_pass_through_generator_reproduces_the_image(tiny_bundle, detector, photos):
    astronaut = photos[0]
    swapper = FaceSwapper(
        tiny_bundle, PassThroughGenerator(224), OnnxRuntimeEngine(tiny_bundle.path_of("arcface")), detector
    )
    swapper.set_source(astronaut)
    result = swapper.swap(astronaut)
    (face,) = result.faces
    assert face.swapped
    diff = np.abs(result.image.astype(int) - astronaut.astype(int))
    x0, y0, x1, y1 = face_roi(face.matrix, 224, astronaut.shape)
    outside = diff.copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.max() == 0
    bx0, by0, bx1, by1 = face.box.astype(int)
    in_face = diff[by0:by1, bx0:bx1]
    # warp + inverse warp blur the face slightly: mean <= 2.5 levels (a 0.5 px misplacement gives ~3,
    # 1 px ~5, swapped colour channels ~30)
    assert in_face.mean() <= 2.5
    assert np.percentile(in_face, 99) <= 16


def test_batch_equals_one_by_one(swapper, photos):
    astronaut, camera = photos
    images = [camera, astronaut, np.hstack([camera, astronaut])]
    batched = swapper.swap_batch(images)
    for image, result in zip(images, batched, strict=True):
        single = swapper.swap(image)
        assert len(single.faces) == len(result.faces)
        assert np.abs(single.image.astype(int) - result.image.astype(int)).max() <= 1


def test_selection_modes(swapper, photos):
    astronaut, camera = photos
    small_astronaut = cv2.resize(astronaut, (256, 256))
    group = np.hstack([camera, cv2.copyMakeBorder(small_astronaut, 0, 256, 0, 0, cv2.BORDER_CONSTANT)])
    every = swapper.swap(group, "all")
    assert [f.swapped for f in every.faces] == [True, True]
    largest = swapper.swap(group, "largest")
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in largest.faces]
    assert len(areas) == 2
    assert [f.swapped for f in largest.faces] == [a == max(areas) for a in areas]


class PixelEmbedding(Engine):
    """A stand-in identity network that tells faces apart by their pixels (random projection of the
    standardised 16x16 crop). Random-weight ArcFaces map every face to nearly the same latent, so this
    checks the selection logic on its own."""

    def __init__(self, crop_size):
        self.inputs, self.outputs = contract("arcface", crop_size)
        self.backend = "pixel-embedding"
        self.projection = np.random.default_rng(0).normal(size=(3 * 16 * 16, 512)).astype(np.float32)

    def _run_impl(self, feeds):
        crops = feeds["crop"]
        index = np.arange(16) * crops.shape[-1] // 16
        x = crops[:, :, index][:, :, :, index].reshape(len(crops), -1)
        x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
        latent = x @ self.projection
        return {"latent": latent / np.linalg.norm(latent, axis=1, keepdims=True)}


def test_reference_identity_picks_the_right_face(swapper, photos):
    astronaut, camera = photos
    selector = FaceSwapper(swapper.bundle, swapper.generator, PixelEmbedding(224), swapper.detector)
    selector.set_source(astronaut)
    selector.set_reference(camera)
    group = np.hstack([cv2.flip(astronaut, 1), camera])
    result = selector.swap(group, "reference")  # default threshold 0.5
    camera_face = int(np.argmax([f.box[0] for f in result.faces]))  # the face on the right half
    assert [f.swapped for f in result.faces] == [i == camera_face for i in range(2)]
    sims = [f.similarity for f in result.faces]
    assert sims[camera_face] > 0.5 > sims[1 - camera_face]
    untouched = result.faces[1 - camera_face].box.astype(int)
    np.testing.assert_array_equal(
        result.image[untouched[1] : untouched[3], untouched[0] : untouched[2]],
        group[untouched[1] : untouched[3], untouched[0] : untouched[2]],
    )


def test_no_face(swapper):
    blank = np.full((120, 160, 3), 90, np.uint8)
    result = swapper.swap(blank)
    assert result.faces == () and result.swapped_count == 0
    np.testing.assert_array_equal(result.image, blank)
    with pytest.raises(NoFaceError, match="no face found in source image 0"):
        FaceSwapper(swapper.bundle, swapper.generator, swapper.arcface, swapper.detector).set_source(blank)


def test_bad_images_and_arguments(swapper):
    with pytest.raises(
        InputError, match=r"image 0 must be a uint8 BGR array of shape \[H, W, 3\] with H, W >= 1, got uint8\[10, 10\]"
    ):
        swapper.swap(np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError, match="select must be one of all, largest, reference"):
        swapper.swap(np.zeros((10, 10, 3), np.uint8), select="biggest")
    fresh = FaceSwapper(swapper.bundle, swapper.generator, swapper.arcface, swapper.detector)
    fresh.source_latent = swapper.source_latent
    with pytest.raises(InputError, match="needs a reference identity"):
        fresh.swap(np.zeros((10, 10, 3), np.uint8), select="reference")


def soft_erosion_torch(mask, kernel_size=17, threshold=0.9, iterations=7):
    """Independent reference: upstream's SoftErosion written with torch conv2d."""
    r = kernel_size // 2
    y, x = torch.meshgrid(torch.arange(kernel_size), torch.arange(kernel_size), indexing="ij")
    dist = torch.sqrt((x - r) ** 2 + (y - r) ** 2.0)
    kernel = dist.max() - dist
    kernel = (kernel / kernel.sum())[None, None]
    t = torch.from_numpy(mask)[None, None].double()
    kernel = kernel.double()
    for _ in range(iterations - 1):
        t = torch.min(t, torch.nn.functional.conv2d(t, kernel, padding=r))
    t = torch.nn.functional.conv2d(t, kernel, padding=r)
    solid = t >= threshold
    t[solid] = 1.0
    t[~solid] /= t[~solid].max()
    return t[0, 0].numpy()


def test_soft_erosion_equals_the_torch_formula():
    mask = np.zeros((224, 224))
    cv2.circle(mask, (112, 120), 70, 1.0, -1)
    mask[150:170, 90:130] = 0.5
    np.testing.assert_allclose(soft_erosion(mask), soft_erosion_torch(mask), atol=1e-5)


def test_parsing_mask_blends_in_crop_space(tmp_path):
    """Expected mask from an independent path: torch bilinear resize of the 0/1 face region (as upstream's
    resize of the parsing map) and the torch SoftErosion above; blend checked in float64."""
    parser = FaceParser(fake_parser(tmp_path / "parser.onnx", (128, 128, 384, 384)), threads=1)
    rng = np.random.default_rng(0)
    swapped = rng.random((1, 3, 224, 224), dtype=np.float32)
    targets = rng.random((1, 3, 224, 224), dtype=np.float32)
    blended = parser.blend(swapped, targets)
    region = torch.zeros(1, 1, 512, 512, dtype=torch.float64)
    region[..., 128:384, 128:384] = 1.0
    resized = torch.nn.functional.interpolate(region, size=(224, 224), mode="bilinear", align_corners=False)
    mask = soft_erosion_torch(resized[0, 0].numpy())
    assert mask[112, 112] == 1.0 and mask[5, 5] == 0.0
    expected = swapped[0].astype(np.float64) * mask + targets[0].astype(np.float64) * (1 - mask)
    np.testing.assert_allclose(blended[0], expected, atol=2e-5)
    nothing = FaceParser(fake_parser(tmp_path / "none.onnx", (0, 0, 2, 2)), threads=1)  # < 5000 mask sum
    np.testing.assert_array_equal(nothing.blend(swapped, targets), swapped)


def test_a_parser_given_to_face_swapper_blends_its_swaps(tiny_bundle, detector, photos, tmp_path):
    astronaut = photos[0]
    plain = FaceSwapper.from_bundle(tiny_bundle.root, threads=2, detector=detector)
    empty = FaceSwapper.from_bundle(
        tiny_bundle.root,
        threads=2,
        detector=detector,
        parser=FaceParser(fake_parser(tmp_path / "e.onnx", (0, 0, 2, 2))),
    )
    boxed = FaceSwapper.from_bundle(
        tiny_bundle.root,
        threads=2,
        detector=detector,
        parser=FaceParser(fake_parser(tmp_path / "b.onnx", (128, 128, 384, 384))),
    )
    outputs = []
    for swapper in (plain, empty, boxed):
        swapper.set_source(astronaut)
        outputs.append(swapper.swap(astronaut))
    reference, unmasked, masked = outputs
    np.testing.assert_array_equal(unmasked.image, reference.image)  # no face parsed: the plain swap is kept
    changed = np.abs(masked.image.astype(int) - reference.image.astype(int)).max(axis=2) > 2
    assert changed.any()  # the mask is used: outside its region the target's pixels come back
    x1, y1, x2, y2 = reference.faces[0].box.astype(int)
    centre = ((y1 + y2) // 2, (x1 + x2) // 2)
    assert not changed[centre]  # inside the parsed region (mask 1) the swap is unchanged
    # the mask only takes pixels back toward the photo (up to resampling and clipping of the swap)
    moved = np.abs(reference.image.astype(int) - astronaut)
    masked_moved = np.abs(masked.image.astype(int) - astronaut)
    assert masked_moved.sum() < 0.9 * moved.sum()
    assert np.mean(masked_moved > moved + 2) < 1e-3


def test_swap_faces_with_given_faces_and_an_explicit_choice(swapper, photos):
    astronaut, camera = photos
    group = np.hstack([camera, astronaut])
    faces = swapper.detect([group])
    assert len(faces[0]) == 2
    detected = swapper.swap_batch([group])[0]
    given = swapper.swap_faces([group], faces)[0]
    np.testing.assert_array_equal(given.image, detected.image)  # same faces, same output
    only_second = swapper.swap_faces([group], faces, [[False, True]])[0]
    assert [f.swapped for f in only_second.faces] == [False, True]
    first_box = faces[0][0].box.astype(int)
    x0, y0, x1, y1 = first_box
    np.testing.assert_array_equal(only_second.image[y0:y1, x0:x1], group[y0:y1, x0:x1])
    with pytest.raises(InputError, match="one boolean per face"):
        swapper.swap_faces([group], faces, [[True]])
    with pytest.raises(InputError, match="one list per image"):
        swapper.swap_faces([group, group], faces)


def test_similarities_match_reference_selection(swapper, photos):
    astronaut, camera = photos
    selector = FaceSwapper(swapper.bundle, swapper.generator, PixelEmbedding(224), swapper.detector)
    selector.set_source(astronaut)
    selector.set_reference(camera)
    images = [np.hstack([cv2.flip(astronaut, 1), camera]), np.full((50, 60, 3), 7, np.uint8)]
    faces = selector.detect(images)
    sims = selector.similarities(images, faces)
    assert [len(s) for s in sims] == [2, 0]
    result = selector.swap_faces(images, faces, "reference")
    np.testing.assert_allclose(sims[0], [f.similarity for f in result[0].faces], atol=1e-6)
