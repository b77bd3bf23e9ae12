"""``simswap-trt``: swap faces with SimSwap bundles from the command line."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simswap_trt import cli_support
from simswap_trt.backends import BACKENDS
from simswap_trt.bundle import Bundle
from simswap_trt.cli_support import float_between, positive_int
from simswap_trt.engines import DEFAULT_PROVIDERS
from simswap_trt.enhance import DEFAULT_ENHANCE_BLEND
from simswap_trt.errors import BundleError, ConfigError, InputError, NoFaceError, OutputError, SimswapError
from simswap_trt.files import Inputs, check_output
from simswap_trt.images import IMAGE_SUFFIXES, MAX_PIXELS, list_images, read_image, write_image
from simswap_trt.swapper import DEFAULT_MATCH_THRESHOLD, SELECT_MODES, UNTRAINED_WARNING, FaceSwapper

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
  simswap-trt doctor B                               # GPU, CUDA, TensorRT, ONNX Runtime, usable plans
  simswap-trt serve --bundle B --source me.jpg       # Triton Inference Server (PyTriton) on 127.0.0.1
  simswap-trt batch --ray auto --bundle B --source me.jpg --input s3://bucket/in --output s3://bucket/out

Bundles come from 'simswap-build convert' (official checkpoints) or 'simswap-build untrained'.
Images are read and written with OpenCV (BGR); outputs are tagged as synthetic unless
--no-synthetic-tag is given.

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
        for spec in entry.inputs + entry.outputs:
            print(f"{'':<10}   {spec.describe()}")
        if "license" in entry.source:
            print(f"{'':<10}   {entry.source['alignment']} alignment, licence {entry.source['license']}")
    print("hashes     verified")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    import importlib.metadata

    import onnxruntime

    from simswap_trt import cuda
    from simswap_trt.backends import usable_plan
    from simswap_trt.engines.tensorrt import import_tensorrt

    def cuda_version(v: int) -> str:
        return f"{v // 1000}.{v % 1000 // 10}"

    try:
        for index in range(max(cuda.device_count(), 1)):  # every visible device, by the id --device takes
            device = cuda.device_info(index)
            print(
                f"{f'GPU {index}':<14}{device.name} ({device.sm}, {device.total_memory / 2**30:.0f} GiB), driver "
                f"CUDA {cuda_version(device.driver_version)}, runtime CUDA {cuda_version(device.runtime_version)}"
            )
    except SimswapError as exc:
        print(f"GPU           none usable: {exc}")
    from simswap_trt.jetson import doctor_lines  # Jetson release and power mode, GPU memory kind, DLA cores

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
    for root in args.bundles:
        bundle = Bundle.load(root)
        print(f"bundle        {bundle.root} ({len(bundle.plans)} TensorRT plan(s))")
        for role in bundle.models:
            try:
                plan = usable_plan(bundle, role)
                print(f"  {role:<11} auto -> TensorRT: {plan.file}")
            except SimswapError as exc:
                print(f"  {role:<11} auto -> ONNX Runtime: {exc}")
    return 0


def _run_builder(argv: Sequence[str]) -> int:
    """Run a ``simswap-build`` command in a child process: the runtime never imports the builder (which
    may need torch), it only uses its command line."""
    return subprocess.call([sys.executable, "-m", "simswap_build.cli", *argv])


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
    detector = Scrfd(scrfd, providers=args.providers, threads=args.threads, device=device) if scrfd else None
    parsing = getattr(args, "parsing_model", None)
    parser = FaceParser(parsing, args.providers, args.threads, device) if parsing else None
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
    with _swapper(args, args.bundle) as swapper:
        swapper.set_source(_face_photos(swapper, args.source, sources, "source"))
        if references:
            swapper.set_reference(_face_photos(swapper, args.reference, references, "reference"))
        return _swap_files(swapper, todo, args, skipped)


def _swap_files(swapper: FaceSwapper, pairs: list[tuple[Path, Path]], args: argparse.Namespace, skipped: int) -> int:
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
            found = len(result.faces)
            if result.swapped_count:
                write_image(dest, result.image, synthetic=not args.no_synthetic_tag)
                written += 1
                faces_swapped += result.swapped_count
                report(f"{source.name}: {found} face(s), {result.swapped_count} swapped -> {dest}")
            elif args.copy_unchanged:
                write_image(dest, result.image)
                written += 1
                report(f"{source.name}: {found} face(s), none selected; copied unchanged -> {dest}")
            else:
                skipped += 1
                report(f"{source.name}: {found} face(s), none selected; skipped (--copy-unchanged writes it as is)")
        progress.update(len(pairs[start : start + args.batch]))
    progress.close()
    print(f"done: {written} written, {skipped} skipped, {faces_swapped} face(s) swapped")
    return EXIT_PARTIAL if skipped else 0


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
        written = 0
        for start in range(0, len(todo), args.batch):
            chunk, crops = [], []
            for source, dest in todo[start : start + args.batch]:
                try:
                    crops.append(_read_crop(source, swapper.crop_size))
                    chunk.append(dest)
                except InputError as exc:
                    print(f"{source.name}: skipped, {exc}")
                    skipped += 1
            if crops:
                for dest, image in zip(chunk, swapper.swap_aligned(crops), strict=True):
                    write_image(dest, image, synthetic=not args.no_synthetic_tag)
                    written += 1
    print(f"done: {written} written, {skipped} skipped")
    return EXIT_PARTIAL if skipped else 0


def _demo(args: argparse.Namespace) -> int:
    try:
        from skimage import data
    except ImportError:
        raise ConfigError("the demo photos come from scikit-image: pip install 'simswap-trt[demo]'") from None
    import cv2

    names = ("camera.png", "two-faces.png")
    for name in names:
        if not check_output(args.output / name, overwrite=args.overwrite):
            raise OutputError(
                f"{args.output / name} exists; pass --overwrite to replace it, or choose another --output"
            )
    bundle = args.bundle or _untrained_demo_bundle()
    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])  # public domain (NASA)
    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)  # CC0
    both = np.hstack([camera, cv2.flip(astronaut, 1)])
    with _swapper(args, bundle) as swapper:
        swapper.set_source(astronaut)
        results = swapper.swap_batch([camera, both])
        untrained = swapper.bundle.untrained
    for name, result in zip(names, results, strict=True):
        write_image(args.output / name, result.image, synthetic=True)
        print(f"{name}: {len(result.faces)} face(s) found, {result.swapped_count} swapped -> {args.output / name}")
    if untrained:
        print(
            "\nTHESE ARE NOT REAL SWAPS: the bundle has untrained random weights, so the faces are noise.\n"
            "Convert the official checkpoints (see README) and run: simswap-trt demo --bundle YOUR_BUNDLE"
        )
    return 0


def _untrained_demo_bundle() -> Path:
    """An untrained official-224 bundle, made once per user and kept in the cache folder."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "simswap-trt" / "untrained-224"
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
    from simswap_trt.serving import MODELS, ServeConfig, place_instances, start

    swappers = [_swapper(args, args.bundle, device) for device in place_instances(args.instances, args.devices)]
    if args.source:
        latent = swappers[0].set_source([read_image(p, args.max_pixels) for p in args.source])
        for swapper in swappers[1:]:
            swapper.source_latent = latent
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
    )
    triton = start(swappers, config)
    print(
        f"serving {', '.join(MODELS)} on {args.host}: HTTP {args.http_port}, gRPC {args.grpc_port} "
        f"(ready: http://{args.host}:{args.http_port}/v2/health/ready); Ctrl-C stops"
    )
    try:
        triton.serve()
    finally:
        triton.stop()
    return 0


