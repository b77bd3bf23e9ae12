"""``simswap-build``: turn official SimSwap checkpoints into bundles, and check graphs for TensorRT.

One module per command, each with ``NAME``, ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> int``; option groups that several commands share are in ``options``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from simswap_build.cli import (
    add_enhancer,
    bench,
    check,
    convert,
    engine,
    finetune,
    precision,
    train,
    triton_repo,
    untrained,
    validate,
)
from simswap_trt.cli import support as cli_support

COMMANDS = (convert, add_enhancer, untrained, engine, precision, validate, bench, train, finetune, check, triton_repo)

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


def build_parser() -> argparse.ArgumentParser:
    """The ``simswap-build`` parser: global flags, then one sub-command per module of ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="simswap-build",
        description="Convert SimSwap checkpoints into simswap-trt bundles (ONNX graphs).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_support.add_logging_flags(parser)
    cli_support.add_version_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``simswap-build`` with ``argv`` (default: the process's); returns the exit status."""
    return cli_support.run(build_parser(), argv, {command.NAME: command.run for command in COMMANDS})
