"""Inference backends behind one interface (``Engine``)."""

from simswap_trt.engines.base import DeviceEngine, Engine
from simswap_trt.engines.onnxruntime import DEFAULT_PROVIDERS, OnnxRuntimeEngine
from simswap_trt.schema import TensorSpec

__all__ = ["DEFAULT_PROVIDERS", "DeviceEngine", "Engine", "OnnxRuntimeEngine", "TensorSpec"]
