"""``simswap-build precision``: FP16 and INT8 (Q/DQ) graphs added to a bundle, calibrated on the user's photos."""

from __future__ import annotations

import argparse
from pathlib import Path

from simswap_build.precision import recipe
from simswap_build.precision.goals import Goals, PrecisionGoalError
from simswap_build.precision.split import CHECK_FRACTION, MIN_CALIBRATION, MIN_CHECK
from simswap_trt.bundle import Bundle
from simswap_trt.cli.support import float_between, int_at_least
from simswap_trt.errors import OutputError, SimswapError

NAME = "precision"
HELP = "add FP16 and INT8 (Q/DQ) graphs to a bundle, calibrated on your photos"
DESCRIPTION = (
    "FP16: convolutions in FP16, instance norm / style / normalisations in FP32, FP32 I/O. "
    "INT8: symmetric Q/DQ around convolutions (per-channel weights, zero point 0), calibrated on "
    "the largest face of each image in --images (detected and aligned by the runtime). The faces are "
    "split by content hash into calibration and check faces; the range method and the FP32 fallbacks "
    "are chosen so that the check faces meet the goals below. TensorRT 10.3 and 11.x build both. "
    "Use photos like the footage you will swap (lighting, pose, skin tones), at least a dozen. INT8 needs "
    "a trained bundle (an untrained one is refused at once); the FP16 graphs are written first and kept if "
    "INT8 then fails. Detected faces are cached in the user's cache folder ($SIMSWAP_TRT_CACHE, else "
    "$XDG_CACHE_HOME/simswap-trt or ~/.cache/simswap-trt), never in --images or the bundle."
)
GOALS = (
    "per face, met on a check split of --images that calibration never sees: the check faces' one-sided "
    "normal tolerance bound (mean - k*sd of PSNR in dB and of log(1 - cosine); --coverage of all faces above "
    "it with --confidence) and their worst face must reach each goal. The most sensitive convolutions go "
    "back to FP32 until they do, or the command stops with a report (exit 1)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "example: simswap-build precision B --images my_faces/ --goal-psnr 36"
    parser.add_argument("bundle", type=Path, help="bundle directory")
    parser.add_argument("--images", type=Path, default=None, help="folder of photos with faces (INT8 calibration)")
    parser.add_argument("--precisions", nargs="+", choices=("fp16", "int8"), default=["fp16", "int8"])
    parser.add_argument("--overwrite", action="store_true", help="replace FP16 / INT8 graphs made before")
    goals = parser.add_argument_group("INT8 goals", GOALS)
    _add_goal_arguments(goals)
    _add_search_arguments(goals)


def _add_goal_arguments(goals: argparse._ArgumentGroup) -> None:
    """The goals, the tolerance bound's coverage and confidence, and the check split."""
    default = Goals()
    goals.add_argument(
        "--goal-psnr", type=float, default=default.psnr_db, help=f"generator PSNR vs FP32, dB ({default.psnr_db})"
    )
    goals.add_argument(
        "--goal-cosine", type=float, default=default.cosine, help=f"ArcFace cosine vs FP32 ({default.cosine})"
    )
    goals.add_argument(
        "--coverage",
        type=float_between(0.5, 0.999),
        default=default.coverage,
        help=f"share of faces the bound must hold for ({default.coverage})",
    )
    goals.add_argument(
        "--confidence",
        type=float_between(0.5, 0.999),
        default=default.confidence,
        help=f"confidence of the bound ({default.confidence})",
    )
    goals.add_argument(
        "--check-fraction",
        type=float_between(0.05, 0.95),
        default=CHECK_FRACTION,
        help=f"share of the distinct faces held out as check split ({CHECK_FRACTION}; at least {MIN_CHECK} faces, "
        f"at least {MIN_CALIBRATION} left for calibration: fewer faces are refused)",
    )


def _add_search_arguments(goals: argparse._ArgumentGroup) -> None:
    """How the recipe may reach the goals: FP32 budgets, range method, ArcFace's precision."""
    goals.add_argument(
        "--max-fp32-generator",
        type=int_at_least(0),
        default=None,
        help="most generator convolutions left FP32 (default: half)",
    )
    goals.add_argument(
        "--max-fp32-arcface",
        type=int_at_least(0),
        default=None,
        help="most ArcFace convolutions left FP32 (default: half)",
    )
    goals.add_argument(
        "--range-method",
        choices=("auto", "max", "percentile", "entropy", "mse"),
        default="auto",
        help="activation ranges; auto (default): max (nothing calibration saw is clipped), which holds on unseen "
        "faces; only if max cannot meet the goals within the budget, the clipping method that scores best",
    )
    goals.add_argument(
        "--arcface",
        choices=("auto", "int8", "fp16"),
        default="auto",
        help="ArcFace in the INT8 recipe: auto = INT8 if its bound meets --goal-cosine within its budget, else FP16 "
        "(the source identity is computed once; reference selection runs it per target face)",
    )


def run(args: argparse.Namespace) -> int:
    bundle = Bundle.load(args.bundle)
    existing = sorted({p for by in bundle.variants.values() for p in by} & set(args.precisions))
    if existing and not args.overwrite:
        raise OutputError(f"{args.bundle} already has {', '.join(existing)} graphs; pass --overwrite to replace them")
    goals = Goals(args.goal_psnr, args.goal_cosine, args.coverage, args.confidence)
    budgets = {"generator": args.max_fp32_generator, "arcface": args.max_fp32_arcface}
    try:
        report = recipe.add_precisions(
            args.bundle,
            args.images,
            args.precisions,
            goals,
            budgets,
            args.arcface,
            args.range_method,
            args.check_fraction,
        )
    except PrecisionGoalError as exc:
        print(
            f"int8 {exc.report['metric']}: lower bounds tried "
            + ", ".join(f"{k} FP32: {v['bound']:.4g}" for k, v in exc.report.get("trail", {}).items())
        )
        _say_what_was_kept(args)
        raise
    except SimswapError:
        _say_what_was_kept(args)
        raise
    if report:
        print_int8_report(report)
    print(
        f"wrote {', '.join(args.precisions)} graphs into {args.bundle}; check them with "
        f"'simswap-build validate {args.bundle} --images HELD_OUT_FOLDER'"
    )
    return 0


def _say_what_was_kept(args: argparse.Namespace) -> None:
    """After a failed INT8 recipe: the FP16 graphs written before it stay in the bundle."""
    if "fp16" in args.precisions and "int8" in args.precisions:
        kept = Bundle.load(args.bundle).variants
        files = [by["fp16"].file for by in kept.values() if "fp16" in by]
        if files:
            print(
                f"kept the FP16 graphs written before INT8 failed: {', '.join(files)}; retry INT8 alone with "
                "--precisions int8"
            )


def print_int8_report(report: dict) -> None:
    """The INT8 recipe's report: the split, then per role the goal, the check split's figures and the fallbacks."""
    split, goals = report["split"], report["goals"]
    print(
        f"int8: {split['calibration_faces']} calibration faces, {split['check_faces']} check faces "
        "(split by content hash; calibration never sees the check faces); accepted when the check faces' lower "
        f"tolerance bound ({goals['coverage']:.0%} of faces, {goals['confidence']:.0%} confidence) and worst face "
        "meet the goal"
    )
    for role in ("generator", "arcface"):
        _print_role(role, report[role])


def _print_role(role: str, r: dict) -> None:
    c = r["check"]
    goal = f"{r['metric']} >= {r['goal']}"
    figures = f"bound {c['bound']:.4g} (k {r['bound']['k']:.2f}), worst {c['worst']:.4g}, mean {c['mean']:.4g}"
    tried = ", ".join(f"{k} FP32: {v['bound']:.4g}" for k, v in r.get("trail", {}).items())
    if r.get("graph") == "fp16":
        print(f"  {role}: FP16 ({r['why']}); check split {figures} ({goal})")
        if tried:
            print(f"    INT8 tried ({r['method']} ranges), bounds: {tried}")
    else:
        fallbacks = ", ".join(r["fp32_layers"]) or "none"
        print(
            f"  {role}: {goal} on the check split: met, {figures}, with {len(r['fp32_layers'])} of "
            f"{r['convolutions']} convolutions in FP32 ({fallbacks}); {r['method']} ranges; bounds tried {tried}"
        )
    for backend, f in c.get("backends", {}).items():
        print(f"    on {backend}: bound {f['bound']:.4g}, worst {f['worst']:.4g}, mean {f['mean']:.4g}")
    if "ms_per_face" in r:
        costs = ", ".join(f"{p} {ms:.1f} ms" for p, ms in r["ms_per_face"].items())
        print(f"    reference selection runs ArcFace once per target face: {costs} per face (ONNX Runtime CPU)")
