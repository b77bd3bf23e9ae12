"""Option groups that several ``simswap-build`` commands share: the training run's ('train', 'finetune')."""

from __future__ import annotations

import argparse
from pathlib import Path

from simswap_build.training.data import DEFAULT_MIN_FACE
from simswap_trt.cli.support import float_between, int_at_least, positive_int

TRAIN_OVERRIDES = (
    "batch_size",
    "steps",
    "lr",
    "beta1",
    "beta2",
    "lambda_id",
    "lambda_rec",
    "lambda_fm",
    "lambda_gp",
    "fm_first_layer",
    "ndf",
    "checkpoint_every",
    "snapshot_every",
    "seed",
    "mixed_precision",
)
"""The recipe knobs a flag can override (dest names); the others keep the recipe's value."""


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by 'train' and 'finetune'; unset recipe knobs keep the recipe's value."""
    parser.add_argument(
        "data",
        type=Path,
        help="folder with one sub-folder of photos per identity, or a list file of 'IDENTITY<TAB>PATH' lines",
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, logs, face cache")
    parser.add_argument(
        "--arcface",
        type=Path,
        required=True,
        help="arcface_checkpoint.tar, or a converted bundle folder (frozen identity network)",
    )
    parser.add_argument(
        "--recipe",
        choices=("paper", "pix2pixhd"),
        default="paper",
        help="'paper' (default): weak feature matching, gradient penalty, λ_id 10, Adam β1 0; 'pix2pixhd': the "
        "first released code (full feature matching, no gradient penalty, λ_id 20, β1 0.5)",
    )
    _add_recipe_knobs(parser.add_argument_group("recipe knobs (default: the recipe's value)"))
    _add_run_arguments(parser)


def _add_recipe_knobs(knobs: argparse._ArgumentGroup) -> None:
    """One flag per name of ``TRAIN_OVERRIDES``, no default: an unset knob keeps the recipe's value."""
    knobs.add_argument("--steps", type=positive_int, help="train until this step (default 100000)")
    knobs.add_argument("--batch-size", type=int_at_least(2), help="pairs per step, >= 2 (default 8)")
    knobs.add_argument("--lr", type=float_between(0, 1), help="Adam learning rate for G and D (default 2e-4)")
    knobs.add_argument("--beta1", type=float_between(0, 1), help="Adam β1")
    knobs.add_argument("--beta2", type=float_between(0, 1), help="Adam β2 (default 0.999)")
    knobs.add_argument("--lambda-id", type=float_between(0, 1e6), help="identity loss weight")
    knobs.add_argument(
        "--lambda-rec", type=float_between(0, 1e6), help="reconstruction loss weight (same-identity steps)"
    )
    knobs.add_argument("--lambda-fm", type=float_between(0, 1e6), help="feature matching weight")
    knobs.add_argument("--lambda-gp", type=float_between(0, 1e6), help="gradient penalty weight (0: none)")
    knobs.add_argument(
        "--fm-first-layer",
        type=int_at_least(0),
        help="first discriminator layer (0-4) compared by feature matching: paper 3 (weak), pix2pixhd 0 (all)",
    )
    knobs.add_argument("--ndf", type=positive_int, help="discriminator width (default 64)")
    knobs.add_argument("--checkpoint-every", type=positive_int, help="save a resumable checkpoint every N steps (1000)")
    knobs.add_argument(
        "--snapshot-every", type=int_at_least(0), help="also keep STEP_net_G.pth every N steps (default never)"
    )
    knobs.add_argument("--seed", type=int_at_least(0), help="random seed (default 0)")
    knobs.add_argument(
        "--mixed-precision",
        action="store_true",
        default=None,
        help="CUDA: float16 convolutions; norms and identity styles stay float32 (float16 norms diverge)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The faces (crop size, smallest face), the device, resuming and what the run reports."""
    parser.add_argument(
        "--crop-size", type=int_at_least(96), default=None, help="aligned crop size (default: the generator's)"
    )
    parser.add_argument(
        "--min-face",
        type=int_at_least(0),
        default=DEFAULT_MIN_FACE,
        help="drop photos whose face region is narrower than this many pixels (default %(default)s)",
    )
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available, default), 'cpu', 'cuda:0', ...")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--plot", action="store_true", help="also write losses.png (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
