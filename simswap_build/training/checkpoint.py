"""What a run writes: the resumable checkpoint and the official-format networks.

* ``checkpoint.pth``: step, settings, generator, discriminator, both optimisers and the random state, in
  one file, so a checkpoint is never half written (``weights_only`` loadable).
* ``latest_net_G.pth``: the generator as a plain ``state_dict`` with the official keys, which
  ``simswap-build convert`` takes as is; ``{step}_net_G.pth`` snapshots when asked for.
* ``latest_net_D1.pth`` / ``latest_net_D2.pth``: the two discriminator scales, as the paper-era code
  saved them (``finetune --discriminators`` reads them back).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from simswap_build.convert.checkpoints import load_tensors
from simswap_build.models import Generator, MultiscaleDiscriminator
from simswap_build.training.trainer import Trainer
from simswap_trt.errors import CheckpointError
from simswap_trt.files import write_atomic_with

CHECKPOINT = "checkpoint.pth"
GENERATOR = "latest_net_G.pth"
DISCRIMINATORS = ("latest_net_D1.pth", "latest_net_D2.pth")


def save_torch(path: Path, obj: object) -> None:
    """``torch.save`` written atomically (temporary file, then rename)."""
    write_atomic_with(Path(path), lambda f: torch.save(obj, f))


def export_generator(generator: Generator, path: str | Path) -> Path:
    """The generator's ``state_dict`` (CPU tensors, official key order) in PyTorch's zip format."""
    save_torch(Path(path), {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()})
    return Path(path)


def save_checkpoint(trainer: Trainer, out: Path) -> None:
    """Write the resumable checkpoint and the official-format networks for ``trainer``'s current step."""
    save_torch(out / CHECKPOINT, trainer.state_dict())
    export_generator(trainer.generator, out / GENERATOR)
    for name, scale in zip(DISCRIMINATORS, (trainer.discriminator.netD1, trainer.discriminator.netD2), strict=True):
        save_torch(out / name, {k: v.detach().cpu() for k, v in scale.state_dict().items()})
    every = trainer.config.snapshot_every
    if every and trainer.step % every == 0:
        export_generator(trainer.generator, out / f"{trainer.step}_net_G.pth")


CHECKPOINT_KEYS = (
    "step",
    "config",
    "generator_config",
    "generator",
    "discriminator",
    "optim_g",
    "optim_d",
    "scaler_g",
    "scaler_d",
    "numpy_rng",
    "alpha_rng",
)


def load_checkpoint(out: Path) -> dict:
    """The resumable state of the run in ``out``; a missing, damaged or foreign file is one
    ``CheckpointError`` naming it."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist")
    state = load_tensors(path, "training checkpoint")
    missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, Mapping) else ["all"]
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint of this tool (missing: {', '.join(missing)})")
    return state


def restore(trainer: Trainer, state: dict, path: Path) -> None:
    """``trainer.load_state_dict(state)``; a state that does not fit is one ``CheckpointError`` naming ``path``."""
    try:
        trainer.load_state_dict(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} does not fit this run: {reason}") from None


def load_discriminator(paths: tuple[Path, Path], ndf: int | None = None) -> MultiscaleDiscriminator:
    """Both scales from ``latest_net_D1.pth`` and ``latest_net_D2.pth``; the width is read from the files."""
    states = []
    for path in paths:
        if not Path(path).is_file():
            raise CheckpointError(f"discriminator checkpoint not found: {path}")
        state = load_tensors(path, "discriminator checkpoint")
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{path} holds a {type(state).__name__}, not a discriminator state_dict")
        states.append(state)
    width = int(states[0]["down1.0.weight"].shape[0]) if "down1.0.weight" in states[0] else ndf or 64
    discriminator = MultiscaleDiscriminator(width)
    for path, scale, state in zip(paths, (discriminator.netD1, discriminator.netD2), states, strict=True):
        try:
            scale.load_state_dict(state)
        except RuntimeError:
            expected = scale.state_dict()
            missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
            why = (
                f"{len(missing)} key(s) missing, {len(unexpected)} unexpected"
                if missing or unexpected
                else "shapes differ"
            )
            raise CheckpointError(f"{path} is not a PatchGAN discriminator scale ({why})") from None
    return discriminator
