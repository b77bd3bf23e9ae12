"""The device wing's shared mechanisms, each on its own: ``Chunks`` (a batch cut to a plan's profile, the
last chunk padded), ``cuda.GraphCache`` (replay, capture, least-recently-used eviction, eager fallback)
on the CPU stand-in of the GPU, and ``PinnedArray`` (a pinned buffer grown on demand)."""

import logging
from types import SimpleNamespace

import pytest
from support import fake_gpu
from support.fake_gpu import fake_cudart

from simswap_trt import cuda
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.cuda.memory import MemoryUse
from simswap_trt.device.chunks import Chunks
from simswap_trt.errors import EngineError


@pytest.fixture()
def gpu(monkeypatch):
    gpu = fake_gpu.install_fake_cuda(monkeypatch)
    calls = []
    cudart = fake_cudart(calls)
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    gpu.cudart_calls = calls
    return gpu


def recording_engine(min_batch, max_batch, calls):
    def execute_device(addresses, batch, stream):
        calls.append((dict(addresses), batch, stream))

    return SimpleNamespace(min_batch=min_batch, max_batch=max_batch, execute_device=execute_device)


def test_chunks_cut_to_the_profile_pad_the_last_chunk_and_offset_every_tensor():
    calls = []
    engine = recording_engine(2, 4, calls)
    chunks = Chunks.of(engine, 9)
    assert chunks.slices == [slice(0, 4), slice(4, 8), slice(8, 9)]
    assert chunks.batches == (4, 4, 2)  # the last chunk of 1 padded to the minimum of 2
    assert chunks.capacity == 10  # room for the padding
    chunks.enqueue(engine, {"in": (1000, 10), "out": (5000, 3)}, "stream")
    assert calls == [
        ({"in": 1000, "out": 5000}, 4, "stream"),
        ({"in": 1040, "out": 5012}, 4, "stream"),
        ({"in": 1080, "out": 5024}, 2, "stream"),
    ]
    assert Chunks(4, 2, 4).capacity == 4 and Chunks(1, 1, 4).capacity == 1  # nothing to pad
    assert Chunks(0, 2, 4).capacity == 0 and Chunks(0, 2, 4).batches == ()


def test_chunks_run_on_one_context_each_when_given_contexts():
    calls, contexts = [], [SimpleNamespace(enqueue=lambda *args, k=k: calls.append((k, *args))) for k in range(2)]
    executed = []
    engine = recording_engine(1, 3, executed)
    Chunks.of(engine, 5).enqueue(engine, {"x": (0, 8)}, "stream", contexts)
    assert calls == [(0, {"x": 0}, 3, "stream"), (1, {"x": 24}, 2, "stream")]
    assert executed == []  # straight on the contexts, not through the engine's slots


class Owner:
    """What a graph owns (an execution context): freed with it."""

    def __init__(self, made):
        self.freed = False
        made.append(self)

    def free(self):
        self.freed = True


def enqueue_work(stream, ran, key):
    return lambda owners: fake_gpu.GPU.enqueue(stream.handle, "work", lambda: ran.append(key))


def test_graph_cache_replays_captures_and_frees_the_least_recently_used(gpu):
    stream, cache, made, ran = cuda.Stream(), cuda.GraphCache(limit=2), [], []

    def eager():
        raise AssertionError("every key here gets a graph")

    for key in (1, 1, 2, 3, 1):
        cache.run(key, stream, lambda: [Owner(made)], enqueue_work(stream, ran, key), eager, f"batch {key}")
    stream.synchronize()
    assert ran == [1, 1, 2, 3, 1]  # each key ran once per call: eagerly before its capture, then replayed
    assert [c[0] for c in gpu.cudart_calls].count("graph launch") == 1  # the second call of key 1
    assert list(cache) == [3, 1]  # key 1 (least recently used) was evicted by 3, key 2 by key 1's recapture
    assert [owner.freed for owner in made] == [True, True, False, False]  # freed with their graphs
    assert cache[1][1] == [made[3]]  # each graph with what it owns
    cache.free()
    assert all(owner.freed for owner in made) and not len(cache)
    stream.free()
    assert not gpu.live  # every graph and executable destroyed


def test_graph_cache_runs_eagerly_without_owners_or_capture_and_remembers_it(gpu, caplog):
    stream, cache, made, ran, eager = cuda.Stream(), cuda.GraphCache(limit=4), [], [], []

    def no_context():
        raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")

    def refused_under_capture(owners):
        if stream.capture is not None:
            raise RuntimeError("operation not permitted when stream is capturing")
        ran.append("run")

    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        for _ in range(2):
            cache.run("a", stream, no_context, enqueue_work(stream, ran, "a"), lambda: eager.append("a"), "batch a")
        for _ in range(2):
            cache.run("b", stream, lambda: [Owner(made)], refused_under_capture, lambda: eager.append("b"), "batch b")
    assert eager == ["a", "a", "b"]  # "b" ran on its new owner first, then eagerly without a second capture try
    assert ran == ["run"] and cache.failed == {"a", "b"} and not len(cache)
    assert [owner.freed for owner in made] == [True]  # the owner of the failed capture was freed
    assert "no CUDA graph for batch a: TensorRT could not create an execution context" in caplog.text
    assert "CUDA graph capture failed: RuntimeError: operation not permitted" in caplog.text
    assert "batch b runs without a graph" in caplog.text
    stream.free()
    assert not gpu.live


def test_pinned_array_grows_on_demand_and_reports_what_it_holds(gpu):
    array = cuda_memory.PinnedArray(headroom=True)
    view = array.reserve(1000)
    assert view.nbytes == 1000 and array.memory() == MemoryUse(0, 1280)  # a quarter more, 256-byte aligned
    first = array.buffer
    assert array.reserve(1200).nbytes == 1200 and array.buffer is first  # fits: reused
    array.reserve(2000)
    assert array.buffer is not first and first.array is None  # grown: the old buffer was freed
    assert array.memory() == MemoryUse(0, 2560) and len(gpu.live) == 1
    exact = cuda_memory.PinnedArray()
    exact.reserve(1000)
    assert exact.memory() == MemoryUse(0, 1024)
    for owner in (array, exact):
        owner.free()
        owner.free()  # idempotent
    assert not gpu.live and array.memory() == MemoryUse()
