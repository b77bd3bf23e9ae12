"""A real Triton Inference Server (PyTriton) on 127.0.0.1 serves the tiny bundle to concurrent tritonclient
HTTP and gRPC clients; its answers equal the in-process FaceSwapper's; bad requests get errors and the
server keeps serving; it stops cleanly. One server for the whole module."""

import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.tiny import random_crops

pytest.importorskip("pytriton", reason="serving needs the 'serve' extra")
if int(np.__version__.split(".")[0]) >= 2:
    pytest.skip("PyTriton needs NumPy 1.x: run in the 'serve' environment (.ci/run)", allow_module_level=True)

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from simswap_trt import FaceSwapper  # noqa: E402
from simswap_trt.serving import FACE_COLUMNS, MODELS, ServeConfig, start  # noqa: E402
from simswap_trt.vision.detect import CenterFace  # noqa: E402

CLIENTS = {"http": httpclient, "grpc": grpcclient}
OUTPUTS = {"swap_image": ["image", "faces"], "swap_aligned": ["swapped"], "identity": ["latent"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])
    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    return astronaut, cv2.resize(camera, (256, 256))


@pytest.fixture(scope="module")
def reference(tiny_bundle, photos):
    """The in-process swapper the server's answers are compared with."""
    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=1, detector=CenterFace(threads=1))
    swapper.set_source(photos[0])
    return swapper


@pytest.fixture(scope="module")
def server(tiny_bundle, reference):
    swappers = [FaceSwapper.from_bundle(tiny_bundle.root, threads=1, detector=CenterFace(threads=1)) for _ in range(2)]
    for s in swappers:
        s.source_latent = reference.source_latent
    config = ServeConfig(http_port=free_port(), grpc_port=free_port(), metrics_port=0, max_batch=8, queue_delay_us=5000)
    triton = start(swappers, config)
    yield triton, config
    triton.stop()


