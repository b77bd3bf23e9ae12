"""``simswap-build check``: ONNX graphs against TensorRT's ONNX parser rules."""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from simswap_build.tensorrt.compat import TARGETS, check_model
from simswap_trt.bundle import MANIFEST_NAME, Bundle
from simswap_trt.errors import InputError

NAME = "check"
HELP = "check ONNX graphs against TensorRT's ONNX parser rules (exit 1 on problems)"
DESCRIPTION = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="an .onnx file or a bundle directory")
    parser.add_argument(
        "--trt",
        nargs="+",
        choices=tuple(TARGETS),
        default=list(TARGETS),
        help="TensorRT generations to check against (default: all)",
    )


def run(args: argparse.Namespace) -> int:
    failed = 0
    for file in _graph_files(args.path):
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


def _graph_files(path: Path) -> list[Path]:
    """The graph itself, or every graph of a bundle (its models and their precision variants)."""
    if (path / MANIFEST_NAME).is_file():
        bundle = Bundle.load(path)
        files = [bundle.path_of(role) for role in bundle.models]
        return files + [bundle.root / entry.file for by in bundle.variants.values() for entry in by.values()]
    if path.is_file():
        return [path]
    raise InputError(f"{path} is neither an .onnx file nor a bundle folder (no {MANIFEST_NAME})")
