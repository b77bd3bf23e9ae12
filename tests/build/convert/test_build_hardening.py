"""The build tools never destroy or litter what they read: reports never land on an input photo or inside
the bundle, caches go to the user's cache folder and never into an input folder or a bundle; converted
bundles get the umask's modes, and convert identifies the checkpoints it reads by their sha256; precision
refuses early what it can know early and keeps the FP16 graphs when INT8 fails."""

import os
import shutil
import stat

import cv2
import numpy as np
import pytest
from support.tiny import TINY_ARCFACE, TINY_GENERATOR, random_crops

import simswap_build.precision.recipe as precision_module
from simswap_build.bench.photos import face_photo_set
from simswap_build.cli import main as build_main
from simswap_build.convert.bundle import KNOWN_RELEASE_SHA256, untrained_bundle
from simswap_build.precision.goals import PrecisionGoalError
from simswap_trt.bundle import Bundle
from simswap_trt.cache import CACHE_ENV
from simswap_trt.schema import sha256_of


def tree(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fp16_bundle(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("fp16") / "bundle"
    shutil.copytree(tiny_bundle.root, root)
    assert build_main(["precision", str(root), "--precisions", "fp16"]) == 0
    return root


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("held") / "photos"
    face_photo_set(folder, 2, seed=3)
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_validate_writes_nothing_into_its_inputs(fp16_bundle, held_out, cache, tmp_path):
    before_images, before_bundle = tree(held_out), tree(fp16_bundle)
    report = tmp_path / "report.json"
    assert build_main(["validate", str(fp16_bundle), "--images", str(held_out), "--json", str(report)]) == 0
    assert tree(held_out) == before_images and tree(fp16_bundle) == before_bundle
    assert list((cache / "calibration").glob("crops-*.npz")) and report.is_file()


@pytest.mark.parametrize("target", ["photo", "manifest", "new file in the bundle"])
def test_validate_json_never_lands_on_an_input(fp16_bundle, held_out, cache, capsys, target):
    path = {
        "photo": sorted(held_out.iterdir())[0],
        "manifest": fp16_bundle / "manifest.json",
        "new file in the bundle": fp16_bundle / "report.json",
    }[target]
    before_images, before_bundle = tree(held_out), tree(fp16_bundle)
    argv = ["validate", str(fp16_bundle), "--images", str(held_out), "--json", str(path), "--overwrite"]
    assert build_main(argv) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and str(path) in error
    assert tree(held_out) == before_images and tree(fp16_bundle) == before_bundle


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_convert_writes_with_umask_modes_and_prints_checksums(tiny_checkpoints, tmp_path, capsys, umask):
    _, _, generator, arcface = tiny_checkpoints
    out = tmp_path / "bundle"
    previous = os.umask(umask)
    try:
        assert (
            build_main(["convert", "--generator", str(generator), "--arcface", str(arcface), "--output", str(out)]) == 0
        )
    finally:
        os.umask(previous)
    paths = [out, *out.rglob("*")]
    assert (out / "weights" / "generator.safetensors").is_file()
    for path in paths:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    stdout = capsys.readouterr().out
    for path in (generator, arcface):
        assert f"{path.name}: sha256 {sha256_of(path)} (not a known release checksum" in stdout


def test_convert_says_when_a_checkpoint_is_a_known_release(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    _, _, generator, arcface = tiny_checkpoints
    monkeypatch.setitem(KNOWN_RELEASE_SHA256, sha256_of(generator), "checkpoints.zip: people/latest_net_G.pth")
    argv = ["convert", "--generator", str(generator), "--arcface", str(arcface), "--output", str(tmp_path / "b")]
    assert build_main(argv) == 0
    assert "matches the official release file checkpoints.zip: people/latest_net_G.pth" in capsys.readouterr().out


def blank_photos(folder, count):
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((32, 32, 3), i, np.uint8))
    return folder


@pytest.fixture
def no_calibration(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the long phases must not start")

    monkeypatch.setattr(precision_module, "calibration_crops", refuse)


@pytest.mark.parametrize("case", ["untrained", "too few photos"])
def test_precision_refuses_what_it_can_know_before_the_long_phases(tiny_bundle, tmp_path, capsys, no_calibration, case):
    if case == "untrained":
        root = untrained_bundle(tmp_path / "b", generator_config=TINY_GENERATOR, arcface_config=TINY_ARCFACE).root
        photos, expected = blank_photos(tmp_path / "photos", 12), "untrained random weights"
    else:
        root = tmp_path / "b"
        shutil.copytree(tiny_bundle.root, root)
        photos, expected = blank_photos(tmp_path / "photos", 3), "INT8 needs at least 10 distinct faces"
    before = tree(root)
    assert build_main(["precision", str(root), "--images", str(photos)]) == 1
    assert expected in capsys.readouterr().err
    assert tree(root) == before


def test_precision_keeps_the_fp16_graphs_when_int8_fails(tiny_bundle, tmp_path, capsys, monkeypatch):
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle.root, root)
    monkeypatch.setattr(precision_module, "calibration_crops", lambda *args, **kwargs: random_crops(12))

    def failing(model, role, *args):
        raise PrecisionGoalError(f"INT8 {role}: planted failure", {"metric": "psnr_db"})

    monkeypatch.setattr(precision_module, "int8_search", failing)
    assert build_main(["precision", str(root), "--images", str(blank_photos(tmp_path / "photos", 12))]) == 1
    captured = capsys.readouterr()
    assert "planted failure" in captured.err and "kept the FP16 graphs" in captured.out
    bundle = Bundle.load(root)  # hashes verified
    assert {role: sorted(by) for role, by in bundle.variants.items()} == {"generator": ["fp16"], "arcface": ["fp16"]}


def test_validate_without_graphs_to_check_fails_at_once(tiny_bundle, held_out, capsys, no_calibration):
    assert build_main(["validate", str(tiny_bundle.root), "--images", str(held_out)]) == 1
    assert "no FP16 / INT8 graphs to validate" in capsys.readouterr().err
