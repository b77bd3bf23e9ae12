"""``simswap-trt``: swap faces with SimSwap bundles from the command line."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from simswap_trt import cli_support
from simswap_trt.backends import BACKENDS, PRECISIONS
from simswap_trt.bundle import Bundle
from simswap_trt.cache import cache_folder
from simswap_trt.cli_support import float_between, positive_int
from simswap_trt.engines import DEFAULT_PROVIDERS
from simswap_trt.errors import BundleError, ConfigError, InputError, NoFaceError, OutputError, SimswapError
from simswap_trt.files import Inputs, check_output, write_atomic
from simswap_trt.images import IMAGE_SUFFIXES, MAX_PIXELS, encode_image, list_images, read_image, write_image
from simswap_trt.plans import PlanEntry
from simswap_trt.provenance.cli import add_signing_flags, provenance_from_args
from simswap_trt.provenance.signing import Provenance
from simswap_trt.swapper import DEFAULT_MATCH_THRESHOLD, SELECT_MODES, UNTRAINED_WARNING, FaceSwapper
from simswap_trt.vision.enhance import DEFAULT_ENHANCE_BLEND

EPILOG = """\
examples:
  simswap-trt demo                                   # the whole pipeline on public-domain photos
  simswap-trt swap --bundle B --source me.jpg --target group.jpg --output out.jpg
  simswap-trt swap --bundle B --source me.jpg --target frames/ --output swapped/ --select largest
  simswap-trt swap --bundle B --source me.jpg --target frames/ --output swapped/ \\
                   --select reference --reference actor.jpg
  simswap-trt swap --bundle B --source me.jpg --target group.jpg --output out.jpg --enhancer   # GFPGAN
  simswap-trt video --bundle B --source me.jpg --target in.mp4 --output out.mp4
  simswap-trt info B
  simswap-trt verify out.jpg --trust-anchors root.pem   # content credentials: signer, models, tampering
  simswap-trt doctor B                               # GPU, CUDA, TensorRT, ONNX Runtime, usable plans
  simswap-trt serve --bundle B --source me.jpg       # Triton Inference Server (PyTriton) on 127.0.0.1
  simswap-trt batch --ray auto --bundle B --source me.jpg --input s3://bucket/in --output s3://bucket/out

Bundles come from 'simswap-build convert' (official checkpoints) or 'simswap-build untrained'.
Images are read and written with OpenCV (BGR); outputs are labelled as synthetic (IPTC digital
source type in XMP or container tags) unless --no-synthetic-tag is given; --sign-cert/--sign-key
sign a C2PA manifest into each, which 'simswap-trt verify' checks (docs/provenance.md).

Outputs: never written over an input of the same run; an existing output is skipped (and
listed) unless --overwrite; files get the modes your umask gives. Errors are one line; --debug
shows the traceback.

