"""``simswap-build untrained``: a bundle with random weights, to try the pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

from simswap_build.convert.architectures import GENERATOR_ARCHES
from simswap_build.convert.bundle import untrained_bundle
from simswap_build.convert.bundle_writer import check_bundle_output
from simswap_trt.cli.support import int_at_least
from simswap_trt.constants import ARCFACE_INPUT_SIZE

NAME = "untrained"
HELP = "a bundle with random weights, to try the pipeline (no torch needed)"
DESCRIPTION = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, required=True, help="bundle directory to create")
    parser.add_argument("--arch", choices=GENERATOR_ARCHES, default="224", help="generator architecture (default 224)")
    parser.add_argument(
        "--crop-size",
        type=int_at_least(ARCFACE_INPUT_SIZE),
        default=None,
        help=f"aligned crop size, >= {ARCFACE_INPUT_SIZE} (default: the architecture's)",
    )
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed, >= 0 (default 0)")
    parser.add_argument("--overwrite", "--force", action="store_true", help="replace an existing bundle at --output")


def run(args: argparse.Namespace) -> int:
    check_bundle_output(args.output, overwrite=args.overwrite)
    bundle = untrained_bundle(
        args.output, arch=args.arch, crop_size=args.crop_size, seed=args.seed, overwrite=args.overwrite
    )
    print(f"wrote {bundle.root}: UNTRAINED random weights ({args.arch}, {bundle.crop_size} px) - not a face swapper")
    return 0
