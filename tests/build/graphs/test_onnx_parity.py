"""The written ONNX graphs, run by ONNX Runtime, equal the PyTorch reference models.

Tolerance: max abs error <= 1e-4 on [0,1] outputs (generator) and unit-norm latents (ArcFace), at full
official size (224 generator, IR-SE-101) on random inputs and on a real photo crop."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from support.official_formats import make_arcface, make_generator
from support.tiny import random_crops

from simswap_build.convert.architectures import ArcFaceConfig, GeneratorConfig
from simswap_build.graphs.export import arcface_graph, generator_graph
from simswap_build.models import identity_latent
from simswap_trt.vision.preprocess import crops_to_tensor

TOLERANCE = 1e-4


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def numpy_weights(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def unit_latents(count, seed=0):
    return torch.nn.functional.normalize(torch.randn(count, 512, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.slow
def test_full_size_224_generator_parity(astronaut_crop):
    model = make_generator(GeneratorConfig(), seed=3)
    sess = session(generator_graph(numpy_weights(model), model.config, 224))
    targets = np.concatenate([crops_to_tensor(astronaut_crop, 224), crops_to_tensor(random_crops(1, seed=4), 224)])
    latents = unit_latents(2)
    with torch.no_grad():
        expected = model.forward_rgb01(torch.from_numpy(targets), latents).numpy()
    got = sess.run(None, {"target": targets, "latent": latents.numpy()})[0]
    assert np.abs(got - expected).max() <= TOLERANCE
    assert expected.std() > 0.01  # a non-degenerate output, so the comparison means something


@pytest.mark.slow
def test_full_size_ir_se101_parity(astronaut_crop):
    model = make_arcface(ArcFaceConfig(), seed=5)
    sess = session(arcface_graph(numpy_weights(model), model.config, 224))
    crops = np.concatenate([crops_to_tensor(astronaut_crop, 224), crops_to_tensor(random_crops(2, seed=6), 224)])
    with torch.no_grad():
        expected = identity_latent(model, torch.from_numpy(crops)).numpy()
    got = sess.run(None, {"crop": crops})[0]
    assert np.abs(got - expected).max() <= TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("arch,size", [("512", 64), ("train-224", 64), ("train-deep", 64), ("224", 96)])
def test_generator_variants_parity(arch, size):
    model = make_generator(GeneratorConfig.from_name(arch, ngf=8, n_blocks=2), seed=7)
    sess = session(generator_graph(numpy_weights(model), model.config, size))
    targets = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(8))
    latents = unit_latents(3, seed=9)
    with torch.no_grad():
        expected = model.forward_rgb01(targets, latents).numpy()
    got = sess.run(None, {"target": targets.numpy(), "latent": latents.numpy()})[0]
    assert np.abs(got - expected).max() <= TOLERANCE
    assert got.min() >= 0.0 and got.max() <= 1.0


@pytest.mark.parametrize("crop_size", [224, 512, 136])
def test_arcface_subsampling_matches_nearest_interpolate(crop_size):
    model = make_arcface(ArcFaceConfig(layers=(1, 1, 1, 1), width=16), seed=10)
    sess = session(arcface_graph(numpy_weights(model), model.config, crop_size))
    crops = torch.rand(2, 3, crop_size, crop_size, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        expected = identity_latent(model, crops).numpy()
    assert np.abs(sess.run(None, {"crop": crops.numpy()})[0] - expected).max() <= TOLERANCE


def test_graph_uses_native_instance_norm_and_constant_pads():
    model = make_generator(GeneratorConfig(ngf=8, n_blocks=2))
    graph = generator_graph(numpy_weights(model), model.config, 64)
    ops = [n.op_type for n in graph.graph.node]
    initializers = {i.name for i in graph.graph.initializer}
    assert ops.count("InstanceNormalization") == 4
    assert not {"ReduceMean", "Sqrt", "Shape", "ConstantOfShape"} & set(ops)
    assert all(n.input[1] in initializers for n in graph.graph.node if n.op_type == "Pad")
    batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"
