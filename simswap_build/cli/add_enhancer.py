"""``simswap-build add-enhancer``: add a face restorer to a bundle as role 'enhancer'."""

from __future__ import annotations

import argparse
from pathlib import Path

from simswap_build.convert.bundle import add_enhancer
from simswap_trt.bundle import Bundle
from simswap_trt.errors import InputError

NAME = "add-enhancer"
HELP = "add a face restorer (GFPGAN v1.4) to a bundle as role 'enhancer'"
DESCRIPTION = (
    "Load a face-restorer checkpoint strictly (GFPGANv1.4.pth: the 'params_ema' generator; any "
    "missing, unexpected or mis-shaped key is an error), write its inference graph (fixed noise: "
    "deterministic), check it for TensorRT and add it to BUNDLE with its alignment (FFHQ template) and "
    "licence. 'simswap-trt swap --enhancer' then runs it after the generator. Needs torch."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory to add the enhancer to")
    parser.add_argument("checkpoint", type=Path, help="GFPGANv1.4.pth (from the GFPGAN releases, Apache-2.0)")


def run(args: argparse.Namespace) -> int:
    if not args.checkpoint.is_file():
        raise InputError(f"enhancer checkpoint not found: {args.checkpoint}")
    bundle = add_enhancer(args.bundle, args.checkpoint)
    print(f"{bundle.root}: {describe_enhancer(bundle)}")
    return 0


def describe_enhancer(bundle: Bundle) -> str:
    """One line on the bundle's enhancer: architecture, crop size and alignment, licence."""
    entry = bundle.require_enhancer()
    size = entry.inputs[0].shape[2]
    return (
        f"enhancer: {entry.architecture}, {size} px {entry.source['alignment']} crops, "
        f"licence {entry.source.get('license', 'unknown')}"
    )
