"""Starting Triton Inference Server (PyTriton) with the ``swap_image``, ``swap_aligned`` and ``identity`` models.

The models are written into the server's model repository before it starts, so Triton loads them while it
starts and ``/v2/health/ready`` answers 200 only once every model is loaded. A request that fails gets an
error reply of its own (see ``serving.models``): PyTriton answers every request of a batch with the same
error when its inference function raises, so the models never raise; they return a reply carrying the
``error`` output, which the proxy model that PyTriton runs inside Triton is extended (``PROXY_HOOK``)
to answer as that request's error: a one-line message with the code the reply names (HTTP 400 for bad
input), never a traceback.

PyTriton runs a real ``tritonserver`` and its Python backend. The backend's stub process embeds the
interpreter through ``libpython3.X.so``; for a Python built outside the system (pyenv, conda, uv) that
library lives in the interpreter's ``LIBDIR``, which ``stub_environment`` puts on ``LD_LIBRARY_PATH`` so the
stub does not pick up the system's ``libpython`` with a foreign standard library.
"""

from __future__ import annotations

import _thread
import logging
import os
import shutil
import socket
import sysconfig
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

import numpy as np

from simswap_trt.constants import LATENT_SIZE
from simswap_trt.errors import SimswapError
from simswap_trt.images import MAX_PIXELS
from simswap_trt.provenance.signing import Provenance
from simswap_trt.serving.models import ERROR, Identity, SwapAligned, SwapImage
from simswap_trt.swapper import FaceSwapper

log = logging.getLogger(__name__)

