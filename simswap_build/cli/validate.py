"""``simswap-build validate``: fidelity of a bundle's reduced-precision graphs against FP32 on held-out faces."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from simswap_build.convert.bundle_writer import rewrite_manifest
from simswap_build.precision import calibration, fidelity
from simswap_trt.bundle import DEFAULT_BACKENDS, Bundle
from simswap_trt.cli.support import positive_int
from simswap_trt.engines.openvino import bf16_supported, openvino_available
from simswap_trt.errors import InputError, OutputError
from simswap_trt.files import check_output, write_atomic
from simswap_trt.images import list_images

NAME = "validate"
HELP = (
    "fidelity of a bundle's FP16/INT8 graphs (ONNX Runtime and OpenVINO) and of BF16 (OpenVINO) vs FP32 "
    "on held-out faces (exit 1 if a goal fails)"
)
DESCRIPTION = (
    "PSNR and max abs error of generator outputs, ArcFace cosine, the identity cosine of the "
    "swaps against the source and against the FP32 swap, per precision, as means and per-face minima, on "
    "faces from --images (use photos that were not used for calibration). The goals (the INT8 recipe's "
    "recorded ones, FP16 >= 45 dB, BF16 >= 45 dB and ArcFace cosine >= 0.999) must hold on the worst face. "
    "With OpenVINO installed, INT8 is also run on OpenVINO's integer kernels and BF16 on CPUs that have it."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory")
    parser.add_argument("--images", type=Path, required=True, help="folder of held-out photos with faces")
    parser.add_argument("--limit", type=positive_int, default=32, help="at most this many images, >= 1 (default 32)")
    parser.add_argument(
        "--backend",
        choices=("all", "onnxruntime", "openvino"),
        default="all",
        help="whose rows to report: ONNX Runtime's fp16/int8, OpenVINO's int8/bf16, or all (default). With "
        "openvino, BF16 is checked even on a bundle without FP16/INT8 graphs",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the report as JSON (never inside the bundle or over a photo)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument(
        "--set-default",
        choices=("fp16", "int8", "bf16"),
        default=None,
        help="mark this precision as the bundle's default on each CPU backend where it met its goals here "
        "(ONNX Runtime: fp16, int8; OpenVINO: int8, bf16); the runtime then runs it when --precision is not "
        "given. A backend where it fails loses its default",
    )


def run(args: argparse.Namespace) -> int:
    bundle = Bundle.load(args.bundle)
    bf16 = openvino_available() and bf16_supported()  # BF16 runs here: OpenVINO and a CPU with BF16 instructions
    if not bundle.variants and (args.backend != "openvino" or not bf16):
        hint = " (or check BF16 alone with --backend openvino)" if bf16 and args.backend != "openvino" else ""
        raise InputError(
            f"{args.bundle} has no FP16 / INT8 graphs to validate: add them with 'simswap-build precision'{hint}"
        )
    if args.json:
        calibration.calibration_files(args.images)  # the folder must hold photos
        _check_report_output(args.json, bundle, list_images(args.images), args.overwrite)
    crops = calibration.calibration_crops(args.images, bundle.alignment, bundle.crop_size, limit=args.limit)
    enhancer_crops = None
    if bundle.enhancer is not None:  # the same faces, aligned as the enhancer takes them
        alignment = bundle.enhancer.source["alignment"]
        size = fidelity.enhancer_size(bundle)
        enhancer_crops = calibration.calibration_crops(args.images, alignment, size, limit=args.limit)
    backends = ("onnxruntime", "openvino") if args.backend == "all" else (args.backend,)
    report = fidelity.fidelity_report(bundle.root, crops, backends, enhancer_crops)
    fidelity.print_report(report)
    if args.json:
        write_atomic(args.json, (json.dumps(report, indent=2) + "\n").encode())
    met = fidelity.meets_goals(report)  # the enhancer's rows too
    if args.set_default:
        met = set_default(bundle, report, args.set_default, backends) and met
    return 0 if met else 1


def _check_report_output(path: Path, bundle: Bundle, images: Sequence[Path], overwrite: bool) -> None:
    """A report goes neither into the bundle (its manifest and graphs are inputs) nor over an input photo."""
    if path.resolve().is_relative_to(bundle.root.resolve()):
        raise OutputError(f"{path} is inside the bundle {bundle.root}; write the report elsewhere (--json)")
    if not check_output(path, images, overwrite=overwrite):
        raise OutputError(f"{path} exists; pass --overwrite to replace it, or choose another --json")


def set_default(bundle: Bundle, report: dict, precision: str, backends: Sequence[str]) -> bool:
    """Mark ``precision`` as the bundle's default on each of ``backends`` whose held-out row met its goals (a
    backend whose row failed loses its default); print what was set. False when no backend met them."""
    defaults = dict(bundle.default_precision)
    set_on = []
    for backend in backends:
        row = report["precisions"].get(precision if backend == "onnxruntime" else f"{precision}/{backend}")
        if row is None or precision not in DEFAULT_BACKENDS[backend]:
            continue
        if not row["meets_goals"]:
            if defaults.pop(backend, None) is not None:
                print(f"{backend}: the default precision was removed ({precision} failed its goals)")
            continue
        defaults[backend] = {
            "precision": precision,
            "gate": row["goals"],
            "measured": {k: row[k] for k in row["goals"]},
            "faces": report["faces"],
            "set_by": "simswap-build validate",
        }
        set_on.append(backend)
    rewrite_manifest(replace(Bundle.load(bundle.root), default_precision=defaults))
    if not set_on:
        print(f"{precision} is not the default on any backend: it met its goals on none of {', '.join(backends)}")
        return False
    print(f"{precision} is now the bundle's default on {', '.join(set_on)} (--precision fp32 still runs FP32)")
    return True
