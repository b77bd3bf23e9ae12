"""``FaceSwapper``: the public entry point. Loads a bundle, computes a source identity once, and swaps
batches of aligned target crops with one generator call per batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simswap_trt.bundle import Bundle, contract
from simswap_trt.constants import LATENT_SIZE
from simswap_trt.engines import DEFAULT_PROVIDERS, Engine, OnnxRuntimeEngine
from simswap_trt.errors import BundleError, InputError
from simswap_trt.preprocess import Crops, crops_to_tensor, tensor_to_crops

log = logging.getLogger(__name__)

UNTRAINED_WARNING = "this bundle has UNTRAINED random weights: its outputs are not face swaps"


class FaceSwapper:
    """Swap one source identity onto aligned target crops.

    Images are uint8 BGR (as ``cv2.imread`` returns them). Crops must be aligned the way the bundle's
    ``alignment`` says (multi-pose templates for 224 models, FFHQ for 512) at ``crop_size``.

    Thread safety: one ``FaceSwapper`` may be used from several threads for ``identity`` and
    ``generate``; ``set_source`` changes shared state and should happen before the threads start.
    """

    def __init__(self, bundle: Bundle, generator: Engine, arcface: Engine, max_batch: int = 16) -> None:
        for role, engine in (("generator", generator), ("arcface", arcface)):
            if (engine.inputs, engine.outputs) != contract(role, bundle.crop_size):
                raise BundleError(
                    f"{bundle.root}: the {role} engine's signature "
                    f"{[s.describe() for s in engine.inputs + engine.outputs]} does not match the bundle contract"
                )
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.bundle = bundle
        self.generator = generator
        self.arcface = arcface
        self.max_batch = max_batch
        self.source_latent: np.ndarray | None = None
        if bundle.untrained:
            log.warning(UNTRAINED_WARNING)

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        threads: int | None = None,
        max_batch: int = 16,
    ) -> FaceSwapper:
        """Load a bundle and run it on ONNX Runtime with ``providers`` (CPU by default)."""
        bundle = Bundle.load(path)
        return cls(
            bundle,
            OnnxRuntimeEngine(bundle.path_of("generator"), providers, threads),
            OnnxRuntimeEngine(bundle.path_of("arcface"), providers, threads),
            max_batch,
        )

    @property
    def crop_size(self) -> int:
        return self.bundle.crop_size

    def identity(self, crops: Crops) -> np.ndarray:
        """The identity latent [512] of one or more aligned source crops: each crop's L2-normalised
        ArcFace embedding, averaged over the crops, and L2-normalised again."""
        tensor = crops_to_tensor(crops, self.crop_size)
        latents = np.concatenate(
            [
                self.arcface.run({"crop": tensor[i : i + self.max_batch]})["latent"]
                for i in range(0, len(tensor), self.max_batch)
            ]
        )
        mean = latents.mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def set_source(self, crops: Crops) -> np.ndarray:
        """Compute and keep the source identity used by ``swap_aligned`` when no latent is passed."""
        self.source_latent = self.identity(crops)
        return self.source_latent

    def generate(self, targets: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """Run the generator on float32 [N,3,S,S] targets with [512] (shared) or [N,512] latents, in
        chunks of at most ``max_batch``; returns float32 [N,3,S,S] RGB in [0,1]."""
        latents = np.asarray(latents, np.float32)
        if latents.shape == (LATENT_SIZE,):
            latents = np.broadcast_to(latents, (len(targets), LATENT_SIZE))
        if latents.shape != (len(targets), LATENT_SIZE):
            raise InputError(f"latents must be [{LATENT_SIZE}] or [{len(targets)}, {LATENT_SIZE}], got {latents.shape}")
        out = np.empty_like(targets)
        for i in range(0, len(targets), self.max_batch):
            feeds = {
                "target": targets[i : i + self.max_batch],
                "latent": np.ascontiguousarray(latents[i : i + self.max_batch]),
            }
            out[i : i + self.max_batch] = self.generator.run(feeds)["swapped"]
        return out

    def swap_aligned(self, crops: Crops, latent: np.ndarray | None = None) -> np.ndarray:
        """Swap the source identity (or ``latent``) onto aligned BGR crops; returns uint8 [N,S,S,3] BGR."""
        if latent is None:
            if self.source_latent is None:
                raise InputError("no source identity: call set_source(crops) first or pass latent=")
            latent = self.source_latent
        return tensor_to_crops(self.generate(crops_to_tensor(crops, self.crop_size), latent))
