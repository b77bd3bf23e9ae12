"""Online serving on Triton Inference Server through PyTriton (``pip install 'simswap-trt[serve]'``).

Models: ``swap_image`` (encoded image → swapped image + faces), ``swap_aligned`` (aligned crops + latent →
swapped crops) and ``identity`` (encoded image → latent), with Triton's dynamic batching across requests;
each request succeeds or fails on its own (docs/serving.md).
Importing this package does not import PyTriton; ``start`` does.
"""

from simswap_trt.serving.models import ERROR, FACE_COLUMNS, Identity, SwapAligned, SwapImage
from simswap_trt.serving.server import (
    MODELS,
    ServeConfig,
    check_ports,
    place_instances,
    start,
    stub_environment,
)

__all__ = [
    "ERROR",
    "FACE_COLUMNS",
    "MODELS",
    "Identity",
    "ServeConfig",
    "SwapAligned",
    "SwapImage",
    "check_ports",
    "place_instances",
    "start",
    "stub_environment",
]
