"""The option groups several ``simswap-trt`` commands share: which faces to swap, the pipeline's optional
models, the engines and their batch, the CUDA device, and the content-credential flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from simswap_trt.backends import BACKENDS, PRECISIONS
from simswap_trt.cli.support import float_between, int_at_least, positive_int
from simswap_trt.engines import DEFAULT_PROVIDERS
from simswap_trt.provenance.signing import CERT_ENV, KEY_ENV
from simswap_trt.selection import DEFAULT_MATCH_THRESHOLD, SELECT_MODES
from simswap_trt.vision.enhance import DEFAULT_ENHANCE_BLEND


def add_selection_flags(parser: argparse.ArgumentParser, largest: str, tracks: bool = False) -> None:
    """--select, --reference and --threshold: which faces to swap (``largest``: where the largest is taken;
    ``tracks``: video, where --select reference decides once per track)."""
    matching = "the tracks matching --reference" if tracks else "those matching --reference"
    parser.add_argument(
        "--select",
        choices=SELECT_MODES,
        default="all",
        help=f"faces to swap: all, the largest {largest}, or {matching} (default: all)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        nargs="+",
        default=None,
        help="photo(s) of the person to replace, for --select reference",
    )
    similarity = "mean cosine similarity of a track" if tracks else "cosine similarity"
    parser.add_argument(
        "--threshold",
        type=float_between(-1.0, 1.0),
        default=DEFAULT_MATCH_THRESHOLD,
        help=f"minimum {similarity} to --reference, in [-1, 1] (ArcFace latents; default: %(default)s)",
    )


def add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    """--scrfd and --parsing-model (the optional detector and face parser) and the enhancer flags."""
    parser.add_argument(
        "--scrfd",
        type=Path,
        default=None,
        help="use this SCRFD detector (det_10g.onnx, as the official pipeline) instead of CenterFace",
    )
    parser.add_argument(
        "--parsing-model",
        type=Path,
        default=None,
        help="BiSeNet-style face parser ONNX: blend with a face mask, as the official --use_mask",
    )
    add_enhancer_flags(parser)


def add_enhancer_flags(parser: argparse.ArgumentParser) -> None:
    """--enhancer and --enhance-blend."""
    parser.add_argument(
        "--enhancer",
        action="store_true",
        help="restore each swapped face with the bundle's face enhancer (GFPGAN v1.4, 512 px FFHQ crops) before "
        "pasting it back; off by default. Add one with 'simswap-build add-enhancer BUNDLE GFPGANv1.4.pth' "
        "(docs/enhancer.md)",
    )
    parser.add_argument(
        "--enhance-blend",
        type=float_between(0.0, 1.0),
        default=DEFAULT_ENHANCE_BLEND,
        help="with --enhancer: share of the restored face in the result, 0-1; 0 leaves the swap unchanged "
        "(serve: the share for requests without an 'enhance' input; 0 enhances only the requests that ask) "
        "(default: %(default)s)",
    )


def add_runtime_flags(parser: argparse.ArgumentParser, batch: int) -> None:
    """--batch (default ``batch``), --threads, --providers, --backend and --precision."""
    parser.add_argument(
        "--batch", type=positive_int, default=batch, help=f"images per batched call, >= 1 (default: {batch})"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads of ONNX Runtime and OpenVINO, >= 1 (default: all available)",
    )
    parser.add_argument(
        "--providers",
        nargs="+",
        default=list(DEFAULT_PROVIDERS),
        help="ONNX Runtime execution providers, in order; all must be available (default: CPU)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto: TensorRT where the bundle has a plan this machine can run, else the faster CPU backend for "
        "--precision (OpenVINO for int8 and bf16 when installed, ONNX Runtime for fp32 and fp16; logged with -v); "
        "onnxruntime, openvino (pip install 'simswap-trt[openvino]'), tensorrt: that backend, or an error saying "
        "why it cannot run (default: auto)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="fp32, fp16, int8: which of the bundle's graphs to run (from 'simswap-build precision'); bf16: the "
        "FP32 graphs on OpenVINO in BF16, on CPUs with AVX512_BF16 or AMX (checked). On the CPU fp32 unless asked "
        "or the bundle has a validated default ('simswap-build validate --set-default'; --precision fp32 overrides "
        "it); "
        "ONNX Runtime's int8 needs VNNI or AMX (checked). TensorRT: the fastest plan unless asked. "
        "'simswap-build validate' reports each one's fidelity",
    )


def add_device_flags(parser: argparse.ArgumentParser) -> None:
    """--device and --cuda-graphs."""
    parser.add_argument(
        "--device",
        type=int_at_least(0),
        default=None,
        help="CUDA device id for TensorRT, the device path and ONNX Runtime's CUDA/TensorRT providers (when "
        "--providers asks for them), counted among the devices CUDA_VISIBLE_DEVICES leaves visible (default: the "
        "first); 'simswap-trt doctor' lists them",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="device path: replay each batch's preprocess, generator and paste-back as one CUDA graph per batch "
        "size (fewer launches for small batches; each chunk of a batch gets its own TensorRT context)",
    )


def add_signing_flags(parser: argparse.ArgumentParser, synthetic_flag: bool = False, credit: bool = True) -> None:
    """--sign-cert, --sign-key, --credit-source (unless ``credit`` is off: where outputs may come from other
    identities than --source) and --no-synthetic-tag where the command has none yet."""
    if synthetic_flag:
        parser.add_argument(
            "--no-synthetic-tag",
            action="store_true",
            help="do not label outputs as synthetic (IPTC digital source type in metadata); you remain "
            "responsible for disclosing that the media is AI-generated (docs/provenance.md)",
        )
    parser.add_argument(
        "--sign-cert",
        type=Path,
        default=None,
        help=f"sign a C2PA manifest into each output: the certificate chain, PEM, signer first (or {CERT_ENV}); "
        "needs 'simswap-trt[provenance]'",
    )
    parser.add_argument(
        "--sign-key", type=Path, default=None, help=f"the private key of --sign-cert, PEM (or {KEY_ENV})"
    )
    if credit:
        parser.add_argument(
            "--credit-source",
            action="store_true",
            help="record the sha256 of the --source photo(s) in the manifest (default: not recorded)",
        )
