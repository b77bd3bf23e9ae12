"""``simswap-build finetune``: continue training an official (or own) generator on the user's faces."""

from __future__ import annotations

import argparse
from pathlib import Path

from simswap_build.cli.options import add_training_arguments
from simswap_build.cli.train import run as train

NAME = "finetune"
HELP = "continue training an official (or own) generator on your faces"
DESCRIPTION = (
    "As 'train', starting from --generator (an official latest_net_G.pth / 550000_net_G.pth "
    "or a run's output) and, when given, its discriminators; a new discriminator otherwise."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generator", type=Path, required=True, help="generator state_dict (.pth) to start from")
    parser.add_argument(
        "--discriminators",
        type=Path,
        nargs=2,
        metavar=("D1", "D2"),
        default=None,
        help="latest_net_D1.pth and latest_net_D2.pth to start the discriminator from",
    )
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """As 'train', which starts from --generator (and --discriminators) where they are given."""
    return train(args)
