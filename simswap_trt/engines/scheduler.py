"""Pure scheduling logic of work in flight, kept apart from CUDA so it is tested on any machine.

``InFlightQueue`` is the one scheduler of started, unfinished work: the engines' chunks (``Pipeline``),
``FaceSwapper.swap_stream``, video (``StreamSwapper``) and serving keep up to ``depth`` units started and
finish them in start order, so the device works on one while the host prepares the next.

For the asynchronous engines, a request of N items is cut into chunks no larger than the engine profile's
maximum batch. Chunks go round-robin through ``depth`` slots (each slot: its own execution context,
stream, device and pinned buffers). Chunk k+1 is submitted before chunk k is collected, so the upload of
one chunk, the compute of another and the download of a third overlap; a slot is reused only after its
previous chunk was collected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from simswap_trt.errors import ConfigError

T = TypeVar("T")
S = TypeVar("S")
W = TypeVar("W")


def chunk_batches(total: int, max_batch: int) -> list[slice]:
    """Contiguous slices covering ``range(total)`` exactly once, none longer than ``max_batch``."""
    if max_batch < 1:
        raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
    return [slice(start, min(start + max_batch, total)) for start in range(0, total, max_batch)]


def check_depth(depth: int) -> int:
    """``depth`` (units in flight), or a ``ConfigError`` when it is below 1."""
    if depth < 1:
        raise ConfigError(f"depth must be at least 1, got {depth}")
    return depth


class InFlightQueue(Generic[S, T]):
    """Started work (``S``: what ``start`` returned), finished by ``finish(started) -> T`` in start order."""

    def __init__(self, depth: int, finish: Callable[[S], T]) -> None:
        self.depth, self._finish = check_depth(depth), finish
        self._started: deque[S] = deque()

    def __len__(self) -> int:
        return len(self._started)

    def add(self, started: S) -> None:
        """Queue started work; call ``finished(depth - 1)`` first to keep at most ``depth`` in flight."""
        self._started.append(started)

    def finished(self, keep: int) -> Iterator[T]:
        """Finish the oldest started work, in order, until at most ``keep`` are in flight."""
        while len(self._started) > keep:
            yield self._finish(self._started.popleft())


def in_flight(items: Iterable[W], start: Callable[[W], S], finish: Callable[[S], T], depth: int) -> Iterator[T]:
    """``finish(start(item))`` of each item, in order, with up to ``depth`` items started and not finished:
    item k+1 is started before item k is finished."""
    queue: InFlightQueue[S, T] = InFlightQueue(depth, finish)
    for item in items:
        yield from queue.finished(depth - 1)
        queue.add(start(item))
    yield from queue.finished(0)


class Pipeline(Generic[T]):
    """Drives ``submit(slot, chunk)`` / ``collect(slot, chunk) -> T`` over rotating slots.

    ``run`` yields the collected results in chunk order. At most ``depth`` chunks are in flight, and a slot
    is never submitted to again before its previous chunk was collected.
    """

    def __init__(self, depth: int, submit: Callable[[int, slice], None], collect: Callable[[int, slice], T]):
        self.depth, self._submit, self._collect = check_depth(depth), submit, collect

    def run(self, chunks: list[slice]) -> Iterator[T]:
        # chunk k takes slot k % depth, which chunk k - depth held: in_flight finishes that one first
        return in_flight(enumerate(chunks), self._start, lambda started: self._collect(*started), self.depth)

    def _start(self, indexed: tuple[int, slice]) -> tuple[int, slice]:
        index, chunk = indexed
        self._submit(index % self.depth, chunk)
        return index % self.depth, chunk
