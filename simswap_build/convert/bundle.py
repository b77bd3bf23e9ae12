"""Checkpoints → bundle: load and validate, write the ONNX graphs, check them for TensorRT, save.

``untrained_bundle`` makes the same kind of bundle from seeded random weights without torch, for trying
the pipeline before official weights are at hand; its manifest says ``"untrained": true``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from simswap_build.convert.architectures import ArcFaceConfig, Family, GeneratorConfig, arcface_keys, generator_keys
from simswap_build.convert.bundle_writer import BundleModel, add_model, write_bundle
from simswap_build.convert.checkpoints import load_arcface, load_enhancer, load_generator  # these need torch
from simswap_build.convert.enhancers import Restorer
from simswap_build.graphs.enhancer import enhancer_graph
from simswap_build.graphs.export import arcface_graph, generator_graph
from simswap_build.tensorrt.compat import TARGETS, check_model
from simswap_trt.bundle import ENHANCER, Bundle
from simswap_trt.errors import BuildError
from simswap_trt.schema import sha256_of
from simswap_trt.vision.preprocess import crops_to_tensor

log = logging.getLogger(__name__)

RELEASES = "https://github.com/neuralchen/SimSwap/releases"
# sha256 of the official release files -> which file it is. Only checksums published by the SimSwap project
# (or recorded in this project's model reference) belong here; none are published yet, so every file is
# reported with its checksum as "not a known release" (compare it with the download you trust).
KNOWN_RELEASE_SHA256: dict[str, str] = {}


def describe_checksum(path: str | Path, digest: str) -> str:
    """One line: ``path``'s sha256 and whether it is a known official release file."""
    known = KNOWN_RELEASE_SHA256.get(digest)
    if known:
        return f"{Path(path).name}: sha256 {digest} (matches the official release file {known})"
    return f"{Path(path).name}: sha256 {digest} (not a known release checksum; see docs/weights.md)"


def alignment_for(config: GeneratorConfig) -> str:
    """224 models were trained on multi-pose aligned crops, 512 ones on FFHQ-aligned crops."""
    return "multipose" if config.layout == "224" else "ffhq"


def _checked(graph, role: str):
    problems = [p for target in TARGETS for p in check_model(graph, target)]
    if problems:
        raise BuildError(f"the {role} graph is not TensorRT-compatible:\n" + "\n".join(map(str, problems)))
    return graph


def convert_checkpoints(
    generator: str | Path,
    arcface: str | Path,
    output: str | Path,
    arch: str = "auto",
    family: Family = "official",
    crop_size: int | None = None,
    keep_weights: bool = True,
    overwrite: bool = False,
    enhancer: str | Path | None = None,
) -> Bundle:
    """Convert an official generator ``.pth`` and ``arcface_checkpoint.tar`` (and optionally a face restorer
    such as ``GFPGANv1.4.pth`` as role ``enhancer``) into a bundle at ``output``."""
    gen = load_generator(generator, arch, family)
    arc = load_arcface(arcface)
    size = crop_size or gen.config.crop_size
    models = {
        "generator": BundleModel(
            _checked(generator_graph(gen.weights, gen.config, size), "generator"),
            gen.config.name,
            source={"checkpoint": Path(generator).name, "sha256": sha256_of(Path(generator))},
            weights=gen.weights if keep_weights else None,
        ),
        "arcface": BundleModel(
            _checked(arcface_graph(arc.weights, arc.config, size), "arcface"),
            arc.config.name,
            source={"checkpoint": Path(arcface).name, "sha256": sha256_of(Path(arcface)), "format": arc.source_format},
            weights=arc.weights if keep_weights else None,
        ),
    }
    if enhancer is not None:
        models[ENHANCER] = enhancer_model(enhancer)
    bundle = write_bundle(output, models, size, alignment_for(gen.config), untrained=False, overwrite=overwrite)
    log.info("wrote bundle %s (%s generator, %s arcface, %d px)", output, gen.config.name, arc.config.name, size)
    return bundle


def enhancer_source(restorer: Restorer, provenance: dict) -> dict:
    """The manifest ``source`` of an enhancer: provenance, the alignment its crops use and its licence."""
    return {**provenance, "alignment": restorer.alignment, "license": restorer.license}


def enhancer_model(checkpoint: str | Path) -> BundleModel:
    """The bundle model of a face-restorer checkpoint, loaded strictly, as a checked ONNX graph."""
    loaded = load_enhancer(checkpoint)
    provenance = {"checkpoint": Path(checkpoint).name, "sha256": sha256_of(Path(checkpoint))}
    return BundleModel(
        _checked(enhancer_graph(loaded.weights, loaded.restorer), ENHANCER),
        loaded.restorer.architecture,
        source=enhancer_source(loaded.restorer, provenance),
    )