exit status: 0 every target was written; 3 some targets were skipped (no face, unreadable,
output exists: see the summary); 1 nothing was done (bad bundle, arguments, source or output)."""

EXIT_PARTIAL = 3


def _info(args: argparse.Namespace) -> int:
    bundle = Bundle.load(args.bundle)
    print(f"bundle     {bundle.root}")
    print(f"crop size  {bundle.crop_size} px, {bundle.alignment} alignment")
    if bundle.untrained:
        print(f"weights    UNTRAINED ({UNTRAINED_WARNING})")
    for role, entry in bundle.models.items():
        source = entry.source.get("checkpoint", "random weights")
        print(f"{role:<10} {entry.file}  {entry.architecture}  {entry.precision}  from {source}")
        if "sha256" in entry.source:
            print(f"{'':<10}   checkpoint sha256 {entry.source['sha256']}")
        for spec in entry.inputs + entry.outputs:
            print(f"{'':<10}   {spec.describe()}")
        if "license" in entry.source:
            print(f"{'':<10}   {entry.source['alignment']} alignment, licence {entry.source['license']}")
    variants = [(role, entry) for role, by in bundle.variants.items() for entry in by.values()]
    for role, entry in variants:
        print(f"{'graph':<10} {entry.file}  {role}  {entry.precision}")
    if not variants:
        print("graphs     FP32 only (FP16 / INT8 graphs: 'simswap-build precision')")
    for plan in bundle.plans:
        print(f"{'plan':<10} {plan.file}  {plan.role}  {_describe_plan(plan)}")
    if not bundle.plans:
        print("plans      none (TensorRT plans: 'simswap-build engine' on the GPU that runs them)")
    print("hashes     verified")
    return 0


def _describe_plan(plan: PlanEntry) -> str:
    major, minor = plan.compute_capability
    parts = [
        plan.precision,
        f"TensorRT {plan.tensorrt_version}",
        f"{plan.gpu_name} (sm_{major}{minor})",
        f"batch {plan.min_batch}-{plan.max_batch}",
    ]
    if plan.version_compatible:
        parts.append("version-compatible")
    if plan.hardware_compatibility != "none":
        parts.append(f"hardware-compatible: {plan.hardware_compatibility}")
    if plan.dla_core is not None:
        parts.append(f"DLA core {plan.dla_core}")
    return ", ".join(parts)


def _doctor(args: argparse.Namespace) -> int:
    import importlib.metadata

    import onnxruntime

    from simswap_trt.backends import usable_plan
    from simswap_trt.doctor import gpu_lines, memory_lines
    from simswap_trt.engines.openvino import openvino_line
    from simswap_trt.engines.tensorrt import import_tensorrt
    from simswap_trt.jetson import doctor_lines  # Jetson release and power mode, GPU memory kind, DLA cores

    gpu = gpu_lines()
    for line in gpu.lines:
        print(line)

    for line in doctor_lines():
        print(line)
    try:
        print(f"cuda-python   {importlib.metadata.version('cuda-bindings')}")
    except importlib.metadata.PackageNotFoundError:
        print("cuda-python   not installed (pip install 'simswap-trt[trt]')")
    try:
        trt, lean = import_tensorrt()
        kind = "lean runtime: version-compatible plans only" if lean else "full: builds and runs plans"
        print(f"TensorRT      {trt.__name__} {trt.__version__} ({kind})")
    except SimswapError as exc:
        print(f"TensorRT      {exc}")
    print(f"ONNX Runtime  {onnxruntime.__version__}, providers: {', '.join(onnxruntime.get_available_providers())}")
    print(f"OpenVINO      {openvino_line()}")
    for root in args.bundles:
        bundle = Bundle.load(root)
        print(f"bundle        {bundle.root} ({len(bundle.plans)} TensorRT plan(s))")
        for role in bundle.models:
            if not gpu.usable:  # no reason to talk about plans: the CPU path is what runs
                print(f"  {role:<11} auto -> ONNX Runtime on the CPU, fp32 graph")
                continue
            try:
                plan = usable_plan(bundle, role)
                print(f"  {role:<11} auto -> TensorRT: {plan.file}")
            except SimswapError as exc:
                print(f"  {role:<11} auto -> ONNX Runtime: {exc}")
        if gpu.usable and bundle.plans:
            print(*memory_lines(bundle.root), sep="\n")
    return 0


def _run_builder(argv: Sequence[str]) -> int:
    """Run a ``simswap-build`` command in a child process: the runtime never imports the builder (which
    may need torch), it only uses its command line."""
    return subprocess.call([sys.executable, "-m", "simswap_build.cli", *argv])


def _verify(args: argparse.Namespace) -> int:
    from simswap_trt.provenance.cli import run_verify

    return run_verify(args)


def _video(args: argparse.Namespace) -> int:
    from simswap_trt.video.cli import run

    return run(args)


def _swapper(args: argparse.Namespace, bundle: Path, device: int | None = None) -> FaceSwapper:
    """The swapper the pipeline flags ask for, on CUDA ``device`` (default: --device, if the command has it)."""
    from simswap_trt.vision.detect import Scrfd
    from simswap_trt.vision.parsing import FaceParser

    device = getattr(args, "device", None) if device is None else device
    scrfd = getattr(args, "scrfd", None)
    # without --scrfd the swapper detects with the bundle's detector plan on the device path, else CenterFace
    host = {"backend": "openvino"} if args.backend == "openvino" else {"providers": args.providers, "device": device}
    detector = Scrfd(scrfd, threads=args.threads, **host) if scrfd else None
    parsing = getattr(args, "parsing_model", None)
    parser = FaceParser(parsing, threads=args.threads, **host) if parsing else None
    return FaceSwapper.from_bundle(
        bundle,
        args.providers,
        args.threads,
        args.batch,
        detector,
        parser,
        args.backend,
        precision=args.precision,
        device=device,
        cuda_graphs=getattr(args, "cuda_graphs", False),
        enhance=getattr(args, "enhancer", False),
        enhance_blend=getattr(args, "enhance_blend", DEFAULT_ENHANCE_BLEND),
    )


def _targets(target: Path, output: Path) -> list[tuple[Path, Path]]:
    if not target.is_dir():
        if not target.exists():
            raise InputError(f"--target {target} does not exist")
        return [(target, output)]
    if output.exists() and not output.is_dir():
        raise OutputError(f"--target is a folder, so --output must be a folder; {output} is a file")
    if not output.exists() and output.suffix.lower() in IMAGE_SUFFIXES:
        raise OutputError(
            f"--target is a folder, so --output must be a folder; {output} is named like an image file: "
            f"give a folder name (e.g. {output.with_suffix('')})"
        )
    if output.resolve() == target.resolve():
        raise OutputError("--output must not be the --target folder: inputs are never overwritten")
    pairs = [(p, output / p.name) for p in list_images(target)]
    if not pairs:
        raise InputError(f"no images in {target} (looked for {' '.join(IMAGE_SUFFIXES)})")
    return pairs


def _writable(pairs: list[tuple[Path, Path]], inputs: Sequence[Path], args: argparse.Namespace) -> list:
    """The (input, output) pairs to process, decided before any model loads: an output that is an input of
    this run or cannot be written is an error; an existing one is skipped unless --overwrite (a single
    output that exists is an error: there would be nothing to do)."""
    todo, everything = [], Inputs([*inputs, *(source for source, _ in pairs)])
    for source, dest in pairs:
        if check_output(dest, everything, args.overwrite):
            todo.append((source, dest))
        elif len(pairs) == 1 and not args.target.is_dir():
            raise OutputError(f"{dest} exists; pass --overwrite to replace it, or choose another --output")
        else:
            print(f"{source.name}: skipped, {dest} exists (--overwrite replaces it)")
    return todo


def _face_photos(swapper: FaceSwapper, paths: Sequence[Path], images: list[np.ndarray], what: str) -> list:
    """The --source / --reference photos: each must show a face, and the largest one is used (said when
    there are several)."""
    for path, faces in zip(paths, swapper.detect(images), strict=True):
        if not faces:
            raise NoFaceError(
                f"no face found in the {what} photo {path}: use a photo where the face is clearly visible "
                "(frontal, at least about 60 px wide)"
            )
        if len(faces) > 1:
            x1, y1, x2, y2 = max(faces, key=lambda d: d.area).box.round().astype(int)
            print(f"{what} {path.name}: {len(faces)} faces; using the largest, at x {x1}-{x2}, y {y1}-{y2}")
    return images


def _swap(args: argparse.Namespace) -> int:
    if args.select == "reference" and not args.reference:
        raise ConfigError("--select reference needs --reference IMAGE (the person to replace)")
    pairs = _targets(args.target, args.output)
    todo = _writable(pairs, [*args.source, *(args.reference or [])], args)
    skipped = len(pairs) - len(todo)
    if not todo:
        print(f"done: 0 written, {skipped} skipped, 0 face(s) swapped")
        return EXIT_PARTIAL
    sources = [read_image(p, args.max_pixels) for p in args.source]  # unreadable: an error before models load
    references = [read_image(p, args.max_pixels) for p in args.reference or []]
    provenance = provenance_from_args(args, [dest for _, dest in todo])
    with _swapper(args, args.bundle) as swapper:
        swapper.set_source(_face_photos(swapper, args.source, sources, "source"))
        if references:
            swapper.set_reference(_face_photos(swapper, args.reference, references, "reference"))
        return _swap_files(swapper, todo, args, skipped, provenance.with_models(swapper))


def _swap_files(
    swapper: FaceSwapper,
    pairs: list[tuple[Path, Path]],
    args: argparse.Namespace,
    skipped: int,
    provenance: Provenance,
) -> int:
    from tqdm import tqdm

    progress = tqdm(total=len(pairs), unit="image", disable=len(pairs) < 2 or not sys.stderr.isatty())
    report = progress.write if not progress.disable else print
    written = faces_swapped = 0
    for start in range(0, len(pairs), args.batch):
        chunk, images = [], []
        for source, dest in pairs[start : start + args.batch]:
            try:
                images.append(read_image(source, args.max_pixels))
                chunk.append((source, dest))
            except InputError as exc:
                report(f"{source.name}: skipped, {exc}")
                skipped += 1
        for (source, dest), result in zip(chunk, swapper.swap_batch(images, args.select, args.threshold), strict=True):
            found, note = len(result.faces), _similarities(result, args.threshold)
            if result.swapped_count:
                try:
                    sign = partial(provenance.sign_image, suffix=dest.suffix, target=source, title=str(dest))
                    write_image(dest, result.image, provenance.synthetic, finish=sign)
                except OutputError as exc:
                    report(f"{source.name}: failed, {exc}")
                    skipped += 1
                    continue
                written += 1
                faces_swapped += result.swapped_count
                report(f"{source.name}: {found} face(s), {result.swapped_count} swapped{note} -> {dest}")
            elif args.copy_unchanged:
                write_image(dest, result.image, synthetic=False)
                written += 1
                report(f"{source.name}: {found} face(s), none selected{note}; copied unchanged -> {dest}")
            else:
                skipped += 1
                report(
                    f"{source.name}: {found} face(s), none selected{note}; skipped (--copy-unchanged writes it as is)"
                )
        progress.update(len(pairs[start : start + args.batch]))
    progress.close()
    print(f"done: {written} written, {skipped} skipped, {faces_swapped} face(s) swapped")
    return EXIT_PARTIAL if skipped else 0


def _similarities(result, threshold: float) -> str:
    """With --select reference: each face's similarity to the reference, to tune --threshold by."""
    values = [f"{f.similarity:.3f}" for f in result.faces if f.similarity is not None]
    return f" (similarity to the reference: {', '.join(values)}; --threshold {threshold:g})" if values else ""


