"""Public commands and flags end to end: doctor, untrained, engine without TensorRT, precision and check
over every graph, --reference / --threshold, --max-pixels."""

import importlib.util
import logging
import shutil

import cv2
import numpy as np
import onnxruntime
import pytest
from support.command_line import one_error_line, photos, swap  # noqa: F401 (photos is a fixture)
from support.real_gpu import gpu_available

from simswap_build.cli import main as build_main
from simswap_trt import FaceSwapper
from simswap_trt.cli import main as trt_main
from simswap_trt.images import read_image


def test_doctor_reports_this_machine_and_each_bundle_role(tiny_bundle, capsys):
    assert trt_main(["doctor", str(tiny_bundle.root)]) == 0
    text = capsys.readouterr().out
    assert f"ONNX Runtime  {onnxruntime.__version__}, providers: " in text
    assert ", ".join(onnxruntime.get_available_providers()) in text
    assert f"bundle        {tiny_bundle.root} (0 TensorRT plan(s))" in text
    for role in ("generator", "arcface"):
        if gpu_available():
            assert f"  {role:<11} auto -> ONNX Runtime: the bundle has no TensorRT plan for the {role}" in text
        else:  # without a GPU: the CPU path, plainly (tests/runtime/cli/test_doctor_gpu.py)
            assert f"  {role:<11} auto -> ONNX Runtime on the CPU, fp32 graph" in text
    if not gpu_available():
        assert "GPU           none " in text and "the CPU path works" in text


def test_untrained_bundle_from_the_cli_is_marked(tmp_path, capsys):
    out = tmp_path / "u"
    assert build_main(["untrained", "--output", str(out), "--crop-size", "112", "--seed", "3"]) == 0
    assert "UNTRAINED random weights (224, 112 px) - not a face swapper" in capsys.readouterr().out
    assert trt_main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "weights    UNTRAINED" in text and "crop size  112 px, multipose alignment" in text
    assert "from random weights" in text


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="the full TensorRT is installed")
def test_engine_without_the_full_tensorrt_is_one_line(tiny_bundle, capsys):
    assert build_main(["engine", str(tiny_bundle.root)]) == 1
    one_error_line(capsys, "building engines needs the full TensorRT")
    assert not (tiny_bundle.root / "engines").exists()


def test_precision_then_check_covers_every_graph(tiny_bundle, tmp_path, capsys):
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle.root, root)
    assert build_main(["precision", str(root), "--precisions", "fp16"]) == 0
    capsys.readouterr()
    assert build_main(["check", str(root), "--trt", "10.3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    checked = sorted(line.split(":")[0] for line in lines)
    assert checked == ["arcface.fp16.onnx", "arcface.onnx", "generator.fp16.onnx", "generator.onnx"]
    before = (root / "manifest.json").read_bytes()
    assert build_main(["precision", str(root), "--precisions", "fp16"]) == 1
    one_error_line(capsys, f"{root} already has fp16 graphs; pass --overwrite to replace them")
    assert (root / "manifest.json").read_bytes() == before


def test_reference_and_threshold_pick_the_face(tiny_bundle, photos, tmp_path, capsys, caplog):  # noqa: F811
    """two.png: the camera man (left half) and the flipped astronaut (right half). With the camera photo as
    reference and a threshold between the two faces' similarities, only the left half changes."""
    two = read_image(photos / "two.png")
    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=2)
    swapper.set_reference(read_image(photos / "camera.png"))
    faces = swapper.detect([two])
    (similarity,) = swapper.similarities([two], faces)
    swapper.set_source(read_image(photos / "astronaut.png"))
    with caplog.at_level(logging.INFO, logger="simswap_trt.swapper"):
        swapper.swap_batch([two], "reference", 0.25)
    listed = ", ".join(f"{value:.3f}" for value in similarity)  # each face's similarity, to tune --threshold by
    assert f"image 0: similarity to the reference per face: {listed} (threshold 0.250)" in caplog.text
    left = int(np.argmin([f.box[0] for f in faces[0]]))
    assert similarity[left] > similarity[1 - left]
    threshold = f"{(similarity[0] + similarity[1]) / 2:.6f}"
    out = tmp_path / "o.png"
    argv = ["--select", "reference", "--reference", str(photos / "camera.png"), "--threshold", threshold]
    assert swap(tiny_bundle.root, photos / "astronaut.png", photos / "two.png", out, *argv) == 0
    assert f"2 face(s), 1 swapped (similarity to the reference: {listed}; --threshold {float(threshold):g})" in (
        capsys.readouterr().out
    )
    result = cv2.imread(str(out)).astype(int)
    half = two.shape[1] // 2
    assert np.abs(result[:, half:] - two[:, half:]).max() == 0  # the astronaut is untouched
    assert np.abs(result[:, :half] - two[:, :half]).max() > 20  # the camera man was swapped
    assert (
        swap(tiny_bundle.root, photos / "astronaut.png", photos / "two.png", out, *argv[:-1], "1", "--overwrite") == 3
    )
    assert f"2 face(s), none selected (similarity to the reference: {listed}; --threshold 1); skipped" in (
        capsys.readouterr().out
    )


def test_max_pixels_refuses_large_targets_and_sources(tiny_bundle, photos, tmp_path, capsys):  # noqa: F811
    targets = tmp_path / "targets"
    targets.mkdir()
    shutil.copy(photos / "camera.png", targets / "camera.png")  # 512x512 = 262,144 pixels
    cv2.imwrite(str(targets / "big.png"), cv2.resize(cv2.imread(str(photos / "camera.png")), (1024, 1024)))
    out = tmp_path / "out"
    assert swap(tiny_bundle.root, photos / "astronaut.png", targets, out, "--max-pixels", "300000") == 3
    assert "big.png: skipped, " in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["camera.png"]
    assert (
        swap(tiny_bundle.root, targets / "big.png", photos / "camera.png", tmp_path / "o.png", "--max-pixels", "300000")
        == 1
    )
    one_error_line(capsys, "big.png is 1024x1024 (1,048,576 pixels), over the --max-pixels limit of 300,000")


def test_parsing_model_flag_reaches_the_swap(tiny_bundle, photos, tmp_path, capsys):  # noqa: F811
    from support.parser_standin import fake_parser

    plain, masked = tmp_path / "plain.png", tmp_path / "masked.png"
    assert swap(tiny_bundle.root, photos / "astronaut.png", photos / "camera.png", plain) == 0
    parser = fake_parser(tmp_path / "parser.onnx", (128, 128, 384, 384))
    assert (
        swap(tiny_bundle.root, photos / "astronaut.png", photos / "camera.png", masked, "--parsing-model", str(parser))
        == 0
    )
    camera = cv2.imread(str(photos / "camera.png")).astype(int)
    plain_moved = np.abs(cv2.imread(str(plain)).astype(int) - camera).sum()
    masked_moved = np.abs(cv2.imread(str(masked)).astype(int) - camera).sum()
    assert masked_moved < 0.9 * plain_moved  # outside the parsed face region the target's pixels come back
    assert (
        swap(
            tiny_bundle.root,
            photos / "astronaut.png",
            photos / "camera.png",
            tmp_path / "x.png",
            "--parsing-model",
            str(tmp_path / "none.onnx"),
        )
        == 1
    )
    one_error_line(capsys, f"face-parsing model not found: {tmp_path / 'none.onnx'}")
