"""``simswap-trt video``: swap a source identity onto the faces of a video (audio kept, faces tracked and
smoothed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simswap_trt.cli.common import open_swapper, provenance_from_args, require_reference
from simswap_trt.cli.options import (
    add_device_flags,
    add_pipeline_flags,
    add_runtime_flags,
    add_selection_flags,
    add_signing_flags,
)
from simswap_trt.cli.support import float_between, int_at_least, positive_int
from simswap_trt.errors import OutputError
from simswap_trt.files import check_output
from simswap_trt.video.io import VIDEO_MAX_PIXELS
from simswap_trt.video.pipeline import VideoReport, check_encoding, swap_video
from simswap_trt.video.smoothing import SmoothingOptions
from simswap_trt.video.stream import VideoOptions
from simswap_trt.video.tracking import TrackingOptions

NAME = "video"
DESCRIPTION = """\
Swap the identity of --source onto the faces of the video --target and write --output.

Frames are decoded, swapped in batches and encoded at the same time, with a fixed number of frames in
flight. Faces are tracked from frame to frame: a face the detector misses for up to --max-gap frames is
filled in from its track, the whole frame is searched every --full-detect-every frames and only around
the tracked faces in between (a face entering the picture is found by the next whole-frame search and
then in the frames before it, so it is swapped from the frame where it appears), --select
reference decides once per track (from its first --votes frames), and landmarks are smoothed per track
with a One Euro filter (--min-cutoff, --beta) so the swapped face does not shake. Audio and subtitle
streams are copied unchanged; the video keeps its timestamps (variable frame rate too), size, aspect,
rotation and colour description (range and matrix too) and is encoded with --codec (H.264, --crf 18 by
default; --crf 0 is lossless; .webm: VP9 or AV1). Frames without a selected face are encoded from the
decoded frame unchanged, and in the others only the swapped pixels change. The output appears only when
complete (Ctrl-C, SIGTERM or an error leaves none; a killed run's leftover is removed by the next run). It
is labelled as synthetic in its container tags (comment, DigitalSourceType) unless --no-synthetic-tag; with
--sign-cert/--sign-key (.mp4 or .mov) it carries a signed C2PA manifest ('simswap-trt verify' reads it; see
docs/provenance.md).

examples:
  simswap-trt video --bundle B --source me.jpg --target in.mp4 --output out.mp4
  simswap-trt video --bundle B --source me.jpg --target in.mkv --output clip.mkv --start 60 --duration 10
  simswap-trt video --bundle B --source me.jpg --target in.mp4 --output out.mp4 \\
                    --select reference --reference actor.jpg --max-gap 5 --beta 8

exit status: 0 written; 3 written, but damaged input packets were skipped or the input ended before the
frames its header declares (truncated); 1 nothing written; 130 Ctrl-C, 143 SIGTERM (nothing written)."""
PARSER = {
    "help": "swap a source identity onto the faces of a video (audio kept, faces tracked and smoothed)",
    "description": DESCRIPTION,
    "formatter_class": argparse.RawDescriptionHelpFormatter,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    parser.add_argument("--source", type=Path, nargs="+", required=True, help="photo(s) of the identity to apply")
    parser.add_argument("--target", type=Path, required=True, help="video to change (anything FFmpeg reads)")
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="output video; .mp4, .mkv, .mov (.mkv takes any subtitle) or .webm (VP9/AV1)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--start", type=float_between(0, 1e9), default=0.0, help="first second to process (default: 0)")
    parser.add_argument(
        "--duration", type=float_between(1e-3, 1e9), default=None, help="seconds to process (default: to the end)"
    )
    parser.add_argument(
        "--codec",
        default=None,
        help="FFmpeg video encoder (default: libx264; for .webm the first of libvpx-vp9, libsvtav1, libaom-av1 "
        "this FFmpeg has)",
    )
    parser.add_argument(
        "--crf",
        type=int_at_least(0),
        default=18,
        help="quality, lower is better: libx264/libx265 0 (lossless) to 51, VP9/AV1 up to 63 (default: 18)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=VIDEO_MAX_PIXELS,
        help="refuse videos whose frames have more pixels, from the stream's header (default: %(default)s, 8K)",
    )
    add_selection_flags(parser, "per frame", tracks=True)
    _add_tracking_flags(parser)
    add_signing_flags(parser, synthetic_flag=True)
    add_pipeline_flags(parser)
    add_runtime_flags(parser, batch=8)
    add_device_flags(parser)


def _add_tracking_flags(parser: argparse.ArgumentParser) -> None:
    """Tracking, whole-frame searches, landmark smoothing and the frames queued between stages."""
    video, tracking, smoothing = VideoOptions(), TrackingOptions(), SmoothingOptions()
    parser.add_argument(
        "--votes",
        type=int,
        default=video.votes,
        help="detections per track that decide --select reference (default: %(default)s)",
    )
    parser.add_argument(
        "--max-gap",
        type=int_at_least(0),
        default=tracking.max_gap,
        help="frames a tracked face may be missed by the detector and still be swapped (default: %(default)s)",
    )
    parser.add_argument(
        "--full-detect-every",
        type=positive_int,
        default=video.full_detect_every,
        help="search the whole frame for faces every N frames, in between only around the tracked faces, "
        "which is much cheaper; a face entering the frame is found at the next whole-frame search and then "
        "searched for in the frames before it (held for that: N-1 at most); 1: every frame "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--min-cutoff",
        type=float_between(1e-3, 1e3),
        default=smoothing.min_cutoff,
        help="One Euro cutoff at rest, Hz: lower removes more jitter (default: %(default)s)",
    )
    parser.add_argument(
        "--beta",
        type=float_between(0, 1e3),
        default=smoothing.beta,
        help="One Euro speed coefficient: higher follows fast moves with less lag (default: %(default)s)",
    )
    parser.add_argument("--no-smoothing", action="store_true", help="use the raw detector landmarks")
    parser.add_argument(
        "--window", type=positive_int, default=video.window, help="frames queued between stages (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    require_reference(args)
    options = VideoOptions(
        select=args.select,
        threshold=args.threshold,
        votes=args.votes,
        batch=args.batch,
        window=args.window,
        full_detect_every=args.full_detect_every,
        tracking=TrackingOptions(max_gap=args.max_gap),
        smoothing=SmoothingOptions(min_cutoff=args.min_cutoff, beta=args.beta, enabled=not args.no_smoothing),
    )
    codec = check_encoding(args.output, args.codec, args.crf)
    if not check_output(args.output, [args.target], args.overwrite):
        raise OutputError(f"{args.output} exists; pass --overwrite to replace it")
    provenance = provenance_from_args(args, [args.output])
    swapper = open_swapper(args, args.bundle)
    swapper.set_source(args.source)
    if args.reference:
        swapper.set_reference(args.reference)
    bar = tqdm(unit="frame", disable=not sys.stderr.isatty())

    def progress(done: int, total: int | None) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = swap_video(
            swapper,
            args.target,
            args.output,
            options,
            start=args.start,
            duration=args.duration,
            codec=codec,
            crf=args.crf,
            overwrite=args.overwrite,
            progress=progress,
            max_pixels=args.max_pixels,
            provenance=provenance.with_models(swapper),
        )
    finally:
        bar.close()
    return _report(report, args)


def _report(report: VideoReport, args: argparse.Namespace) -> int:
    """The summary; 3 when damaged packets were skipped or the input was truncated."""
    print(
        f"done: {report.frames} frames, {report.frames_swapped} with a swapped face, {report.tracks} track(s), "
        f"{report.bridged} face(s) bridged, {report.fps:.1f} fps -> {args.output}"
    )
    status = 0
    if report.damaged:
        print(f"{report.damaged} damaged video packet(s) could not be decoded and were skipped")
        status = 3
    if report.frames_missing:
        print(
            f"{args.target} declares {report.frames_declared} frames and only {report.frames} could be read "
            "(truncated or damaged); the output has those"
        )
        status = 3
    return status