def _read_crop(path: Path, size: int) -> np.ndarray:
    crop = read_image(path)
    if crop.shape[:2] != (size, size):
        raise InputError(
            f"{path} is {crop.shape[1]}x{crop.shape[0]}; this bundle needs aligned crops of {size}x{size} "
            "(align whole photos with 'simswap-trt swap' instead)"
        )
    return crop


def _swap_aligned(args: argparse.Namespace) -> int:
    pairs = _targets(args.target, args.output)
    todo = _writable(pairs, args.source, args)
    skipped = len(pairs) - len(todo)
    if not todo:
        print(f"done: 0 written, {skipped} skipped")
        return EXIT_PARTIAL
    provenance = provenance_from_args(args, [dest for _, dest in todo])
    with FaceSwapper.from_bundle(
        args.bundle,
        args.providers,
        args.threads,
        args.batch,
        backend=args.backend,
        precision=args.precision,
        device=args.device,
        cuda_graphs=args.cuda_graphs,
    ) as swapper:
        swapper.set_source_crops([_read_crop(p, swapper.crop_size) for p in args.source])
        provenance = provenance.with_models(swapper)
        written = 0
        for start in range(0, len(todo), args.batch):
            chunk, crops = [], []
            for source, dest in todo[start : start + args.batch]:
                try:
                    crops.append(_read_crop(source, swapper.crop_size))
                    chunk.append((source, dest))
                except InputError as exc:
                    print(f"{source.name}: skipped, {exc}")
                    skipped += 1
            if crops:
                for (source, dest), image in zip(chunk, swapper.swap_aligned(crops), strict=True):
                    try:
                        sign = partial(provenance.sign_image, suffix=dest.suffix, target=source, title=str(dest))
                        write_image(dest, image, provenance.synthetic, finish=sign)
                    except OutputError as exc:
                        print(f"{source.name}: failed, {exc}")
                        skipped += 1
                        continue
                    written += 1
    print(f"done: {written} written, {skipped} skipped")
    return EXIT_PARTIAL if skipped else 0


