"""The ``simswap-trt`` command line. Each command is a module of this package with ``NAME``, ``PARSER`` (its
``add_parser`` keywords), ``add_arguments(parser)`` and ``run(args) -> int``; the option groups they share
are in ``options``, the handlers' shared helpers in ``common``, and in ``support`` what both command-line
tools share (logging, argument types, one-line errors and exit statuses)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from simswap_trt.cli import batch, bench, demo, doctor, info, serve, swap, swap_aligned, verify, video
from simswap_trt.cli.support import add_logging_flags, add_version_flag, run

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

COMMANDS = (swap, demo, swap_aligned, bench, serve, batch, video, doctor, info, verify)  # in --help's order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simswap-trt",
        description="Swap faces with SimSwap bundles (ONNX Runtime on the CPU by default).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_logging_flags(parser)
    add_version_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, **command.PARSER))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if bench.wants(argv):  # the harness belongs to the builder's side
        return bench.forward(argv)
    return run(build_parser(), argv, {command.NAME: command.run for command in COMMANDS if command is not bench})