def _batch(args: argparse.Namespace) -> int:
    from simswap_trt.distributed import INPUT_SUFFIXES, JobOptions, list_inputs, output_for, run_job

    inputs = list_inputs(args.input) if not args.input.lower().endswith(INPUT_SUFFIXES) else [args.input]
    if not inputs:
        raise InputError(f"no images or videos in {args.input} (looked for {' '.join(INPUT_SUFFIXES)})")
    swapper = FaceSwapper.from_bundle(
        args.bundle, args.providers, args.threads, args.batch, backend=args.backend, precision=args.precision
    )
    latent = swapper.set_source([read_image(p, args.max_pixels) for p in args.source])
    options = JobOptions(
        actors=args.actors,
        batch=args.batch,
        gpus_per_actor=args.gpus_per_actor,
        threads=args.threads,
        backend=args.backend,
        precision=args.precision,
        select=args.select,
        copy_unchanged=args.copy_unchanged,
        synthetic_tag=not args.no_synthetic_tag,
        overwrite=args.overwrite,
        max_pixels=args.max_pixels,
        crf=args.crf,
    )
    reports = run_job(args.bundle, latent, [(s, output_for(s, args.output)) for s in inputs], options, args.ray)
    counts = {}
    for report in reports:
        counts[report.status] = counts.get(report.status, 0) + 1
        if report.status in ("failed", "skipped"):
            print(f"{report.source}: {report.status}, {report.message}")
    print("done: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return EXIT_PARTIAL if counts.get("failed") or counts.get("skipped") else 0


def _add_runtime_flags(parser: argparse.ArgumentParser, batch: int) -> None:
    parser.add_argument(
        "--batch", type=positive_int, default=batch, help=f"images per batched call, >= 1 (default: {batch})"
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads, >= 1 (default: all available)")
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
        help="auto: TensorRT where the bundle has a plan this machine can run, else ONNX Runtime (logged with "
        "-v); tensorrt: an error if it cannot run (default: auto)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default=None,
        help="which of the bundle's graphs to run (from 'simswap-build precision'). ONNX Runtime: fp32 unless "
        "asked; int8 needs a CPU with VNNI or AMX (checked), where its integer kernels compute the graph. "
        "TensorRT: the fastest plan unless asked",
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
    swap.add_argument(
        "--select",
        choices=SELECT_MODES,
        default="all",
        help="faces to swap: all, the largest per image, or those matching --reference (default: all)",
    )
    swap.add_argument(
        "--reference",
        type=Path,
        nargs="+",
        default=None,
        help="photo(s) of the person to replace, for --select reference",
    )
    swap.add_argument(
        "--threshold",
        type=float_between(-1.0, 1.0),
        default=DEFAULT_MATCH_THRESHOLD,
        help="minimum cosine similarity to --reference, in [-1, 1] (ArcFace latents; default: %(default)s)",
    )
    swap.add_argument(
        "--copy-unchanged",
        action="store_true",
        help="write targets without a selected face unchanged (default: skip them)",
    )
    swap.add_argument(
        "--no-synthetic-tag", action="store_true", help="do not tag outputs as synthetic (PNG text / JPEG comment)"
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
    demo.add_argument("--overwrite", action="store_true", help="replace camera.png / two-faces.png in --output")
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
    aligned.add_argument("--no-synthetic-tag", action="store_true", help="do not tag outputs as synthetic")
    aligned.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: skip them and say so)"
    )
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
        "latent). Triton batches requests dynamically. Requests without a latent use --source. Needs "
        "'simswap-trt[serve]' (PyTriton; NumPy 1.x). Listens on 127.0.0.1 unless --host says otherwise.",
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
    serve.add_argument("--no-synthetic-tag", action="store_true", help="do not tag returned images as synthetic")
    serve.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, help="refuse larger images")
    _add_pipeline_flags(serve)
    _add_runtime_flags(serve, batch=16)

    batch = sub.add_parser(
        "batch",
        help="swap a large folder of images and videos over a Ray cluster (Ray Data)",
        description="Swap --source onto every image and video of --input with a pool of Ray actors, one "
        "FaceSwapper each (one GPU each where the cluster has GPUs). Each failed item is reported and the job "
        "goes on; outputs are written atomically and a rerun skips those already written. Paths may be local "
        "(shared by the nodes) or URIs (s3://, gs://, file://). Videos (.mp4 .mkv .mov .avi .webm) are swapped "
        "whole by one actor as 'simswap-trt video' does (faces tracked and smoothed, audio kept, H.264 at --crf), "
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
    batch.add_argument("--actors", type=positive_int, default=2, help="actors, each with one swapper (default: 2)")
    batch.add_argument(
        "--gpus-per-actor", type=float, default=None, help="default: 1 when the cluster has GPUs, else 0"
    )
    batch.add_argument("--select", choices=("all", "largest"), default="all", help="faces to swap (default: all)")
    batch.add_argument("--copy-unchanged", action="store_true", help="write images and videos without a face unchanged")
    batch.add_argument("--overwrite", action="store_true", help="redo items whose output exists")
    batch.add_argument("--no-synthetic-tag", action="store_true", help="do not tag outputs as synthetic")
    batch.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, help="refuse larger images")
    batch.add_argument(
        "--crf",
        type=cli_support.int_at_least(0),
        default=18,
        help="libx264 quality of the videos, 0 lossless (default: 18)",
    )
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
    }
    return cli_support.run(build_parser(), argv, handlers)


if __name__ == "__main__":
    sys.exit(main())