DEMO_MARKER = ".simswap-demo"  # in a folder the demo wrote; a rerun replaces its outputs there


def _demo(args: argparse.Namespace) -> int:
    try:
        from skimage import data
    except ImportError:
        raise ConfigError("the demo photos come from scikit-image: pip install 'simswap-trt[demo]'") from None
    import cv2

    names = ("camera.png", "two-faces.png")
    owned = (args.output / DEMO_MARKER).is_file()  # a folder the demo wrote: its outputs are replaced
    for name in names:
        if not check_output(args.output / name, overwrite=args.overwrite or owned):
            raise OutputError(
                f"{args.output / name} exists and was not written by the demo; pass --overwrite to replace it, "
                "or choose another --output"
            )
    provenance = provenance_from_args(args, names)
    bundle = args.bundle or _untrained_demo_bundle()
    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])  # public domain (NASA)
    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)  # CC0
    both = np.hstack([camera, cv2.flip(astronaut, 1)])
    with _swapper(args, bundle) as swapper:
        swapper.set_source(astronaut)
        results = swapper.swap_batch([camera, both])
        untrained = swapper.bundle.untrained
        provenance = provenance.with_models(swapper)
    write_atomic(args.output / DEMO_MARKER, b"written by 'simswap-trt demo', which replaces its outputs here\n")
    for name, target, result in zip(names, (camera, both), results, strict=True):
        dest = args.output / name
        sign = partial(provenance.sign_image, suffix=".png", target=encode_image(target, ".png"), title=str(dest))
        write_image(dest, result.image, provenance.synthetic, finish=sign)
        print(f"{name}: {len(result.faces)} face(s) found, {result.swapped_count} swapped -> {args.output / name}")
    if untrained:
        print(
            "\nTHESE ARE NOT REAL SWAPS: the bundle has untrained random weights, so the faces are noise.\n"
            "Convert the official checkpoints (see README) and run: simswap-trt demo --bundle YOUR_BUNDLE"
        )
    return 0


