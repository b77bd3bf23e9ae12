"""The two console scripts end to end: convert, check, info, swap-aligned; exit codes scripts can use."""

import shutil
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
from onnx import helper
from support.tiny import random_crops

from simswap_build.cli import main as build_main
from simswap_trt.cli import main as trt_main


def test_console_scripts_are_installed():
    for script in ("simswap-trt", "simswap-build"):
        result = subprocess.run([script, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "examples:" in result.stdout


def test_convert_info_and_swap_folder(tiny_checkpoints, tmp_path, capsys):
    _, _, generator_path, arcface_path = tiny_checkpoints
    bundle = tmp_path / "bundle"
    assert (
        build_main(
            ["convert", "--generator", str(generator_path), "--arcface", str(arcface_path), "--output", str(bundle)]
        )
        == 0
    )
    assert "224 generator, ir_se_custom_w16 arcface, 224 px, multipose alignment" in capsys.readouterr().out
    assert build_main(["check", str(bundle)]) == 0
    assert trt_main(["info", str(bundle)]) == 0
    assert "hashes     verified" in capsys.readouterr().out

    crops = tmp_path / "crops"
    crops.mkdir()
    for i, crop in enumerate(random_crops(3)):
        cv2.imwrite(str(crops / f"face{i}.png"), crop)
    (crops / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert (
        trt_main(
            [
                "swap-aligned",
                "--bundle",
                str(bundle),
                "--source",
                str(crops / "face0.png"),
                "--target",
                str(crops),
                "--output",
                str(out),
                "--batch",
                "2",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["face0.png", "face1.png", "face2.png"]
    assert cv2.imread(str(out / "face1.png")).shape == (224, 224, 3)


def test_convert_224_as_512_exits_1_with_the_reason(tiny_checkpoints, tmp_path, capsys):
    _, _, generator_path, arcface_path = tiny_checkpoints
    code = build_main(
        [
            "convert",
            "--generator",
            str(generator_path),
            "--arcface",
            str(arcface_path),
            "--output",
            str(tmp_path / "b"),
            "--arch",
            "512",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: latest_net_G.pth is a 224 (no down0/up0 keys) checkpoint, but 512 was requested")
    assert "Traceback" not in err and not (tmp_path / "b").exists()


def test_check_fails_on_a_bad_graph(tmp_path, capsys):
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"], name="dq")],
            "bad",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.UINT8, None)],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.save(model, tmp_path / "bad.onnx")
    assert build_main(["check", str(tmp_path / "bad.onnx"), "--trt", "10.3"]) == 1
    assert "node 'dq' (DynamicQuantizeLinear): dynamic quantization is not supported" in capsys.readouterr().out


def test_corrupt_source_image_exits_1(tiny_bundle, tmp_path, capsys):
    (tmp_path / "src.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cv2.imwrite(str(tmp_path / "t.png"), random_crops(1)[0])
    code = trt_main(
        [
            "swap-aligned",
            "--bundle",
            str(tiny_bundle.root),
            "--source",
            str(tmp_path / "src.png"),
            "--target",
            str(tmp_path / "t.png"),
            "--output",
            str(tmp_path / "o.png"),
        ]
    )
    assert code == 1
    assert "src.png is not a readable image" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_wrong_crop_size_is_explained(tiny_bundle, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "small.png"), random_crops(1, size=100)[0])
    code = trt_main(
        [
            "swap-aligned",
            "--bundle",
            str(tiny_bundle.root),
            "--source",
            str(tmp_path / "small.png"),
            "--target",
            str(tmp_path / "small.png"),
            "--output",
            str(tmp_path / "o.png"),
        ]
    )
    assert code == 1
    assert "small.png is 100x100; this bundle needs aligned crops of 224x224" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_python_m_entry_points():
    result = subprocess.run(
        [sys.executable, "-m", "simswap_trt.cli", "info", "/nonexistent"], capture_output=True, text=True
    )
    assert result.returncode == 1 and "manifest.json is missing" in result.stderr


@pytest.fixture()
def photo_folder(tmp_path):
    from skimage import data

    folder = tmp_path / "targets"
    folder.mkdir()
    cv2.imwrite(str(folder / "astronaut.png"), data.astronaut()[..., ::-1])
    cv2.imwrite(str(folder / "camera.jpg"), data.camera())
    cv2.imwrite(str(folder / "wall.png"), np.full((80, 120, 3), 200, np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return folder


def test_swap_folder_reports_and_exits_3_when_targets_are_skipped(tiny_bundle, photo_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = trt_main(
        [
            "swap",
            "--bundle",
            str(tiny_bundle.root),
            "--source",
            str(photo_folder / "astronaut.png"),
            "--target",
            str(photo_folder),
            "--output",
            str(out),
            "--batch",
            "2",
        ]
    )
    text = capsys.readouterr().out
    assert code == 3
    assert "broken.png: skipped" in text and "wall.png: 0 face(s), none selected; skipped" in text
    assert "camera.jpg: 1 face(s), 1 swapped" in text
    assert "done: 2 written, 2 skipped, 2 face(s) swapped" in text
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "camera.jpg"]
    from PIL import Image

    with Image.open(out / "astronaut.png") as image:
        assert "compositeWithTrainedAlgorithmicMedia" in str(image.info["xmp"])


def test_swap_copy_unchanged_and_no_tag(tiny_bundle, photo_folder, tmp_path, capsys):
    (photo_folder / "broken.png").unlink()
    out = tmp_path / "out"
    code = trt_main(
        [
            "swap",
            "--bundle",
            str(tiny_bundle.root),
            "--source",
            str(photo_folder / "astronaut.png"),
            "--target",
            str(photo_folder),
            "--output",
            str(out),
            "--copy-unchanged",
            "--no-synthetic-tag",
            "--select",
            "largest",
        ]
    )
    assert code == 0
    np.testing.assert_array_equal(cv2.imread(str(out / "wall.png")), cv2.imread(str(photo_folder / "wall.png")))
    from PIL import Image

    with Image.open(out / "astronaut.png") as image:
        assert "xmp" not in image.info


def test_swap_argument_errors(tiny_bundle, photo_folder, tmp_path, capsys):
    base = ["swap", "--bundle", str(tiny_bundle.root), "--source", str(photo_folder / "astronaut.png")]
    assert trt_main([*base, "--target", str(photo_folder), "--output", str(photo_folder)]) == 1
    assert "inputs are never overwritten" in capsys.readouterr().err
    assert (
        trt_main([*base, "--target", str(photo_folder), "--output", str(tmp_path / "o"), "--select", "reference"]) == 1
    )
    assert "--select reference needs --reference IMAGE" in capsys.readouterr().err
    no_face = [
        "swap",
        "--bundle",
        str(tiny_bundle.root),
        "--source",
        str(photo_folder / "wall.png"),
        "--target",
        str(photo_folder / "camera.jpg"),
        "--output",
        str(tmp_path / "o.jpg"),
    ]
    assert trt_main(no_face) == 1
    assert f"no face found in the source photo {photo_folder / 'wall.png'}" in capsys.readouterr().err


def test_demo_with_a_bundle(tiny_bundle, tmp_path, capsys):
    assert trt_main(["demo", "--bundle", str(tiny_bundle.root), "--output", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "two-faces.png: 2 face(s) found, 2 swapped" in text
    assert "NOT REAL SWAPS" not in text


def test_demo_reruns_over_its_own_outputs_only(tiny_bundle, tmp_path, capsys):
    demo = ["demo", "--bundle", str(tiny_bundle.root), "--output", str(tmp_path / "demo")]
    assert trt_main(demo) == 0
    (tmp_path / "demo" / "camera.png").write_bytes(b"stale")
    assert trt_main(demo) == 0  # the demo's suggested next step, run again
    assert cv2.imread(str(tmp_path / "demo" / "camera.png")) is not None
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "camera.png").write_bytes(b"a user's file")
    assert trt_main([*demo[:-1], str(mine)]) == 1
    assert "not written by the demo" in capsys.readouterr().err
    assert (mine / "camera.png").read_bytes() == b"a user's file"


def test_folder_target_with_a_file_like_output_is_an_error(tiny_bundle, photo_folder, tmp_path, capsys):
    out = tmp_path / "out" / "x.jpg"
    argv = ["swap", "--bundle", str(tiny_bundle.root), "--source", str(photo_folder / "astronaut.png")]
    assert trt_main([*argv, "--target", str(photo_folder), "--output", str(out)]) == 1
    assert "named like an image file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bundle_file_offered_as_detector(tiny_bundle, photo_folder, tmp_path, capsys):
    code = trt_main(
        [
            "swap",
            "--bundle",
            str(tiny_bundle.root),
            "--source",
            str(photo_folder / "astronaut.png"),
            "--target",
            str(photo_folder / "camera.jpg"),
            "--output",
            str(tmp_path / "o.jpg"),
            "--scrfd",
            str(tiny_bundle.path_of("generator")),
        ]
    )
    assert code == 1
    assert "generator.onnx is not an SCRFD model with keypoints: it has 1 outputs, not 9" in capsys.readouterr().err


def test_info_lists_graphs_and_plans(tiny_bundle, tmp_path, capsys):
    from support.plans import plan

    from simswap_build.tensorrt.builder import register_plan
    from simswap_trt.bundle import Bundle, sha256_of

    root = tmp_path / "b"
    shutil.copytree(tiny_bundle.root, root)
    assert trt_main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "graphs     FP32 only" in out and "plans      none" in out
    assert f"checkpoint sha256 {tiny_bundle.models['generator'].source['sha256']}" in out
    assert build_main(["precision", str(root), "--precisions", "fp16"]) == 0
    (root / "engines").mkdir()
    (root / "engines" / "generator.sm_90.plan").write_bytes(b"plan")
    file = "engines/generator.sm_90.plan"
    register_plan(Bundle.load(root), plan(file=file, sha256=sha256_of(root / file), version_compatible=True))
    capsys.readouterr()
    assert trt_main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert (
        "graph      generator.fp16.onnx  generator  fp16" in out
        and "graph      arcface.fp16.onnx  arcface  fp16" in out
    )
    assert (
        f"plan       {file}  generator  fp32, TensorRT 11.4.0.106, NVIDIA H100 (sm_90), batch 1-32, version-compatible"
        in out
    )


@pytest.mark.parametrize("main", [trt_main, build_main])
def test_version(main, capsys):
    from simswap_trt import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip().endswith(f" {__version__}")
