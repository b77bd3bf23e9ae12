"""A Triton Inference Server model repository for pure-engine serving of a bundle.

``write_triton_repo`` writes, for the generator and ArcFace (and the enhancer, when the bundle has one),
an ``onnxruntime_onnx`` model from the bundle's graphs and, where the bundle has TensorRT plans, a
``tensorrt_plan`` model (several plans of one role become ``cc_model_filenames`` by compute capability).
Each ``config.pbtxt`` carries the batch dimension, dynamic batching, an instance group and the I/O names
and dtypes of the bundle's contract, and is parsed against Triton's ``model_config.proto`` (the compiled
schema tritonclient ships) before it is written.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from simswap_trt.bundle import ENHANCER, ROLES, Bundle
from simswap_trt.engines.base import TensorSpec
from simswap_trt.errors import BuildError, OutputError, SimswapError
from simswap_trt.files import replace_folder, staging_folder, write_atomic
from simswap_trt.plans import PlanEntry

log = logging.getLogger(__name__)

MARKER = ".simswap-triton-repo"  # written into every repository this module makes; only those are replaced

TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
}


class TritonConfigError(BuildError):
    """A ``config.pbtxt`` does not parse against Triton's model configuration schema, or breaks its rules."""


@dataclass(frozen=True)
class RepoOptions:
    """What every exported model gets. ``gpus`` empty: Triton places instances on every visible GPU."""

    max_batch: int = 8
    queue_delay_us: int = 500
    instances: int = 1
    gpus: tuple[int, ...] = ()
    onnx_on_cpu: bool = False  # the onnxruntime_onnx models as KIND_CPU instances
    precision: str = "fp32"  # which of the bundle's ONNX graphs to export


def _tensors(key: str, specs: Sequence[TensorSpec]) -> str:
    rows = []
    for spec in specs:
        if spec.shape[0] != "batch" or spec.dtype not in TRITON_TYPES:
            raise TritonConfigError(f"{spec.describe()} has no batch axis first or no Triton type")
        dims = ", ".join(str(d) for d in spec.shape[1:])
        rows.append(
            f'  {{\n    name: "{spec.name}"\n    data_type: {TRITON_TYPES[spec.dtype]}\n    dims: [ {dims} ]\n  }}'
        )
    return f"{key} [\n" + ",\n".join(rows) + "\n]\n"


def model_config(
    name: str,
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    options: RepoOptions,
    max_batch: int,
    kind: str = "KIND_GPU",
    filenames: dict[str, str] | None = None,
    default_filename: str | None = None,
) -> str:
    """The text of one ``config.pbtxt``."""
    text = f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch}\n'
    text += _tensors("input", inputs) + _tensors("output", outputs)
    text += f"dynamic_batching {{\n  max_queue_delay_microseconds: {options.queue_delay_us}\n}}\n"
    gpus = f"\n    gpus: [ {', '.join(map(str, options.gpus))} ]" if options.gpus and kind == "KIND_GPU" else ""
    text += f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {kind}{gpus}\n  }}\n]\n"
    if default_filename:
        text += f'default_model_filename: "{default_filename}"\n'
    for capability, file in (filenames or {}).items():
        text += f'cc_model_filenames {{\n  key: "{capability}"\n  value: "{file}"\n}}\n'
    return text