def _untrained_demo_bundle() -> Path:
    """An untrained official-224 bundle, made once per user and kept in the cache folder."""
    cache = cache_folder("untrained-224")
    try:
        Bundle.load(cache)
        return cache
    except SimswapError:
        pass
    print(f"no --bundle given: creating an UNTRAINED demo bundle in {cache} (once) ...", file=sys.stderr)
    shutil.rmtree(cache, ignore_errors=True)
    if _run_builder(["untrained", "--output", str(cache)]) != 0:
        raise BundleError(f"could not create the demo bundle in {cache} (see above); pass --bundle B instead")
    return cache


def _serve(args: argparse.Namespace) -> int:
    from simswap_trt.serving import MODELS, ServeConfig, check_ports, place_instances, start

    provenance = provenance_from_args(args, ["." + args.image_format])
    config = ServeConfig(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        select=args.select,
        image_format="." + args.image_format,
        synthetic_tag=not args.no_synthetic_tag,
        max_pixels=args.max_pixels,
        provenance=provenance,
    )
    check_ports(config)  # before the engines load: a port in use is known at once
    swappers = [_swapper(args, args.bundle, device) for device in place_instances(args.instances, args.devices)]
    if args.source:
        latent = swappers[0].set_source([read_image(p, args.max_pixels) for p in args.source], names=args.source)
        for swapper in swappers[1:]:
            swapper.source_latent = latent
    triton = start(swappers, config)
    print(
        f"serving {', '.join(MODELS)} on {args.host}: HTTP {args.http_port}, gRPC {args.grpc_port} "
        f"(ready: http://{args.host}:{args.http_port}/v2/health/ready); Ctrl-C or SIGTERM stops"
    )
    try:
        triton.serve()  # until Ctrl-C or SIGTERM (cli_support: both interrupt), which stop it with status 0
    finally:
        triton.stop()  # removes its workspace
    return 0


