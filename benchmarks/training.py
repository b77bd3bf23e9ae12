"""Training step time of the full-size 224 model (generator ngf 64 with 9 ID blocks, two-scale PatchGAN
ndf 64, frozen IR-SE-101 ArcFace) at batch 8, on this machine's CPU (and on CUDA when PyTorch sees it).

Both recipes run in the same process, alternating same- and different-identity steps as in training: the
paper's (with the gradient penalty's double backward) and pix2pixHD's (none), whose median is the
baseline of the ratio. Random weights: the arithmetic is the same as with trained ones. Prints a table and
writes JSON to benchmarks/results/.

    python -m benchmarks.training [--steps 2] [--batch 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from simswap_build.convert.architectures import ArcFaceConfig, GeneratorConfig
from simswap_build.models import Generator, ResNet
from simswap_build.training import FaceSet, TrainConfig, Trainer


def cpu_facts() -> dict:
    """CPU model and the SIMD flags that matter for PyTorch's kernels, from /proc/cpuinfo."""
    model, flags = platform.processor(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = value.split()
                break
    except OSError:
        pass
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return {"model": model, "flags": [f for f in wanted if f in flags], "cpus": len(os.sched_getaffinity(0))}


def faces(batch: int) -> FaceSet:
    """Two 'identities' of augmented astronaut crops (public domain), enough for batches of ``batch``."""
    from skimage import data

    face = cv2.resize(np.ascontiguousarray(data.astronaut()[40:220, 130:310, ::-1]), (224, 224))
    rng = np.random.default_rng(0)
    crops = np.stack([np.clip(face * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8) for _ in range(2 * batch)])
    return FaceSet(crops, np.repeat([0, 1], batch), ("a", "b"), tuple(str(i) for i in range(2 * batch)))


def time_steps(recipe: str, batch: int, steps: int, device: str) -> list[float]:
    torch.manual_seed(0)
    config = TrainConfig.recipe(recipe, batch_size=batch)
    trainer = Trainer(config, Generator(GeneratorConfig()), ResNet(ArcFaceConfig()), faces(batch), device=device)
    trainer.train_step()  # warm-up (allocator, kernel selection)
    times = []
    for _ in range(steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.train_step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per recipe after one warm-up step")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "training.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    results = {}
    for recipe in ("pix2pixhd", "paper"):
        times = time_steps(recipe, args.batch, args.steps, args.device)
        results[recipe] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}
    ratio = results["paper"]["median_s"] / results["pix2pixhd"]["median_s"]
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"training step, full 224 model, batch {args.batch}, {args.device} ({device_name}), {args.steps} steps")
    print(f"{'recipe':<28}{'median s':>10}{'min s':>10}{'max s':>10}")
    for recipe, row in results.items():
        print(f"{recipe:<28}{row['median_s']:>10.2f}{row['min_s']:>10.2f}{row['max_s']:>10.2f}")
    print(f"paper / pix2pixhd (median ratio; the gradient penalty's cost): {ratio:.2f}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "training",
                "model": "224 generator ngf 64, 9 blocks; PatchGAN ndf 64 x 2 scales; ArcFace IR-SE-101 (frozen)",
                "batch": args.batch,
                "timed_steps": args.steps,
                "device": args.device,
                "device_name": device_name,
                "machine": {
                    "cpu": cpu_facts(),
                    "platform": platform.platform(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                    "shared": "other jobs ran on this machine; the load averages show how busy it was",
                },
                "versions": {"torch": torch.__version__, "python": platform.python_version()},
                "torch_threads": torch.get_num_threads(),
                "results": results,
                "paper_over_pix2pixhd_median": ratio,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