def add_enhancer(bundle: str | Path, checkpoint: str | Path) -> Bundle:
    """Add (or replace) the ``enhancer`` role of ``bundle`` from a face-restorer checkpoint."""
    target = Bundle.load(bundle)
    model = enhancer_model(checkpoint)
    updated = add_model(target, ENHANCER, model.graph, model.architecture, model.source)
    log.info("added %s enhancer from %s to %s", model.architecture, Path(checkpoint).name, bundle)
    return updated


def random_weights(keys: list[tuple[str, tuple[int, ...]]], seed: int) -> dict[str, np.ndarray]:
    """He-initialised convolutions and linears, identity BatchNorm, small style linears, PReLU 0.25."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in keys:
        if name.endswith("num_batches_tracked"):
            weights[name] = np.zeros(shape, np.int64)
        elif name.endswith(("running_var",)) or (name.endswith(".weight") and len(shape) == 1 and shape != (1,)):
            weights[name] = np.ones(shape, np.float32)  # BatchNorm scale and variance
        elif name.endswith("prelu.weight") or name.endswith("fc.1.weight"):
            weights[name] = np.full(shape, 0.25, np.float32)
        elif name.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            std = 0.02 if ".style" in name else np.sqrt(2.0 / fan_in)
            weights[name] = rng.normal(0.0, std, shape).astype(np.float32)
        else:
            weights[name] = np.zeros(shape, np.float32)  # biases, running means
    return weights


def untrained_bundle(
    output: str | Path,
    arch: str = "224",
    crop_size: int | None = None,
    seed: int = 0,
    generator_config: GeneratorConfig | None = None,
    arcface_config: ArcFaceConfig = ArcFaceConfig(),
    overwrite: bool = False,
) -> Bundle:
    """A bundle with seeded random weights (official layouts unless configs are given). Not a face swapper:
    its outputs are meaningless, and the manifest and every tool that loads it say so."""
    gen_config = generator_config or GeneratorConfig.from_name(arch)
    size = crop_size or gen_config.crop_size
    gen_weights = random_weights(generator_keys(gen_config), seed)
    arc_weights = random_weights(arcface_keys(arcface_config), seed + 1)
    models = {
        "generator": BundleModel(
            _checked(generator_graph(gen_weights, gen_config, size), "generator"),
            gen_config.name,
            source={"untrained_seed": seed},
        ),
        "arcface": BundleModel(
            _checked(arcface_graph(arc_weights, arcface_config, size), "arcface"),
            arcface_config.name,
            source={"untrained_seed": seed + 1},
        ),
    }
    return write_bundle(output, models, size, alignment_for(gen_config), untrained=True, overwrite=overwrite)


def reestimated_bundle(
    output: str | Path,
    crops: np.ndarray,
    arch: str = "224",
    seed: int = 0,
    generator_config: GeneratorConfig | None = None,
    arcface_config: ArcFaceConfig = ArcFaceConfig(),
    overwrite: bool = False,
) -> Bundle:
    """An untrained bundle whose activations look like a trained model's: random weights (torch's default
    initialisation), then every BatchNorm's statistics re-estimated on real aligned face ``crops``
    (data-dependent initialisation). For measuring precision recipes without trained weights. Needs torch."""
    import torch  # optional (the 'build' extra), as the models: untrained bundles are made without them

    from simswap_build.models import Generator, ResNet, identity_latent

    gen_config = generator_config or GeneratorConfig.from_name(arch)
    size = crops.shape[1]
    torch.manual_seed(seed)
    generator, arcface = Generator(gen_config), ResNet(arcface_config)
    images = torch.from_numpy(crops_to_tensor(crops, size))
    batches = [slice(i, i + 4) for i in range(0, len(images) - 1, 4)]  # BatchNorm1d needs >= 2 per batch

    def reestimate(model: torch.nn.Module, forward) -> None:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # cumulative average over all batches
        model.train()
        with torch.no_grad():
            for batch in batches:
                forward(batch)
        model.eval()

    reestimate(arcface, lambda b: identity_latent(arcface, images[b]))
    with torch.no_grad():
        latents = torch.roll(identity_latent(arcface, images), -1, 0)
    reestimate(generator, lambda b: generator.forward_rgb01(images[b], latents[b]))

    def numpy_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy() for k, v in model.state_dict().items()}

    note = {"untrained_seed": seed, "batchnorm_reestimated_on_faces": len(crops)}
    models = {
        "generator": BundleModel(
            _checked(generator_graph(numpy_weights(generator), gen_config, size), "generator"),
            gen_config.name,
            source=note,
        ),
        "arcface": BundleModel(
            _checked(arcface_graph(numpy_weights(arcface), arcface_config, size), "arcface"),
            arcface_config.name,
            source=note,
        ),
    }
    return write_bundle(output, models, size, alignment_for(gen_config), untrained=True, overwrite=overwrite)
