"""Bad and unusual inputs on the command line: one line on stderr naming the file or argument, the
documented exit status (1: nothing done, 3: some items skipped), no partial output, inputs intact."""

import os
import stat
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from support import command_line
from support.command_line import one_error_line, swap
from support.folders import unwritable_folder
from support.paths import ROOT
from support.tiny import random_crops

from simswap_build.cli import main as build_main
from simswap_trt.cli import main as trt_main
from simswap_trt.errors import InputError

photos = command_line.photos  # the fixture: public-domain photos on disk


def test_output_equal_to_the_target_is_refused_and_the_photo_kept(tiny_bundle, photos, tmp_path, capsys):
    target = tmp_path / "x.png"
    target.write_bytes((photos / "camera.png").read_bytes())
    before = target.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert swap(tiny_bundle.root, photos / "astronaut.png", target, target, *extra) == 1
        one_error_line(capsys, f"{target} is also an input of this run")
    assert swap(tiny_bundle.root, photos / "astronaut.png", target, photos / "astronaut.png", "--overwrite") == 1
    one_error_line(capsys, "astronaut.png is also an input")
    assert target.read_bytes() == before


def test_existing_outputs_are_replaced_only_with_overwrite(tiny_bundle, photos, tmp_path, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    assert swap(tiny_bundle.root, photos / "astronaut.png", photos / "camera.png", out) == 1
    one_error_line(capsys, f"{out} exists; pass --overwrite")
    assert out.read_bytes() == b"keep me"
    assert swap(tiny_bundle.root, photos / "astronaut.png", photos / "camera.png", out, "--overwrite") == 0
    assert cv2.imread(str(out)).shape == cv2.imread(str(photos / "camera.png")).shape

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "camera.png").write_bytes(b"keep me too")
    code = swap(tiny_bundle.root, photos / "astronaut.png", photos, folder)
    text = capsys.readouterr().out
    assert code == 3
    assert f"camera.png: skipped, {folder / 'camera.png'} exists (--overwrite replaces it)" in text
    assert (folder / "camera.png").read_bytes() == b"keep me too"
    assert sorted(p.name for p in folder.iterdir()) == ["astronaut.png", "camera.png", "two.png"]


