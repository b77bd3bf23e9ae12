"""The build tools never destroy or litter what they read: reports never land on an input photo or inside
the bundle, caches go to the user's cache folder and never into an input folder or a bundle."""

import shutil

import pytest

from simswap_build.bench.photos import face_photo_set
from simswap_build.cli import main as build_main
from simswap_trt.cache import CACHE_ENV


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
