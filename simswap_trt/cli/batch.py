"""``simswap-trt batch``: swap a large folder of images and videos over a Ray cluster (Ray Data)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from simswap_trt.bundle import Bundle
from simswap_trt.cli.common import (
    EXIT_PARTIAL,
    face_photos,
    provenance_from_args,
    require_reference,
    swapper_options,
)
from simswap_trt.cli.options import add_enhancer_flags, add_runtime_flags, add_selection_flags, add_signing_flags
from simswap_trt.cli.support import int_at_least, positive_int
from simswap_trt.distributed import INPUT_SUFFIXES, JobOptions, check_outputs, list_inputs, output_for, run_job
from simswap_trt.errors import InputError
from simswap_trt.images import MAX_PIXELS, read_image
from simswap_trt.provenance.signing import Provenance
from simswap_trt.swapper import FaceSwapper

NAME = "batch"
PARSER = {
    "help": "swap a large folder of images and videos over a Ray cluster (Ray Data)",
    "description": "Swap --source onto every image and video of --input with a pool of Ray actors, one "
    "FaceSwapper each (one GPU each where the cluster has GPUs). Each failed item is reported and the job "
    "goes on; outputs are written atomically and a rerun skips those already written. Paths may be local "
    "(shared by the nodes) or URIs (s3://, gs://, file://). Videos (.mp4 .mkv .mov .avi .webm) are swapped "
    "whole by one actor as 'simswap-trt video' does (faces tracked and smoothed, audio kept, H.264 at --crf; "
    ".webm as VP9/AV1), "
    "need local or shared paths (not URIs) and 'simswap-trt[video]'; a video without any selected face is "
    "skipped. Needs 'simswap-trt[ray]'.",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray",
        nargs="?",
        const=None,
        default=None,
        metavar="ADDRESS",
        help="Ray cluster address (auto, ray://host:10001); without one: RAY_ADDRESS or a new local cluster",
    )
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory (readable by every node)")
    parser.add_argument("--source", type=Path, nargs="+", required=True, help="photo(s) of the identity to apply")
    parser.add_argument("--input", required=True, help="folder or URI prefix of images and videos (or one file)")
    parser.add_argument("--output", required=True, help="output folder or URI prefix")
    parser.add_argument(
        "--actors",
        type=positive_int,
        default=2,
        help="actors, each with one swapper; fewer (with a warning) where the cluster cannot run them all at once "
        "(default: 2)",
    )
    parser.add_argument(
        "--gpus-per-actor", type=float, default=None, help="default: 1 when the cluster has GPUs, else 0"
    )
    add_selection_flags(parser, "per image or video frame")
    _add_output_flags(parser)
    add_enhancer_flags(parser)
    add_signing_flags(parser)
    add_runtime_flags(parser, batch=8)


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    """Which outputs are written, and how."""
    parser.add_argument(
        "--copy-unchanged", action="store_true", help="write images and videos without a face unchanged"
    )
    parser.add_argument("--overwrite", action="store_true", help="redo items whose output exists")
    parser.add_argument(
        "--no-synthetic-tag", action="store_true", help="do not label outputs as synthetic (XMP, container tags)"
    )
    parser.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, help="refuse larger images")
    parser.add_argument(
        "--crf",
        type=int_at_least(0),
        default=18,
        help="quality of the videos: libx264 0 (lossless) to 51, VP9/AV1 up to 63 (default: 18)",
    )
    parser.add_argument(
        "--codec", default=None, help="video encoder (default: libx264; .webm: VP9 or AV1, whichever FFmpeg has)"
    )


def run(args: argparse.Namespace) -> int:
    require_reference(args)
    inputs = list_inputs(args.input) if not args.input.lower().endswith(INPUT_SUFFIXES) else [args.input]
    if not inputs:
        raise InputError(f"no images or videos in {args.input} (looked for {' '.join(INPUT_SUFFIXES)})")
    provenance = provenance_from_args(args, inputs)
    options = _job_options(args, provenance)
    if args.enhancer:  # a bundle without one is one line before Ray starts, not one failure per actor
        Bundle.load(args.bundle).require_enhancer()
    pairs = [(s, output_for(s, args.output)) for s in inputs]
    check_outputs(pairs, options)  # before the models load and Ray starts
    sources = [read_image(p, args.max_pixels) for p in args.source]
    references = [read_image(p, args.max_pixels) for p in args.reference or []]
    # the identities are computed here once; the actors open their own swappers (with the enhancer)
    swapper = FaceSwapper.from_bundle(args.bundle, dataclasses.replace(swapper_options(args), enhance=False))
    latent = swapper.set_source(face_photos(swapper, args.source, sources, "source"))
    reference = (
        swapper.set_reference(face_photos(swapper, args.reference, references, "reference")) if references else None
    )
    return _report(run_job(args.bundle, latent, pairs, options, args.ray, reference))


def _job_options(args: argparse.Namespace, provenance: Provenance) -> JobOptions:
    return JobOptions(
        actors=args.actors,
        batch=args.batch,
        gpus_per_actor=args.gpus_per_actor,
        threads=args.threads,
        backend=args.backend,
        precision=args.precision,
        select=args.select,
        threshold=args.threshold,
        copy_unchanged=args.copy_unchanged,
        synthetic_tag=provenance.synthetic,
        signer=provenance.signer,
        sources=provenance.sources,
        overwrite=args.overwrite,
        max_pixels=args.max_pixels,
        crf=args.crf,
        codec=args.codec,
        enhance=args.enhancer,
        enhance_blend=args.enhance_blend,
    )


def _report(reports) -> int:
    """One line per item and a summary; 3 when some item failed or was skipped."""
    counts = {}
    for report in reports:
        counts[report.status] = counts.get(report.status, 0) + 1
        if report.status == "written":
            note = f"; {report.message}" if report.message else ""
            print(f"{report.source}: written -> {report.output} ({report.faces_swapped} swapped){note}")
        elif report.status == "done before":
            print(f"{report.source}: done before -> {report.output} (--overwrite redoes it)")
        else:
            print(f"{report.source}: {report.status}, {report.message}")
    print("done: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return EXIT_PARTIAL if counts.get("failed") or counts.get("skipped") else 0
