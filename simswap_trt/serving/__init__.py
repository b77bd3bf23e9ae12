"""Online serving on Triton Inference Server through PyTriton (``pip install 'simswap-trt[serve]'``).

Models: ``swap_image`` (encoded image → swapped image + faces), ``swap_aligned`` (aligned crops + latent →
swapped crops) and ``identity`` (encoded image → latent), with Triton's dynamic batching across requests.
Importing this package does not import PyTriton; ``start`` does.
"""

from simswap_trt.serving.models import FACE_COLUMNS, Identity, SwapAligned, SwapImage
from simswap_trt.serving.server import MODELS, ServeConfig, place_instances, start, stub_environment

__all__ = [
    "FACE_COLUMNS",
    "MODELS",
    "Identity",
    "ServeConfig",
    "SwapAligned",
    "SwapImage",
    "place_instances",
    "start",
    "stub_environment",
]