def _batch(args: argparse.Namespace) -> int:
    from simswap_trt.distributed import INPUT_SUFFIXES, JobOptions, check_outputs, list_inputs, output_for, run_job

    if args.select == "reference" and not args.reference:
        raise ConfigError("--select reference needs --reference IMAGE (the person to replace)")
    inputs = list_inputs(args.input) if not args.input.lower().endswith(INPUT_SUFFIXES) else [args.input]
    if not inputs:
        raise InputError(f"no images or videos in {args.input} (looked for {' '.join(INPUT_SUFFIXES)})")
    provenance = provenance_from_args(args, inputs)
    options = JobOptions(
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
    if args.enhancer:  # a bundle without one is one line before Ray starts, not one failure per actor
        Bundle.load(args.bundle).require_enhancer()
    pairs = [(s, output_for(s, args.output)) for s in inputs]
    check_outputs(pairs, options)  # before the models load and Ray starts
    sources = [read_image(p, args.max_pixels) for p in args.source]
    references = [read_image(p, args.max_pixels) for p in args.reference or []]
    swapper = FaceSwapper.from_bundle(
        args.bundle, args.providers, args.threads, args.batch, backend=args.backend, precision=args.precision
    )
    latent = swapper.set_source(_face_photos(swapper, args.source, sources, "source"))
    reference = (
        swapper.set_reference(_face_photos(swapper, args.reference, references, "reference")) if references else None
    )
    reports = run_job(args.bundle, latent, pairs, options, args.ray, reference)
    counts = {}
    for report in reports:
        counts[report.status] = counts.get(report.status, 0) + 1
        if report.status == "written":
            print(
                f"{report.source}: written -> {report.output} ({report.faces_swapped} swapped){_note(report.message)}"
            )
        elif report.status == "done before":
            print(f"{report.source}: done before -> {report.output} (--overwrite redoes it)")
        else:
            print(f"{report.source}: {report.status}, {report.message}")
    print("done: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return EXIT_PARTIAL if counts.get("failed") or counts.get("skipped") else 0


def _note(message: str) -> str:
    return f"; {message}" if message else ""


def _add_runtime_flags(parser: argparse.ArgumentParser, batch: int) -> None:
    parser.add_argument(
        "--batch", type=positive_int, default=batch, help=f"images per batched call, >= 1 (default: {batch})"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads of ONNX Runtime and OpenVINO, >= 1 (default: all available)",
    )
    parser.add_argument(
        "--providers",
        nargs="+",
        default=list(DEFAULT_PROVIDERS),
        help="ONNX Runtime execution providers, in order; all must be available (default: CPU)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto: TensorRT where the bundle has a plan this machine can run, else the faster CPU backend for "
        "--precision (OpenVINO for int8 and bf16 when installed, ONNX Runtime for fp32 and fp16; logged with -v); "
        "onnxruntime, openvino (pip install 'simswap-trt[openvino]'), tensorrt: that backend, or an error saying "
        "why it cannot run (default: auto)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="fp32, fp16, int8: which of the bundle's graphs to run (from 'simswap-build precision'); bf16: the "
        "FP32 graphs on OpenVINO in BF16, on CPUs with AVX512_BF16 or AMX (checked). On the CPU fp32 unless asked "
        "or the bundle has a validated default ('simswap-build validate --set-default'; --precision fp32 overrides "
        "it); "
        "ONNX Runtime's int8 needs VNNI or AMX (checked). TensorRT: the fastest plan unless asked. "
        "'simswap-build validate' reports each one's fidelity",
    )


def _add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        type=cli_support.int_at_least(0),
        default=None,
        help="CUDA device id for TensorRT, the device path and ONNX Runtime's CUDA/TensorRT providers (when "
        "--providers asks for them), counted among the devices CUDA_VISIBLE_DEVICES leaves visible (default: the "
        "first); 'simswap-trt doctor' lists them",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="device path: replay each batch's preprocess, generator and paste-back as one CUDA graph per batch "
        "size (fewer launches for small batches; each chunk of a batch gets its own TensorRT context)",
    )


def _device_list(text: str) -> list[int]:
    """An argparse type: comma-separated CUDA device ids, e.g. 0,1."""
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated device ids such as 0,1, got {text!r}") from None
    if any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError(f"device ids are whole numbers >= 0, got {text!r}")
    return ids


def _add_selection_flags(parser: argparse.ArgumentParser, largest: str) -> None:
    """--select, --reference and --threshold: which faces to swap (``largest``: where the largest is taken)."""
    parser.add_argument(
        "--select",
        choices=SELECT_MODES,
        default="all",
        help=f"faces to swap: all, the largest {largest}, or those matching --reference (default: all)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        nargs="+",
        default=None,
        help="photo(s) of the person to replace, for --select reference",
    )
    parser.add_argument(
        "--threshold",
        type=float_between(-1.0, 1.0),
        default=DEFAULT_MATCH_THRESHOLD,
        help="minimum cosine similarity to --reference, in [-1, 1] (ArcFace latents; default: %(default)s)",
    )


def _add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scrfd",
        type=Path,
        default=None,
        help="use this SCRFD detector (det_10g.onnx, as the official pipeline) instead of CenterFace",
    )
    parser.add_argument(
        "--parsing-model",
        type=Path,
        default=None,
        help="BiSeNet-style face parser ONNX: blend with a face mask, as the official --use_mask",
    )
    _add_enhancer_flags(parser)


