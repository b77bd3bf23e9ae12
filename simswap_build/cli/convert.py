"""``simswap-build convert``: official checkpoints to a bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from simswap_build.cli.add_enhancer import describe_enhancer
from simswap_build.convert.architectures import GENERATOR_ARCHES
from simswap_build.convert.bundle import convert_checkpoints, describe_checksum
from simswap_build.convert.bundle_writer import check_bundle_output
from simswap_trt.cli.support import int_at_least
from simswap_trt.constants import ARCFACE_INPUT_SIZE
from simswap_trt.errors import InputError
from simswap_trt.schema import sha256_of

NAME = "convert"
HELP = "official checkpoints -> bundle (safetensors weights, ONNX graphs, manifest)"
DESCRIPTION = (
    "Load a generator .pth and arcface_checkpoint.tar strictly (any missing, unexpected or "
    "mis-shaped key is an error), write the inference graphs, check them for TensorRT and save "
    "a bundle."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generator", type=Path, required=True, help="generator state_dict (.pth)")
    parser.add_argument("--arcface", type=Path, required=True, help="arcface_checkpoint.tar (either official format)")
    parser.add_argument("--output", type=Path, required=True, help="bundle directory to create")
    parser.add_argument(
        "--arch",
        choices=("auto", *GENERATOR_ARCHES),
        default="auto",
        help="generator architecture; 'auto' detects it from the keys (default)",
    )
    parser.add_argument(
        "--family",
        choices=("official", "train"),
        default="official",
        help="I/O semantics: 'official' released models, or 'train' for checkpoints from the "
        "training code (train.py: ImageNet-normalised, no Tanh). The keys cannot tell them apart.",
    )
    parser.add_argument(
        "--crop-size",
        type=int_at_least(ARCFACE_INPUT_SIZE),
        default=None,
        help=f"aligned crop size, >= {ARCFACE_INPUT_SIZE} (default: 224 for 224 models, 512 for 512 models)",
    )
    parser.add_argument(
        "--enhancer",
        type=Path,
        default=None,
        help="also add a face restorer as role 'enhancer': GFPGANv1.4.pth (Apache-2.0; see docs/enhancer.md)",
    )
    parser.add_argument("--no-weights", action="store_true", help="do not keep safetensors copies of the weights")
    parser.add_argument("--overwrite", "--force", action="store_true", help="replace an existing bundle at --output")


def run(args: argparse.Namespace) -> int:
    checkpoints = [args.generator, args.arcface] + ([args.enhancer] if args.enhancer else [])
    for path in checkpoints:
        if not path.is_file():
            raise InputError(f"checkpoint not found: {path}")
    check_bundle_output(args.output, checkpoints, args.overwrite)
    for path in checkpoints:  # before loading: a refused file is identified too
        print(describe_checksum(path, sha256_of(path)), flush=True)
    bundle = convert_checkpoints(
        args.generator,
        args.arcface,
        args.output,
        arch=args.arch,
        family=args.family,
        crop_size=args.crop_size,
        keep_weights=not args.no_weights,
        overwrite=args.overwrite,
        enhancer=args.enhancer,
    )
    print(
        f"wrote {bundle.root}: {bundle.models['generator'].architecture} generator, "
        f"{bundle.models['arcface'].architecture} arcface, {bundle.crop_size} px, {bundle.alignment} alignment"
    )
    if bundle.enhancer is not None:
        print(describe_enhancer(bundle))
    return 0