MODELS = ("swap_image", "swap_aligned", "identity")
START_ATTEMPTS = 3
HANDSHAKE_TIMEOUT_S = 60
# Appended to PyTriton's proxy model (model.py in each model's repository folder), which runs inside Triton:
# a reply carrying the ``error`` output becomes an error response of that request alone, with the Triton
# error code it names; and the instances 1..N-1 of a model, which fetch their set-up from instance 0 while
# Triton loads them all at once, wait for it HANDSHAKE_TIMEOUT_S instead of PyTriton's 1 s.
PROXY_HOOK = f"""

# simswap_trt.serving: a reply with the {ERROR!r} output is answered as an error of its own request
_pytriton_wrap_response = _wrap_response


def _wrap_response(response, requested_outputs_names, model_outputs_dict):
    if response.data is not None and {ERROR!r} in response.data:
        code, message = (bytes(item).decode("utf-8", "replace") for item in response.data[{ERROR!r}].reshape(-1)[:2])
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, getattr(pb_utils.TritonError, code)))
    return _pytriton_wrap_response(response, requested_outputs_names, model_outputs_dict)


# simswap_trt.serving: instance 0 of the model may still be starting
import time as _time

_pytriton_get_config_from_handshake_server = get_config_from_handshake_server


def get_config_from_handshake_server(socket_path, timeout_s={HANDSHAKE_TIMEOUT_S}):
    deadline = _time.monotonic() + timeout_s
    while True:
        try:
            return _pytriton_get_config_from_handshake_server(socket_path, 1.0)
        except OSError:  # not there yet, not listening yet (refused) or not answering yet (timeout)
            if _time.monotonic() >= deadline:
                raise
            _time.sleep(0.1)
"""


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
    error = Tensor(name=ERROR, dtype=bytes, shape=(2,))  # only in the reply of a failed request (never sent)
    latent = Tensor(name="latent", dtype=np.float32, shape=(LATENT_SIZE,))
    optional_latent = Tensor(name="latent", dtype=np.float32, shape=(LATENT_SIZE,), optional=True)
    enhance = Tensor(name="enhance", dtype=np.float32, shape=(1,), optional=True)  # with --enhancer only
    models: dict[str, tuple[Callable[[FaceSwapper], Callable], list, list]] = {
        "swap_image": (
            lambda s: SwapImage(
                s, config.select, config.image_format, config.synthetic_tag, config.max_pixels, config.provenance
            ),
            [image, optional_latent, enhance],
            [
                Tensor(name="image", dtype=bytes, shape=(1,)),
                Tensor(name="swapped", dtype=np.int32, shape=(1,)),
                Tensor(name="faces", dtype=np.float32, shape=(-1, 16)),
                error,
            ],
        ),
        "swap_aligned": (
            SwapAligned,
            [Tensor(name="crops", dtype=np.uint8, shape=(size, size, 3)), optional_latent],
            [Tensor(name="swapped", dtype=np.uint8, shape=(size, size, 3)), error],
        ),
        "identity": (lambda s: Identity(s, config.max_pixels), [image], [latent, error]),
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


def check_ports(config: ServeConfig) -> None:
    """Refuse, in one line, a port that is taken or given twice: Triton itself would only log that it
    failed to start a service and keep waiting."""
    ports = {"--http-port": config.http_port, "--grpc-port": config.grpc_port}
    if config.metrics_port > 0:
        ports["--metrics-port"] = config.metrics_port
    seen: dict[int, str] = {}
    for flag, port in ports.items():
        if port in seen:
            raise SimswapError(f"{seen[port]} and {flag} are both {port}: give each service its own port")
        seen[port] = flag
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no obstacle
            try:
                probe.bind((config.host, port))
            except OSError as exc:
                raise SimswapError(
                    f"{flag} {port}: cannot listen on {config.host}:{port} ({exc.strerror}); stop what uses the "
                    f"port or choose another with {flag}"
                ) from None


def _extend_proxies(model_store: Path) -> None:
    """Append ``PROXY_HOOK`` to the proxy model of every model in ``model_store``."""
    proxies = sorted(model_store.glob("*/*/model.py"))
    names = ("def _wrap_response(", "get_config_from_handshake_server,")
    if not proxies or not all(name in proxies[0].read_text() for name in names):
        raise SimswapError(
            "this PyTriton's proxy model is not the one simswap-trt extends: install the supported version with "
            "pip install 'simswap-trt[serve]'"
        )
    for proxy in proxies:
        with proxy.open("a") as file:
            file.write(PROXY_HOOK)


def start(swappers: Sequence[FaceSwapper], config: ServeConfig = ServeConfig()):
    """Start Triton with the models bound and return the running ``pytriton.triton.Triton`` (stop it with
    ``.stop()``, which also removes its workspace, or use it as a context manager). Health:
    ``/v2/health/ready`` on the HTTP port, 200 once every model is loaded. A port in use is a
    ``SimswapError`` before anything starts."""
    stub_environment()
    try:
        from pytriton.exceptions import PyTritonError
        from pytriton.triton import Triton, TritonLifecyclePolicy
        from pytriton.utils.workspace import Workspace
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise SimswapError("serving needs PyTriton: pip install 'simswap-trt[serve]'") from None
    if not swappers:
        raise SimswapError("serving needs at least one swapper instance")
    check_ports(config)
    # the models go into the repository when bound, and Triton loads them while it starts (ready only then)
    policy = TritonLifecyclePolicy(launch_triton_on_startup=True, local_model_store=True)
    # PyTriton's start-up has short timeouts: its own client polls the starting server, and (without
    # PROXY_HOOK) instances 1..N-1 of a model give instance 0 one second to start. Under CPU contention a poll
    # or a model load can fail; a fresh server is tried again, at most START_ATTEMPTS times.
    for attempt in range(1, START_ATTEMPTS + 1):
        workspace = Workspace()
        triton = Triton(config=_triton_config(config), workspace=workspace, triton_lifecycle_policy=policy)
        try:
            bind_models(triton, swappers, config)
            _extend_proxies(workspace.model_store_path)
            _run(triton)
            break
        except (PyTritonError, InferenceServerException, HTTPException, ConnectionError, TimeoutError) as exc:
            _stop(triton, workspace)
            if attempt == START_ATTEMPTS:
                raise SimswapError(f"Triton could not load the models: {str(exc).splitlines()[0]}") from exc
            log.warning("Triton start %d of %d failed (%s); starting again", attempt, START_ATTEMPTS, exc)
        except BaseException:
            _stop(triton, workspace)
            raise
    log.info(
        "Triton serves %s on %s (HTTP %d, gRPC %d), %d instance(s), max batch %d, queue delay %d us; workspace %s",
        ", ".join(MODELS),
        config.host,
        config.http_port,
        config.grpc_port,
        len(swappers),
        config.max_batch,
        config.queue_delay_us,
        workspace.path,
    )
    return triton


def _stop(triton, workspace) -> None:
    """Stop a Triton that failed to start, and remove its workspace now: when ``tritonserver`` has exited,
    PyTriton's own stop, which removes it, may still be running in another thread."""
    triton.stop()
    shutil.rmtree(workspace.path, ignore_errors=True)


def _tritonservers() -> set[int]:
    """The process ids of this process's running ``tritonserver`` children (not exited ones), from /proc."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if name == "tritonserver" and rest[0] not in "ZX" and int(rest[1]) == os.getpid():
            pids.add(int(stat.parent.name))
    return pids


def _run(triton) -> None:
    """``triton.run()``; a ``tritonserver`` that exits while starting (a model failed to load: its log says
    why) is an error at once, not after PyTriton's start-up timeout of minutes: a watcher sees the process
    end and interrupts this (main) thread. (``tritonserver`` must be started from the main thread: it is
    ended when the thread that started it ends.)"""
    from pytriton.exceptions import PyTritonError

    lock = threading.Lock()
    started = threading.Event()
    exited = threading.Event()

    others = _tritonservers()  # servers started before (another Triton in this process)

    def watch() -> None:
        seen = False
        while not started.wait(0.2):
            running = bool(_tritonservers() - others)
            with lock:
                if seen and not running and not started.is_set():
                    exited.set()
                    _thread.interrupt_main()
                    return
            seen = seen or running

    watcher = threading.Thread(target=watch, name="triton-start-watch", daemon=True)
    watcher.start()
    try:
        try:
            triton.run()
        finally:
            with lock:
                started.set()
            watcher.join()
    except KeyboardInterrupt:
        if exited.is_set():
            raise PyTritonError("tritonserver exited while loading the models (its log above says why)") from None
        raise


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