def _add_enhancer_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--enhancer",
        action="store_true",
        help="restore each swapped face with the bundle's face enhancer (GFPGAN v1.4, 512 px FFHQ crops) before "
        "pasting it back; off by default. Add one with 'simswap-build add-enhancer BUNDLE GFPGANv1.4.pth' "
        "(docs/enhancer.md)",
    )
    parser.add_argument(
        "--enhance-blend",
        type=float_between(0.0, 1.0),
        default=DEFAULT_ENHANCE_BLEND,
        help="with --enhancer: share of the restored face in the result, 0-1; 0 leaves the swap unchanged "
        "(serve: the share for requests without an 'enhance' input; 0 enhances only the requests that ask) "
        "(default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simswap-trt",
        description="Swap faces with SimSwap bundles (ONNX Runtime on the CPU by default).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_support.add_logging_flags(parser)
    cli_support.add_version_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    swap = sub.add_parser(
        "swap",
        help="swap a source identity onto faces in images or folders of images",
        description="Detect faces in --target, swap the identity of --source onto the selected ones and write "
        "--output. Several --source images are averaged into one identity. --target and --output are "
        "both files or both folders.",
    )
    swap.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    swap.add_argument("--source", type=Path, nargs="+", required=True, help="photo(s) of the identity to apply")
    swap.add_argument("--target", type=Path, required=True, help="image, or folder of images, to change")
    swap.add_argument("--output", type=Path, required=True, help="output file, or folder (created if missing)")
    _add_selection_flags(swap, "per image")
    swap.add_argument(
        "--copy-unchanged",
        action="store_true",
        help="write targets without a selected face unchanged (default: skip them)",
    )
    swap.add_argument(
        "--no-synthetic-tag",
        action="store_true",
        help="do not label outputs as synthetic (IPTC digital source type in XMP); you remain responsible for "
        "disclosing that they are AI-generated (docs/provenance.md)",
    )
    swap.add_argument(
        "--max-pixels",
        type=positive_int,
        default=MAX_PIXELS,
        help="refuse images larger than this many pixels, >= 1 (default: %(default)s)",
    )
    swap.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: skip them and say so)"
    )
    add_signing_flags(swap)
    _add_pipeline_flags(swap)
    _add_runtime_flags(swap, batch=8)
    _add_device_flag(swap)

    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline on bundled public-domain photos",
        description="Swap the astronaut (public domain) onto the faces of scikit-image's camera photo (CC0). "
        "Without --bundle an UNTRAINED bundle is created, so the result only shows the pipeline "
        "working, not a real swap.",
    )
    demo.add_argument("--bundle", type=Path, default=None, help="bundle with real weights (default: untrained)")
    demo.add_argument("--output", type=Path, default=Path("simswap-demo"), help="output folder (default: %(default)s)")
    demo.add_argument(
        "--overwrite",
        action="store_true",
        help="replace camera.png / two-faces.png in --output even if the demo did not write them (its own "
        "outputs are always replaced, atomically)",
    )
    add_signing_flags(demo, synthetic_flag=True, credit=False)  # the source is the built-in astronaut photo
    _add_pipeline_flags(demo)
    _add_runtime_flags(demo, batch=8)
    _add_device_flag(demo)

    aligned = sub.add_parser(
        "swap-aligned",
        help="swap a source identity onto already aligned face crops",
        description="Like swap, for crops already aligned to the bundle's crop size (no detection, no paste-back).",
    )
    aligned.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    aligned.add_argument("--source", type=Path, nargs="+", required=True, help="aligned crop(s) of the source identity")
    aligned.add_argument("--target", type=Path, required=True, help="aligned target crop, or a folder of them")
    aligned.add_argument("--output", type=Path, required=True, help="output file, or folder (created if missing)")
    aligned.add_argument(
        "--no-synthetic-tag", action="store_true", help="do not label outputs as synthetic (XMP metadata)"
    )
    aligned.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: skip them and say so)"
    )
    add_signing_flags(aligned)
    _add_runtime_flags(aligned, batch=8)
    _add_device_flag(aligned)

    # listed for --help only: main() hands 'bench ...' to 'simswap-build bench ...' before parsing
    sub.add_parser(
        "bench",
        help="benchmark stages, backends and the official-style baseline: runs 'simswap-build bench' "
        "(see 'simswap-trt bench --help')",
    )

    serve = sub.add_parser(
        "serve",
        help="serve swap_image, swap_aligned and identity on Triton Inference Server (PyTriton)",
        description="Start Triton Inference Server with three models: swap_image (encoded image [+ latent] -> "
        "swapped image + faces), swap_aligned (aligned crops + latent -> swapped crops) and identity (image -> "
        "latent). Triton batches requests dynamically; each request succeeds or fails on its own: bad input "
        "gets a one-line 400 error naming the input, a target without a face comes back unchanged (swapped 0). "
        "Requests without a latent use --source. /v2/health/ready answers 200 once every model is loaded; "
        "Ctrl-C or SIGTERM stops. Needs 'simswap-trt[serve]' (PyTriton; NumPy 1.x). Listens on 127.0.0.1 "
        "unless --host says otherwise. Request fields and error replies: docs/serving.md.",
    )
    serve.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    serve.add_argument("--source", type=Path, nargs="*", default=[], help="photo(s) of the default identity")
    serve.add_argument("--host", default="127.0.0.1", help="listen address; 0.0.0.0: all (default: %(default)s)")
    serve.add_argument("--http-port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    serve.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default: %(default)s)")
    serve.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port, 0 for none")
    serve.add_argument("--instances", type=positive_int, default=1, help="swapper instances per model (default: 1)")
    serve.add_argument(
        "--devices",
        type=_device_list,
        default=None,
        help="CUDA device ids for the instances, comma-separated (e.g. 0,1), used round robin (default: every "
        "visible device: with --instances 4 on two GPUs, 0,1,0,1)",
    )
    serve.add_argument(
        "--cuda-graphs", action="store_true", help="device path: replay each batch's sequence as a CUDA graph"
    )
    serve.add_argument(
        "--max-batch", type=positive_int, default=16, help="Triton max_batch_size (default: %(default)s)"
    )
    serve.add_argument(
        "--queue-delay-us",
        type=cli_support.int_at_least(0),
        default=2000,
        help="dynamic batching queue delay in µs (default: %(default)s)",
    )
    serve.add_argument("--select", choices=("all", "largest"), default="all", help="swap_image: faces to swap")
    serve.add_argument("--image-format", choices=("png", "jpg"), default="png", help="swap_image: output encoding")
    serve.add_argument(
        "--no-synthetic-tag", action="store_true", help="do not label returned images as synthetic (XMP metadata)"
    )
    serve.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, help="refuse larger images")
    add_signing_flags(serve, credit=False)  # a request may bring its own identity (latent)
    _add_pipeline_flags(serve)
    _add_runtime_flags(serve, batch=16)

    batch = sub.add_parser(
        "batch",
        help="swap a large folder of images and videos over a Ray cluster (Ray Data)",
        description="Swap --source onto every image and video of --input with a pool of Ray actors, one "
        "FaceSwapper each (one GPU each where the cluster has GPUs). Each failed item is reported and the job "
        "goes on; outputs are written atomically and a rerun skips those already written. Paths may be local "
        "(shared by the nodes) or URIs (s3://, gs://, file://). Videos (.mp4 .mkv .mov .avi .webm) are swapped "
        "whole by one actor as 'simswap-trt video' does (faces tracked and smoothed, audio kept, H.264 at --crf; "
        ".webm as VP9/AV1), "
        "need local or shared paths (not URIs) and 'simswap-trt[video]'; a video without any selected face is "
        "skipped. Needs 'simswap-trt[ray]'.",
    )
    batch.add_argument(
        "--ray",
        nargs="?",
        const=None,
        default=None,
        metavar="ADDRESS",
        help="Ray cluster address (auto, ray://host:10001); without one: RAY_ADDRESS or a new local cluster",
    )
    batch.add_argument("--bundle", type=Path, required=True, help="bundle directory (readable by every node)")
    batch.add_argument("--source", type=Path, nargs="+", required=True, help="photo(s) of the identity to apply")
    batch.add_argument("--input", required=True, help="folder or URI prefix of images and videos (or one file)")
    batch.add_argument("--output", required=True, help="output folder or URI prefix")
    batch.add_argument(
        "--actors",
        type=positive_int,
        default=2,
        help="actors, each with one swapper; fewer (with a warning) where the cluster cannot run them all at once "
        "(default: 2)",
    )
    batch.add_argument(
        "--gpus-per-actor", type=float, default=None, help="default: 1 when the cluster has GPUs, else 0"
    )
    _add_selection_flags(batch, "per image or video frame")
    batch.add_argument("--copy-unchanged", action="store_true", help="write images and videos without a face unchanged")
    batch.add_argument("--overwrite", action="store_true", help="redo items whose output exists")
    batch.add_argument(
        "--no-synthetic-tag", action="store_true", help="do not label outputs as synthetic (XMP, container tags)"
    )
    batch.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, help="refuse larger images")
    batch.add_argument(
        "--crf",
        type=cli_support.int_at_least(0),
        default=18,
        help="quality of the videos: libx264 0 (lossless) to 51, VP9/AV1 up to 63 (default: 18)",
    )
    batch.add_argument(
        "--codec", default=None, help="video encoder (default: libx264; .webm: VP9 or AV1, whichever FFmpeg has)"
    )
    _add_enhancer_flags(batch)
    add_signing_flags(batch)
    _add_runtime_flags(batch, batch=8)

    from simswap_trt.video import cli as video_cli

    video = sub.add_parser(
        "video",
        help="swap a source identity onto the faces of a video (audio kept, faces tracked and smoothed)",
        description=video_cli.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    video_cli.add_arguments(video)
    _add_pipeline_flags(video)
    _add_runtime_flags(video, batch=8)
    _add_device_flag(video)

    doctor = sub.add_parser("doctor", help="what this machine can run: GPU, CUDA, TensorRT, ONNX Runtime, plans")
    doctor.add_argument("bundles", type=Path, nargs="*", help="bundles whose TensorRT plans to check")

    info = sub.add_parser("info", help="describe a bundle and verify its files")
    info.add_argument("bundle", type=Path, help="bundle directory")

    from simswap_trt.provenance import cli as provenance_cli

    verify = sub.add_parser(
        "verify",
        help="check the content credentials (C2PA manifest) of images and videos: signer, models, tampering",
        description=provenance_cli.VERIFY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    provenance_cli.add_verify_arguments(verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if command is not None and argv[command] == "bench":  # the harness belongs to the builder's side
        return _run_builder(argv)
    handlers = {
        "info": _info,
        "swap": _swap,
        "swap-aligned": _swap_aligned,
        "demo": _demo,
        "doctor": _doctor,
        "serve": _serve,
        "batch": _batch,
        "video": _video,
        "verify": _verify,
    }
    return cli_support.run(build_parser(), argv, handlers)


if __name__ == "__main__":
    sys.exit(main())
