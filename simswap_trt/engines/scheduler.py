"""Pure scheduling logic of the asynchronous engines, kept apart from CUDA so it is tested on any machine.

A request of N items is cut into chunks no larger than the engine profile's maximum batch. Chunks go
round-robin through ``depth`` slots (each slot: its own execution context, stream, device and pinned
buffers). Chunk k+1 is submitted before chunk k is collected, so the upload of one chunk, the compute of
another and the download of a third overlap; a slot is reused only after its previous chunk was collected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from simswap_trt.errors import ConfigError

T = TypeVar("T")


def chunk_batches(total: int, max_batch: int) -> list[slice]:
    """Contiguous slices covering ``range(total)`` exactly once, none longer than ``max_batch``."""
    if max_batch < 1:
        raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
    return [slice(start, min(start + max_batch, total)) for start in range(0, total, max_batch)]


class Pipeline(Generic[T]):
    """Drives ``submit(slot, chunk)`` / ``collect(slot, chunk) -> T`` over rotating slots.

    ``run`` yields the collected results in chunk order. At most ``depth`` chunks are in flight, and a slot
    is never submitted to again before its previous chunk was collected.
    """

    def __init__(self, depth: int, submit: Callable[[int, slice], None], collect: Callable[[int, slice], T]):
        if depth < 1:
            raise ConfigError(f"depth must be at least 1, got {depth}")
        self.depth, self._submit, self._collect = depth, submit, collect

    def run(self, chunks: list[slice]) -> Iterator[T]:
        in_flight: deque[tuple[int, slice]] = deque()
        for index, chunk in enumerate(chunks):
            slot = index % self.depth
            if len(in_flight) == self.depth:  # the oldest chunk holds this slot: finish it first
                yield self._collect(*in_flight.popleft())
            self._submit(slot, chunk)
            in_flight.append((slot, chunk))
        while in_flight:
            yield self._collect(*in_flight.popleft())
