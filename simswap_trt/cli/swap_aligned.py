"""``simswap-trt swap-aligned``: swap a source identity onto face crops already aligned to the bundle."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import numpy as np

from simswap_trt.cli.common import EXIT_PARTIAL, provenance_from_args, swapper_options, targets, writable
from simswap_trt.cli.options import add_device_flags, add_runtime_flags, add_signing_flags
from simswap_trt.errors import InputError, OutputError
from simswap_trt.images import read_image, write_image
from simswap_trt.provenance.signing import Provenance
from simswap_trt.swapper import FaceSwapper

NAME = "swap-aligned"
PARSER = {
    "help": "swap a source identity onto already aligned face crops",
    "description": "Like swap, for crops already aligned to the bundle's crop size (no detection, no paste-back).",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    parser.add_argument("--source", type=Path, nargs="+", required=True, help="aligned crop(s) of the source identity")
    parser.add_argument("--target", type=Path, required=True, help="aligned target crop, or a folder of them")
    parser.add_argument("--output", type=Path, required=True, help="output file, or folder (created if missing)")
    parser.add_argument(
        "--no-synthetic-tag", action="store_true", help="do not label outputs as synthetic (XMP metadata)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: skip them and say so)"
    )
    add_signing_flags(parser)
    add_runtime_flags(parser, batch=8)
    add_device_flags(parser)


def run(args: argparse.Namespace) -> int:
    pairs = targets(args.target, args.output)
    todo = writable(pairs, args.source, args)
    skipped = len(pairs) - len(todo)
    if not todo:
        print(f"done: 0 written, {skipped} skipped")
        return EXIT_PARTIAL
    provenance = provenance_from_args(args, [dest for _, dest in todo])
    with FaceSwapper.from_bundle(args.bundle, swapper_options(args)) as swapper:
        swapper.set_source_crops([_read_crop(p, swapper.crop_size) for p in args.source])
        provenance = provenance.with_models(swapper)
        written = 0
        for start in range(0, len(todo), args.batch):
            done, failed = _swap_chunk(swapper, todo[start : start + args.batch], provenance)
            written, skipped = written + done, skipped + failed
    print(f"done: {written} written, {skipped} skipped")
    return EXIT_PARTIAL if skipped else 0


def _swap_chunk(swapper: FaceSwapper, pairs: list[tuple[Path, Path]], provenance: Provenance) -> tuple[int, int]:
    """Swap and write one batch of crops; (written, skipped)."""
    written = skipped = 0
    chunk, crops = [], []
    for source, dest in pairs:
        try:
            crops.append(_read_crop(source, swapper.crop_size))
            chunk.append((source, dest))
        except InputError as exc:
            print(f"{source.name}: skipped, {exc}")
            skipped += 1
    if not crops:
        return written, skipped
    for (source, dest), image in zip(chunk, swapper.swap_aligned(crops), strict=True):
        try:
            sign = partial(provenance.sign_image, suffix=dest.suffix, target=source, title=str(dest))
            write_image(dest, image, provenance.synthetic, finish=sign)
        except OutputError as exc:
            print(f"{source.name}: failed, {exc}")
            skipped += 1
            continue
        written += 1
    return written, skipped


def _read_crop(path: Path, size: int) -> np.ndarray:
    crop = read_image(path)
    if crop.shape[:2] != (size, size):
        raise InputError(
            f"{path} is {crop.shape[1]}x{crop.shape[0]}; this bundle needs aligned crops of {size}x{size} "
            "(align whole photos with 'simswap-trt swap' instead)"
        )
    return crop
