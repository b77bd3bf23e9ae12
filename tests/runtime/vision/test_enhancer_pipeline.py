"""Face enhancement in the host pipeline: the composed warp, batching across faces and frames, the blend,
where the output changes, and that it is off by default."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from support.enhancer_formats import bundle_with_enhancer, make_gfpgan, save_gfpgan

from simswap_trt import FaceSwapper
from simswap_trt.errors import BundleError, ConfigError
from simswap_trt.vision.align import FFHQ_TEMPLATE_512, alignment_matrix, invert_affine
from simswap_trt.vision.detect import Detection
from simswap_trt.vision.enhance import FaceEnhancer, compose_affine, to_enhancer_crops
from simswap_trt.vision.pasteback import face_roi


def smooth_image(shape, seed, sigma=6.0):
    """Soft random texture (like a generator's output): smooth enough that resampling twice stays close."""
    noise = np.random.default_rng(seed).random(shape).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), sigma)
    lo, hi = blurred.min(), blurred.max()
    return (blurred - lo) / (hi - lo)


def face_at(center, eye_distance, angle=0.0):
    """A detection whose landmarks are the FFHQ template, scaled, rotated and moved to ``center``."""
    template = FFHQ_TEMPLATE_512 - FFHQ_TEMPLATE_512[:2].mean(0)
    scale = eye_distance / (FFHQ_TEMPLATE_512[1, 0] - FFHQ_TEMPLATE_512[0, 0])
    c, s = np.cos(angle), np.sin(angle)
    landmarks = (template * scale) @ np.array([[c, s], [-s, c]]) + center
    box = np.r_[landmarks.min(0) - eye_distance, landmarks.max(0) + eye_distance].astype(np.float32)
    return Detection(box, 0.9, landmarks.astype(np.float32))


@pytest.fixture(scope="module")
def frames():
    images = [(smooth_image((200, 300, 3), seed) * 255).astype(np.uint8) for seed in (1, 2)]
    faces = [[face_at((90, 90), 40, 0.1), face_at((220, 110), 34, -0.2)], [face_at((150, 100), 46, 0.05)]]
    return images, faces