@pytest.fixture
def pytriton_home():
    """A folder for PyTriton's workspaces, with a short path (its Unix socket paths must stay under 108 bytes)."""
    home = Path(tempfile.mkdtemp(prefix="pyt", dir="/tmp"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def client(kind, config):
    port = config.http_port if kind == "http" else config.grpc_port
    return CLIENTS[kind].InferenceServerClient(f"127.0.0.1:{port}")


def infer(kind, config, model, inputs, outputs):
    """One request: ``inputs`` maps names to arrays (numpy dtype object = BYTES)."""
    module = CLIENTS[kind]
    tensors = []
    for name, array in inputs.items():
        datatype = "BYTES" if array.dtype == object else {"uint8": "UINT8", "float32": "FP32"}[array.dtype.name]
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    with client(kind, config) as c:
        result = c.infer(model, tensors, outputs=[module.InferRequestedOutput(o) for o in outputs])
    return {o: result.as_numpy(o) for o in outputs}


def png(image):
    return np.array([[cv2.imencode(".png", image)[1].tobytes()]], dtype=object)


def test_server_is_ready_on_loopback(server):
    _, config = server
    for kind in CLIENTS:
        with client(kind, config) as c:
            assert c.is_server_live() and c.is_server_ready()
            assert all(c.is_model_ready(m) for m in MODELS)


def test_concurrent_swap_aligned_equals_face_swapper(server, reference):
    _, config = server
    # a latent far from the source's: the tiny random generator barely reacts to nearby identities
    other = np.random.default_rng(99).standard_normal(512).astype(np.float32)
    jobs = []
    for k in range(16):  # 8 HTTP and 8 gRPC clients, some with their own latent, 1-3 crops each
        crops = random_crops(1 + k % 3, seed=k)
        latent = np.broadcast_to(other, (len(crops), 512)).copy() if k % 4 == 1 else None
        jobs.append(("http" if k % 2 else "grpc", crops, latent))

    def send(job):
        kind, crops, latent = job
        inputs = {"crops": crops} | ({"latent": latent} if latent is not None else {})
        return infer(kind, config, "swap_aligned", inputs, ["swapped"])["swapped"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, jobs))
    for (_, crops, latent), got in zip(jobs, answers, strict=True):
        expected = reference.swap_aligned(crops, latent)
        assert got.shape == expected.shape and got.dtype == np.uint8
        if latent is not None:  # the request's latent was used, not the server's source
            assert np.abs(reference.swap_aligned(crops).astype(int) - expected).max() > 4
        # batched with other requests on the server: ONNX Runtime may round a value differently (1 LSB)
        assert np.abs(got.astype(int) - expected).max() <= 1


def test_concurrent_swap_image_and_identity_equal_face_swapper(server, reference, photos):
    _, config = server
    astronaut, camera = photos
    group = np.hstack([cv2.resize(astronaut, (256, 256)), camera])
    other = np.random.default_rng(98).standard_normal(512).astype(np.float32)  # far from the source
    with_other = copy.copy(reference)  # the same engines, another source identity
    with_other.source_latent = other

    def send(job):
        kind, name, latent = job
        inputs = {"image": png(images[name])} | ({"latent": other[None]} if latent else {})
        return infer(kind, config, "swap_image", inputs, ["image", "faces"])

    images = {"astronaut": astronaut, "group": group}
    jobs = [(kind, name, False) for kind in CLIENTS for name in ("astronaut", "group", "astronaut")]
    jobs += [(kind, "group", True) for kind in CLIENTS]  # a request with its own latent
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, jobs))
    for (_, name, latent), got in zip(jobs, answers, strict=True):
        want = (with_other if latent else reference).swap(images[name])
        decoded = cv2.imdecode(np.frombuffer(got["image"][0, 0], np.uint8), cv2.IMREAD_COLOR)
        assert np.abs(decoded.astype(int) - want.image).max() <= 1
        faces = got["faces"][0]
        assert faces.shape == (len(want.faces), len(FACE_COLUMNS))
        np.testing.assert_allclose(faces[:, :4], np.stack([f.box for f in want.faces]), atol=1e-3)
        np.testing.assert_array_equal(faces[:, -1], [f.swapped for f in want.faces])
    assert np.abs(reference.swap(group).image.astype(int) - with_other.swap(group).image).max() > 4  # they differ

    for kind in CLIENTS:
        latent = infer(kind, config, "identity", {"image": png(astronaut)}, ["latent"])["latent"]
        np.testing.assert_allclose(latent[0], reference.source_latent, atol=1e-5)


def assert_client_error(exc, kind, *words):
    """A 400-class reply of one line that names what was wrong, without a traceback or a server path."""
    message = exc.message()
    assert exc.status() == ("400" if kind == "http" else "StatusCode.INVALID_ARGUMENT"), (exc.status(), message)
    assert all(word in message for word in words), message
    assert "\n" not in message.strip() and "Traceback" not in message and ".py" not in message, message
    assert "/root" not in message and "/tmp" not in message and "/work" not in message, message


@pytest.mark.parametrize("kind", list(CLIENTS))
def test_bad_requests_get_400_errors_and_the_server_keeps_serving(server, reference, kind, caplog):
    _, config = server
    no_face = np.full((64, 64, 3), 128, np.uint8)
    nan_latent = np.full((1, 512), np.nan, np.float32)
    bad = [
        ("swap_image", {"image": np.array([[b"not an image"]], dtype=object)}, ["swap_image", "'image'", "readable"]),
        ("swap_image", {"image": png(no_face), "latent": nan_latent}, ["swap_image", "'latent'", "finite"]),
        ("identity", {"image": png(no_face)}, ["identity", "'image' item 0", "no face found"]),
        ("swap_aligned", {"crops": random_crops(1, size=100)}, ["unexpected shape"]),  # refused by Triton itself
    ]
    for model, inputs, words in bad:
        with pytest.raises(InferenceServerException) as refused:
            infer(kind, config, model, inputs, OUTPUTS[model])
        assert_client_error(refused.value, kind, *words)
        crops = random_crops(2, seed=7)
        good = infer(kind, config, "swap_aligned", {"crops": crops}, ["swapped"])["swapped"]
        assert np.abs(good.astype(int) - reference.swap_aligned(crops)).max() <= 1
    assert "swap_image: request refused: input 'image' item 0 is not a readable image" in caplog.text  # logged


