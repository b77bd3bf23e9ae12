"""``simswap-trt``: run SimSwap bundles from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from simswap_trt import cli_support
from simswap_trt.bundle import Bundle
from simswap_trt.engines import DEFAULT_PROVIDERS
from simswap_trt.errors import InputError
from simswap_trt.images import list_images, read_image, write_image
from simswap_trt.swapper import UNTRAINED_WARNING, FaceSwapper

EPILOG = """\
examples:
  simswap-trt info my-bundle
  simswap-trt swap-aligned --bundle my-bundle --source src_crop.png --target crops/ --output swapped/

Bundles come from 'simswap-build convert' (official checkpoints) or 'simswap-build untrained'.
Images are read and written with OpenCV; crops must already be aligned to the bundle's crop size."""


def _info(args: argparse.Namespace) -> int:
    bundle = Bundle.load(args.bundle)
    print(f"bundle     {bundle.root}")
    print(f"crop size  {bundle.crop_size} px, {bundle.alignment} alignment")
    if bundle.untrained:
        print(f"weights    UNTRAINED ({UNTRAINED_WARNING})")
    for role, entry in bundle.models.items():
        source = entry.source.get("checkpoint", "random weights")
        print(f"{role:<10} {entry.file}  {entry.architecture}  {entry.precision}  from {source}")
        for spec in entry.inputs + entry.outputs:
            print(f"{'':<10}   {spec.describe()}")
    print("hashes     verified")
    return 0


def _swap_aligned(args: argparse.Namespace) -> int:
    targets = list_images(args.target) if args.target.is_dir() else [args.target]
    if not targets:
        raise InputError(f"no images in {args.target}")
    if args.target.is_dir() and args.output.exists() and not args.output.is_dir():
        raise InputError(f"--target is a folder, so --output must be a folder; {args.output} is a file")
    swapper = FaceSwapper.from_bundle(args.bundle, args.providers, args.threads, args.batch)
    if swapper.bundle.untrained:
        print(f"note: {UNTRAINED_WARNING}", file=sys.stderr)
    swapper.set_source([read_image(p) for p in args.source])
    outputs = [args.output / p.name for p in targets] if args.target.is_dir() else [args.output]

    from tqdm import tqdm

    progress = tqdm(total=len(targets), unit="crop", disable=len(targets) < 2 or not sys.stderr.isatty())
    for start in range(0, len(targets), args.batch):
        chunk = slice(start, start + args.batch)
        swapped = swapper.swap_aligned([read_image(p) for p in targets[chunk]])
        for path, image in zip(outputs[chunk], swapped, strict=True):
            write_image(path, image)
        progress.update(len(swapped))
    progress.close()
    print(f"swapped {len(targets)} crop(s) into {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simswap-trt",
        description="Swap faces with SimSwap bundles (ONNX Runtime on the CPU by default).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_support.add_logging_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="describe a bundle and verify its files")
    info.add_argument("bundle", type=Path, help="bundle directory")

    swap = sub.add_parser(
        "swap-aligned",
        help="swap a source identity onto aligned face crops",
        description="Swap the identity of the --source crop(s) onto aligned target crops. Several --source "
        "crops are averaged into one identity. --target and --output are both files or both folders.",
    )
    swap.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    swap.add_argument("--source", type=Path, nargs="+", required=True, help="aligned crop(s) of the source identity")
    swap.add_argument("--target", type=Path, required=True, help="aligned target crop, or a folder of them")
    swap.add_argument("--output", type=Path, required=True, help="output file, or folder (created if missing)")
    swap.add_argument("--batch", type=int, default=8, help="crops per generator call (default: 8)")
    swap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available to this process)")
    swap.add_argument(
        "--providers",
        nargs="+",
        default=list(DEFAULT_PROVIDERS),
        help="ONNX Runtime execution providers, in order; all must be available (default: CPU)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return cli_support.run(build_parser(), argv, {"info": _info, "swap-aligned": _swap_aligned})


if __name__ == "__main__":
    sys.exit(main())
