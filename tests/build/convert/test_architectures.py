"""Key names, order and shapes of every architecture equal the upstream lists, in both independent
definitions (the torch reference models and the torch-free key specs used for detection and ONNX)."""

import pytest
from support.tiny import reference_keys

from simswap_build.convert.architectures import (
    IR_SE_50,
    ArcFaceConfig,
    GeneratorConfig,
    arcface_keys,
    compare_keys,
    detect_arcface,
    detect_generator,
    generator_keys,
)
from simswap_build.models import Generator, MultiscaleDiscriminator, PatchDiscriminator, ResNet
from simswap_trt.errors import CheckpointError

CASES = [("224", "G224"), ("512", "G512"), ("train-224", "G224"), ("train-deep", "Gfix_deep")]


def torch_keys(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("arch,reference", CASES)
def test_generator_keys_match_reference(arch, reference):
    config = GeneratorConfig.from_name(arch)
    expected = reference_keys(reference)
    assert generator_keys(config) == expected
    assert torch_keys(Generator(config)) == expected


def test_reference_counts_match_the_spec():
    assert len(reference_keys("G224")) == 123
    assert len(reference_keys("G512")) == 137
    assert len(reference_keys("Gfix_deep")) == 137
    assert len(reference_keys("arcface_ir_se101")) == 796


def test_arcface_ir_se101_keys_match_reference():
    expected = reference_keys("arcface_ir_se101")
    assert arcface_keys(ArcFaceConfig()) == expected
    assert torch_keys(ResNet(ArcFaceConfig())) == expected


def test_ir_se50_has_405_tensors():
    assert len(arcface_keys(ArcFaceConfig(layers=IR_SE_50))) == 405


@pytest.mark.parametrize("arch,reference", CASES)
def test_detection_from_keys(arch, reference):
    shapes = dict(reference_keys(reference))
    family = "train" if arch.startswith("train") else "official"
    assert detect_generator(shapes, family) == GeneratorConfig.from_name(arch)


def test_detection_of_arcface_depth_and_width():
    assert detect_arcface(dict(reference_keys("arcface_ir_se101"))) == ArcFaceConfig()
    assert detect_arcface(dict(arcface_keys(ArcFaceConfig(layers=IR_SE_50, width=32)))) == ArcFaceConfig(IR_SE_50, 32)


def test_discriminator_is_recognised():
    shapes = {k: tuple(v.shape) for k, v in PatchDiscriminator().state_dict().items()}
    with pytest.raises(CheckpointError, match="discriminator checkpoint"):
        detect_generator(shapes)


def test_arcface_offered_as_generator_is_named():
    with pytest.raises(CheckpointError, match="looks like an ArcFace"):
        detect_generator(dict(reference_keys("arcface_ir_se101")))


def test_compare_keys_names_every_kind_of_mismatch():
    expected = generator_keys(GeneratorConfig())
    actual = dict(expected)
    del actual["up1.1.bias"]
    actual["extra.weight"] = (1,)
    actual["down1.0.weight"] = (128, 32, 3, 3)
    with pytest.raises(CheckpointError) as info:
        compare_keys(expected, actual, "ckpt")
    message = str(info.value)
    assert "1 missing: up1.1.bias" in message
    assert "1 unexpected: extra.weight" in message
    assert "down1.0.weight: checkpoint (128, 32, 3, 3), expected (128, 64, 3, 3)" in message


def test_missing_num_batches_tracked_is_tolerated():
    expected = generator_keys(GeneratorConfig())
    actual = {k: s for k, s in expected if not k.endswith("num_batches_tracked")}
    compare_keys(expected, actual, "ckpt")


def test_multiscale_discriminator_logit_map_is_12x12_at_224():
    import torch

    d1, d2 = MultiscaleDiscriminator().eval()(torch.zeros(1, 3, 224, 224))
    assert len(d1) == len(d2) == 6
    assert tuple(d1[-1].shape) == (1, 1, 12, 12)
    assert tuple(d2[-1].shape) == (1, 1, 5, 5)
