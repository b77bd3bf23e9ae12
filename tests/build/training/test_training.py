"""Training end to end at reduced width: faces from augmented public-domain photos (scikit-image), a few
optimisation steps that lower the identity and reconstruction losses on fixed pairs, a resumed checkpoint
that continues bit-for-bit, and an exported generator that `simswap-build convert` takes and ONNX Runtime
reproduces within 1e-4."""

import copy
import json

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from support.official_formats import make_arcface
from support.tiny import TINY_ARCFACE, TINY_GENERATOR

from simswap_build.cli import main as build_main
from simswap_build.models import Generator, identity_latent
from simswap_build.training import FaceSet, PairSampler, TrainConfig, Trainer, losses, prepare_faces
from simswap_build.training.checkpoint import export_generator, load_checkpoint, save_checkpoint
from simswap_build.training.models import keep_float32
from simswap_trt.bundle import Bundle
from simswap_trt.errors import InputError
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.detect import CenterFace
from simswap_trt.vision.preprocess import crops_to_tensor
from simswap_trt.vision.warp import warp_faces

SIZE = 96  # the smallest crop the two-scale discriminator takes
STEPS, RESUME_AT = 10, 8


def _photos():
    """Four public-domain scikit-image photos, BGR: astronaut (NASA), camera man, coffee, cat."""
    from skimage import data

    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])
    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    return (
        astronaut,
        camera,
        np.ascontiguousarray(data.coffee()[..., ::-1]),
        np.ascontiguousarray(data.chelsea()[..., ::-1]),
    )