@pytest.mark.parametrize("kind", list(CLIENTS))
def test_a_target_without_a_face_comes_back_unchanged(server, kind):
    _, config = server
    no_face = np.random.default_rng(5).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    got = infer(kind, config, "swap_image", {"image": png(no_face)}, ["image", "swapped", "faces"])
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(got["image"][0, 0], np.uint8), cv2.IMREAD_COLOR), no_face)
    assert got["swapped"].tolist() == [[0]]
    assert got["faces"].shape == (1, 1, len(FACE_COLUMNS)) and np.isnan(got["faces"]).all()  # no face rows


def test_one_bad_request_among_concurrent_ones_fails_alone(server, reference, photos):
    """8 concurrent clients, batched together by Triton: the garbage request gets its own 400 error, each
    valid one its swap."""
    _, config = server
    astronaut = cv2.resize(photos[0], (256, 256))
    want = reference.swap(astronaut)
    assert want.swapped_count == 1
    jobs = [("http" if k % 2 else "grpc", k == 3) for k in range(8)]

    def send(job):
        kind, garbage = job
        image = np.array([[b"\x89PNG garbage"]], dtype=object) if garbage else png(astronaut)
        try:
            return infer(kind, config, "swap_image", {"image": image}, ["image", "swapped"])
        except InferenceServerException as exc:
            return exc

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, jobs))
    for (kind, garbage), got in zip(jobs, answers, strict=True):
        if garbage:
            assert isinstance(got, InferenceServerException)
            assert_client_error(got, kind, "swap_image", "'image' item 0", "readable")
        else:
            assert not isinstance(got, InferenceServerException), got.message()
            decoded = cv2.imdecode(np.frombuffer(got["image"][0, 0], np.uint8), cv2.IMREAD_COLOR)
            assert np.abs(decoded.astype(int) - want.image).max() <= 1 and got["swapped"].tolist() == [[1]]


def test_a_failed_start_is_retried_on_a_fresh_server(tiny_bundle, reference, monkeypatch, caplog):
    """PyTriton's multi-instance set-up can race under CPU load; ``start`` then tries a fresh server."""
    from simswap_trt.serving import server as serving_server

    calls = []
    real_bind = serving_server.bind_models

    def flaky_bind(triton, swappers, config):
        calls.append(len(calls))
        if len(calls) == 1:
            raise InferenceServerException("load failed for model 'swap_image': Connection refused")
        real_bind(triton, swappers, config)

    monkeypatch.setattr(serving_server, "bind_models", flaky_bind)
    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=1)
    swapper.source_latent = reference.source_latent
    config = ServeConfig(http_port=free_port(), grpc_port=free_port(), metrics_port=0)
    triton = start([swapper], config)
    try:
        assert calls == [0, 1] and "Triton start 1 of 3 failed" in caplog.text
        crops = random_crops(1, seed=12)
        got = infer("http", config, "swap_aligned", {"crops": crops}, ["swapped"])["swapped"]
        assert np.abs(got.astype(int) - reference.swap_aligned(crops)).max() <= 1
    finally:
        triton.stop()


def test_a_model_that_fails_to_load_is_an_error_at_once(tiny_bundle, reference, monkeypatch, pytriton_home):
    """tritonserver exits when a model fails to load at start-up (planted: its proxy model raises on import);
    that is an error in seconds, not after PyTriton's start-up timeout (120 s), and nothing is left behind."""
    from simswap_trt.errors import SimswapError
    from simswap_trt.serving import server as serving_server

    monkeypatch.setattr(serving_server, "PROXY_HOOK", serving_server.PROXY_HOOK + "\nraise RuntimeError('planted')\n")
    monkeypatch.setattr(serving_server, "START_ATTEMPTS", 1)
    monkeypatch.setattr("pytriton.constants.PYTRITON_HOME", pytriton_home)
    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=1)
    swapper.source_latent = reference.source_latent
    config = ServeConfig(http_port=free_port(), grpc_port=free_port(), metrics_port=0)
    started = time.monotonic()
    with pytest.raises(SimswapError, match="Triton could not load the models: tritonserver exited while loading"):
        start([swapper], config)
    assert time.monotonic() - started < 60
    assert list(pytriton_home.iterdir()) == []


