"""``Chunks``: a batch of items through a plan on device buffers, cut into chunks no larger than the plan's
maximum batch, the last one padded up to its minimum batch. The device stages run the generator, ArcFace
and the face parser this way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simswap_trt import cuda
from simswap_trt.engines.scheduler import chunk_batches


@dataclass(frozen=True)
class Chunks:
    """``count`` items in chunks of at most ``max_batch``, each run with a batch of at least ``min_batch``
    (the plan's profile): every tensor needs room for ``capacity`` items, the padding of the last chunk
    included (what the padding computes is never read)."""

    count: int
    min_batch: int
    max_batch: int

    @classmethod
    def of(cls, engine: Any, count: int) -> Chunks:
        """The chunks of ``count`` items for ``engine``'s profile (``min_batch``, ``max_batch``)."""
        return cls(count, engine.min_batch, engine.max_batch)

    @property
    def slices(self) -> list[slice]:
        return chunk_batches(self.count, self.max_batch)

    @property
    def batches(self) -> tuple[int, ...]:
        """The batch each chunk runs with (its length, padded up to ``min_batch``)."""
        return tuple(max(chunk.stop - chunk.start, self.min_batch) for chunk in self.slices)

    @property
    def capacity(self) -> int:
        """Items each tensor needs room for: ``count``, or more where the last chunk is padded."""
        slices = self.slices
        return max(self.count, slices[-1].start + self.min_batch) if slices else self.count

    def enqueue(
        self,
        engine: Any,
        tensors: Mapping[str, tuple[int, int]],
        stream: cuda.Stream,
        contexts: Sequence[Any] | None = None,
    ) -> None:
        """Enqueue every chunk on ``stream``: ``tensors`` maps each tensor of the plan to (device address of item
        0, bytes per item). Each chunk runs through ``engine.execute_device`` or, with ``contexts`` (one per
        chunk, ``TensorRTEngine.device_context``), on its own context straight on ``stream``, as a graph
        capture needs."""
        for k, (chunk, batch) in enumerate(zip(self.slices, self.batches, strict=True)):
            addresses = {name: address + chunk.start * item for name, (address, item) in tensors.items()}
            if contexts is None:
                engine.execute_device(addresses, batch, stream)
            else:
                contexts[k].enqueue(addresses, batch, stream)
