"""``simswap-trt serve``: swap_image, swap_aligned and identity on Triton Inference Server (PyTriton)."""

from __future__ import annotations

import argparse
from pathlib import Path

from simswap_trt import serving
from simswap_trt.cli.common import open_swapper, provenance_from_args
from simswap_trt.cli.options import add_pipeline_flags, add_runtime_flags, add_signing_flags
from simswap_trt.cli.support import int_at_least, positive_int
from simswap_trt.images import MAX_PIXELS, read_image

NAME = "serve"
PARSER = {
    "help": "serve swap_image, swap_aligned and identity on Triton Inference Server (PyTriton)",
    "description": "Start Triton Inference Server with three models: swap_image (encoded image [+ latent] -> "
    "swapped image + faces), swap_aligned (aligned crops + latent -> swapped crops) and identity (image -> "
    "latent). Triton batches requests dynamically; each request succeeds or fails on its own: bad input "
    "gets a one-line 400 error naming the input, a target without a face comes back unchanged (swapped 0). "
    "Requests without a latent use --source. /v2/health/ready answers 200 once every model is loaded; "
    "Ctrl-C or SIGTERM stops. Needs 'simswap-trt[serve]' (PyTriton; NumPy 1.x). Listens on 127.0.0.1 "
    "unless --host says otherwise. Request fields and error replies: docs/serving.md.",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    parser.add_argument("--source", type=Path, nargs="*", default=[], help="photo(s) of the default identity")
    _add_server_flags(parser)
    parser.add_argument("--select", choices=("all", "largest"), default="all", help="swap_image: faces to swap")
    parser.add_argument("--image-format", choices=("png", "jpg"), default="png", help="swap_image: output encoding")
    parser.add_argument(
        "--no-synthetic-tag", action="store_true", help="do not label returned images as synthetic (XMP metadata)"
    )
    parser.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, help="refuse larger images")
    add_signing_flags(parser, credit=False)  # a request may bring its own identity (latent)
    add_pipeline_flags(parser)
    add_runtime_flags(parser, batch=16)


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    """Where it listens, how many instances on which devices, and Triton's batching."""
    parser.add_argument("--host", default="127.0.0.1", help="listen address; 0.0.0.0: all (default: %(default)s)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default: %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port, 0 for none")
    parser.add_argument("--instances", type=positive_int, default=1, help="swapper instances per model (default: 1)")
    parser.add_argument(
        "--devices",
        type=device_list,
        default=None,
        help="CUDA device ids for the instances, comma-separated (e.g. 0,1), used round robin (default: every "
        "visible device: with --instances 4 on two GPUs, 0,1,0,1)",
    )
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="device path: replay each batch's sequence as a CUDA graph"
    )
    parser.add_argument(
        "--max-batch", type=positive_int, default=16, help="Triton max_batch_size (default: %(default)s)"
    )
    parser.add_argument(
        "--queue-delay-us",
        type=int_at_least(0),
        default=2000,
        help="dynamic batching queue delay in µs (default: %(default)s)",
    )


def device_list(text: str) -> list[int]:
    """An argparse type: comma-separated CUDA device ids, e.g. 0,1."""
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated device ids such as 0,1, got {text!r}") from None
    if any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError(f"device ids are whole numbers >= 0, got {text!r}")
    return ids


def run(args: argparse.Namespace) -> int:
    provenance = provenance_from_args(args, ["." + args.image_format])
    config = serving.ServeConfig(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        select=args.select,
        image_format="." + args.image_format,
        synthetic_tag=not args.no_synthetic_tag,
        max_pixels=args.max_pixels,
        provenance=provenance,
    )
    serving.check_ports(config)  # before the engines load: a port in use is known at once
    devices = serving.place_instances(args.instances, args.devices)
    swappers = [open_swapper(args, args.bundle, device) for device in devices]
    if args.source:
        latent = swappers[0].set_source([read_image(p, args.max_pixels) for p in args.source], names=args.source)
        for swapper in swappers[1:]:
            swapper.source_latent = latent
    triton = serving.start(swappers, config)
    print(
        f"serving {', '.join(serving.MODELS)} on {args.host}: HTTP {args.http_port}, gRPC {args.grpc_port} "
        f"(ready: http://{args.host}:{args.http_port}/v2/health/ready); Ctrl-C or SIGTERM stops"
    )
    try:
        triton.serve()  # until Ctrl-C or SIGTERM (cli.support: both interrupt), which stop it with status 0
    finally:
        triton.stop()  # removes its workspace
    return 0
