"""What a run writes: the resumable checkpoint and the official-format networks.

* ``checkpoint.pth``: step, settings, generator, discriminator, both optimisers and the random state, in
  one file, so a checkpoint is never half written (``weights_only`` loadable).
* ``latest_net_G.pth``: the generator as a plain ``state_dict`` with the official keys, which
  ``simswap-build convert`` takes as is; ``{step}_net_G.pth`` snapshots when asked for.
* ``latest_net_D1.pth`` / ``latest_net_D2.pth``: the two discriminator scales, as the paper-era code
  saved them (``finetune --discriminators`` reads them back).
"""

from __future__ import annotations

from pathlib import Path

import torch

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


def load_checkpoint(out: Path) -> dict:
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_discriminator(paths: tuple[Path, Path], ndf: int | None = None) -> MultiscaleDiscriminator:
    """Both scales from ``latest_net_D1.pth`` and ``latest_net_D2.pth``; the width is read from the files."""
    states = []
    for path in paths:
        if not Path(path).is_file():
            raise CheckpointError(f"discriminator checkpoint not found: {path}")
        states.append(torch.load(path, map_location="cpu", weights_only=True))
    width = int(states[0]["down1.0.weight"].shape[0]) if "down1.0.weight" in states[0] else ndf or 64
    discriminator = MultiscaleDiscriminator(width)
    for path, scale, state in zip(paths, (discriminator.netD1, discriminator.netD2), states, strict=True):
        try:
            scale.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} is not a PatchGAN discriminator scale: {exc}") from exc
    return discriminator