def _augment(image, rng, size=None):
    """A small random similarity warp, brightness change and mirror: another 'photo of the same person'."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-6, 6), rng.uniform(0.94, 1.06))
    m[:, 2] += rng.uniform(-0.02, 0.02, 2) * (w, h)
    out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    out = np.clip(out * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)
    out = np.ascontiguousarray(out[:, ::-1]) if rng.random() < 0.5 else out
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA) if size else out


@pytest.fixture(scope="module")
def faces():
    """Four identities (face regions of the four photos) × three augmented crops each, 96 px."""
    astronaut, camera, coffee, cat = _photos()
    regions = (astronaut[40:220, 130:310], camera[60:260, 150:350], coffee[50:350, 150:450], cat[20:280, 100:360])
    rng = np.random.default_rng(0)
    crops = np.stack([_augment(r, rng, SIZE) for r in regions for _ in range(3)])
    return FaceSet(crops, np.repeat(np.arange(4), 3), tuple("abcd"), tuple(f"{i}.png" for i in range(12)))


@pytest.fixture(scope="module")
def arcface(faces):
    """The tiny random ArcFace with BatchNorm statistics re-estimated on the faces, so that its embeddings
    separate the four identities (a random network maps every image to nearly one direction)."""
    model = make_arcface(TINY_ARCFACE, seed=2)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        identity_latent(model, torch.from_numpy(crops_to_tensor(faces.crops, SIZE)))
    return model.eval()


def _trainer(faces, arcface, **overrides):
    torch.manual_seed(0)
    config = TrainConfig.recipe("paper", batch_size=4, ndf=8, lr=1e-3, **overrides)
    return Trainer(config, Generator(TINY_GENERATOR), copy.deepcopy(arcface), faces)


def _fixed_pair_losses(generator, arcface, faces):
    """Identity loss on different-identity pairs and reconstruction loss on same-identity pairs, every
    crop once as the target; batch statistics as in training, on a copy (running stats untouched)."""
    generator = copy.deepcopy(generator).train()
    targets = torch.from_numpy(crops_to_tensor(faces.crops, SIZE))
    same = np.array([i - i % 3 + (i + 1) % 3 for i in range(12)])
    other = (np.arange(12) + 3) % 12
    with torch.no_grad():
        z_same, z_other = identity_latent(arcface, targets[same]), identity_latent(arcface, targets[other])
        swapped = generator(targets, z_other)
        rebuilt = generator(targets, z_same)
        identity = losses.identity_loss(identity_latent(arcface, swapped), z_other).item()
        return identity, losses.reconstruction_loss(rebuilt, targets).item()


@pytest.fixture(scope="module")
def run(faces, arcface, tmp_path_factory):
    """A short run of the reduced-width model, checkpointed at step RESUME_AT."""
    out = tmp_path_factory.mktemp("run")
    trainer = _trainer(faces, arcface)
    before = _fixed_pair_losses(trainer.generator, arcface, faces)
    for _ in range(STEPS):
        trainer.train_step()
        if trainer.step == RESUME_AT:
            save_checkpoint(trainer, out)
    return trainer, before, out


def test_the_test_arcface_separates_identities(faces, arcface):
    with torch.no_grad():
        z = identity_latent(arcface, torch.from_numpy(crops_to_tensor(faces.crops, SIZE))).numpy()
    cos, ids = z @ z.T, faces.identities
    same = (ids[:, None] == ids[None]) & ~np.eye(12, dtype=bool)
    assert cos[same].mean() > cos[ids[:, None] != ids[None]].mean() + 0.2


def test_a_few_steps_lower_identity_and_reconstruction_losses(run, arcface, faces):
    trainer, (id_before, rec_before), _ = run
    id_after, rec_after = _fixed_pair_losses(trainer.generator, arcface, faces)
    assert id_after < id_before - 0.01
    assert rec_after < 0.75 * rec_before


def test_arcface_stays_frozen(run, arcface):
    trainer, _, _ = run
    for name, value in arcface.state_dict().items():
        assert torch.equal(trainer.arcface.state_dict()[name], value), name


def test_resumed_checkpoint_continues_to_the_same_state(run, faces, arcface):
    trainer, _, out = run
    resumed = _trainer(faces, arcface)
    resumed.load_state_dict(load_checkpoint(out))
    assert resumed.step == RESUME_AT
    while resumed.step < STEPS:
        resumed.train_step()
    for model, reference in ((resumed.generator, trainer.generator), (resumed.discriminator, trainer.discriminator)):
        for (name, value), expected in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6, msg=name)
    moments = [s["exp_avg_sq"] for s in resumed.optim_g.state_dict()["state"].values()]
    expected = [s["exp_avg_sq"] for s in trainer.optim_g.state_dict()["state"].values()]
    for a, b in zip(moments, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-12)
    assert resumed.rng.bit_generator.state == trainer.rng.bit_generator.state


def test_exported_generator_converts_and_matches_onnx_runtime(run, tiny_checkpoints, faces, tmp_path, capsys):
    trainer, _, _ = run
    path = export_generator(trainer.generator, tmp_path / "latest_net_G.pth")
    _, _, _, arcface_path = tiny_checkpoints
    bundle_dir = tmp_path / "bundle"
    argv = ["convert", "--generator", str(path), "--arcface", str(arcface_path), "--output", str(bundle_dir)]
    assert build_main([*argv, "--crop-size", "112"]) == 0  # bundles take crops of at least 112 px
    bundle = Bundle.load(bundle_dir)
    session = ort.InferenceSession(str(bundle.path_of("generator")), providers=["CPUExecutionProvider"])
    targets = crops_to_tensor(np.stack([cv2.resize(c, (112, 112)) for c in faces.crops[:4]]), 112)
    latents = torch.nn.functional.normalize(torch.randn(4, 512, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        expected = copy.deepcopy(trainer.generator).eval()(torch.from_numpy(targets), latents).numpy()
    got = session.run(None, {"target": targets, "latent": latents.numpy()})[0]
    assert np.abs(got - expected).max() <= 1e-4
    assert expected.std() > 0.01


def test_pair_sampler_alternates_same_and_different_identities(faces):
    sampler, rng = PairSampler(faces), np.random.default_rng(0)
    targets, sources = sampler.sample(rng, 64, same_identity=True)
    assert np.array_equal(faces.identities[targets], faces.identities[sources]) and (targets != sources).all()
    targets, sources = sampler.sample(rng, 64, same_identity=False)
    assert (faces.identities[targets] != faces.identities[sources]).all()


def test_one_identity_is_refused(faces):
    with pytest.raises(InputError, match="at least 2 identities"):
        FaceSet(faces.crops[:3], np.zeros(3, np.int64), ("a",), ("1", "2", "3"))


def test_float32_islands_under_autocast():
    """Under autocast, instance norms, styles and BatchNorms compute in float32 (CPU bfloat16 here)."""
    generator = keep_float32(Generator(TINY_GENERATOR).eval())
    block = generator.BottleNeck[0]
    x = torch.randn(2, 64, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        normed = block.conv1[2](x.bfloat16())
        styled = block.style1(x.bfloat16(), torch.randn(2, 512))
        convolved = block.conv1[1](x)
    assert normed.dtype == styled.dtype == torch.float32 and convolved.dtype == torch.bfloat16
    reference = x.bfloat16().float()
    reference = (reference - reference.mean((2, 3), keepdim=True)) / reference.var(
        (2, 3), unbiased=False, keepdim=True
    ).add(1e-8).sqrt().view(2, 64, 1, 1)
    torch.testing.assert_close(normed, reference, rtol=1e-4, atol=1e-4)


def test_mixed_precision_is_refused_on_the_cpu(faces, arcface):
    with pytest.raises(InputError, match="CUDA"):
        _trainer(faces, arcface, mixed_precision=True)


# -- data and command line ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_folders(tmp_path_factory):
    """Two identities (astronaut, camera man) × two augmented photos, plus one photo too small to keep."""
    root = tmp_path_factory.mktemp("identities")
    astronaut, camera = _photos()[:2]
    rng = np.random.default_rng(1)
    for name, photo in (("astronaut", astronaut), ("camera", camera)):
        (root / name).mkdir()
        for i in range(2):
            cv2.imwrite(str(root / name / f"{i}.png"), _augment(photo, rng))
    cv2.imwrite(str(root / "astronaut" / "small.png"), cv2.resize(astronaut, None, fx=0.4, fy=0.4))
    return root


def test_faces_are_detected_aligned_filtered_and_cached(photo_folders, tmp_path, monkeypatch):
    faces = prepare_faces(photo_folders, tmp_path, 224, "multipose", min_face=80, progress=False)
    assert faces.names == ("astronaut", "camera")
    assert [f.split("/")[-2:] for f in faces.files] == [
        ["astronaut", "0.png"],
        ["astronaut", "1.png"],
        ["camera", "0.png"],
        ["camera", "1.png"],
    ]
    detector = CenterFace()
    for crop, file in zip(faces.crops, faces.files, strict=True):  # the runtime's own detect → align → warp
        image = cv2.imread(file)
        face = max(detector.detect(image), key=lambda d: d.area)
        expected = warp_faces([image], [(0, alignment_matrix(face.landmarks, "multipose", 224))], 224)[0]
        assert np.array_equal(crop, expected)

    def no_detection(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr("simswap_trt.vision.detect.CenterFace.__init__", no_detection)
    cached = prepare_faces(photo_folders, tmp_path, 224, "multipose", min_face=80, progress=False)
    assert np.array_equal(cached.crops, faces.crops) and np.array_equal(cached.identities, faces.identities)


def test_list_file_names_identities(photo_folders, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"alice\t{photo_folders}/astronaut/0.png\n# comment\nbob\t{photo_folders}/camera/1.png\n")
    faces = prepare_faces(listing, tmp_path / "cache", 224, "multipose", min_face=80, progress=False)
    assert faces.names == ("alice", "bob") and list(faces.identities) == [0, 1]
    listing.write_text("no tab here\n")
    with pytest.raises(InputError, match="IDENTITY<TAB>PATH"):
        prepare_faces(listing, tmp_path / "cache", 224, "multipose", progress=False)


def test_train_and_finetune_commands(photo_folders, tiny_checkpoints, tmp_path, capsys):
    _, _, _, arcface_path = tiny_checkpoints
    run = tmp_path / "run"
    common = ["--arcface", str(arcface_path), "--crop-size", str(SIZE), "--min-face", "80", "--no-progress"]
    tiny = ["--ngf", "8", "--n-blocks", "2", "--ndf", "8", "--batch-size", "2", "--checkpoint-every", "2"]
    assert build_main(["train", str(photo_folders), "--out", str(run), *common, *tiny, "--steps", "2"]) == 0
    assert "to step 2" in capsys.readouterr().out
    info = json.loads((run / "run.json").read_text())
    assert info["faces"] == 4 and info["identities"] == 2 and info["config"]["lambda_gp"] == 1e-5
    assert [r.split(",")[0] for r in (run / "log.csv").read_text().splitlines()] == ["step", "1", "2"]

    assert build_main(["train", str(photo_folders), "--out", str(run), *common, *tiny, "--steps", "4"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert build_main(["train", str(photo_folders), "--out", str(run), *common, *tiny, "--steps", "4", "--resume"]) == 0
    assert [r.split(",")[0] for r in (run / "log.csv").read_text().splitlines()][1:] == ["1", "2", "3", "4"]

    tuned = tmp_path / "tuned"
    d1, d2 = run / "latest_net_D1.pth", run / "latest_net_D2.pth"
    argv = ["finetune", "--generator", str(run / "latest_net_G.pth"), "--discriminators", str(d1), str(d2)]
    argv += [str(photo_folders), "--out", str(tuned), *common, "--recipe", "pix2pixhd", "--batch-size", "2"]
    assert build_main([*argv, "--steps", "1", "--plot"]) == 0
    info = json.loads((tuned / "run.json").read_text())
    assert info["fine_tuned_from"].endswith("latest_net_G.pth") and info["config"]["lambda_gp"] == 0.0
    assert (tuned / "losses.png").stat().st_size > 0
    start = torch.load(run / "latest_net_G.pth", weights_only=True)
    tuned_g = torch.load(tuned / "latest_net_G.pth", weights_only=True)
    assert list(start) == list(tuned_g) and not torch.equal(start["up1.1.weight"], tuned_g["up1.1.weight"])


def test_arcface_from_a_converted_bundle_equals_the_checkpoint(tiny_checkpoints, tiny_bundle):
    from simswap_build.training.models import load_arcface

    _, reference, _, arcface_path = tiny_checkpoints
    for source in (arcface_path, tiny_bundle.root):
        loaded = load_arcface(source)
        assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
        for name, value in reference.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], value), (source, name)


def test_train_without_torch_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; from simswap_build.cli import main; "
        f"sys.exit(main(['train', '{tmp_path}', '--out', '{tmp_path / 'run'}', '--arcface', 'a.tar']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (
        result.returncode == 1
        and result.stderr.strip() == "error: training needs PyTorch: pip install 'simswap-trt[train]'"
    )


def test_the_512_layout_trains_and_exports_as_a_512_checkpoint(faces, arcface, tmp_path):
    from simswap_build.convert.checkpoints import load_generator
    from simswap_build.training.models import new_generator

    generator = new_generator("512", ngf=8, n_blocks=1)
    trainer = Trainer(TrainConfig(batch_size=2, ndf=8), generator, copy.deepcopy(arcface), faces)
    before = copy.deepcopy(generator.state_dict())
    values = trainer.train_step()
    assert all(np.isfinite(v) for v in values.values())
    assert not torch.equal(before["down0.0.weight"], generator.state_dict()["down0.0.weight"])
    loaded = load_generator(export_generator(generator, tmp_path / "550000_net_G.pth"))
    assert loaded.config.name == "512" and loaded.config.ngf == 8


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoint(path, kind, marker):
    if kind == "truncated":
        torch.save({"step": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "malicious":
        torch.save({"step": _Payload(marker)}, path)
    else:  # a foreign but harmless file
        torch.save({"weights": torch.zeros(3)}, path)


@pytest.mark.parametrize("kind", ["truncated", "malicious", "foreign"])
@pytest.mark.parametrize("command", ["resume", "finetune", "discriminators"])
def test_bad_checkpoints_are_one_line_errors_naming_the_file(tiny_checkpoints, tmp_path, capsys, command, kind):
    _, _, generator_path, arcface_path = tiny_checkpoints
    marker, out = tmp_path / "payload-ran", tmp_path / "run"
    out.mkdir()
    common = [str(tmp_path / "faces"), "--out", str(out), "--arcface", str(arcface_path), "--no-progress"]
    if command == "resume":
        bad = out / "checkpoint.pth"
        argv = ["train", *common, "--resume"]
    elif command == "finetune":
        bad = tmp_path / "latest_net_G.pth"
        argv = ["finetune", "--generator", str(bad), *common]
    else:
        bad = tmp_path / "latest_net_D1.pth"
        argv = ["finetune", "--generator", str(generator_path), "--discriminators", str(bad), str(bad), *common]
    _bad_checkpoint(bad, kind, marker)
    assert build_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and str(bad) in err, err
    assert "weights_only" not in err and "Traceback" not in err
    assert not marker.exists()
