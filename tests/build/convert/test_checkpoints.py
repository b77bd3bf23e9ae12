"""Official on-disk formats convert strictly; wrong files fail with messages that name the cause; the
restricted unpickler refuses code execution."""

import os
import pickle

import numpy as np
import pytest
import torch
from support.official_formats import (
    make_arcface,
    make_generator,
    save_arcface_pickled_module,
    save_arcface_training_dict,
    save_generator,
)
from support.tiny import TINY_ARCFACE, TINY_GENERATOR

from simswap_build.convert.architectures import GeneratorConfig
from simswap_build.convert.checkpoints import load_arcface, load_generator
from simswap_build.models import PatchDiscriminator
from simswap_trt.errors import CheckpointError, UnsafeCheckpointError


def assert_same_weights(loaded, model):
    expected = model.state_dict()
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(loaded[key], value.numpy(), err_msg=key)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("arch", ["224", "512", "train-deep"])
def test_generator_formats_load_exactly(tmp_path, arch, legacy):
    model = make_generator(GeneratorConfig.from_name(arch, ngf=8, n_blocks=2))
    loaded = load_generator(save_generator(model, tmp_path / "net_G.pth", legacy))
    assert loaded.config == model.config
    assert_same_weights(loaded.weights, model)


def test_224_checkpoint_offered_as_512_is_refused(tmp_path):
    path = save_generator(make_generator(TINY_GENERATOR), tmp_path / "latest_net_G.pth")
    with pytest.raises(CheckpointError, match=r"is a 224 \(no down0/up0 keys\) checkpoint, but 512 was requested"):
        load_generator(path, arch="512")


def test_512_checkpoint_offered_as_224_is_refused(tmp_path):
    path = save_generator(make_generator(GeneratorConfig.from_name("512", ngf=8, n_blocks=2)), tmp_path / "g.pth")
    with pytest.raises(CheckpointError, match=r"is a 512 beta .* checkpoint, but 224 was requested.*--arch 512"):
        load_generator(path, arch="224")


def test_train_family_is_a_declaration(tmp_path):
    path = save_generator(make_generator(TINY_GENERATOR), tmp_path / "g.pth")
    assert load_generator(path, family="train").config.name == "train-224"
    assert load_generator(path, arch="train-224").config.family == "train"


def test_partial_checkpoint_names_missing_and_misshaped_keys(tmp_path):
    state = make_generator(TINY_GENERATOR).state_dict()
    del state["BottleNeck.1.style2.linear.bias"]
    state["up2.1.weight"] = torch.zeros(16, 8, 3, 3)
    torch.save(state, tmp_path / "g.pth")
    with pytest.raises(CheckpointError) as info:
        load_generator(tmp_path / "g.pth")
    assert "missing: BottleNeck.1.style2.linear.bias" in str(info.value)
    assert "up2.1.weight: checkpoint (16, 8, 3, 3), expected (16, 32, 3, 3)" in str(info.value)


def test_absent_num_batches_tracked_and_training_wrappers_are_accepted(tmp_path):
    model = make_generator(TINY_GENERATOR)
    state = {f"netG.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state.update({f"netD1.{k}": v for k, v in PatchDiscriminator().state_dict().items()})
    torch.save(state, tmp_path / "combined.pth")
    loaded = load_generator(tmp_path / "combined.pth")
    assert loaded.config == TINY_GENERATOR
    assert not any(k.startswith("netD") for k in loaded.weights)


def test_discriminator_file_is_recognised(tmp_path):
    torch.save(PatchDiscriminator().state_dict(), tmp_path / "latest_net_D1.pth")
    with pytest.raises(CheckpointError, match="discriminator checkpoint.*needs the generator"):
        load_generator(tmp_path / "latest_net_D1.pth")


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="cannot read .*broken.pth as a generator checkpoint"):
        load_generator(tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_generator(tmp_path / "nope.pth")


def test_arcface_pickled_module_format(tmp_path):
    model = make_arcface(TINY_ARCFACE)
    loaded = load_arcface(save_arcface_pickled_module(model, tmp_path / "arcface_checkpoint.tar"))
    assert loaded.source_format == "pickled-module"
    assert loaded.config == TINY_ARCFACE
    assert_same_weights(loaded.weights, model)


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_arcface_old_training_dict_format(tmp_path):
    model = make_arcface(TINY_ARCFACE)
    loaded = load_arcface(save_arcface_training_dict(model, tmp_path / "arcface_checkpoint.tar"))
    assert loaded.source_format == "training-dict"
    assert_same_weights(loaded.weights, model)


def test_generator_file_offered_as_arcface(tmp_path):
    path = save_generator(make_generator(TINY_GENERATOR), tmp_path / "g.pth")
    with pytest.raises(CheckpointError, match="not an IR-SE ArcFace state_dict"):
        load_arcface(path)


def test_arcface_file_offered_as_generator(tmp_path):
    path = save_arcface_pickled_module(make_arcface(TINY_ARCFACE), tmp_path / "arcface_checkpoint.tar")
    with pytest.raises(CheckpointError, match="pass it with --arcface"):
        load_generator(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch-zip", "plain-pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "arcface_checkpoint.tar"
    if writer == "torch-zip":
        torch.save({"model": _Payload(marker)}, path)
    else:  # a legacy-format reader would execute this while reading the "magic number"
        path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UnsafeCheckpointError, match=r"references 'posix.system'.*Nothing from the file was executed"):
        load_arcface(path)
    assert not marker.exists()
    # the payload is real: an unrestricted load of the same file runs it (so the assertion above can fail)
    torch.load(path, weights_only=False) if writer == "torch-zip" else pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("loader", [load_generator, load_arcface])
def test_refusals_name_the_file_in_one_line(tmp_path, loader):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"model": _Payload(marker)}, evil)
    with pytest.raises(UnsafeCheckpointError) as refused:
        loader(evil)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(save_generator(make_generator(TINY_GENERATOR), tmp_path / "g.pth").read_bytes()[:500])
    with pytest.raises(CheckpointError) as unreadable:
        loader(truncated)
    for error, path in ((refused, evil), (unreadable, truncated)):
        message = str(error.value)
        assert str(path) in message and "\n" not in message and "weights_only" not in message, message
    assert not marker.exists()
