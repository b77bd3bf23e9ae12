"""The ONNX Runtime engine reports its signature, validates feeds by name, and never falls back."""

import logging

import numpy as np
import pytest

from simswap_trt.engines import OnnxRuntimeEngine, TensorSpec
from simswap_trt.errors import EngineError


@pytest.fixture(scope="module")
def generator_engine(tiny_bundle):
    return OnnxRuntimeEngine(tiny_bundle.path_of("generator"), threads=1)


def test_signature(generator_engine):
    assert generator_engine.inputs == (
        TensorSpec("target", "float32", ("batch", 3, 224, 224)),
        TensorSpec("latent", "float32", ("batch", 512)),
    )
    assert generator_engine.outputs == (TensorSpec("swapped", "float32", ("batch", 3, 224, 224)),)
    assert generator_engine.backend == "onnxruntime[CPUExecutionProvider]"


def feeds(batch=2, latent_batch=None, dtype=np.float32):
    return {
        "target": np.zeros((batch, 3, 224, 224), dtype),
        "latent": np.zeros((latent_batch or batch, 512), np.float32),
    }


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"target": np.zeros((1, 3, 224, 224), np.float32)}, r"missing \['latent'\]"),
        ({**feeds(), "extra": np.zeros(1)}, r"unexpected \['extra'\]"),
        (feeds(dtype=np.float64), "input 'target' must be a float32 array, got float64"),
        ({**feeds(), "target": np.zeros((2, 3, 112, 112), np.float32)}, r"must have shape \('batch', 3, 224, 224\)"),
        (feeds(batch=2, latent_batch=3), "axis 'batch' is 2 in 'target' but 3 in 'latent'"),
    ],
)
def test_bad_feeds_are_named(generator_engine, bad, message):
    with pytest.raises(EngineError, match=message):
        generator_engine.run(bad)


def test_run_returns_outputs_by_name(generator_engine):
    out = generator_engine.run(feeds(batch=3))
    assert list(out) == ["swapped"] and out["swapped"].shape == (3, 3, 224, 224)
    assert generator_engine.last_run_seconds > 0


def test_unavailable_provider_is_an_error_not_a_fallback(tiny_bundle):
    with pytest.raises(EngineError, match=r"has no \['TensorrtExecutionProvider'\] in this installation"):
        OnnxRuntimeEngine(tiny_bundle.path_of("generator"), ["TensorrtExecutionProvider", "CPUExecutionProvider"])


def test_backend_and_threads_are_logged(tiny_bundle, caplog):
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        OnnxRuntimeEngine(tiny_bundle.path_of("arcface"), threads=1)
    assert "arcface.onnx: onnxruntime[CPUExecutionProvider], 1 threads" in caplog.text


def test_unreadable_model(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"garbage")
    with pytest.raises(EngineError, match="ONNX Runtime cannot load"):
        OnnxRuntimeEngine(tmp_path / "x.onnx")


def test_pool_threads_sleep_between_operators_unless_spinning_is_asked(tiny_bundle, generator_engine):
    spinning = OnnxRuntimeEngine(tiny_bundle.path_of("generator"), threads=2, spinning=True)
    sleeping = OnnxRuntimeEngine(tiny_bundle.path_of("generator"), threads=2)
    entry = "session.intra_op.allow_spinning"
    assert sleeping._session.get_session_options().get_session_config_entry(entry) == "0"
    assert spinning._session.get_session_options().get_session_config_entry(entry) == "1"
    rng = np.random.default_rng(0)
    inputs = {"target": rng.random((2, 3, 224, 224), np.float32), "latent": rng.random((2, 512), np.float32)}
    reference = generator_engine.run(inputs)["swapped"]  # one thread: no pool at all
    for engine in (spinning, sleeping):
        np.testing.assert_allclose(engine.run(inputs)["swapped"], reference, atol=1e-5)
