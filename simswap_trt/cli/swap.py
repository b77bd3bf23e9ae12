"""``simswap-trt swap``: swap a source identity onto the faces of images or folders of images."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from simswap_trt.cli.common import (
    EXIT_PARTIAL,
    face_photos,
    open_swapper,
    provenance_from_args,
    require_reference,
    targets,
    writable,
)
from simswap_trt.cli.options import (
    add_device_flags,
    add_pipeline_flags,
    add_runtime_flags,
    add_selection_flags,
    add_signing_flags,
)
from simswap_trt.cli.support import positive_int
from simswap_trt.errors import InputError, OutputError
from simswap_trt.images import MAX_PIXELS, read_image, write_image
from simswap_trt.provenance.signing import Provenance
from simswap_trt.swapper import FaceSwapper, SwapResult

NAME = "swap"
PARSER = {
    "help": "swap a source identity onto faces in images or folders of images",
    "description": "Detect faces in --target, swap the identity of --source onto the selected ones and write "
    "--output. Several --source images are averaged into one identity. --target and --output are "
    "both files or both folders.",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    parser.add_argument("--source", type=Path, nargs="+", required=True, help="photo(s) of the identity to apply")
    parser.add_argument("--target", type=Path, required=True, help="image, or folder of images, to change")
    parser.add_argument("--output", type=Path, required=True, help="output file, or folder (created if missing)")
    add_selection_flags(parser, "per image")
    parser.add_argument(
        "--copy-unchanged",
        action="store_true",
        help="write targets without a selected face unchanged (default: skip them)",
    )
    parser.add_argument(
        "--no-synthetic-tag",
        action="store_true",
        help="do not label outputs as synthetic (IPTC digital source type in XMP); you remain responsible for "
        "disclosing that they are AI-generated (docs/provenance.md)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=MAX_PIXELS,
        help="refuse images larger than this many pixels, >= 1 (default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: skip them and say so)"
    )
    add_signing_flags(parser)
    add_pipeline_flags(parser)
    add_runtime_flags(parser, batch=8)
    add_device_flags(parser)


def run(args: argparse.Namespace) -> int:
    require_reference(args)
    pairs = targets(args.target, args.output)
    todo = writable(pairs, [*args.source, *(args.reference or [])], args)
    skipped = len(pairs) - len(todo)
    if not todo:
        print(f"done: 0 written, {skipped} skipped, 0 face(s) swapped")
        return EXIT_PARTIAL
    sources = [read_image(p, args.max_pixels) for p in args.source]  # unreadable: an error before models load
    references = [read_image(p, args.max_pixels) for p in args.reference or []]
    provenance = provenance_from_args(args, [dest for _, dest in todo])
    with open_swapper(args, args.bundle) as swapper:
        swapper.set_source(face_photos(swapper, args.source, sources, "source"))
        if references:
            swapper.set_reference(face_photos(swapper, args.reference, references, "reference"))
        return _swap_files(swapper, todo, args, skipped, provenance.with_models(swapper))


class _Tally:
    """What ``_swap_files`` did, and where it says so (the progress bar's line, or print)."""

    def __init__(self, skipped: int, report) -> None:
        self.written = self.faces_swapped = 0
        self.skipped = skipped
        self.report = report


def _swap_files(
    swapper: FaceSwapper,
    pairs: list[tuple[Path, Path]],
    args: argparse.Namespace,
    skipped: int,
    provenance: Provenance,
) -> int:
    from tqdm import tqdm

    progress = tqdm(total=len(pairs), unit="image", disable=len(pairs) < 2 or not sys.stderr.isatty())
    tally = _Tally(skipped, progress.write if not progress.disable else print)
    for start in range(0, len(pairs), args.batch):
        chunk, images = [], []
        for source, dest in pairs[start : start + args.batch]:
            try:
                images.append(read_image(source, args.max_pixels))
                chunk.append((source, dest))
            except InputError as exc:
                tally.report(f"{source.name}: skipped, {exc}")
                tally.skipped += 1
        for (source, dest), result in zip(chunk, swapper.swap_batch(images, args.select, args.threshold), strict=True):
            _write(source, dest, result, args, provenance, tally)
        progress.update(len(pairs[start : start + args.batch]))
    progress.close()
    print(f"done: {tally.written} written, {tally.skipped} skipped, {tally.faces_swapped} face(s) swapped")
    return EXIT_PARTIAL if tally.skipped else 0


def _write(
    source: Path, dest: Path, result: SwapResult, args: argparse.Namespace, provenance: Provenance, tally: _Tally
) -> None:
    """Write one result (or skip it, or copy the target unchanged: --copy-unchanged) and say so."""
    found, note = len(result.faces), _similarities(result, args.threshold)
    if result.swapped_count:
        try:
            sign = partial(provenance.sign_image, suffix=dest.suffix, target=source, title=str(dest))
            write_image(dest, result.image, provenance.synthetic, finish=sign)
        except OutputError as exc:
            tally.report(f"{source.name}: failed, {exc}")
            tally.skipped += 1
            return
        tally.written += 1
        tally.faces_swapped += result.swapped_count
        tally.report(f"{source.name}: {found} face(s), {result.swapped_count} swapped{note} -> {dest}")
    elif args.copy_unchanged:
        write_image(dest, result.image, synthetic=False)
        tally.written += 1
        tally.report(f"{source.name}: {found} face(s), none selected{note}; copied unchanged -> {dest}")
    else:
        tally.skipped += 1
        tally.report(f"{source.name}: {found} face(s), none selected{note}; skipped (--copy-unchanged writes it as is)")


def _similarities(result: SwapResult, threshold: float) -> str:
    """With --select reference: each face's similarity to the reference, to tune --threshold by."""
    values = [f"{f.similarity:.3f}" for f in result.faces if f.similarity is not None]
    return f" (similarity to the reference: {', '.join(values)}; --threshold {threshold:g})" if values else ""
