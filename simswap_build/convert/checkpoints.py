"""Read official SimSwap checkpoints into validated numpy state_dicts.

* Generator ``.pth`` files are plain state_dicts (torch zip or legacy format); they are read with
  ``torch.load(weights_only=True)``, so they can hold nothing but tensors and containers.
* ``arcface_checkpoint.tar`` is a whole pickled module (``models.arcface_models.ResNet`` in the zip
  format) or, for the older file, a training dict whose ``'model'`` is a ``DataParallel``; both are read
  with the restricted unpickler in ``safe_pickle`` and flattened into a state_dict.

Every load is strict: the keys and shapes must be exactly those of the detected (or requested)
architecture; only a missing ``num_batches_tracked`` is tolerated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simswap_build.convert import safe_pickle
from simswap_build.convert.architectures import (
    ArcFaceConfig,
    Family,
    GeneratorConfig,
    arcface_keys,
    compare_keys,
    detect_arcface,
    detect_generator,
    generator_keys,
)
from simswap_build.convert.enhancers import Restorer, detect_restorer
from simswap_trt.errors import CheckpointError, UnsafeCheckpointError

log = logging.getLogger(__name__)

StateDict = dict[str, np.ndarray]


@dataclass(frozen=True)
class LoadedGenerator:
    config: GeneratorConfig
    weights: StateDict


@dataclass(frozen=True)
class LoadedArcFace:
    config: ArcFaceConfig
    weights: StateDict
    source_format: str  # "pickled-module", "training-dict" or "state-dict"


@dataclass(frozen=True)
class LoadedEnhancer:
    restorer: Restorer
    weights: StateDict


def load_tensors(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` of a file that must hold only tensors and containers (generator
    and discriminator state_dicts, training checkpoints). A missing, truncated, damaged or foreign file is
    a one-line ``CheckpointError`` naming it; one that pickles Python objects an ``UnsafeCheckpointError``
    (nothing from it is run)."""
    return _torch_load(Path(path), what, weights_only=True)


def _torch_load(path: Path, what: str, **kwargs: Any) -> Any:
    import torch

    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", **kwargs)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{path}: {exc}") from None
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        if kwargs.get("weights_only") and "weights only load failed" in str(exc).lower():
            raise UnsafeCheckpointError(
                f"refusing {path}: a {what} holds only tensors, but this file pickles Python objects (which could "
                "run code); nothing from it was run"
            ) from None
        raise CheckpointError(
            f"cannot read {path} as a {what}: {_reason(exc)} (truncated, damaged or not a PyTorch file)"
        ) from None


