"""TensorRT plans in a bundle: their manifest entries and the decision whether a plan can run here.

TensorRT's own errors for a foreign plan are opaque ("Version tag does not match"), and deserializing an
untrusted plan is unsafe, so every rule is checked from the manifest *before* a plan is loaded:

* a plan that is not version-compatible runs only on the exact TensorRT version that built it, and never
  on the lean runtime;
* a version-compatible plan runs on the same or a newer runtime of its major version, and TensorRT 10
  version-compatible plans also run on TensorRT 11 (nothing else crosses major versions);
* without hardware compatibility a plan runs only on its compute capability; ``ampere_plus`` plans run on
  any compute capability >= 8.0;
* the plan must have been built from the bundle's current ONNX graph (its sha256), else it is stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simswap_trt.schema import TensorSpec

HARDWARE_LEVELS = ("none", "ampere_plus", "same_compute_capability")


@dataclass(frozen=True)
class PlanEntry:
    """One serialized TensorRT engine of a bundle, as the manifest declares it."""

    role: str
    file: str
    sha256: str
    onnx_sha256: str
    precision: str
    tensorrt_version: str
    version_compatible: bool
    hardware_compatibility: str
    gpu_name: str
    compute_capability: tuple[int, int]
    profile: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dla_core: int | None = None
    lean_runtime_excluded: bool = False  # built with --exclude-lean-runtime: the lean runtime cannot load it
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def max_batch(self) -> int:
        return min(shapes[2][0] for shapes in self.profile.values())

    @property
    def min_batch(self) -> int:
        return max(shapes[0][0] for shapes in self.profile.values())

    def to_json(self) -> dict:
        return {
            "role": self.role,
            "file": self.file,
            "sha256": self.sha256,
            "onnx_sha256": self.onnx_sha256,
            "precision": self.precision,
            "tensorrt_version": self.tensorrt_version,
            "version_compatible": self.version_compatible,
            "hardware_compatibility": self.hardware_compatibility,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
            "profile": {name: [list(s) for s in shapes] for name, shapes in self.profile.items()},
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "dla_core": self.dla_core,
            "lean_runtime_excluded": self.lean_runtime_excluded,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanEntry:
        return cls(
            role=str(data["role"]),
            file=str(data["file"]),
            sha256=str(data["sha256"]),
            onnx_sha256=str(data["onnx_sha256"]),
            precision=str(data["precision"]),
            tensorrt_version=str(data["tensorrt_version"]),
            version_compatible=bool(data["version_compatible"]),
            hardware_compatibility=str(data["hardware_compatibility"]),
            gpu_name=str(data["gpu_name"]),
            compute_capability=tuple(int(v) for v in data["compute_capability"]),  # type: ignore[arg-type]
            profile={k: tuple(tuple(int(d) for d in s) for s in v) for k, v in data["profile"].items()},
            inputs=tuple(TensorSpec.from_json(s) for s in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(s) for s in data["outputs"]),
            dla_core=data.get("dla_core"),
            lean_runtime_excluded=bool(data.get("lean_runtime_excluded", False)),
            extra=dict(data.get("extra", {})),
        )


@dataclass(frozen=True)
class RuntimeInfo:
    """What this machine offers to a plan."""

    tensorrt_version: str
    lean: bool
    compute_capability: tuple[int, int]
    gpu_name: str


def _version(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(".")[:3] if p.isdigit()]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def plan_problems(entry: PlanEntry, here: RuntimeInfo, onnx_sha256: str | None = None) -> list[str]:
    """Why ``entry`` cannot run on ``here``; empty when it can. ``onnx_sha256`` is the bundle's current
    graph for the plan's role (None skips the staleness check)."""
    problems = []
    built, running = _version(entry.tensorrt_version), _version(here.tensorrt_version)
    runtime_name = f"TensorRT {here.tensorrt_version}{' (lean runtime)' if here.lean else ''}"
    if here.lean and not entry.version_compatible:
        problems.append(f"the plan is not version-compatible, and {runtime_name} runs only version-compatible plans")
    elif here.lean and entry.lean_runtime_excluded:
        problems.append(
            f"the plan was built with --exclude-lean-runtime, so {runtime_name} cannot load it; "
            "rebuild without that flag or install the full tensorrt package"
        )
    elif entry.lean_runtime_excluded and built != running:  # no embedded lean runtime to run it elsewhere
        problems.append(
            f"the plan was built with --exclude-lean-runtime, so only the full TensorRT {entry.tensorrt_version} "
            f"that built it loads it; this machine has {runtime_name}"
        )
    elif not entry.version_compatible and built != running:
        problems.append(
            f"the plan was built with TensorRT {entry.tensorrt_version} and only runs on that "
            f"version; this machine has {runtime_name}"
        )
    elif entry.version_compatible:
        same_major = built[0] == running[0] and running >= built
        if not (same_major or (built[0] == 10 and running[0] == 11)):
            problems.append(
                f"the version-compatible plan from TensorRT {entry.tensorrt_version} cannot run on "
                f"{runtime_name} (same major version, same or newer; or a 10.x plan on 11.x)"
            )
    if entry.hardware_compatibility == "ampere_plus":
        if here.compute_capability < (8, 0):
            problems.append(
                f"the plan needs compute capability >= 8.0 (Ampere or newer); {here.gpu_name} has "
                f"{here.compute_capability[0]}.{here.compute_capability[1]}"
            )
    elif tuple(entry.compute_capability) != tuple(here.compute_capability):
        problems.append(
            f"the plan was built for compute capability {entry.compute_capability[0]}."
            f"{entry.compute_capability[1]} ({entry.gpu_name}); {here.gpu_name} has "
            f"{here.compute_capability[0]}.{here.compute_capability[1]}"
        )
    if onnx_sha256 is not None and entry.onnx_sha256 != onnx_sha256:
        problems.append("the plan was built from a different ONNX graph than the bundle's current one (stale)")
    return problems


def rebuild_command(bundle_root: str, entry: PlanEntry) -> str:
    return f"simswap-build engine {bundle_root} --role {entry.role} --precision {entry.precision}"
