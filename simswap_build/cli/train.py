"""``simswap-build train``: a generator trained from scratch as the SimSwap paper does (needs torch)."""

from __future__ import annotations

import argparse

from simswap_build.cli.options import TRAIN_OVERRIDES, add_training_arguments
from simswap_build.training.config import TrainConfig
from simswap_trt.cli.support import int_at_least, positive_int
from simswap_trt.errors import InputError

NAME = "train"
HELP = "train a generator from scratch as the SimSwap paper does (needs torch: the 'train' extra)"
DESCRIPTION = (
    "Detect and align the faces of DATA with the runtime's pipeline (cached in OUT/faces), then "
    "train a generator against a two-scale PatchGAN with the frozen ArcFace. Writes OUT/latest_net_G.pth in "
    "the official format, OUT/checkpoint.pth (resume with --resume), OUT/log.csv and OUT/run.json."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--arch", choices=("224", "512"), default="224", help="generator layout (default 224)")
    parser.add_argument("--ngf", type=int_at_least(2), default=64, help="generator width (official 64)")
    parser.add_argument("--n-blocks", type=positive_int, default=9, help="ID-injection blocks (official 9)")


def run(args: argparse.Namespace) -> int:
    """Train (or, with 'finetune's --generator, continue training) and print the last losses."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError("training needs PyTorch: pip install 'simswap-trt[train]'") from None
    from simswap_build.training.run import RunSpec, run_training  # imports torch: the command line works without

    overrides = {field: getattr(args, field) for field in TRAIN_OVERRIDES if getattr(args, field) is not None}
    try:
        config = TrainConfig.recipe(args.recipe, **overrides)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    spec = RunSpec(
        data=args.data,
        out=args.out,
        arcface=args.arcface,
        generator=getattr(args, "generator", None),
        discriminators=tuple(args.discriminators) if getattr(args, "discriminators", None) else None,
        arch=getattr(args, "arch", "224"),
        ngf=getattr(args, "ngf", 64),
        n_blocks=getattr(args, "n_blocks", 9),
        crop_size=args.crop_size,
        min_face=args.min_face,
        device=args.device,
        resume=args.resume,
        plot=args.plot,
        progress=not args.no_progress,
    )
    info = run_training(spec, config)
    summary = info["summary"]
    if not summary:
        print(f"nothing to train: {args.out} is already at step {config.steps}")
        return 0
    print(
        f"trained {info['generator']} generator to step {summary.get('steps', 0)} on {info['device']} "
        f"({info['faces']} faces of {info['identities']} identities); last losses: identity {summary['g_id']:.4f}, "
        f"reconstruction {summary['g_rec']:.4f}, D {summary['d_total']:.4f}"
    )
    print(f"generator: {args.out / 'latest_net_G.pth'} (convert it with 'simswap-build convert --generator ...')")
    return 0
