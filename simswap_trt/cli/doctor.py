"""``simswap-trt doctor``: what this machine can run (GPU, CUDA, TensorRT, ONNX Runtime, OpenVINO) and
which backend each model of the given bundles would get."""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

import onnxruntime

from simswap_trt import backends, doctor, jetson
from simswap_trt.bundle import Bundle
from simswap_trt.engines import openvino as openvino_engine
from simswap_trt.engines import tensorrt as tensorrt_engine
from simswap_trt.errors import SimswapError

NAME = "doctor"
PARSER = {"help": "what this machine can run: GPU, CUDA, TensorRT, ONNX Runtime, plans"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundles", type=Path, nargs="*", help="bundles whose TensorRT plans to check")


def run(args: argparse.Namespace) -> int:
    gpu = doctor.gpu_lines()
    for line in gpu.lines:
        print(line)
    for line in jetson.doctor_lines():  # Jetson release and power mode, GPU memory kind, DLA cores
        print(line)
    _print_libraries()
    for root in args.bundles:
        _print_bundle(Bundle.load(root), gpu.usable)
    return 0


def _print_libraries() -> None:
    try:
        print(f"cuda-python   {importlib.metadata.version('cuda-bindings')}")
    except importlib.metadata.PackageNotFoundError:
        print("cuda-python   not installed (pip install 'simswap-trt[trt]')")
    try:
        trt, lean = tensorrt_engine.import_tensorrt()
        kind = "lean runtime: version-compatible plans only" if lean else "full: builds and runs plans"
        print(f"TensorRT      {trt.__name__} {trt.__version__} ({kind})")
    except SimswapError as exc:
        print(f"TensorRT      {exc}")
    print(f"ONNX Runtime  {onnxruntime.__version__}, providers: {', '.join(onnxruntime.get_available_providers())}")
    print(f"OpenVINO      {openvino_engine.openvino_line()}")


def _print_bundle(bundle: Bundle, gpu_usable: bool) -> None:
    """Which backend ``auto`` gives each model of ``bundle`` here, and the plans' memory on the GPU."""
    print(f"bundle        {bundle.root} ({len(bundle.plans)} TensorRT plan(s))")
    for role in bundle.models:
        if not gpu_usable:  # no reason to talk about plans: the CPU path is what runs
            print(f"  {role:<11} auto -> ONNX Runtime on the CPU, fp32 graph")
            continue
        try:
            plan = backends.usable_plan(bundle, role)
            print(f"  {role:<11} auto -> TensorRT: {plan.file}")
        except SimswapError as exc:
            print(f"  {role:<11} auto -> ONNX Runtime: {exc}")
    if gpu_usable and bundle.plans:
        print(*doctor.memory_lines(bundle.root), sep="\n")
