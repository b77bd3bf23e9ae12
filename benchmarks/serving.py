"""Serving overhead on the CPU: ``swap_aligned`` through Triton Inference Server (PyTriton, dynamic
batching, concurrent gRPC clients sending one crop each) vs in-process ``FaceSwapper.swap_aligned`` at
the server's batch size, in the same run. Untrained 224 generator: official width (``--ngf 64``) or a
narrower one for busy machines.
Rounds alternate between the two so that load from elsewhere hits both alike. Prints a table, writes JSON.

    python -m benchmarks.serving [--clients 8] [--requests 4] [--rounds 3]

Needs the 'serve' extra (NumPy 1.x environment).
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from simswap_build.convert.architectures import GeneratorConfig
from simswap_build.convert.bundle import untrained_bundle
from simswap_trt import FaceSwapper
from simswap_trt.engines.onnxruntime import available_cpus
from simswap_trt.serving import ServeConfig, start


def cpu() -> dict:
    """CPU model and flags from /proc/cpuinfo, and the CPUs this process may use."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "flags") and key.strip() not in info:
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return {
        "model": info.get("model name", platform.processor()),
        "flags": info.get("flags", ""),
        "cpus": available_cpus(),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(swapper: FaceSwapper, crops: np.ndarray, batch: int) -> tuple[float, list[float]]:
    """(crops per second, per-call seconds) for ``swap_aligned`` over ``crops`` in calls of ``batch``."""
    calls = []
    start_time = time.perf_counter()
    for i in range(0, len(crops), batch):
        t = time.perf_counter()
        swapper.swap_aligned(crops[i : i + batch])
        calls.append(time.perf_counter() - t)
    return len(crops) / (time.perf_counter() - start_time), calls


def served(port: int, crops: np.ndarray, clients: int) -> tuple[float, list[float]]:
    """(crops per second, per-request seconds) with ``clients`` threads, each sending its share one by one."""
    import tritonclient.grpc as grpcclient

    def client(share: np.ndarray) -> list[float]:
        latencies = []
        with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as c:
            for crop in share:
                tensor = grpcclient.InferInput("crops", [1, *crop.shape], "UINT8")
                tensor.set_data_from_numpy(crop[None])
                t = time.perf_counter()
                c.infer("swap_aligned", [tensor])
                latencies.append(time.perf_counter() - t)
        return latencies

    start_time = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for part in pool.map(client, np.array_split(crops, clients)) for x in part]
    return len(crops) / (time.perf_counter() - start_time), latencies


def counting(swapper: FaceSwapper) -> dict[int, int]:
    """Count the batch sizes the server's swapper is called with (what Triton's dynamic batcher formed)."""
    sizes: dict[int, int] = {}
    call = swapper.swap_aligned

    def swap_aligned(crops, latent=None):
        sizes[len(crops)] = sizes.get(len(crops), 0) + 1
        return call(crops, latent)

    swapper.swap_aligned = swap_aligned
    return sizes


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def main() -> None:
    args = _parser().parse_args()
    batch = args.clients  # the server can batch at most one request per client
    rounds, executed = _rounds(args, batch)
    rows = {}
    for name in ("in-process", "served"):
        mine = [r for r in rounds if r[0] == name]
        latencies = [x for r in mine for x in r[2]]
        rows[name] = {
            "crops_per_s_median": statistics.median(r[1] for r in mine),
            "crops_per_s_rounds": [r[1] for r in mine],
            "latency_ms_p50": percentile(latencies, 50),
            "latency_ms_p99": percentile(latencies, 99),
        }
    ratio = rows["served"]["crops_per_s_median"] / rows["in-process"]["crops_per_s_median"]
    machine = cpu()
    print(f"swap_aligned 224 px, ngf {args.ngf}, {args.clients} clients x {args.requests} crops, {args.rounds} rounds")
    print(
        f"{'':<12}{'crops/s':>10}{'p50 ms':>10}{'p99 ms':>10}   (in-process: per call of {batch}; served: per request)"
    )
    for name, row in rows.items():
        print(
            f"{name:<12}{row['crops_per_s_median']:>10.2f}{row['latency_ms_p50']:>10.0f}{row['latency_ms_p99']:>10.0f}"
        )
    print(f"served / in-process throughput (ratio of medians): {ratio:.2f}; Triton batch sizes executed: {executed}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "serving",
                "model": f"swap_aligned, untrained 224 generator (ngf {args.ngf}, 9 blocks), ONNX Runtime CPU",
                "clients": args.clients,
                "requests_per_client": args.requests,
                "rounds": args.rounds,
                "batch": batch,
                "queue_delay_us": args.queue_delay_us,
                "machine": {"platform": platform.platform(), "cpu": machine},
                "results": rows,
                "throughput_ratio_served_over_in_process": ratio,
                "triton_batch_sizes": dict(sorted(executed.items())),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4, help="requests (one crop each) per client per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queue-delay-us", type=int, default=20000)
    parser.add_argument("--ngf", type=int, default=64, help="generator width (official: 64; smaller runs faster)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "serving.json")
    return parser


def _rounds(args: argparse.Namespace, batch: int) -> tuple[list[tuple], dict[int, int]]:
    """Alternating in-process and served rounds on one untrained bundle: (name, crops/s, latencies) per round,
    and the batch sizes Triton executed in them."""
    crops = np.random.default_rng(0).integers(0, 256, (args.clients * args.requests, 224, 224, 3), np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        bundle = untrained_bundle(Path(folder) / "untrained-224", generator_config=GeneratorConfig(ngf=args.ngf))
        local = FaceSwapper.from_bundle(bundle.root, max_batch=batch)
        local.set_source_crops(crops[:1])
        remote = FaceSwapper.from_bundle(bundle.root, max_batch=batch)
        remote.source_latent = local.source_latent
        executed = counting(remote)
        config = ServeConfig(
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=0,
            max_batch=batch,
            queue_delay_us=args.queue_delay_us,
        )
        triton = start([remote], config)
        try:
            in_process(local, crops[:batch], batch)  # warm-up both
            served(config.grpc_port, crops[:batch], args.clients)
            rounds = []
            executed.clear()
            for _ in range(args.rounds):
                rounds.append(("in-process", *in_process(local, crops, batch)))
                rounds.append(("served", *served(config.grpc_port, crops, args.clients)))
        finally:
            triton.stop()
    return rounds, executed


if __name__ == "__main__":
    main()
