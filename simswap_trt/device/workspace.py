"""What one batch in flight holds on the device path: a ``Workspace`` (compute stream, staging, device
buffers, events, captured graphs) and the batch's ``DeviceTicket``/``Staged`` records. A workspace is reused
only once its previous batch is finished."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simswap_trt import cuda
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.cuda.memory import DeviceArray, MemoryUse, PinnedArray, Staging
from simswap_trt.device.chunks import Chunks
from simswap_trt.kernels import PreprocessTables

MAX_GRAPHS = 8  # captured graphs kept per workspace (least recently used dropped, with their contexts)
MAX_WORKSPACES = 8  # batches in flight at once; idle workspaces beyond ``depth`` are freed when one is taken


class Workspace:
    """Everything one batch in flight uses: a compute stream, staging, device buffers and events."""

    def __init__(self, host_memory: str = "staged") -> None:
        self.compute = cuda.Stream()
        # frames not yet on the device + preprocessing tables; paste-back tables
        self.inputs, self.masks = Staging(host_memory), Staging(host_memory)
        self.targets, self.swapped = DeviceArray(), DeviceArray()  # generator input and output
        self.regions = PinnedArray(headroom=True)  # downloaded union regions (or a synchronous output)
        self.uploaded, self.masks_uploaded, self.computed, self.done = (cuda.Event(timing=False) for _ in range(4))
        self.held = False  # by a started batch until it is finished
        self.preprocessed, self.crops_downloaded = cuda.Event(timing=False), cuda.Event(timing=False)
        self.crops = PinnedArray()  # target crops (host parser) or labels (parser plan)
        self.parser_inputs, self.parser_logits, self.parser_labels = DeviceArray(), DeviceArray(), DeviceArray()
        self.contexts: list = []  # graph mode: contexts of the eager runs (never captured), one per chunk
        self.activation = DeviceArray()  # graph mode: the activation memory all its generator contexts share
        self.enhancer_inputs, self.enhanced = DeviceArray(), DeviceArray()  # the face enhancer's input and output
        # graph mode, by launch signature: each graph with the contexts it was captured on (its own)
        self.graphs = cuda.GraphCache(MAX_GRAPHS)
        self.used = 0  # when a batch last took the workspace (order of use)

    def memory(self) -> MemoryUse:
        """Its staging, generator, region, parser, enhancer and shared activation buffers."""
        arrays = (self.targets, self.swapped, self.activation, self.regions, self.crops)
        arrays += (self.parser_inputs, self.parser_logits, self.parser_labels, self.enhancer_inputs, self.enhanced)
        return sum((array.memory() for array in arrays), self.inputs.memory() + self.masks.memory())

    def free(self) -> None:
        """Wait for the workspace's work, then free it; after a device fault, as much as can be."""
        steps = [self.compute.synchronize, self.done.synchronize]
        steps += [owner.free for owner in (self.inputs, self.masks, self.targets, self.swapped, self.regions)]
        steps += [self.enhancer_inputs.free, self.enhanced.free]
        steps += [event.free for event in (self.uploaded, self.masks_uploaded, self.computed, self.done)]
        cuda.free_all(*steps, self.free_parsing, self.free_graphs, self.compute.free)

    def free_graphs(self) -> None:
        contexts, self.contexts = self.contexts, []
        cuda.free_all(self.graphs.free, *[context.free for context in contexts])
        self.activation.free()  # after the contexts that used it

    def free_parsing(self) -> None:
        for event in (self.preprocessed, self.crops_downloaded):
            event.free()
        for owner in (self.crops, self.parser_inputs, self.parser_logits, self.parser_labels):
            owner.free()


@dataclass
class DeviceTicket:
    """A batch started on a workspace: what ``finish`` needs to assemble the output images."""

    images: Sequence[np.ndarray]
    workspace: Workspace
    regions: list[tuple[int, tuple[int, int, int, int], int]]  # (image, union region, offset in regions)


@dataclass
class Staged:
    """A batch's inputs on the device: frame addresses (and each frame's buffer), the preprocessing tables,
    the latents, the generator's input and output, its chunks."""

    frames: list[int]
    buffers: list[cuda_memory.DeviceBuffer]
    tables: PreprocessTables
    latents: int  # float32 [chunks.capacity, 512]
    targets: int
    swapped: int
    chunks: Chunks

    @property
    def count(self) -> int:
        return self.chunks.count
