"""Write a bundle directory atomically: everything goes into a temporary sibling directory, which is
validated with ``Bundle.load`` and then renamed into place. An existing bundle is replaced only with
``overwrite=True``, and only after the new one is complete."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from simswap_trt.bundle import ALIGNMENTS, BUNDLE_FORMAT, BUNDLE_VERSION, MANIFEST_NAME, Bundle, ModelEntry
from simswap_trt.errors import ConfigError, OutputError
from simswap_trt.files import check_output, replace_folder, staging_folder, write_atomic
from simswap_trt.schema import TensorSpec, sha256_of

_ONNX_TO_NUMPY = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}


@dataclass
class BundleModel:
    """One model to write: its graph, architecture name and provenance (checkpoint file and hash)."""

    graph: onnx.ModelProto
    architecture: str
    precision: str = "fp32"
    source: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, np.ndarray] | None = None  # also saved as safetensors when given


def _specs(values) -> list[dict]:
    out = []
    for value in values:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim]
        out.append(TensorSpec(value.name, _ONNX_TO_NUMPY[tensor.elem_type], tuple(dims)).to_json())
    return out


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("simswap-trt", "onnx", "torch"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def write_bundle(
    root: str | Path,
    models: Mapping[str, BundleModel],
    crop_size: int,
    alignment: str,
    untrained: bool,
    overwrite: bool = False,
) -> Bundle:
    """Write ``models`` (by role) as a bundle at ``root`` and return it loaded and verified."""
    root = Path(root)
    if alignment not in ALIGNMENTS:
        raise ConfigError(f"unknown alignment {alignment!r}; choose one of {', '.join(ALIGNMENTS)}")
    check_bundle_output(root, overwrite=overwrite)
    staging = staging_folder(root)
    try:
        manifest_models = {}
        for role, model in models.items():
            file = f"{role}.onnx"
            write_atomic(staging / file, model.graph.SerializeToString())
            source = dict(model.source)
            if model.weights is not None:
                from safetensors.numpy import save  # save_file would make the file 0600

                weights_file = f"weights/{role}.safetensors"
                write_atomic(
                    staging / weights_file, save({k: np.ascontiguousarray(v) for k, v in model.weights.items()})
                )
                source["weights"] = {"file": weights_file, "sha256": sha256_of(staging / weights_file)}
            manifest_models[role] = {
                "file": file,
                "sha256": sha256_of(staging / file),
                "architecture": model.architecture,
                "precision": model.precision,
                "inputs": _specs(model.graph.graph.input),
                "outputs": _specs(model.graph.graph.output),
                "source": source,
            }
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "crop_size": crop_size,
            "alignment": alignment,
            "untrained": untrained,
            "created_with": _versions(),
            "models": manifest_models,
        }
        write_atomic(staging / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
        Bundle.load(staging)
        replace_folder(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle.load(root, verify_hashes=False)


def check_bundle_output(root: Path, inputs: Sequence[Path] = (), overwrite: bool = False) -> None:
    """Before any work: ``root`` may become a bundle. An existing bundle is replaced only with ``overwrite``;
    an existing folder that is not a bundle, or one holding an input of this run, never."""
    root = Path(root)
    if root.exists():
        if not overwrite:
            raise OutputError(f"{root} already exists; choose another --output or pass --overwrite to replace it")
        if not (root / MANIFEST_NAME).is_file():
            raise OutputError(f"{root} exists and is not a bundle; refusing to replace it: choose another --output")
        for source in inputs:
            if Path(source).resolve().is_relative_to(root.resolve()):
                raise OutputError(f"{source} is inside {root}, which would be replaced: copy it elsewhere first")
    check_output(root / MANIFEST_NAME if root.exists() else root, overwrite=True)


def rewrite_manifest(updated: Bundle) -> Bundle:
    """Replace ``updated.root``'s manifest with ``updated`` (atomically) and return the bundle reloaded."""
    write_atomic(updated.root / MANIFEST_NAME, (json.dumps(updated.to_json(), indent=2) + "\n").encode())
    return Bundle.load(updated.root)


def add_model(
    bundle: Bundle, role: str, graph: onnx.ModelProto, architecture: str, source: Mapping[str, Any]
) -> Bundle:
    """Write ``graph`` into ``bundle`` as ``<role>.onnx`` (atomically), declare it in the manifest under
    ``role`` (replacing a previous one) with its provenance ``source``, and return the bundle reloaded."""
    file = f"{role}.onnx"
    write_atomic(bundle.root / file, graph.SerializeToString())
    entry = ModelEntry(
        role=role,
        file=file,
        sha256=sha256_of(bundle.root / file),
        architecture=architecture,
        precision="fp32",
        inputs=tuple(TensorSpec.from_json(s) for s in _specs(graph.graph.input)),
        outputs=tuple(TensorSpec.from_json(s) for s in _specs(graph.graph.output)),
        source=dict(source),
    )
    return rewrite_manifest(replace(bundle, models={**bundle.models, role: entry}))
