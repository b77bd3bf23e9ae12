"""ONNX graph of a bundle → serialized TensorRT plan, for TensorRT 11.x and 10.x (JetPack 6 ships 10.3).

Both generations build a *strongly typed* network: the precision is whatever the ONNX graph says (FP32,
FP16 casts, INT8 Q/DQ), so no precision flags or calibrators are used. On 10.x the network is created
with the ``STRONGLY_TYPED`` flag; on 11.x strong typing is the only mode and the flag mask is 0. The
generation is told apart by ``BuilderFlag.FP16``, which 11.0 removed.

The build sets one optimization profile over the dynamic batch axis, reuses and updates a timing cache
keyed by GPU and TensorRT version, shows TensorRT's progress monitor, keeps the build log next to the
plan, and records everything about the plan in the bundle manifest.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from simswap_build.convert.bundle_writer import rewrite_manifest
from simswap_trt import cuda
from simswap_trt.bundle import Bundle
from simswap_trt.errors import BuildError, BundleError, ConfigError, OutputError
from simswap_trt.files import check_output, ensure_folder, write_atomic
from simswap_trt.plans import HARDWARE_LEVELS, PlanEntry
from simswap_trt.schema import sha256_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    """Engine build settings. Batch defaults suit batched swaps: kernels tuned for 8, up to 32 faces."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_mib: int | None = None  # None: TensorRT's default (the device's memory)
    version_compatible: bool = False  # runnable by newer runtimes of the same major and by tensorrt_lean
    exclude_lean_runtime: bool = False  # VC plans only: leave the lean runtime out of the plan
    hardware_compatibility: str = "none"  # or "ampere_plus", "same_compute_capability"
    dla_core: int | None = None  # Jetson: run on this DLA core, GPU fallback for unsupported layers
    progress: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(
                f"batch profile must satisfy 1 <= min <= opt <= max, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if self.hardware_compatibility not in HARDWARE_LEVELS:
            raise ConfigError(f"hardware compatibility must be one of {', '.join(HARDWARE_LEVELS)}")
        if self.exclude_lean_runtime and not self.version_compatible:
            raise ConfigError("--exclude-lean-runtime only applies to --version-compatible plans")
        if self.dla_core is not None:
            self._check_dla()

    def _check_dla(self) -> None:
        """What would place nothing on the DLA (everything would fall back to the GPU) is refused."""
        if not self.min_batch == self.opt_batch == self.max_batch:
            raise ConfigError(
                f"a DLA plan needs a fixed batch (the DLA runs static shapes only), got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}: give --min-batch, --opt-batch and "
                "--max-batch one value (smaller batches are padded up to it), or leave them out for 8"
            )
        if self.version_compatible:
            raise ConfigError("a DLA plan cannot be --version-compatible: TensorRT places no layer on the DLA in one")
        if self.hardware_compatibility != "none":
            raise ConfigError("a DLA plan cannot use --hardware-compatibility: TensorRT places no DLA layer in one")


def is_tensorrt_11(trt: ModuleType) -> bool:
    """TensorRT 11 removed ``BuilderFlag.FP16`` together with weak typing."""
    return not hasattr(trt.BuilderFlag, "FP16")


def import_builder() -> ModuleType:
    try:
        import tensorrt as trt
    except ImportError:
        raise BuildError(
            "building engines needs the full TensorRT (tensorrt with its builder): NVIDIA's package index, an "
            "NGC container or JetPack. The PyPI 'tensorrt' wheels download it from NVIDIA's index at install time."
        ) from None
    if not hasattr(trt, "Builder"):
        raise BuildError(
            f"{trt.__name__} {trt.__version__} has no Builder (a runtime-only TensorRT): install the full TensorRT "
            "(NVIDIA's package index, an NGC container or JetPack) to build plans"
        )
    return trt


def _make_logger(trt: ModuleType, log_file: Path) -> Any:
    """A TensorRT logger that keeps every message in ``log_file`` and forwards warnings and errors."""

    class BuildLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # required: pybind11 interfaces segfault without the base __init__
            self.file = open(log_file, "w", encoding="utf-8")  # noqa: SIM115 - closed by build_plan

        def log(self, severity: Any, msg: str) -> None:
            self.file.write(f"[{severity.name}] {msg}\n")
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)

    return BuildLogger()


def _make_progress_monitor(trt: ModuleType) -> Any:
    """TensorRT's build phases as tqdm bars."""
    from tqdm import tqdm

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.bars[phase_name] = tqdm(total=num_steps, desc=phase_name, leave=False, position=len(self.bars))

        def step_complete(self, phase_name: str, step: int) -> bool:
            self.bars[phase_name].update(step + 1 - self.bars[phase_name].n)
            return True  # keep building

        def phase_finish(self, phase_name: str) -> None:
            self.bars.pop(phase_name).close()

    return Progress()


