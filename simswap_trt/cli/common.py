"""What several command handlers share: the swapper and the provenance the flags ask for, the target and
output pairs of the image commands, the --source / --reference photos, and the builder's command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simswap_trt.errors import ConfigError, InputError, NoFaceError, OutputError
from simswap_trt.files import Inputs, check_output
from simswap_trt.images import IMAGE_SUFFIXES, list_images
from simswap_trt.provenance.signing import Provenance, Signer, mime_type, source_hashes
from simswap_trt.swapper import FaceSwapper, SwapperOptions
from simswap_trt.vision.detect import Scrfd
from simswap_trt.vision.enhance import DEFAULT_ENHANCE_BLEND
from simswap_trt.vision.parsing import FaceParser

EXIT_PARTIAL = 3  # some targets were skipped (no face, unreadable, output exists)


def swapper_options(args: argparse.Namespace, device: int | None = None) -> SwapperOptions:
    """The ``SwapperOptions`` of the runtime, device and enhancer flags (those a command lacks keep their
    defaults), on CUDA ``device`` (default: --device)."""
    return SwapperOptions(
        providers=args.providers,
        threads=args.threads,
        max_batch=args.batch,
        backend=args.backend,
        precision=args.precision,
        device=getattr(args, "device", None) if device is None else device,
        cuda_graphs=getattr(args, "cuda_graphs", False),
        enhance=getattr(args, "enhancer", False),
        enhance_blend=getattr(args, "enhance_blend", DEFAULT_ENHANCE_BLEND),
    )


def open_swapper(args: argparse.Namespace, bundle: Path, device: int | None = None) -> FaceSwapper:
    """The swapper the pipeline flags ask for, on CUDA ``device`` (default: --device, if the command has it)."""
    options = swapper_options(args, device)
    scrfd = getattr(args, "scrfd", None)
    # without --scrfd the swapper detects with the bundle's detector plan on the device path, else CenterFace
    host = {"providers": args.providers, "device": options.device}
    host = {"backend": "openvino"} if args.backend == "openvino" else host
    detector = Scrfd(scrfd, threads=args.threads, **host) if scrfd else None
    parsing = getattr(args, "parsing_model", None)
    parser = FaceParser(parsing, threads=args.threads, **host) if parsing else None
    return FaceSwapper.from_bundle(bundle, options, detector=detector, parser=parser)


def provenance_from_args(args: argparse.Namespace, outputs: Sequence[Path | str] = ()) -> Provenance:
    """The run's ``Provenance`` from the flags (signer checked here, before any model loads); each of
    ``outputs`` must be a format a manifest can be embedded in when signing."""
    if (args.sign_cert is None) != (args.sign_key is None):
        raise ConfigError("--sign-cert and --sign-key go together: give the certificate chain and its private key")
    signer = Signer.from_files(args.sign_cert, args.sign_key) if args.sign_cert else Signer.from_env()
    if signer is not None:
        for output in outputs:
            mime_type(Path(str(output)).suffix)
    credit = getattr(args, "credit_source", False) and signer is not None
    sources = source_hashes(args.source) if credit else ()
    return Provenance(not args.no_synthetic_tag, signer, sources=sources)


def require_reference(args: argparse.Namespace) -> None:
    """--select reference needs --reference."""
    if args.select == "reference" and not args.reference:
        raise ConfigError("--select reference needs --reference IMAGE (the person to replace)")


def face_photos(swapper: FaceSwapper, paths: Sequence[Path], images: list[np.ndarray], what: str) -> list:
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


def targets(target: Path, output: Path) -> list[tuple[Path, Path]]:
    """The (input, output) pairs of --target and --output: two files, or two folders."""
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


def writable(pairs: list[tuple[Path, Path]], inputs: Sequence[Path], args: argparse.Namespace) -> list:
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


def run_builder(argv: Sequence[str]) -> int:
    """Run a ``simswap-build`` command in a child process: the runtime never imports the builder (which
    may need torch), it only uses its command line."""
    return subprocess.call([sys.executable, "-m", "simswap_build.cli", *argv])
