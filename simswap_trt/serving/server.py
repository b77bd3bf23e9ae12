"""Starting Triton Inference Server (PyTriton) with the ``swap_image``, ``swap_aligned`` and ``identity`` models.

PyTriton runs a real ``tritonserver`` and its Python backend. The backend's stub process embeds the
interpreter through ``libpython3.X.so``; for a Python built outside the system (pyenv, conda, uv) that
library lives in the interpreter's ``LIBDIR``, which ``stub_environment`` puts on ``LD_LIBRARY_PATH`` so the
stub does not pick up the system's ``libpython`` with a foreign standard library.
"""

from __future__ import annotations

import logging
import os
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

import numpy as np

from simswap_trt.constants import LATENT_SIZE
from simswap_trt.errors import SimswapError
from simswap_trt.images import MAX_PIXELS
from simswap_trt.provenance.signing import Provenance
from simswap_trt.serving.models import Identity, SwapAligned, SwapImage
from simswap_trt.swapper import FaceSwapper

log = logging.getLogger(__name__)

MODELS = ("swap_image", "swap_aligned", "identity")
START_ATTEMPTS = 3


@dataclass(frozen=True)
class ServeConfig:
    """How the server listens and batches. ``host`` 127.0.0.1 serves this machine only; 0.0.0.0 all."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 16  # Triton's max_batch_size: items (crops or images) per model call
    queue_delay_us: int = 2000  # how long the dynamic batcher waits for more requests
    select: str = "all"  # swap_image: which faces to swap
    image_format: str = ".png"  # swap_image: encoding of the returned image
    synthetic_tag: bool = True
    provenance: Provenance | None = None  # swap_image: a signer for C2PA manifests on the returned images
    max_pixels: int = MAX_PIXELS  # swap_image, identity: larger request images are refused
    exit_timeout_s: int = 10  # in-flight requests get this long to finish on stop


def stub_environment() -> None:
    """Put this interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (inherited by tritonserver and the
    Python backend stub), and refuse NumPy 2, whose array layout the bundled stub does not read."""
    major = int(np.__version__.split(".")[0])
    if major >= 2:
        raise SimswapError(
            f"NumPy {np.__version__}: PyTriton's bundled Python backend reads NumPy 1.x arrays and would answer "
            "with empty tensors. Serve from an environment made with pip install 'simswap-trt[serve]' "
            "(it keeps numpy<2)."
        )
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("INSTSONAME") or ""  # libpython3.X.so.1.0 for a shared build
    if not libdir or ".so" not in library or not (Path(libdir) / library).is_file():
        log.warning("this Python has no shared libpython in LIBDIR; the Triton stub uses the system's")
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])
        log.info("LD_LIBRARY_PATH starts with %s (the Python backend stub loads %s from there)", libdir, library)


def bind_models(triton, swappers: Sequence[FaceSwapper], config: ServeConfig) -> None:
    """Bind the three models to a ``pytriton.triton.Triton``, one instance per swapper for each model."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    size = swappers[0].crop_size
    batching = ModelConfig(
        max_batch_size=config.max_batch,
        batcher=DynamicBatcher(max_queue_delay_microseconds=config.queue_delay_us),
    )
    image = Tensor(name="image", dtype=bytes, shape=(1,))
    latent = Tensor(name="latent", dtype=np.float32, shape=(LATENT_SIZE,))
    optional_latent = Tensor(name="latent", dtype=np.float32, shape=(LATENT_SIZE,), optional=True)
    models: dict[str, tuple[Callable[[FaceSwapper], Callable], list, list]] = {
        "swap_image": (
            lambda s: SwapImage(
                s, config.select, config.image_format, config.synthetic_tag, config.max_pixels, config.provenance
            ),
            [image, optional_latent],
            [Tensor(name="image", dtype=bytes, shape=(1,)), Tensor(name="faces", dtype=np.float32, shape=(-1, 16))],
        ),
        "swap_aligned": (
            SwapAligned,
            [Tensor(name="crops", dtype=np.uint8, shape=(size, size, 3)), optional_latent],
            [Tensor(name="swapped", dtype=np.uint8, shape=(size, size, 3))],
        ),
        "identity": (lambda s: Identity(s, config.max_pixels), [image], [latent]),
    }
    for name, (make, inputs, outputs) in models.items():
        triton.bind(
            model_name=name,
            infer_func=[make(s) for s in swappers],
            inputs=inputs,
            outputs=outputs,
            config=batching,
            strict=True,
        )


def _triton_config(config: ServeConfig):
    from pytriton.triton import TritonConfig

    return TritonConfig(
        http_address=config.host,
        http_port=config.http_port,
        grpc_address=config.host,
        grpc_port=config.grpc_port,
        metrics_port=config.metrics_port,
        allow_metrics=config.metrics_port > 0,
        exit_timeout_secs=config.exit_timeout_s,
    )


def start(swappers: Sequence[FaceSwapper], config: ServeConfig = ServeConfig()):
    """Start Triton with the models bound and return the running ``pytriton.triton.Triton`` (stop it with
    ``.stop()`` or use it as a context manager). Health: ``/v2/health/ready`` on the HTTP port."""
    stub_environment()
    try:
        from pytriton.exceptions import PyTritonError
        from pytriton.triton import Triton
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise SimswapError("serving needs PyTriton: pip install 'simswap-trt[serve]'") from None
    if not swappers:
        raise SimswapError("serving needs at least one swapper instance")
    # PyTriton's start-up has short timeouts and races: instances 1..N-1 of a model fetch their set-up from
    # instance 0 over a Unix socket, without retrying, and its own client polls the starting server. Under
    # CPU contention a model can fail to load, or a poll can fail; a fresh server is tried again, at most
    # START_ATTEMPTS times.
    for attempt in range(1, START_ATTEMPTS + 1):
        triton = Triton(config=_triton_config(config))
        try:
            bind_models(triton, swappers, config)
            triton.run()
            break
        except (PyTritonError, InferenceServerException, HTTPException, ConnectionError, TimeoutError) as exc:
            triton.stop()
            if attempt == START_ATTEMPTS:
                raise SimswapError(f"Triton could not load the models: {str(exc).splitlines()[0]}") from exc
            log.warning("Triton start %d of %d failed (%s); starting again", attempt, START_ATTEMPTS, exc)
        except BaseException:
            triton.stop()
            raise
    log.info(
        "Triton serves %s on %s (HTTP %d, gRPC %d), %d instance(s), max batch %d, queue delay %d us",
        ", ".join(MODELS),
        config.host,
        config.http_port,
        config.grpc_port,
        len(swappers),
        config.max_batch,
        config.queue_delay_us,
    )
    return triton


def place_instances(instances: int, devices: Sequence[int] | None = None) -> list[int | None]:
    """The CUDA device of each of ``instances`` swappers: round robin over ``devices`` (each checked; a bad id
    is a ``DeviceNotFoundError`` naming the available ones), by default over every visible device; None for
    every instance on a machine without one (the engines then run where their backend puts them). Logged."""
    from simswap_trt import cuda
    from simswap_trt.errors import EngineError

    if devices:
        for device in devices:
            cuda.check_device(device)
        chosen = list(devices)
    else:
        try:
            chosen = list(range(cuda.device_count()))
        except EngineError:  # no cuda-python: a CPU-only install
            chosen = []
    if not chosen:
        return [None] * instances
    placement = [chosen[i % len(chosen)] for i in range(instances)]
    log.info("instances on CUDA devices %s", ", ".join(map(str, placement)))
    return placement