def _configure(trt: ModuleType, config: Any, options: BuildOptions) -> None:
    """Builder-config flags for portability and placement (precision comes from the graph)."""
    if options.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if options.exclude_lean_runtime:
            config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    if options.hardware_compatibility != "none":
        level = getattr(trt.HardwareCompatibilityLevel, options.hardware_compatibility.upper(), None)
        if level is None:
            raise BuildError(
                f"TensorRT {trt.__version__} has no hardware compatibility level {options.hardware_compatibility!r}"
            )
        config.hardware_compatibility_level = level
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer types in the DLA report
    if options.progress:
        config.progress_monitor = _make_progress_monitor(trt)


def build_plan(
    trt: ModuleType,
    onnx_path: Path,
    options: BuildOptions,
    timing_cache: Path,
    log_file: Path,
    dla_report: dict | None = None,
) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized plan. With a DLA core in
    ``options``, ``dla_report`` (if given) is filled with where the layers run (see ``placement_report``)."""
    logger = _make_logger(trt, log_file)
    try:
        builder = trt.Builder(logger)
        flags = 0 if is_tensorrt_11(trt) else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BuildError(f"TensorRT cannot parse {onnx_path}:\n  " + "\n  ".join(errors))
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            rest = tuple(tensor.shape)[1:]
            profile.set_shape(
                tensor.name, (options.min_batch, *rest), (options.opt_batch, *rest), (options.max_batch, *rest)
            )
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, False)
        _configure(trt, config, options)
        eligible = network_placement(config, network) if options.dla_core is not None else {}
        if eligible and "dla" not in eligible.values():
            raise BuildError(
                f"no layer of {onnx_path.name} can run on DLA core {options.dla_core}: build it without --dla-core"
            )
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BuildError(f"TensorRT failed to build {onnx_path.name}; the build log is {log_file}")
        write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
        if options.dla_core is not None and dla_report is not None:
            layers = inspect_engine(trt, bytes(plan), options.dla_core, logger)
            dla_report.update(placement_report(eligible, layers, options.dla_core, trt.__version__))
        return bytes(plan)
    finally:
        logger.file.close()


# -- where the layers of a DLA plan run --------------------------------------------------------------------
# TensorRT compiles each run of DLA layers into one engine layer named "{ForeignNode[first...last]}" (first and
# last network layer of the subgraph), with "<tensor> to nvm" / "<tensor> from nvm" / "... copy finish" layers
# moving data between GPU and DLA memory; layers that fall back to the GPU keep their names ("a + b" when fused).
DLA_SUBGRAPH = re.compile(r"^\{ForeignNode\[(?P<first>.+?)(?:\.\.\.(?P<last>.+))?\]\}$")
DLA_TRANSFER = re.compile(r" (?:to|from) nvm$| copy finish$")


def network_placement(config: Any, network: Any) -> dict[str, str]:
    """``{network layer name: "dla" | "gpu"}``: whether the builder can place each layer on the DLA."""
    layers = (network.get_layer(i) for i in range(network.num_layers))
    return {layer.name: "dla" if config.can_run_on_DLA(layer) else "gpu" for layer in layers}


def inspect_engine(trt: ModuleType, plan: bytes, dla_core: int, logger: Any) -> list[dict]:
    """The plan's engine layers from TensorRT's engine inspector (JSON), deserialized on ``dla_core``."""
    runtime = trt.Runtime(logger)
    runtime.DLA_core = dla_core
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise BuildError(f"TensorRT could not deserialize the plan it built on DLA core {dla_core}; see the build log")
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    return [layer if isinstance(layer, dict) else {"Name": layer} for layer in info["Layers"]]


def placement_report(eligible: dict[str, str], engine_layers: list[dict], dla_core: int, version: str) -> dict:
    """Which network layers run on the DLA and which fall back to the GPU, from the builder's per-layer
    eligibility and the built engine's layers: an eligible layer that appears in a GPU engine layer fell back
    after all (e.g. DLA's limit on subgraphs per core)."""
    engine, on_gpu = [], set()
    for layer in engine_layers:
        name = layer["Name"]
        subgraph = DLA_SUBGRAPH.match(name)
        if subgraph and eligible.get(subgraph["first"]) == "dla":
            device = "dla"
        elif DLA_TRANSFER.search(name):
            device = "transfer"
        else:
            device = "gpu"
            on_gpu.update(part.strip() for part in name.split(" + "))
        engine.append({"name": name, "type": layer.get("LayerType", ""), "device": device})
    network = {"dla": [], "gpu": []}
    for name, where in eligible.items():
        network["gpu" if where == "gpu" or name in on_gpu else "dla"].append(name)
    return {
        "dla_core": dla_core,
        "tensorrt_version": version,
        "summary": {
            "network_layers_on_dla": len(network["dla"]),
            "network_layers_on_gpu": len(network["gpu"]),
            "dla_subgraphs": sum(layer["device"] == "dla" for layer in engine),
        },
        "network_layers": network,
        "engine_layers": engine,
    }


def describe_dla_report(report: dict, shown: int = 8) -> str:
    """One paragraph for the console: how much runs on the DLA, and the first layers that fall back."""
    summary, gpu = report["summary"], report["network_layers"]["gpu"]
    total = summary["network_layers_on_dla"] + summary["network_layers_on_gpu"]
    text = (
        f"DLA core {report['dla_core']}: {summary['network_layers_on_dla']} of {total} network layers on the DLA "
        f"in {summary['dla_subgraphs']} subgraph(s), {summary['network_layers_on_gpu']} on the GPU"
    )
    if gpu:
        text += ": " + ", ".join(gpu[:shown]) + (f" and {len(gpu) - shown} more" if len(gpu) > shown else "")
    return text


def build_engine(
    bundle_root: str | Path,
    role: str,
    options: BuildOptions = BuildOptions(),
    precision: str = "fp32",
    trt: ModuleType | None = None,
    overwrite: bool = True,
) -> PlanEntry:
    """Build the plan of ``role`` from the bundle's graph on this machine's GPU and register it in the
    bundle's manifest, replacing a plan for the same role, precision, GPU and TensorRT version (with
    ``overwrite=False`` such a plan is an ``OutputError`` before anything is built)."""
    trt = trt or import_builder()
    bundle = Bundle.load(bundle_root)
    if role not in bundle.models:
        raise BundleError(f"{bundle.root} has no {role} model; roles: {', '.join(bundle.models)}")
    model = bundle.model(role, precision)
    if options.dla_core is not None and model.precision not in ("fp16", "int8"):
        raise ConfigError(
            f"the DLA runs FP16 and INT8 layers only, and the {model.precision} {role} graph has none: build "
            f"--precision fp16 or int8 (add them with 'simswap-build precision {bundle.root}')"
        )
    device = cuda.device_info()
    stem = f"{role}.{model.precision}.{device.sm}.trt{trt.__version__}"
    engines = ensure_folder(bundle.root / "engines")
    if not check_output(engines / f"{stem}.plan", overwrite=overwrite):
        raise OutputError(f"{engines / f'{stem}.plan'} exists; pass --overwrite to rebuild it")
    timing_cache = engines / f"timing.{device.sm}.trt{trt.__version__}.cache"
    dla: dict = {}
    plan = build_plan(trt, bundle.path_of(role, precision), options, timing_cache, engines / f"{stem}.build.log", dla)
    write_atomic(engines / f"{stem}.plan", plan)
    if dla:  # next to the plan, and named in its manifest entry
        write_atomic(engines / f"{stem}.dla.json", (json.dumps(dla, indent=2) + "\n").encode())
    else:  # a GPU plan replacing a DLA one: its report no longer describes the plan
        (engines / f"{stem}.dla.json").unlink(missing_ok=True)
    profile = {
        spec.name: tuple(
            (batch, *spec.shape[1:]) for batch in (options.min_batch, options.opt_batch, options.max_batch)
        )
        for spec in model.inputs
    }
    entry = PlanEntry(
        role=role,
        file=f"engines/{stem}.plan",
        sha256=sha256_of(engines / f"{stem}.plan"),
        onnx_sha256=model.sha256,
        precision=model.precision,
        tensorrt_version=trt.__version__,
        version_compatible=options.version_compatible,
        hardware_compatibility=options.hardware_compatibility,
        gpu_name=device.name,
        compute_capability=device.compute_capability,
        profile=profile,
        inputs=model.inputs,
        outputs=model.outputs,
        dla_core=options.dla_core,
        lean_runtime_excluded=options.exclude_lean_runtime,
        extra={"dla_report": f"engines/{stem}.dla.json"} if dla else {},
    )
    register_plan(bundle, entry)
    return entry


def register_variants(bundle: Bundle, graphs: dict, sources: Mapping[tuple[str, str], dict] | None = None) -> Bundle:
    """Save ``{(role, precision): graph}`` as ``<role>.<precision>.onnx`` and add them to the manifest, with
    ``sources[(role, precision)]`` (calibration, goals, recipe) recorded in the entry's source."""

    variants = {role: dict(by) for role, by in bundle.variants.items()}
    for (role, precision), graph in graphs.items():
        file = f"{role}.{precision}.onnx"
        write_atomic(bundle.root / file, graph.SerializeToString())
        base = bundle.models[role]
        source = {"from": base.file, "from_sha256": base.sha256, **(sources or {}).get((role, precision), {})}
        variants.setdefault(role, {})[precision] = replace(
            base, file=file, sha256=sha256_of(bundle.root / file), precision=precision, source=source
        )
    replaced = {precision for _, precision in graphs}  # a default validated on the old graphs no longer holds
    defaults = {b: r for b, r in bundle.default_precision.items() if r["precision"] not in replaced}
    updated = replace(bundle, variants=variants, default_precision=defaults)
    return rewrite_manifest(updated)


def register_plan(bundle: Bundle, entry: PlanEntry) -> Bundle:
    """Rewrite the manifest with ``entry`` added (atomically), replacing a plan at the same file path."""
    plans = tuple(p for p in bundle.plans if p.file != entry.file) + (entry,)
    updated = replace(bundle, plans=plans)
    return rewrite_manifest(updated)
