"""GPU suite (``pytest -m gpu``): builds plans from our graphs with the full TensorRT and compares them with
ONNX Runtime. Skipped without a GPU; needs the full ``tensorrt`` package for building."""

import shutil

import numpy as np
import pytest
from support.tiny import random_crops

from simswap_build.tensorrt.builder import BuildOptions, build_engine
from simswap_trt import FaceSwapper
from simswap_trt.backends import open_engine
from simswap_trt.bundle import Bundle
from simswap_trt.engines.tensorrt import TensorRTEngine
from simswap_trt.vision.preprocess import crops_to_tensor

pytestmark = pytest.mark.gpu
# FP32 plans may use TF32 tensor-core math (TensorRT's default): about 1e-3 relative on these outputs
FP32_TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def gpu_bundle(tiny_bundle, tmp_path_factory):
    trt = pytest.importorskip("tensorrt")
    if not hasattr(trt, "Builder"):
        pytest.skip("building needs the full tensorrt package")
    root = tmp_path_factory.mktemp("gpu") / "bundle"
    shutil.copytree(tiny_bundle.root, root)
    for role in ("generator", "arcface"):
        build_engine(root, role, BuildOptions(max_batch=8, opt_batch=4, progress=False))
    return Bundle.load(root)


def feeds(count, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(count, 512)).astype(np.float32)
    return {
        "target": crops_to_tensor(random_crops(count, seed=seed), 224),
        "latent": latent / np.linalg.norm(latent, axis=1, keepdims=True),
    }


@pytest.mark.parametrize("count", [1, 7, 8, 9, 26])
def test_generator_plan_matches_onnxruntime(gpu_bundle, count):
    trt_engine = open_engine(gpu_bundle, "generator", "tensorrt")
    ort_engine = open_engine(gpu_bundle, "generator", "onnxruntime")
    inputs = feeds(count, seed=count)
    assert np.abs(trt_engine.run(inputs)["swapped"] - ort_engine.run(inputs)["swapped"]).max() <= FP32_TOLERANCE


def test_cuda_graphs_give_the_same_results(gpu_bundle):
    plan = next(p for p in gpu_bundle.plans if p.role == "generator")
    plain = TensorRTEngine(gpu_bundle.root, plan)
    graphed = TensorRTEngine(gpu_bundle.root, plan, cuda_graphs=True)
    inputs = feeds(12)
    expected = plain.run(inputs)["swapped"]
    for _ in range(3):  # first run warms up, second captures, third replays
        np.testing.assert_allclose(graphed.run(inputs)["swapped"], expected, atol=1e-6)


def test_caller_owned_torch_tensors(gpu_bundle):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    plan = next(p for p in gpu_bundle.plans if p.role == "generator")
    engine = TensorRTEngine(gpu_bundle.root, plan)
    inputs = feeds(4)
    device = {k: torch.from_numpy(v).cuda() for k, v in inputs.items()}
    out = torch.empty((4, 3, 224, 224), device="cuda")
    stream = torch.cuda.current_stream()
    engine.run_device(device, {"swapped": out}, stream.cuda_stream)
    stream.synchronize()
    np.testing.assert_allclose(out.cpu().numpy(), engine.run(inputs)["swapped"], atol=1e-6)


def test_whole_pipeline_on_tensorrt_matches_onnxruntime(gpu_bundle):
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[..., ::-1])
    results, aligned = [], []
    crops = random_crops(5, seed=9)
    for backend in ("tensorrt", "onnxruntime"):
        with FaceSwapper.from_bundle(gpu_bundle.root, backend=backend) as swapper:
            assert swapper.stages.startswith("device" if backend == "tensorrt" else "host")
            swapper.set_source(image)
            results.append(swapper.swap(image).image.astype(int))
            aligned.append(swapper.swap_aligned(crops).astype(int))
    assert np.abs(results[0] - results[1]).max() <= 3
    assert np.abs(aligned[0] - aligned[1]).max() <= 3