@pytest.fixture(scope="module")
def enhanced_bundle(tiny_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("enhancer")
    checkpoint = save_gfpgan(make_gfpgan(seed=7), folder / "GFPGANv1.4.pth")
    return bundle_with_enhancer(tiny_bundle.root, checkpoint, folder)


def _swapper(bundle, **kwargs):
    swapper = FaceSwapper.from_bundle(bundle.root, threads=2, max_batch=2, device_path=False, **kwargs)
    swapper.set_source_crops((smooth_image((224, 224, 3), 9) * 255).astype(np.uint8))
    return swapper


@pytest.fixture(scope="module")
def plain(enhanced_bundle):
    return _swapper(enhanced_bundle)


@pytest.fixture(scope="module")
def enhancing(enhanced_bundle):
    return _swapper(enhanced_bundle, enhance=True)


def test_composed_warp_equals_warp_to_224_then_to_512():
    frame = (smooth_image((400, 500, 3), 3) * 255).astype(np.uint8)
    swap = smooth_image((224, 224, 3), 4)  # the generator's output, RGB [0, 1]
    face = face_at((260, 190), 90, 0.15)
    g = alignment_matrix(face.landmarks, "multipose", 224)
    e = alignment_matrix(face.landmarks, "ffhq", 512)
    ours = to_enhancer_crops([frame], [(0, g)], [e], swap.transpose(2, 0, 1)[None], 512)[0].transpose(1, 2, 0)
    # reference: the swap placed into the frame (two steps: 224 crop → frame → 512 crop)
    size = frame.shape[1::-1]
    placed = cv2.warpAffine(swap, invert_affine(g), size)
    cover = cv2.warpAffine(np.ones((224, 224), np.float32), invert_affine(g), size)[..., None]
    composite = placed + (1 - cover) * frame[..., ::-1] / np.float32(255)
    ref = cv2.warpAffine(composite, e, (512, 512))
    # compare away from the swap's border, where the two-step version has resampled a hard edge
    border = cv2.warpAffine(np.ones((224, 224), np.float32), compose_affine(e, invert_affine(g)), (512, 512))
    edge = cv2.dilate(((border > 0) & (border < 1)).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    inside = (border == 1) & ~edge
    assert inside.mean() > 0.4 and (~edge & (border == 0)).mean() > 0.1  # both the swap and the frame compared
    diff = np.abs(ours - ref)[~edge] * 255
    assert diff.max() <= 1.0, diff.max()
    # a composition in the wrong order is caught
    wrong = cv2.warpAffine(swap, compose_affine(invert_affine(g), e), (512, 512))
    assert np.abs(wrong - ref)[inside].max() * 255 > 5


def test_off_by_default_and_blend_zero_is_bit_exact(enhanced_bundle, plain, frames):
    images, faces = frames
    assert plain.enhancer is None
    expected = [r.image for r in plain.swap_faces(images, faces)]
    zero = _swapper(enhanced_bundle, enhance=True, enhance_blend=0.0)
    for got, want in zip(zero.swap_faces(images, faces), expected, strict=True):
        np.testing.assert_array_equal(got.image, want)


def test_output_changes_only_in_face_regions(plain, enhancing, frames):
    images, faces = frames
    swapped = plain.swap_faces(images, faces)
    enhanced = enhancing.swap_faces(images, faces)
    for image, swap, result in zip(images, swapped, enhanced, strict=True):
        outside = np.ones(image.shape[:2], bool)
        for info in result.faces:
            x0, y0, x1, y1 = face_roi(info.matrix, 224, image.shape)
            outside[y0:y1, x0:x1] = False
        changed = np.abs(result.image.astype(int) - swap.image.astype(int)).max(-1)
        assert changed[~outside].max() > 10  # the enhancer changed the faces
        assert changed[outside].max() == 0
        np.testing.assert_array_equal(result.image[outside], image[outside])


def test_batches_across_faces_and_frames_equal_one_by_one(enhanced_bundle, enhancing, frames):
    from simswap_trt.engines import OnnxRuntimeEngine

    images, faces = frames
    assert enhancing.enhancer.max_batch == 2
    together = enhancing.swap_faces(images, faces)  # 3 faces of 2 frames, in chunks of 2 through the enhancer
    engines = [OnnxRuntimeEngine(enhanced_bundle.path_of(role), threads=2) for role in ("generator", "arcface")]
    enhancer = FaceEnhancer(OnnxRuntimeEngine(enhanced_bundle.path_of("enhancer"), threads=2), "ffhq", max_batch=1)
    one_by_one = FaceSwapper(enhanced_bundle, *engines, max_batch=1, device_path=False, enhance=enhancer)
    one_by_one.source_latent = enhancing.source_latent
    for image, per_image, batched in zip(images, faces, together, strict=True):
        (alone,) = one_by_one.swap_faces([image], [per_image])
        assert np.abs(alone.image.astype(int) - batched.image.astype(int)).max() <= 1
    # the restorer itself: a batch equals its faces one by one
    crops = np.random.default_rng(0).random((3, 3, enhancer.size, enhancer.size), dtype=np.float32)
    single = np.concatenate([enhancer.run(crops[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(enhancing.enhancer.run(crops), single, atol=1e-5, rtol=0)


def test_blend_mixes_the_restored_face_with_the_swap(enhancing, frames):
    images, faces = frames
    enhancer = enhancing.enhancer
    assert enhancer.blend == 0.8
    g = [(0, alignment_matrix(d.landmarks, "multipose", 224)) for d in faces[0]]
    e = [enhancer.matrix(d.landmarks) for d in faces[0]]
    swapped = np.random.default_rng(1).random((2, 3, 224, 224), dtype=np.float32)
    inputs = to_enhancer_crops(images, g, e, swapped, enhancer.size)
    expected = 0.8 * enhancer.run(inputs) + 0.2 * inputs
    got = enhancer.enhance(images, g, e, swapped)
    np.testing.assert_allclose(got, expected.transpose(0, 2, 3, 1)[..., ::-1] * 255, atol=1e-3)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        FaceEnhancer(enhancer.engine, "ffhq", blend=1.5)


def test_enhance_without_an_enhancer_names_the_command(tiny_bundle):
    with pytest.raises(BundleError, match=f"simswap-build add-enhancer {tiny_bundle.root} GFPGANv1.4.pth"):
        FaceSwapper.from_bundle(tiny_bundle.root, threads=2, enhance=True)


def test_cli_swap_with_enhancer(enhanced_bundle, tiny_bundle, tmp_path, capsys):
    from skimage import data

    from simswap_trt.cli import main

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), data.astronaut()[..., ::-1])
    args = ["swap", "--source", str(photo), "--target", str(photo), "--threads", "2"]
    outputs = {}
    for name, extra in (
        ("plain", []),
        ("enhanced", ["--enhancer"]),
        ("half", ["--enhancer", "--enhance-blend", "0.5"]),
    ):
        outputs[name] = tmp_path / f"{name}.png"
        assert main([*args, "--bundle", str(enhanced_bundle.root), "--output", str(outputs[name]), *extra]) == 0
    plain, enhanced, half = (cv2.imread(str(outputs[n])).astype(int) for n in ("plain", "enhanced", "half"))
    assert np.abs(enhanced - plain).max() > 10
    assert 0 < np.abs(half - plain).mean() < np.abs(enhanced - plain).mean()
    capsys.readouterr()
    assert main([*args, "--bundle", str(tiny_bundle.root), "--output", str(tmp_path / "x.png"), "--enhancer"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "simswap-build add-enhancer" in err
    assert not (tmp_path / "x.png").exists()
    bad_blend = [*args, "--bundle", str(enhanced_bundle.root), "--output", str(tmp_path / "y.png")]
    assert main([*bad_blend, "--enhance-blend", "2"]) != 0
    assert "--enhance-blend: must be in [0, 1]" in capsys.readouterr().err


def test_cli_video_with_enhancer(enhanced_bundle, tmp_path, capsys):
    from support.video_clips import FACE, decoded, moving_face, write_clip

    from simswap_trt.cli import main

    clip = write_clip(tmp_path / "in.mp4", moving_face(4))
    source = tmp_path / "me.png"
    cv2.imwrite(str(source), FACE)
    base = ["video", "--bundle", str(enhanced_bundle.root), "--source", str(source), "--target", str(clip)]
    frames = {}
    for name, extra in (("plain", []), ("enhanced", ["--enhancer"])):
        out = tmp_path / f"{name}.mp4"
        assert main([*base, "--output", str(out), "--threads", "2", *extra]) == 0
        assert "4 frames, 4 with a swapped face" in capsys.readouterr().out
        frames[name] = [f.to_ndarray(format="bgr24").astype(int) for f in decoded(out)]
    assert len(frames["enhanced"]) == 4
    assert max(np.abs(a - b).max() for a, b in zip(frames["plain"], frames["enhanced"], strict=True)) > 10


@pytest.mark.parametrize("pose", range(5))
def test_the_generator_crop_lies_inside_the_enhancer_crop_for_every_template(pose):
    """The paste-back places the enhanced 512 crop with the generator crop's mask: that region must be
    covered by the enhancer's crop, for each of the five multi-pose templates (profile to profile)."""
    from simswap_trt.vision.align import MULTIPOSE_TEMPLATES_112

    landmarks = MULTIPOSE_TEMPLATES_112[pose] * 2.3 + (40, 25)
    g = alignment_matrix(landmarks, "multipose", 224)
    e = alignment_matrix(landmarks, "ffhq", 512)
    corners = np.array([[0, 0], [224, 0], [0, 224], [224, 224]], float)
    composed = compose_affine(e, invert_affine(g))
    placed = corners @ composed[:, :2].T + composed[:, 2]
    assert placed.min() >= 16 and placed.max() <= 512 - 16