def _reason(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's go on with advice that does not apply)."""
    text = str(exc).strip()
    first = text.splitlines()[0].split(". ")[0][:160] if text else ""
    return first if first and not isinstance(exc, LookupError) else f"{type(exc).__name__} {first}".strip()


def _to_numpy(state: Mapping[str, Any], path: Path) -> StateDict:
    import torch

    out: StateDict = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is {type(value).__name__}, not a tensor")
        array = value.detach().cpu().numpy()
        out[key] = array.astype(np.float32) if array.dtype.kind == "f" else array
    return out


def _shapes(state: StateDict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def load_generator(path: str | Path, arch: str = "auto", family: Family = "official") -> LoadedGenerator:
    """Load a generator ``.pth``. ``arch`` is ``"auto"`` or one of ``"224"``, ``"512"``, ``"train-224"``,
    ``"train-deep"``; ``family`` declares the I/O semantics when ``arch`` is ``"auto"`` (the official and
    training 224 generators have identical keys)."""
    path = Path(path)
    try:
        raw = load_tensors(path, "generator checkpoint")
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(
            f"{exc}. Generator files are plain state_dicts; a whole pickled module is the ArcFace file: "
            "pass it with --arcface"
        ) from None
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a generator state_dict")
    state = _to_numpy(_strip_training_wrappers(raw, path), path)
    try:
        detected = detect_generator(_shapes(state), family)
    except CheckpointError as exc:
        raise CheckpointError(f"{path} is refused as a generator: {exc}") from None
    if arch != "auto":
        requested = GeneratorConfig.from_name(
            arch, ngf=detected.ngf, n_blocks=detected.n_blocks, latent_size=detected.latent_size
        )
        if requested.layout != detected.layout:
            raise CheckpointError(
                f"{path.name} is a {_describe(detected)} checkpoint, but {arch} was requested "
                f"({_describe(requested)}). Use --arch {detected.name} (or --arch auto)."
            )
        detected = requested
    compare_keys(generator_keys(detected), _shapes(state), f"{path.name} (as a {detected.name} generator)")
    log.info("generator %s: %s, ngf=%d, %d ID blocks", path.name, detected.name, detected.ngf, detected.n_blocks)
    return LoadedGenerator(detected, state)


def _describe(config: GeneratorConfig) -> str:
    return {
        "224": "224 (no down0/up0 keys)",
        "512": "512 beta (down0/up0 keys, ngf/2 channels at full resolution)",
        "deep": "training-code Gdeep (down4/up4 keys)",
    }[config.layout]


def _strip_training_wrappers(state: Mapping[str, Any], path: Path) -> Mapping[str, Any]:
    """Accept ``{"netG.*", "netD1.*", ...}`` dicts and ``module.``-prefixed (DataParallel) keys."""
    keys = list(state)
    if any(k.startswith("netG.") for k in keys):
        dropped = [k for k in keys if not k.startswith("netG.")]
        if dropped:
            log.warning("%s: ignoring %d non-generator tensors (e.g. %s)", path.name, len(dropped), dropped[0])
        return {k[len("netG.") :]: v for k, v in state.items() if k.startswith("netG.")}
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_arcface(path: str | Path) -> LoadedArcFace:
    """Load ``arcface_checkpoint.tar`` in either official format (or a plain IR-SE state_dict)."""
    import torch

    path = Path(path)
    raw = _torch_load(path, "ArcFace checkpoint", weights_only=False, pickle_module=safe_pickle)
    source_format = "pickled-module"
    if isinstance(raw, Mapping) and "model" in raw:
        raw, source_format = raw["model"], "training-dict"
    if isinstance(raw, safe_pickle.PickledObject) and raw.pickled_class.endswith(".DataParallel"):
        raw = raw.state["_modules"]["module"]
    if isinstance(raw, safe_pickle.PickledObject):
        if not raw.pickled_class.endswith(".ResNet"):
            raise CheckpointError(f"{path}: expected a pickled ArcFace ResNet, found {raw.pickled_class}")
        state = _module_state_dict(raw)
    elif isinstance(raw, Mapping) and all(isinstance(v, torch.Tensor) for v in raw.values()):
        state, source_format = dict(raw), "state-dict"
    else:
        raise CheckpointError(f"{path}: not an ArcFace checkpoint (found {type(raw).__name__})")
    weights = _to_numpy(state, path)
    try:
        config = detect_arcface(_shapes(weights))
    except CheckpointError as exc:
        raise CheckpointError(
            f"{path} is refused as ArcFace: {exc}. --arcface takes the official arcface_checkpoint.tar"
        ) from None
    compare_keys(arcface_keys(config), _shapes(weights), f"{path.name} (as ArcFace {config.name})")
    log.info("arcface %s: %s (%s)", path.name, config.name, source_format)
    return LoadedArcFace(config, weights, source_format)


def _module_state_dict(module: safe_pickle.PickledObject, prefix: str = "") -> dict[str, Any]:
    """What ``nn.Module.state_dict()`` returns, rebuilt from pickled module state: parameters, persistent
    buffers, then children, recursively."""
    state = module.state
    out: dict[str, Any] = {}
    for name, param in state.get("_parameters", {}).items():
        if param is not None:
            out[prefix + name] = param
    skipped = state.get("_non_persistent_buffers_set", set())
    for name, buf in state.get("_buffers", {}).items():
        if buf is not None and name not in skipped:
            out[prefix + name] = buf
    for name, child in state.get("_modules", {}).items():
        if child is not None:
            out.update(_module_state_dict(child, f"{prefix}{name}."))
    return out


def load_enhancer(path: str | Path) -> LoadedEnhancer:
    """Load a face-restorer checkpoint (``GFPGANv1.4.pth``: the generator under ``params_ema``) with the
    restricted unpickler, detect its architecture and check every key and shape strictly."""
    path = Path(path)
    raw = _torch_load(path, "enhancer checkpoint", weights_only=False, pickle_module=safe_pickle)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a face-restorer checkpoint dict")
    entries = [k for k in ("params_ema", "params") if k in raw]
    state = raw[entries[0]] if entries else raw
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: {entries[0]!r} is a {type(state).__name__}, not a state_dict")
    weights = _to_numpy(state, path)
    try:
        restorer = detect_restorer(_shapes(weights))
    except CheckpointError as exc:
        raise CheckpointError(f"{path} is refused as an enhancer: {exc}. --enhancer takes GFPGANv1.4.pth") from None
    if restorer.checkpoint_key is not None and entries[:1] != [restorer.checkpoint_key]:
        found = f"{entries[0]!r}" if entries else "no such entry"
        raise CheckpointError(
            f"{path}: {restorer.architecture} weights are read from {restorer.checkpoint_key!r} (the EMA generator), "
            f"found {found}; pass the released inference file (GFPGANv1.4.pth)"
        )
    compare_keys(restorer.keys(), _shapes(weights), f"{path.name} (as {restorer.architecture})")
    log.info("enhancer %s: %s, %d px", path.name, restorer.architecture, restorer.size)
    return LoadedEnhancer(restorer, weights)
