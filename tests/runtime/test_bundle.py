"""Bundles load only when every file matches the manifest; the writer is atomic and never clobbers."""

import json
import shutil

import pytest

from simswap_build.convert.bundle_writer import write_bundle
from simswap_trt.bundle import MANIFEST_NAME, Bundle
from simswap_trt.errors import BundleError, OutputError


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    shutil.copytree(tiny_bundle.root, tmp_path / "b")
    return tmp_path / "b"


def edit_manifest(root, change):
    data = json.loads((root / MANIFEST_NAME).read_text())
    change(data)
    (root / MANIFEST_NAME).write_text(json.dumps(data))


def test_converted_bundle_manifest(tiny_bundle):
    bundle = Bundle.load(tiny_bundle.root)
    assert bundle.crop_size == 224 and bundle.alignment == "multipose" and not bundle.untrained
    generator = bundle.models["generator"]
    assert generator.architecture == "224" and generator.precision == "fp32"
    assert generator.source["checkpoint"] == "latest_net_G.pth" and len(generator.source["sha256"]) == 64
    assert (bundle.root / generator.source["weights"]["file"]).is_file()
    assert [s.describe() for s in generator.inputs] == [
        "target: float32[batch, 3, 224, 224]",
        "latent: float32[batch, 512]",
    ]
    assert bundle.models["arcface"].source["format"] == "pickled-module"


def test_tampered_model_is_refused(bundle_copy):
    with open(bundle_copy / "generator.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="generator.onnx does not match the sha256"):
        Bundle.load(bundle_copy)


def test_unknown_format_version_is_refused(bundle_copy):
    edit_manifest(bundle_copy, lambda d: d.update(format_version=99))
    with pytest.raises(BundleError, match="format_version 99; this simswap-trt reads version 1"):
        Bundle.load(bundle_copy)


def test_missing_file_and_missing_manifest(bundle_copy, tmp_path):
    (bundle_copy / "arcface.onnx").unlink()
    with pytest.raises(BundleError, match="arcface file arcface.onnx is missing"):
        Bundle.load(bundle_copy)
    with pytest.raises(BundleError, match="manifest.json is missing.*simswap-build convert"):
        Bundle.load(tmp_path)


def test_signature_that_breaks_the_contract(bundle_copy):
    edit_manifest(bundle_copy, lambda d: d["models"]["generator"]["inputs"][1].update(name="identity"))
    with pytest.raises(BundleError, match="generator signature .* breaks the 224px contract"):
        Bundle.load(bundle_copy)


def test_file_outside_the_bundle_is_refused(bundle_copy):
    edit_manifest(bundle_copy, lambda d: d["models"]["arcface"].update(file="../elsewhere.onnx"))
    with pytest.raises(BundleError, match="points outside the bundle"):
        Bundle.load(bundle_copy)


def test_writer_never_clobbers(tmp_path, tiny_bundle):
    import onnx

    from simswap_build.convert.bundle_writer import BundleModel

    models = {role: BundleModel(onnx.load(tiny_bundle.path_of(role)), "x") for role in ("generator", "arcface")}
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="already exists; choose another --output or pass --overwrite"):
        write_bundle(tmp_path / "notes", models, 224, "multipose", untrained=False)
    with pytest.raises(OutputError, match="is not a bundle; refusing to replace it"):
        write_bundle(tmp_path / "notes", models, 224, "multipose", untrained=False, overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    write_bundle(tmp_path / "b", models, 224, "multipose", untrained=True)
    replaced = write_bundle(tmp_path / "b", models, 224, "multipose", untrained=False, overwrite=True)
    assert not replaced.untrained
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "notes"]  # no staging leftovers
