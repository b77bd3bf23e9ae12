"""A whole run: faces prepared, networks built or loaded, steps with a progress bar, checkpoints every
``checkpoint_every`` steps, logs, and resume."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from simswap_build.convert.bundle import alignment_for
from simswap_build.training import checkpoint, logs
from simswap_build.training.config import TrainConfig
from simswap_build.training.data import DEFAULT_MIN_FACE, prepare_faces
from simswap_build.training.models import load_arcface, load_generator, new_generator
from simswap_build.training.trainer import Trainer
from simswap_trt.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """Where the data and networks come from. ``generator`` set means fine-tuning from that checkpoint;
    otherwise a new ``arch`` generator with ``ngf``/``n_blocks`` is trained."""

    data: Path
    out: Path
    arcface: Path
    generator: Path | None = None
    discriminators: tuple[Path, Path] | None = None
    arch: str = "224"
    ngf: int = 64
    n_blocks: int = 9
    crop_size: int | None = None
    min_face: int = DEFAULT_MIN_FACE
    device: str = "auto"
    resume: bool = False
    plot: bool = False
    progress: bool = True


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when PyTorch sees a GPU, else the CPU (with a warning); the choice is logged."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cpu":
            log.warning("PyTorch sees no CUDA device: training on the CPU (practical only for small models)")
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: PyTorch sees no CUDA device (install a CUDA build of torch)")
    device = torch.device(name)
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    log.info("training on %s (%s)", device, what)
    return device


def build_trainer(spec: RunSpec, config: TrainConfig) -> Trainer:
    """Networks, faces and (when resuming) the saved state, ready to ``train_step``."""
    out = Path(spec.out)
    has_run = (out / checkpoint.CHECKPOINT).is_file()
    if has_run and not spec.resume:
        raise InputError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    if spec.resume and not has_run:
        raise InputError(f"nothing to resume in {out}: no {checkpoint.CHECKPOINT}")
    state = checkpoint.load_checkpoint(out) if spec.resume else None  # a bad file fails before any work
    device = resolve_device(spec.device)
    arcface = load_arcface(spec.arcface)
    if spec.generator:
        generator = load_generator(spec.generator)
    else:
        generator = new_generator(spec.arch, spec.ngf, spec.n_blocks, config.seed)
    discriminator = checkpoint.load_discriminator(spec.discriminators) if spec.discriminators else None
    crop_size = spec.crop_size or generator.config.crop_size
    faces = prepare_faces(
        spec.data, out / "faces", crop_size, alignment_for(generator.config), spec.min_face, spec.progress
    )
    trainer = Trainer(config, generator, arcface, faces, discriminator, device)
    if state is not None:
        changed = {k for k, v in state["config"].items() if config.to_dict().get(k) != v} - {"steps"}
        if changed:
            log.warning("resuming with changed settings: %s", ", ".join(sorted(changed)))
        checkpoint.restore(trainer, state, out / checkpoint.CHECKPOINT)
        log.info("resumed %s at step %d", out, trainer.step)
    return trainer


def run_training(spec: RunSpec, config: TrainConfig) -> dict:
    """Train until ``config.steps``; returns the summary also written to ``run.json``."""
    from tqdm import tqdm

    trainer = build_trainer(spec, config)
    out = Path(spec.out)
    loss_log = logs.LossLog(out, trainer.step)
    info = {
        "config": config.to_dict(),
        "generator": trainer.generator.config.name,
        "ngf": trainer.generator.config.ngf,
        "n_blocks": trainer.generator.config.n_blocks,
        "crop_size": int(trainer.faces.crops.shape[1]),
        "fine_tuned_from": str(spec.generator) if spec.generator else None,
        "device": str(trainer.device),
        "faces": len(trainer.faces.identities),
        "identities": len(trainer.faces.names),
    }
    bar = tqdm(total=config.steps, initial=trainer.step, desc="training", unit="step", disable=not spec.progress)
    try:
        while trainer.step < config.steps:
            same, start = trainer.step % 2 == 0, time.perf_counter()
            values = trainer.train_step()
            loss_log.add(trainer.step, same, values, time.perf_counter() - start)
            bar.update()
            bar.set_postfix(id=f"{values['g_id']:.3f}", d=f"{values['d_total']:.3f}", refresh=False)
            if trainer.step % config.checkpoint_every == 0:
                _checkpoint(trainer, loss_log, out)
    except KeyboardInterrupt:
        saved = trainer.step - trainer.step % config.checkpoint_every
        log.warning("interrupted: --resume continues from the last checkpoint (step %d)", saved)
        raise
    finally:
        bar.close()
    if trainer.step % config.checkpoint_every:
        _checkpoint(trainer, loss_log, out)
    rows = logs.read_rows(loss_log.path)
    info["summary"] = logs.summary(rows)
    logs.write_json(out / "run.json", info)
    if spec.plot and rows:
        logs.plot_losses(rows, out / "losses.png")
    return info


def _checkpoint(trainer: Trainer, loss_log: logs.LossLog, out: Path) -> None:
    checkpoint.save_checkpoint(trainer, out)
    loss_log.flush()
    log.info("checkpoint at step %d in %s", trainer.step, out)
