"""Memory budget of the device path: what ``FaceSwapper.memory()`` reports for the 224 and 512 generators at
batch 8, counted on the CPU stand-in of the GPU (tests/support/fake_gpu.py), which allocates every buffer the runtime
asks for and nothing else.

    python -m benchmarks.memory [--output benchmarks/results/memory.json] [--overwrite]

The scene: 1080p frames with 4 faces each, 2 frames (8 faces) per batch, 2 batches in flight (as
``swap_stream`` keeps them), the generator and ArcFace plans at profile 1..8 with float32 I/O (the bundle
contract), ``depth`` 2; with CUDA graphs, batches of 1 to 8 faces captured. Figures are the runtime's own
buffers; each TensorRT execution context adds the plan's activation memory (``device_memory_size_v2``,
which only a real plan gives): the JSON counts those contexts (``activation_blocks``) per plan, and on a
GPU ``FaceSwapper.memory()`` includes them. Kernels do not run (memory does not depend on their results).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from simswap_trt.constants import LATENT_SIZE
from simswap_trt.cuda.memory import SwapperMemory
from simswap_trt.files import check_output, write_atomic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the stand-in lives with the tests

OUTPUT = Path(__file__).parent / "results" / "memory.json"
FRAME = (1080, 1920)
FACES_PER_FRAME, FRAMES_PER_BATCH, IN_FLIGHT, MAX_BATCH = 4, 2, 2, 8


def plan_entry(root: Path, role: str, io: list, plan: bytes):
    """A registered-looking plan file of ``role`` with ``io`` (name, mode, shape) at profile 1..MAX_BATCH."""
    from simswap_trt.plans import PlanEntry
    from simswap_trt.schema import TensorSpec, sha256_of

    path = root / f"{role}.plan"
    path.write_bytes(plan)
    inputs, outputs = (
        tuple(TensorSpec(n, "float32", ("batch", *s[1:])) for n, m, s in io if m == mode) for mode in ("in", "out")
    )
    profile = {s.name: tuple((b, *s.shape[1:]) for b in (1, MAX_BATCH, MAX_BATCH)) for s in inputs}
    return PlanEntry(
        role, path.name, sha256_of(path), "", "fp16", "11.4.0.106", True, "none", "Fake H100", (9, 0), profile,
        inputs, outputs,
    )  # fmt: skip


def scene(crop_size: int, faces: int, seed: int = 0):
    """Frames of ``FRAME`` size and ``faces`` faces spread over them, ``FACES_PER_FRAME`` per frame."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (*FRAME, 3), np.uint8) for _ in range(-(-faces // FACES_PER_FRAME))]
    scale = crop_size / 240  # faces of 240 px
    placed = []
    for k in range(faces):
        x, y = 200 + 400 * (k % FACES_PER_FRAME), 300
        placed.append((k // FACES_PER_FRAME, np.array([[scale, 0, -x * scale], [0, scale, -y * scale]], np.float32)))
    return frames, placed


@contextmanager
def device_stages(monkeypatch, crop_size: int, graphs: bool, activation: int = 0) -> Iterator[SimpleNamespace]:
    """The stand-in GPU (``gpu``), TensorRT ``generator`` and ``arcface`` plans (profile 1..MAX_BATCH, each
    context holding ``activation`` bytes) and the device ``stages`` around them; closed on exit."""
    import tensorrt_lean as lean
    from support.fake_gpu import install_fake_cuda, strict_runtime_module

    from simswap_trt import kernels as kernels_module
    from simswap_trt.device.stages import DeviceStages
    from simswap_trt.engines import tensorrt as trt_engine

    gpu = install_fake_cuda(monkeypatch)
    names = dict.fromkeys(kernels_module.KERNEL_NAMES)
    monkeypatch.setattr(kernels_module, "load_device_kernels", lambda device=None: names)
    monkeypatch.setattr(kernels_module, "launch", lambda stream, kernel, grid, args: None)
    image = (-1, 3, crop_size, crop_size)
    io = [("target", "in", image), ("latent", "in", (-1, LATENT_SIZE)), ("swapped", "out", image)]
    arcface_io = [("crop", "in", image), ("latent", "out", (-1, LATENT_SIZE))]

    def zeros(outputs):
        return lambda feeds: {name: np.zeros((len(next(iter(feeds.values()))), *shape[1:])) for name, shape in outputs}

    plans = {b"arcface": (arcface_io, zeros([("latent", (-1, LATENT_SIZE))]))}
    module = strict_runtime_module(lean, io, zeros([("swapped", image)]), plans=plans, activation=activation)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        root = Path(folder)
        generator, arcface = (
            stack.enter_context(trt_engine.TensorRTEngine(root, plan_entry(root, role, role_io, role.encode())))
            for role, role_io in (("generator", io), ("arcface", arcface_io))
        )
        stages = DeviceStages(generator, crop_size, arcface=arcface, graphs=graphs)
        stack.callback(stages.close)
        yield SimpleNamespace(gpu=gpu, generator=generator, arcface=arcface, stages=stages, module=module)


def swap(stages, crop_size: int, faces: int, in_flight: int = IN_FLIGHT) -> None:
    """One identity (ArcFace on one face) and ``in_flight`` batches of ``faces`` faces, started before the first
    is finished."""
    frames, placed = scene(crop_size, faces)
    latent = stages.latents(frames, placed[:1])[0]
    tickets = [stages.start(frames, placed, latent) for _ in range(in_flight)]
    for ticket in tickets:
        stages.finish(ticket)


def live_bytes(gpu) -> dict[str, int]:
    """What the stand-in holds now: device allocations (mapped ones count as pinned) and pinned host memory."""
    device = sum(m.size for base, m in gpu.allocations.items() if base not in gpu.pinned)
    return {"device": device, "pinned": sum(memory.size for memory in gpu.pinned.values())}


def measure(monkeypatch, crop_size: int, graphs: bool) -> dict:
    """The scene on the stand-in: the swapper's report (as ``FaceSwapper.memory`` gives it), the stand-in's
    count of live allocations, and the execution contexts with activation memory of their own per plan."""
    batch = FACES_PER_FRAME * FRAMES_PER_BATCH
    with device_stages(monkeypatch, crop_size, graphs) as device:
        for faces in range(1, batch + 1) if graphs else [batch]:
            swap(device.stages, crop_size, faces)
        generator, arcface, stages = device.generator, device.arcface, device.stages
        report = SwapperMemory(
            {"generator": generator.memory(), "arcface": arcface.memory(), "device stages": stages.memory()}
        )
        blocks = {"generator": generator.contexts(), "arcface": arcface.contexts()}
        blocks["generator"] += sum(ws.activation.buffer is not None for ws in stages.workspaces)
        return {
            "crop_size": crop_size,
            "cuda_graphs": graphs,
            "faces_per_batch": batch,
            "batches_in_flight": IN_FLIGHT,
            "frame": list(FRAME),
            "device_bytes": report.device,
            "pinned_bytes": report.pinned,
            "parts": {name: {"device": use.device, "pinned": use.pinned} for name, use in report.parts.items()},
            "standin_live": live_bytes(device.gpu),
            "activation_blocks": blocks,
            "lines": report.lines(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where the JSON goes (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    if not check_output(args.output, overwrite=args.overwrite):
        print(f"{args.output} exists: pass --overwrite to replace it", file=sys.stderr)
        return 1
    rows = []
    for crop_size in (224, 512):
        for graphs in (False, True):
            with pytest.MonkeyPatch.context() as monkeypatch:
                rows.append(measure(monkeypatch, crop_size, graphs))
            row = rows[-1]
            print(f"{crop_size} px, batch 8, {'CUDA graphs' if graphs else 'eager'}:", *row["lines"], sep="\n  ")
            print(f"  + activation memory of {row['activation_blocks']} execution contexts (plan, context count)")
    write_atomic(args.output, (json.dumps({"stand_in": True, "rows": rows}, indent=2) + "\n").encode())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
