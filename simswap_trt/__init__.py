"""simswap-trt runtime SDK: SimSwap face swapping on ONNX Runtime (CPU default) and, later, TensorRT.

Importing this package never imports torch.
"""

from simswap_trt.bundle import Bundle
from simswap_trt.constants import VERSION
from simswap_trt.engines import Engine, OnnxRuntimeEngine, TensorSpec
from simswap_trt.errors import BundleError, CheckpointError, EngineError, InputError, SimswapError
from simswap_trt.swapper import FaceSwapper, SwapperOptions
from simswap_trt.vision.enhance import FaceEnhancer

__version__ = VERSION

__all__ = [
    "Bundle",
    "BundleError",
    "CheckpointError",
    "Engine",
    "EngineError",
    "FaceEnhancer",
    "FaceSwapper",
    "InputError",
    "OnnxRuntimeEngine",
    "SimswapError",
    "SwapperOptions",
    "TensorSpec",
    "__version__",
]