def check_config(text: str, where: str = "config.pbtxt"):
    """Parse ``text`` with Triton's ``ModelConfig`` schema and check the rules a server enforces at load
    time that the schema cannot express; returns the parsed message."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise SimswapError("checking Triton configs needs tritonclient: pip install 'simswap-trt[serve]'") from None
    try:
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise TritonConfigError(f"{where} does not parse as a Triton ModelConfig: {exc}") from None
    problems = []
    if not config.name or not (config.platform or config.backend):
        problems.append("a model needs a name and a platform or backend")
    if config.max_batch_size < 0:
        problems.append(f"max_batch_size is {config.max_batch_size}")
    for tensor in [*config.input, *config.output]:
        if not tensor.name or tensor.data_type == model_config_pb2.TYPE_INVALID:
            problems.append(f"tensor {tensor.name!r} has no name or no data_type")
        if not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            problems.append(f"tensor {tensor.name!r} has dims {list(tensor.dims)}")
    for group in config.instance_group:
        if group.count < 1:
            problems.append(f"instance group count is {group.count}")
    if problems:
        raise TritonConfigError(f"{where}: " + "; ".join(problems))
    return config


def _plan_files(plans: Sequence[PlanEntry]) -> tuple[dict[str, str], dict[str, Path]]:
    """cc_model_filenames (compute capability → file in the version folder) and the files to copy."""
    names, copies = {}, {}
    for plan in plans:
        capability = f"{plan.compute_capability[0]}.{plan.compute_capability[1]}"
        if capability in names:
            raise TritonConfigError(
                f"two {plan.role} plans for compute capability {capability}; export one precision (--precision)"
            )
        file = f"model.sm{plan.compute_capability[0]}{plan.compute_capability[1]}.plan"
        names[capability], copies[file] = file, Path(plan.file)
    return names, copies


def _precision_of(bundle: Bundle, role: str, precision: str) -> str:
    """``precision``, except for an enhancer without that graph (INT8 is never made for it): FP32, logged."""
    if role != ENHANCER or precision in ("fp32", *bundle.variants.get(ENHANCER, {})):
        return precision
    log.info("the bundle has no %s enhancer graph: the enhancer is exported in FP32", precision)
    return "fp32"


def _models(bundle: Bundle, options: RepoOptions) -> list[tuple[str, str, dict[str, Path]]]:
    """(model name, config text, {file in version folder: bundle file}) for every exported model."""
    models = []
    for role in (*ROLES, *([ENHANCER] if bundle.enhancer is not None else [])):
        entry = bundle.model(role, _precision_of(bundle, role, options.precision))
        kind = "KIND_CPU" if options.onnx_on_cpu else "KIND_GPU"
        name = f"simswap_{role}_onnx"
        text = model_config(name, "onnxruntime_onnx", entry.inputs, entry.outputs, options, options.max_batch, kind)
        models.append((name, text, {"model.onnx": Path(entry.file)}))
        plans = [p for p in bundle.plans if p.role == role and p.precision == options.precision]
        if not plans:
            log.info("no %s %s TensorRT plan in the bundle: no tensorrt_plan model for it", options.precision, role)
            continue
        names, copies = _plan_files(plans)
        max_batch = min(options.max_batch, *(p.max_batch for p in plans))  # Triton's batch ≤ the profile max
        name = f"simswap_{role}_trt"
        text = model_config(
            name, "tensorrt_plan", plans[0].inputs, plans[0].outputs, options, max_batch, "KIND_GPU", names
        )
        models.append((name, text, copies))
    return models


def write_triton_repo(
    bundle_path: str | Path, output: str | Path, options: RepoOptions = RepoOptions(), overwrite: bool = False
) -> list[Path]:
    """Write the model repository to ``output`` (refused if it exists, unless ``overwrite``); every config
    is checked before anything is written. Returns the paths of the written ``config.pbtxt`` files."""
    bundle = Bundle.load(bundle_path)
    output = Path(output)
    check_repo_output(output, bundle, overwrite)
    models = _models(bundle, options)
    for name, text, _ in models:
        check_config(text, f"{name}/config.pbtxt")
    # build the repository next to its destination, then move it into place in one rename
    staging = staging_folder(output)
    try:
        for name, text, files in models:
            write_atomic(staging / name / "config.pbtxt", text.encode())
            (staging / name / "1").mkdir()
            for target, source in files.items():
                shutil.copyfile(bundle.root / source, staging / name / "1" / target)
        write_atomic(staging / "README.md", readme(bundle, [m[0] for m in models]).encode())
        write_atomic(staging / MARKER, f"model repository written by simswap-build from {bundle.root}\n".encode())
        replace_folder(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [output / name / "config.pbtxt" for name, _, _ in models]


def check_repo_output(output: Path, bundle: Bundle, overwrite: bool) -> None:
    """Before any work: ``output`` may become the repository. An existing folder is replaced only with
    ``overwrite`` and only when it is a repository written here (it holds ``MARKER``): never a bundle,
    never a folder holding the bundle, never any other folder."""
    if not output.exists() and not output.is_symlink():
        return
    if not overwrite:
        raise OutputError(f"{output} exists; choose a new folder or pass --overwrite to replace it")
    if not output.is_dir() or output.is_symlink() or not (output / MARKER).is_file():
        raise OutputError(
            f"{output} exists and is not a model repository written by simswap-build triton-repo (no {MARKER}); "
            "refusing to replace it: choose a new folder"
        )
    if bundle.root.resolve().is_relative_to(output.resolve()):
        raise OutputError(f"the bundle {bundle.root} is inside {output}, which would be replaced: choose a new folder")


def readme(bundle: Bundle, names: Sequence[str]) -> str:
    """How the exported engines are fed: the work the runtime does around them."""
    size = bundle.crop_size
    vc = any(p.version_compatible for p in bundle.plans)
    return f"""# SimSwap model repository (from {bundle.root.name})

Models: {", ".join(names)}. Start Triton with `tritonserver --model-repository <this folder>`{
        " --backend-config=tensorrt,version-compatible=true (the plans are version-compatible)" if vc else ""
    }. TensorRT plans run only on the TensorRT version that built them (or a newer one, for
version-compatible plans) and on their compute capability (`cc_model_filenames`).

These are the bare engines. Pre- and post-processing run outside them, either in the client or in the
Python-backend models of `simswap-trt serve` (`swap_image`, `swap_aligned`, `identity`), which do all of it:

1. Detect faces and their 5 landmarks (CenterFace or SCRFD), then align each face to a {size}x{size} crop
   with the bundle's `{bundle.alignment}` template (a similarity transform, `cv2.warpAffine`).
2. `arcface` (`crop` float32 [N,3,{size},{size}], RGB in [0,1]) gives the source identity `latent` [N,512],
   L2-normalised. Several source photos: average the latents and normalise again.
3. `generator`: `target` float32 [N,3,{size},{size}] RGB in [0,1] and `latent` [N,512] give `swapped`
   [N,3,{size},{size}] RGB in [0,1]. Convert to uint8 with rounding and clipping.
4. Paste each swapped crop back with the inverse transform and a feathered mask.

All tensors have the batch dimension first; Triton's dynamic batcher groups requests up to
`max_batch_size`. The bundle's weights {
        "are UNTRAINED (random): outputs are not face swaps" if bundle.untrained else "keep the licence of their source"
    }.
"""
