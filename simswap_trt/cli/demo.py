"""``simswap-trt demo``: the whole pipeline on public-domain photos (an untrained bundle without --bundle)."""

from __future__ import annotations

import argparse
import shutil
import sys
from functools import partial
from pathlib import Path

import numpy as np

from simswap_trt.bundle import Bundle
from simswap_trt.cache import cache_folder
from simswap_trt.cli.common import open_swapper, provenance_from_args, run_builder
from simswap_trt.cli.options import add_device_flags, add_pipeline_flags, add_runtime_flags, add_signing_flags
from simswap_trt.errors import BundleError, ConfigError, OutputError, SimswapError
from simswap_trt.files import check_output, write_atomic
from simswap_trt.images import encode_image, write_image

NAME = "demo"
PARSER = {
    "help": "run the whole pipeline on bundled public-domain photos",
    "description": "Swap the astronaut (public domain) onto the faces of scikit-image's camera photo (CC0). "
    "Without --bundle an UNTRAINED bundle is created, so the result only shows the pipeline "
    "working, not a real swap.",
}
DEMO_MARKER = ".simswap-demo"  # in a folder the demo wrote; a rerun replaces its outputs there
NAMES = ("camera.png", "two-faces.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, default=None, help="bundle with real weights (default: untrained)")
    parser.add_argument(
        "--output", type=Path, default=Path("simswap-demo"), help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace camera.png / two-faces.png in --output even if the demo did not write them (its own "
        "outputs are always replaced, atomically)",
    )
    add_signing_flags(parser, synthetic_flag=True, credit=False)  # the source is the built-in astronaut photo
    add_pipeline_flags(parser)
    add_runtime_flags(parser, batch=8)
    add_device_flags(parser)


def run(args: argparse.Namespace) -> int:
    try:
        from skimage import data
    except ImportError:
        raise ConfigError("the demo photos come from scikit-image: pip install 'simswap-trt[demo]'") from None
    import cv2

    _check_outputs(args)
    provenance = provenance_from_args(args, NAMES)
    bundle = args.bundle or _untrained_demo_bundle()
    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])  # public domain (NASA)
    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)  # CC0
    both = np.hstack([camera, cv2.flip(astronaut, 1)])
    with open_swapper(args, bundle) as swapper:
        swapper.set_source(astronaut)
        results = swapper.swap_batch([camera, both])
        untrained = swapper.bundle.untrained
        provenance = provenance.with_models(swapper)
    write_atomic(args.output / DEMO_MARKER, b"written by 'simswap-trt demo', which replaces its outputs here\n")
    for name, target, result in zip(NAMES, (camera, both), results, strict=True):
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


def _check_outputs(args: argparse.Namespace) -> None:
    """The demo replaces its own outputs; others only with --overwrite."""
    owned = (args.output / DEMO_MARKER).is_file()  # a folder the demo wrote: its outputs are replaced
    for name in NAMES:
        if not check_output(args.output / name, overwrite=args.overwrite or owned):
            raise OutputError(
                f"{args.output / name} exists and was not written by the demo; pass --overwrite to replace it, "
                "or choose another --output"
            )


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
    if run_builder(["untrained", "--output", str(cache)]) != 0:
        raise BundleError(f"could not create the demo bundle in {cache} (see above); pass --bundle B instead")
    return cache