def test_unwritable_outputs_fail_before_the_models_load(photos, tmp_path, capsys):
    """The bundle does not exist: the error about the output proves the output was checked first."""
    (tmp_path / "a-file").write_bytes(b"x")
    missing = tmp_path / "no-bundle"
    cases = [
        (unwritable_folder(tmp_path) / "out.png", "is not writable"),
        (tmp_path / "a-file" / "out.png", "a-file is a file, not a folder"),
        (tmp_path, "is a folder; give a file name as the output"),  # a file target, a folder as output
    ]
    for output, message in cases:
        assert swap(missing, photos / "astronaut.png", photos / "camera.png", output) == 1
        one_error_line(capsys, message)
    assert swap(missing, photos / "astronaut.png", photos, tmp_path / "a-file") == 1
    one_error_line(capsys, "--output must be a folder")


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--batch", "0", "must be a whole number >= 1, got 0"),
        ("--batch", "-3", "must be a whole number >= 1, got -3"),
        ("--threads", "-1", "must be a whole number >= 1, got -1"),
        ("--max-pixels", "-1", "must be a whole number >= 1, got -1"),
        ("--threshold", "5", "must be in [-1, 1], got 5"),
        ("--threshold", "nan", "must be in [-1, 1], got nan"),
    ],
)
def test_swap_arguments_out_of_range(flag, value, message, photos, tmp_path, capsys):
    assert swap(tmp_path, photos / "astronaut.png", photos / "camera.png", tmp_path / "o.png", flag, value) == 1
    err = capsys.readouterr().err
    assert f"argument {flag}: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["untrained", "--crop-size", "-1"], "argument --crop-size: must be a whole number >= 112, got -1"),
        (["untrained", "--seed", "-1"], "argument --seed: must be a whole number >= 0, got -1"),
        (["validate", "B", "--images", "I", "--limit", "0"], "argument --limit: must be a whole number >= 1, got 0"),
        (["engine", "B", "--max-batch", "0"], "argument --max-batch: must be a whole number >= 1, got 0"),
        (["precision", "B", "--max-fp32-arcface", "-2"], "must be a whole number >= 0, got -2"),
    ],
)
def test_builder_arguments_out_of_range(argv, message, tmp_path, capsys):
    if argv[0] == "untrained":
        argv = [*argv, "--output", str(tmp_path / "b")]
    assert build_main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_swap_aligned_skips_unreadable_and_mis_sized_crops_and_exits_3(tiny_bundle, tmp_path, capsys):
    crops = tmp_path / "crops"
    crops.mkdir()
    for i, crop in enumerate(random_crops(3)):
        cv2.imwrite(str(crops / f"face{i}.png"), crop)
    (crops / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    cv2.imwrite(str(crops / "small.png"), random_crops(1, size=100)[0])
    out = tmp_path / "out"
    argv = ["swap-aligned", "--bundle", str(tiny_bundle.root), "--source", str(crops / "face0.png")]
    code = trt_main([*argv, "--target", str(crops), "--output", str(out), "--batch", "2"])
    text = capsys.readouterr().out
    assert code == 3
    assert "broken.png: skipped" in text and "small.png: skipped" in text and "is 100x100" in text
    assert "done: 3 written, 2 skipped" in text
    assert sorted(p.name for p in out.iterdir()) == ["face0.png", "face1.png", "face2.png"]


def test_malformed_manifest_types_are_one_line(tiny_bundle, tmp_path, capsys):
    import json
    import shutil

    for field, value in [("models", ["generator"]), ("crop_size", "big"), ("models", {"generator": 3})]:
        copy = tmp_path / f"bundle-{field}-{type(value).__name__}"
        shutil.copytree(tiny_bundle.root, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest[field] = value
        (copy / "manifest.json").write_text(json.dumps(manifest))
        assert trt_main(["info", str(copy)]) == 1
        one_error_line(capsys, f"{copy / 'manifest.json'} is missing a field or has one of the wrong type")


def test_animated_gif_is_refused_with_its_frame_count(tiny_bundle, photos, tmp_path, capsys):
    frames = [Image.new("RGB", (64, 64), (i * 40, 0, 0)) for i in range(3)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert swap(tiny_bundle.root, gif, photos / "camera.png", tmp_path / "o.png") == 1
    one_error_line(capsys, "anim.gif has 3 frames (animated or multi-page); only still images are swapped")
    assert swap(tiny_bundle.root, photos / "astronaut.png", gif, tmp_path / "o.png") == 3
    assert "anim.gif: skipped" in capsys.readouterr().out
    assert not (tmp_path / "o.png").exists()


def test_a_source_with_two_faces_says_which_is_used(tiny_bundle, photos, tmp_path, capsys):
    assert swap(tiny_bundle.root, photos / "two.png", photos / "camera.png", tmp_path / "o.png") == 0
    text = capsys.readouterr().out
    assert "source two.png: 2 faces; using the largest, at x " in text
    # the astronaut (flipped, right half) is the larger face: its box lies in the right half of the photo
    x1 = int(text.split("using the largest, at x ")[1].split("-")[0])
    assert x1 >= cv2.imread(str(photos / "camera.png")).shape[1]


def test_empty_array_is_an_input_error(tiny_bundle):
    from simswap_trt import FaceSwapper

    swapper = FaceSwapper.from_bundle(tiny_bundle.root)
    with pytest.raises(InputError, match=r"image 0 must be a uint8 BGR array .* H, W >= 1, got uint8\[0, 0, 3\]"):
        swapper.swap(np.zeros((0, 0, 3), np.uint8))


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert trt_main(["--debug", "info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "BundleError" in err
    assert "manifest.json is missing" in err.splitlines()[-1]


def test_bundles_get_umask_modes(tmp_path, capsys):
    previous = os.umask(0o027)
    try:
        assert build_main(["untrained", "--output", str(tmp_path / "b"), "--crop-size", "112"]) == 0
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "b", *(tmp_path / "b").rglob("*")]}
    assert modes == {"b": 0o750, "manifest.json": 0o640, "generator.onnx": 0o640, "arcface.onnx": 0o640}


def test_bundle_outputs_need_overwrite_and_are_checked_before_loading(tiny_checkpoints, tmp_path, capsys):
    _, _, generator, arcface = tiny_checkpoints
    existing = tmp_path / "existing"
    assert build_main(["untrained", "--output", str(existing), "--crop-size", "112"]) == 0
    manifest = (existing / "manifest.json").read_bytes()
    capsys.readouterr()
    argv = ["convert", "--generator", str(generator), "--arcface", str(arcface), "--output", str(existing)]
    assert build_main(argv) == 1
    one_error_line(capsys, f"{existing} already exists; choose another --output or pass --overwrite")
    assert (existing / "manifest.json").read_bytes() == manifest
    assert (
        build_main(["convert", "--generator", str(tmp_path / "none.pth"), "--arcface", str(arcface), "--output", "x"])
        == 1
    )
    one_error_line(capsys, f"checkpoint not found: {tmp_path / 'none.pth'}")
    not_a_bundle = tmp_path / "photos"
    not_a_bundle.mkdir()
    assert build_main(["untrained", "--output", str(not_a_bundle), "--overwrite"]) == 1
    one_error_line(capsys, "exists and is not a bundle; refusing to replace it")


def test_missing_tensorrt_points_to_the_extra_that_installs_the_lean_runtime(monkeypatch):

    from simswap_trt.engines.tensorrt import import_tensorrt
    from simswap_trt.errors import EngineError

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_lean", None)
    with pytest.raises(EngineError, match=r"pip install 'simswap-trt\[trt-lean\]' for the lean runtime"):
        import_tensorrt()
    pyproject = (ROOT / "pyproject.toml").read_text()
    (extra,) = [line for line in pyproject.splitlines() if line.startswith("trt-lean = ")]
    assert '"tensorrt-lean-' in extra  # the extra the message names installs the lean runtime


def test_a_generator_offered_as_arcface_is_refused_by_name(tiny_checkpoints, tmp_path, capsys):
    _, _, generator, _ = tiny_checkpoints
    argv = ["convert", "--generator", str(generator), "--arcface", str(generator), "--output", str(tmp_path / "b")]
    assert build_main(argv) == 1
    one_error_line(capsys, f"{generator} is refused as ArcFace: not an IR-SE ArcFace state_dict")
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []


def test_unreadable_source_fails_before_the_models_load(photos, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert swap(tmp_path / "no-bundle", bad, photos / "camera.png", tmp_path / "o.png") == 1
    one_error_line(capsys, f"{bad} is not a readable image")
    assert not (tmp_path / "o.png").exists()


def test_source_photos_are_checked_with_a_clear_error(tiny_bundle, photos, tmp_path):
    from simswap_trt import FaceSwapper
    from simswap_trt.errors import NoFaceError

    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((120, 160, 3), 90, np.uint8))
    swapper = FaceSwapper.from_bundle(tiny_bundle.root)
    for empty in ([], ()):
        with pytest.raises(ValueError, match="no source image given"):
            swapper.set_source(empty)
    with pytest.raises(ValueError, match="no reference image given"):
        swapper.set_reference([])
    with pytest.raises(NoFaceError, match=f"no face found in the source photo {wall}"):
        swapper.set_source([photos / "astronaut.png", wall])
    with pytest.raises(NoFaceError, match="no face found in the source photo wall.png"):
        swapper.set_source([cv2.imread(str(wall))], names=["wall.png"])
    by_path = swapper.set_source(str(photos / "astronaut.png"))
    np.testing.assert_array_equal(by_path, swapper.set_source(cv2.imread(str(photos / "astronaut.png"))))
