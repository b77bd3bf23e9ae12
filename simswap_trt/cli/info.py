"""``simswap-trt info``: describe a bundle (models, graphs, plans) and verify its files."""

from __future__ import annotations

import argparse
from pathlib import Path

from simswap_trt.bundle import Bundle, ModelEntry
from simswap_trt.plans import PlanEntry
from simswap_trt.swapper import UNTRAINED_WARNING

NAME = "info"
PARSER = {"help": "describe a bundle and verify its files"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory")


def run(args: argparse.Namespace) -> int:
    bundle = Bundle.load(args.bundle)
    print(f"bundle     {bundle.root}")
    print(f"crop size  {bundle.crop_size} px, {bundle.alignment} alignment")
    if bundle.untrained:
        print(f"weights    UNTRAINED ({UNTRAINED_WARNING})")
    for role, entry in bundle.models.items():
        _print_model(role, entry)
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


def _print_model(role: str, entry: ModelEntry) -> None:
    source = entry.source.get("checkpoint", "random weights")
    print(f"{role:<10} {entry.file}  {entry.architecture}  {entry.precision}  from {source}")
    if "sha256" in entry.source:
        print(f"{'':<10}   checkpoint sha256 {entry.source['sha256']}")
    for spec in entry.inputs + entry.outputs:
        print(f"{'':<10}   {spec.describe()}")
    if "license" in entry.source:
        print(f"{'':<10}   {entry.source['alignment']} alignment, licence {entry.source['license']}")


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