def test_server_stops_cleanly(server):
    triton, config = server
    triton.stop()
    assert not triton.is_alive()
    for port in (config.http_port, config.grpc_port):
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))


def http_status(url):
    """The HTTP status of a GET, None while nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_ready_only_once_every_model_is_loaded(tiny_bundle, reference):
    """Polled all through the start: /v2/health/ready never says 200 while a model is not ready."""
    import threading

    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=1)
    swapper.source_latent = reference.source_latent
    config = ServeConfig(http_port=free_port(), grpc_port=free_port(), metrics_port=0)
    base = f"http://127.0.0.1:{config.http_port}/v2"
    seen, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            models = [http_status(f"{base}/models/{m}/ready") for m in MODELS]
            seen.append((http_status(f"{base}/health/ready"), models))
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        triton = start([swapper], config)  # in this (main) thread: tritonserver ends with the thread that starts it
    finally:
        stop.set()
        poller.join()
    try:
        assert http_status(f"{base}/health/ready") == 200
        assert len(seen) > 10 and seen[0][0] is None  # polled from before the server listened
        assert all(models == [200] * len(MODELS) for ready, models in seen if ready == 200), seen
    finally:
        triton.stop()


def test_serve_command_in_a_fresh_process(tiny_bundle, photos, reference, tmp_path, pytriton_home):
    """The CLI sets up the Python backend stub's library path itself (no LD_LIBRARY_PATH given), serves,
    and on SIGTERM (kill, systemd, Kubernetes) stops promptly with status 0 and removes its workspace."""
    source = tmp_path / "source.png"
    cv2.imwrite(str(source), photos[0])
    config = ServeConfig(http_port=free_port(), grpc_port=free_port())
    home = pytriton_home  # where PyTriton makes its workspace
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"} | {"PYTRITON_HOME": str(home)}
    command = [sys.executable, "-m", "simswap_trt.cli", "serve", "--bundle", str(tiny_bundle.root)]
    command += ["--source", str(source), "--threads", "1", "--metrics-port", "0"]
    command += ["--http-port", str(config.http_port), "--grpc-port", str(config.grpc_port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(120):  # bounded: at most about a minute
            if http_status(f"http://127.0.0.1:{config.http_port}/v2/health/ready") == 200:
                break
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.5)
        else:
            pytest.fail("the server was not ready within a minute")
        assert list(home.iterdir()) != []  # the workspace while it serves
        crops = random_crops(1, seed=11)
        got = infer("grpc", config, "swap_aligned", {"crops": crops}, ["swapped"])["swapped"]
        assert np.abs(got.astype(int) - reference.swap_aligned(crops)).max() <= 1
    finally:
        process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert time.monotonic() - stopping < 30
    assert list(home.iterdir()) == [], output  # the workspace is gone


def test_sigterm_while_the_server_starts_removes_its_workspace(tiny_bundle, pytriton_home):
    """SIGTERM once PyTriton's workspace exists, before the models are loaded: status 143 (as every command),
    one line, and no workspace left."""
    env = os.environ | {"PYTRITON_HOME": str(pytriton_home)}
    command = [sys.executable, "-m", "simswap_trt.cli", "serve", "--bundle", str(tiny_bundle.root), "--threads", "1"]
    command += ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # bounded: at most a minute
            if list(pytriton_home.iterdir()):
                break
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.1)
        else:
            pytest.fail("no workspace within a minute")
    finally:
        process.send_signal(signal.SIGTERM)
        errors = process.communicate(timeout=60)[1]
    assert process.returncode == 143, errors
    assert errors.strip().splitlines()[-1] == "terminated (SIGTERM)"
    assert list(pytriton_home.iterdir()) == []
