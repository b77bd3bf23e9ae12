"""Provenance on real outputs: the synthetic-media label read back by independent readers (Pillow, PyAV,
exiftool), C2PA manifests signed by the real pipeline with a test chain made here and read back by the
c2pa library (valid, trusted or not, tampered, missing), signer checks before any model loads."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from functools import partial

import cv2
import numpy as np
import pytest

pytest.importorskip("c2pa", reason="signing needs the 'provenance' extra")

from PIL import Image  # noqa: E402
from support.c2pa_certs import make_chain  # noqa: E402

from simswap_trt import FaceSwapper  # noqa: E402
from simswap_trt.cli import main  # noqa: E402
from simswap_trt.errors import ConfigError, OutputError  # noqa: E402
from simswap_trt.images import encode_image, read_image, write_image  # noqa: E402
from simswap_trt.provenance import DIGITAL_SOURCE_TYPE, Provenance, Signer, verify  # noqa: E402

EXIFTOOL = shutil.which("exiftool")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return make_chain(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    face = cv2.resize(np.ascontiguousarray(data.astronaut()[..., ::-1]), (256, 256))
    cv2.imwrite(str(folder / "source.png"), face)
    targets = folder / "targets"
    targets.mkdir()
    cv2.imwrite(str(targets / "a.png"), face)
    cv2.imwrite(str(targets / "b.jpg"), face)
    return folder


def flip_byte(path, marker: bytes, offset: int):
    """A copy of ``path`` with one byte of the media data (``offset`` bytes after ``marker``) changed."""
    data = bytearray(path.read_bytes())
    at = data.index(marker) + offset
    data[at] ^= 0x01
    changed = path.with_name("changed-" + path.name)
    changed.write_bytes(bytes(data))
    return changed


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_synthetic_label_is_read_by_pillow_and_exiftool(tmp_path, suffix):
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    path = tmp_path / f"out{suffix}"
    path.write_bytes(encode_image(image, suffix, synthetic=True))
    with Image.open(path) as labelled:
        assert DIGITAL_SOURCE_TYPE in str(labelled.info["xmp"])
        assert labelled.size == (48, 32)
    if suffix != ".jpg":  # lossless: the label does not disturb the pixels
        np.testing.assert_array_equal(read_image(path), image)
    if EXIFTOOL:
        out = subprocess.run([EXIFTOOL, "-j", "-XMP:all", str(path)], capture_output=True, text=True, check=True)
        tags = json.loads(out.stdout)[0]
        assert tags["DigitalSourceType"] == DIGITAL_SOURCE_TYPE
        assert "synthetic" in tags["Description"].lower()
    path.write_bytes(encode_image(image, suffix, synthetic=False))
    with Image.open(path) as plain:
        assert "xmp" not in plain.info


def test_signer_is_checked_before_any_model_loads(chain, tmp_path, photos, capsys):
    expired = make_chain(tmp_path, "old", expired=True)
    with pytest.raises(ConfigError, match="expired on"):
        Signer.from_files(expired.cert, expired.key)
    with pytest.raises(ConfigError, match="does not belong to"):
        Signer.from_files(chain.cert, expired.key)
    with pytest.raises(ConfigError, match="PEM certificate chain"):
        Signer.from_files(chain.key, chain.key)
    # the CLI refuses before it opens the (missing) bundle
    argv = ["swap", "--bundle", str(tmp_path / "no-bundle"), "--source", str(photos / "source.png")]
    argv += ["--target", str(photos / "targets" / "a.png"), "--output", str(tmp_path / "o.png")]
    assert main([*argv, "--sign-cert", str(expired.cert), "--sign-key", str(expired.key)]) == 1
    err = capsys.readouterr().err
    assert "expired on" in err and "no-bundle" not in err
    assert main([*argv[:-1], str(tmp_path / "o.bmp"), "--sign-cert", str(chain.cert), "--sign-key", str(chain.key)])
    assert "cannot be embedded in .bmp" in capsys.readouterr().err
    assert not list(tmp_path.glob("o.*"))


def test_missing_extra_is_one_line_naming_it(monkeypatch, chain):
    monkeypatch.setitem(sys.modules, "c2pa", None)
    with pytest.raises(ConfigError, match=r"pip install 'simswap-trt\[provenance\]'"):
        Signer.from_files(chain.cert, chain.key)


def test_swap_signs_jpeg_and_png_and_verify_reports(tiny_bundle, chain, photos, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["swap", "--bundle", str(tiny_bundle.root), "--source", str(photos / "source.png")]
    argv += ["--target", str(photos / "targets"), "--output", str(out), "--threads", "1"]
    argv += ["--sign-cert", str(chain.cert), "--sign-key", str(chain.key), "--credit-source"]
    assert main(argv) == 0
    capsys.readouterr()
    source_sha = hashlib.sha256((photos / "source.png").read_bytes()).hexdigest()
    for name, marker, offset in (("a.png", b"IDAT", 40), ("b.jpg", b"\xff\xda", 60)):
        result = verify(out / name)
        assert (result.status, result.trust, result.tampered) == ("valid", "untrusted", False)
        assert result.signer == "signer signer" and result.generator.startswith("simswap-trt/")
        assert [a["action"] for a in result.actions] == ["c2pa.opened", "c2pa.edited"]
        assert result.actions[1]["digitalSourceType"] == DIGITAL_SOURCE_TYPE
        generator = next(m for m in result.models["models"] if m["role"] == "generator")
        assert generator["sha256"] == tiny_bundle.models["generator"].sha256
        assert generator["precision"] == "fp32" and generator["backend"].startswith("onnxruntime")
        assert result.models["source_sha256"] == [source_sha]
        with Image.open(out / name) as image:  # the label survives signing
            assert DIGITAL_SOURCE_TYPE in str(image.info["xmp"])
        assert verify(out / name, chain.root).trust == "trusted"
        changed = flip_byte(out / name, marker, offset)
        tampered = verify(changed)
        assert tampered.status == "invalid" and tampered.tampered
        assert any(".mismatch" in code for code in tampered.failures)
    # the command: exit 0 valid, 1 tampered or untrusted by the given anchors, 3 no manifest
    assert main(["verify", str(out / "a.png"), "--trust-anchors", str(chain.root)]) == 0
    assert "a.png: valid" in capsys.readouterr().out
    other = make_chain(tmp_path, "other")  # structurally valid, but not signed by a trusted chain
    untrusted = verify(out / "a.png", other.root)
    assert (untrusted.status, untrusted.trust, untrusted.exit_code) == ("valid", "untrusted", 1)
    assert main(["verify", str(out / "a.png"), "--trust-anchors", str(other.root)]) == 1
    assert "NOT TRUSTED" in capsys.readouterr().out
    assert main(["verify", str(out / "changed-a.png")]) == 1
    assert "TAMPERED" in capsys.readouterr().out
    assert main(["verify", str(photos / "source.png"), "--json"]) == 3
    assert json.loads(capsys.readouterr().out)[0]["status"] == "no manifest"


def test_a_signing_failure_fails_the_item_and_leaves_nothing(chain, tmp_path):
    signer = Signer.from_files(chain.cert, chain.key)
    signer.chain = make_chain(tmp_path, "other").cert.read_bytes()  # the key no longer matches: the library refuses
    provenance = Provenance(signer=signer)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="x.png: signing its content credentials failed"):
        write_image(
            out / "x.png",
            np.zeros((8, 8, 3), np.uint8),
            True,
            partial(provenance.sign_image, suffix=".png", target=None, title="x.png"),
        )
    assert not out.exists()  # signed in memory, before the atomic write


def test_a_target_the_library_cannot_read_is_recorded_by_hash_only(chain, tmp_path):
    provenance = Provenance(signer=Signer.from_files(chain.cert, chain.key))
    image = np.zeros((8, 8, 3), np.uint8)
    target = encode_image(image, ".bmp")
    (tmp_path / "x.png").write_bytes(provenance.sign_image(encode_image(image, ".png"), ".png", target, "x.png"))
    result = verify(tmp_path / "x.png")
    assert result.status == "valid" and [a["action"] for a in result.actions] == ["c2pa.created"]
    assert result.actions[0]["digitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert result.models["target_sha256"] == hashlib.sha256(target).hexdigest()


def test_signer_from_the_environment(chain, monkeypatch):
    monkeypatch.setenv("SIMSWAP_SIGN_CERT", str(chain.cert))
    with pytest.raises(ConfigError, match="set both SIMSWAP_SIGN_CERT and SIMSWAP_SIGN_KEY"):
        Signer.from_env()
    monkeypatch.setenv("SIMSWAP_SIGN_KEY", str(chain.key))
    assert Signer.from_env().algorithm == "es256"


def test_served_images_are_signed(tiny_bundle, chain, photos):
    from simswap_trt.serving.models import SwapImage

    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=1)
    swapper.set_source(read_image(photos / "source.png"))
    provenance = Provenance(signer=Signer.from_files(chain.cert, chain.key))
    serve = SwapImage(swapper, image_format=".jpg", provenance=provenance)
    request = (photos / "targets" / "a.png").read_bytes()  # a PNG in, a JPEG out: the parent keeps its format
    [answer] = serve([{"image": np.array([[request]], dtype=object)}])
    signed = photos.parent / "served.jpg"
    signed.write_bytes(bytes(answer["image"][0, 0]))
    result = verify(signed, chain.root)
    assert (result.status, result.trust) == ("valid", "trusted")
    assert result.models["target_sha256"] == hashlib.sha256(request).hexdigest()


def test_video_is_labelled_and_signed(tiny_bundle, chain, tmp_path):
    av = pytest.importorskip("av")
    from support.video_clips import FACE, moving_face, write_clip

    from simswap_trt.video import swap_video

    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=1)
    swapper.set_source(np.ascontiguousarray(FACE))
    clip = write_clip(tmp_path / "in.mp4", moving_face(6))
    signer = Signer.from_files(chain.cert, chain.key)
    provenance = Provenance(signer=signer).with_models(swapper)
    swap_video(swapper, clip, tmp_path / "out.mp4", provenance=provenance)
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.metadata["DigitalSourceType"] == DIGITAL_SOURCE_TYPE
        assert "synthetic" in container.metadata["comment"].lower()
    result = verify(tmp_path / "out.mp4", chain.root)
    assert (result.status, result.trust, result.tampered) == ("valid", "trusted", False)
    assert [a["action"] for a in result.actions] == ["c2pa.opened", "c2pa.edited"]
    changed = flip_byte(tmp_path / "out.mp4", b"mdat", 200)
    tampered = verify(changed)
    assert tampered.status == "invalid" and tampered.tampered
    # unsigned Matroska: the label only; a format a manifest cannot go into fails and leaves nothing
    swap_video(swapper, clip, tmp_path / "out.mkv")
    with av.open(str(tmp_path / "out.mkv")) as container:
        assert container.metadata["DIGITALSOURCETYPE"] == DIGITAL_SOURCE_TYPE
    assert verify(tmp_path / "out.mkv").status == "no manifest"
    with pytest.raises(ConfigError, match="cannot be embedded in .mkv"):
        swap_video(swapper, clip, tmp_path / "signed.mkv", provenance=provenance)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["changed-out.mp4", "in.mp4", "out.mkv", "out.mp4"]


def test_video_command_signs_or_opts_out(tiny_bundle, chain, tmp_path, capsys):
    av = pytest.importorskip("av")
    from support.video_clips import FACE, moving_face, write_clip

    cv2.imwrite(str(tmp_path / "me.png"), FACE)
    clip = write_clip(tmp_path / "in.mp4", moving_face(4))
    argv = ["video", "--bundle", str(tiny_bundle.root), "--source", str(tmp_path / "me.png"), "--target", str(clip)]
    argv += ["--threads", "1"]
    signing = ["--sign-cert", str(chain.cert), "--sign-key", str(chain.key)]
    assert main([*argv, "--output", str(tmp_path / "signed.mov"), *signing]) == 0
    result = verify(tmp_path / "signed.mov", chain.root)
    assert (result.status, result.trust) == ("valid", "trusted")
    assert main([*argv, "--output", str(tmp_path / "plain.mp4"), "--no-synthetic-tag"]) == 0
    with av.open(str(tmp_path / "plain.mp4")) as container:
        assert "DigitalSourceType" not in container.metadata and "comment" not in container.metadata
    assert verify(tmp_path / "plain.mp4").status == "no manifest"
    assert main([*argv, "--output", str(tmp_path / "x.mkv"), *signing]) == 1
    assert "cannot be embedded in .mkv" in capsys.readouterr().err
    assert not (tmp_path / "x.mkv").exists()


@pytest.fixture(scope="module")
def enhanced_bundle(tiny_bundle, tmp_path_factory):
    from support.enhancer_formats import bundle_with_enhancer, make_gfpgan, save_gfpgan

    folder = tmp_path_factory.mktemp("enhancer")
    checkpoint = save_gfpgan(make_gfpgan(seed=7), folder / "GFPGANv1.4.pth")
    return bundle_with_enhancer(tiny_bundle.root, checkpoint, folder)


def test_the_enhancer_is_listed_among_the_models(enhanced_bundle, chain, photos, tmp_path, capsys):
    bundle = enhanced_bundle
    argv = ["swap", "--bundle", str(bundle.root), "--source", str(photos / "source.png"), "--threads", "1"]
    argv += [
        "--target",
        str(photos / "targets" / "a.png"),
        "--sign-cert",
        str(chain.cert),
        "--sign-key",
        str(chain.key),
    ]
    roles = {}
    for name, extra in (("plain", []), ("enhanced", ["--enhancer"])):
        assert main([*argv, "--output", str(tmp_path / f"{name}.png"), *extra]) == 0
        result = verify(tmp_path / f"{name}.png")
        assert result.status == "valid"
        roles[name] = {m["role"]: m for m in result.models["models"]}
    capsys.readouterr()
    assert "enhancer" not in roles["plain"]  # listed only where it ran
    enhancer = roles["enhanced"]["enhancer"]
    entry = bundle.models["enhancer"]
    assert (enhancer["file"], enhancer["sha256"]) == (entry.file, entry.sha256)
    assert enhancer["precision"] == "fp32" and enhancer["backend"].startswith("onnxruntime")


def test_swap_aligned_and_demo_sign_their_outputs(tiny_bundle, chain, astronaut_crop, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "crop.png"), astronaut_crop)
    signing = ["--sign-cert", str(chain.cert), "--sign-key", str(chain.key)]
    aligned = ["swap-aligned", "--bundle", str(tiny_bundle.root), "--source", str(tmp_path / "crop.png")]
    aligned += ["--target", str(tmp_path / "crop.png"), "--threads", "1"]
    assert main([*aligned, "--output", str(tmp_path / "aligned.png"), *signing, "--credit-source"]) == 0
    result = verify(tmp_path / "aligned.png", chain.root)
    assert (result.status, result.trust, result.tampered) == ("valid", "trusted", False)
    assert [a["action"] for a in result.actions] == ["c2pa.opened", "c2pa.edited"]
    crop_sha = hashlib.sha256((tmp_path / "crop.png").read_bytes()).hexdigest()
    assert result.models["target_sha256"] == crop_sha and result.models["source_sha256"] == [crop_sha]
    assert {m["role"] for m in result.models["models"]} >= {"generator", "arcface"}
    # refused before any model loads: a format without a manifest place, a mismatched key
    assert main([*aligned, "--output", str(tmp_path / "aligned.bmp"), *signing]) == 1
    assert "cannot be embedded in .bmp" in capsys.readouterr().err
    assert not (tmp_path / "aligned.bmp").exists()

    demo = tmp_path / "demo"
    base = ["demo", "--bundle", str(tiny_bundle.root), "--output", str(demo), "--threads", "1"]
    assert main([*base, *signing]) == 0
    for name in ("camera.png", "two-faces.png"):
        result = verify(demo / name, chain.root)
        assert (result.status, result.trust) == ("valid", "trusted")
        assert result.actions[1]["digitalSourceType"] == DIGITAL_SOURCE_TYPE
        assert "target_sha256" in result.models
    other = make_chain(tmp_path, "other")
    assert main([*base, "--sign-cert", str(chain.cert), "--sign-key", str(other.key)]) == 1
    assert "does not belong to" in capsys.readouterr().err
    assert main([*base, "--no-synthetic-tag"]) == 0  # unsigned and unlabelled when asked
    assert verify(demo / "camera.png").exit_code == 3
    with Image.open(demo / "camera.png") as plain:
        assert "xmp" not in plain.info


def test_tiff_label_is_the_xml_packet_tag_and_tiff_signs(chain, tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (40, 24, 3), dtype=np.uint8)
    path = tmp_path / "out.tiff"
    write_image(path, image, synthetic=True)
    with Image.open(path) as labelled:
        assert DIGITAL_SOURCE_TYPE.encode() in bytes(labelled.tag_v2[700])  # XMLPacket, in the first IFD
    np.testing.assert_array_equal(read_image(path), image)
    target = tmp_path / "target.png"
    cv2.imwrite(str(target), image)
    provenance = Provenance(signer=Signer.from_files(chain.cert, chain.key))
    sign = partial(provenance.sign_image, suffix=".tiff", target=target, title="out.tiff")
    write_image(path, image, synthetic=True, finish=sign)
    result = verify(path, chain.root)
    assert (result.status, result.trust, result.tampered) == ("valid", "trusted", False)
    assert result.actions[1]["digitalSourceType"] == DIGITAL_SOURCE_TYPE
    np.testing.assert_array_equal(read_image(path), image)
    with Image.open(path) as signed:  # the label survives signing
        assert DIGITAL_SOURCE_TYPE.encode() in bytes(signed.tag_v2[700])
        strip = signed.tag_v2[273][0]  # StripOffsets: where the pixel data begins
    changed = flip_byte(path, path.read_bytes()[strip : strip + 8], 4)
    tampered = verify(changed)
    assert tampered.status == "invalid" and tampered.tampered


def test_served_images_list_the_enhancer_where_a_request_ran_it(enhanced_bundle, chain, photos, tmp_path):
    from simswap_trt.serving.models import SwapImage

    swapper = FaceSwapper.from_bundle(enhanced_bundle.root, threads=1, enhance=True, enhance_blend=0.0)
    swapper.set_source(read_image(photos / "source.png"))
    serve = SwapImage(swapper, provenance=Provenance(signer=Signer.from_files(chain.cert, chain.key)))
    image = np.array([[(photos / "targets" / "a.png").read_bytes()]], dtype=object)
    plain, enhanced = serve([{"image": image}, {"image": image, "enhance": np.array([[1.0]], np.float32)}])
    for answer, listed in ((plain, False), (enhanced, True)):
        path = tmp_path / f"served-{listed}.png"
        path.write_bytes(bytes(answer["image"][0, 0]))
        result = verify(path)
        assert result.status == "valid"
        assert ("enhancer" in {m["role"] for m in result.models["models"]}) == listed
