"""``simswap-build triton-repo``: a Triton Inference Server model repository of the bundle's engines."""

from __future__ import annotations

import argparse
from pathlib import Path

from simswap_build.tensorrt.triton_repo import RepoOptions, write_triton_repo
from simswap_trt.cli.support import int_at_least

NAME = "triton-repo"
HELP = "a Triton Inference Server model repository of the bundle's engines (ONNX and TensorRT)"
DESCRIPTION = (
    "Write config.pbtxt files (checked against Triton's model configuration schema), the "
    "graphs and plans, and a README on pre/post-processing, for serving the bare engines with "
    "tritonserver. For serving whole images use 'simswap-trt serve'. The schema check needs "
    "tritonclient (pip install 'simswap-trt[serve]')."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory")
    parser.add_argument("output", type=Path, help="model repository folder to create")
    parser.add_argument(
        "--max-batch", type=int_at_least(1), default=8, help="max_batch_size (capped by the plans' profile)"
    )
    parser.add_argument(
        "--queue-delay-us", type=int_at_least(0), default=500, help="dynamic batching queue delay (microseconds)"
    )
    parser.add_argument("--instances", type=int_at_least(1), default=1, help="instances per model (per GPU)")
    parser.add_argument(
        "--gpus", type=int_at_least(0), nargs="+", default=[], help="GPU ids for the instances (default: all)"
    )
    parser.add_argument("--onnx-on-cpu", action="store_true", help="run the ONNX models as CPU instances")
    parser.add_argument("--precision", default="fp32", help="which graphs and plans to export (default: fp32)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a model repository this command wrote before (any other folder, or a bundle, is refused)",
    )


def run(args: argparse.Namespace) -> int:
    options = RepoOptions(
        args.max_batch, args.queue_delay_us, args.instances, tuple(args.gpus), args.onnx_on_cpu, args.precision
    )
    for config in write_triton_repo(args.bundle, args.output, options, args.overwrite):
        print(f"wrote {config} (checked against Triton's model configuration schema)")
    return 0
