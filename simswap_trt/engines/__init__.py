"""Inference backends behind one interface (``Engine``)."""

from simswap_trt.engines.base import Engine, TensorSpec
from simswap_trt.engines.onnxruntime import DEFAULT_PROVIDERS, OnnxRuntimeEngine

__all__ = ["DEFAULT_PROVIDERS", "Engine", "OnnxRuntimeEngine", "TensorSpec"]
