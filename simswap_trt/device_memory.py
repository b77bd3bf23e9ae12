"""Memory of the device path: staging buffers (pinned or mapped host memory and its device side), device
buffers grown on demand, and ``ResidentFrames``: frames that device detection uploaded, kept on the device
so that the swap of the same frames reads them there instead of uploading them again."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from simswap_trt import cuda
from simswap_trt.errors import EngineError

ALIGN = 256  # bytes; every table and frame starts on a boundary the kernels can read with any type
RESIDENT_UPLOADS = 4  # uploads of frames kept on the device: the one being detected, two queued, one swapped


def aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


@dataclass(frozen=True)
class MemoryUse:
    """Bytes of device memory and of page-locked (pinned or mapped) host memory that one part holds. Mapped
    memory, which the GPU reads in place (integrated GPUs), counts once, as pinned."""

    device: int = 0
    pinned: int = 0

    def __add__(self, other: MemoryUse) -> MemoryUse:
        return MemoryUse(self.device + other.device, self.pinned + other.pinned)


@dataclass(frozen=True)
class SwapperMemory:
    """What a ``FaceSwapper`` holds on the device and in pinned host memory, per part (the engines with
    their execution contexts' activation memory, the device stages' workspaces and resident frames)."""

    parts: Mapping[str, MemoryUse] = field(default_factory=dict)

    @property
    def device(self) -> int:
        return sum(use.device for use in self.parts.values())

    @property
    def pinned(self) -> int:
        return sum(use.pinned for use in self.parts.values())

    def lines(self) -> list[str]:
        """One line per part and the total, in MiB."""
        rows = [*self.parts.items(), ("total", MemoryUse(self.device, self.pinned))]
        mib = 2**20
        return [f"{name:<14}device {u.device / mib:8.1f} MiB, pinned {u.pinned / mib:8.1f} MiB" for name, u in rows]


def buffers_use(*buffers) -> MemoryUse:
    """What live buffers hold: pinned and mapped buffers (``array``) as pinned host memory, device buffers
    (``nbytes``) as device memory; a buffer listed twice (mapped: both host and device side) counts once."""
    device = pinned = 0
    for buffer in {id(b): b for b in buffers if b is not None}.values():
        if hasattr(buffer, "array"):
            pinned += buffer.array.nbytes if buffer.array is not None else 0
        elif buffer.ptr:
            device += buffer.nbytes
    return MemoryUse(device, pinned)


class Staging:
    """A pinned host buffer and a device buffer of the same size, grown on demand and reused. ``layout``
    places arrays front to back (aligned) and returns their device addresses; ``write`` fills the pinned
    mirror; ``upload`` copies the used part in one asynchronous copy. With ``host_memory="mapped"``
    (integrated GPUs, see ``cuda.host_memory_strategy``) one mapped pinned buffer is both: the kernels read
    what the host wrote, and ``upload`` copies nothing."""

    def __init__(self, host_memory: str = "staged") -> None:
        self.pinned: cuda.PinnedBuffer | None = None
        self.device: cuda.DeviceBuffer | None = None
        self.used = 0
        self.host_memory = host_memory

    def layout(self, sizes: Sequence[int]) -> list[int]:
        offsets, end = [], 0
        for size in sizes:
            offsets.append(aligned(end))
            end = offsets[-1] + size
        if self.device is None or self.device.nbytes < end:
            self.free()
            capacity = aligned(max(end, 1) * 5 // 4)  # some headroom: frame sizes vary a little
            self.pinned, self.device = cuda.io_buffers((capacity,), np.uint8, self.host_memory)
        self.used = end
        return [self.device.ptr + offset for offset in offsets]

    def write(self, address: int, array: np.ndarray) -> None:
        offset = address - self.device.ptr
        self.pinned.array[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)[...] = array

    def upload(self, stream: cuda.Stream) -> None:
        self.device.upload(self.pinned.array[: self.used], stream)

    def memory(self) -> MemoryUse:
        return buffers_use(self.pinned, self.device)

    def free(self) -> None:
        for buffer in (self.pinned, self.device):
            if buffer is not None:
                buffer.free()
        self.pinned = self.device = None


class DeviceArray:
    """A device buffer of at least ``nbytes``, grown on demand (its contents are not kept)."""

    def __init__(self) -> None:
        self.buffer: cuda.DeviceBuffer | None = None

    def reserve(self, nbytes: int) -> int:
        if self.buffer is None or self.buffer.nbytes < nbytes:
            self.free()
            self.buffer = cuda.DeviceBuffer(nbytes)
        return self.buffer.ptr

    def memory(self) -> MemoryUse:
        return buffers_use(self.buffer)

    def free(self) -> None:
        if self.buffer is not None:
            self.buffer.free()
            self.buffer = None


class FrameSlot:
    """One upload of frames (and its uploader's tables) in a staging buffer of its own. ``uploaded`` is
    recorded after the upload; ``released`` on the swap's download stream after each use of its frames, so
    that its last record completes once no swap reads or writes them any more."""

    def __init__(self, host_memory: str) -> None:
        self.staging = Staging(host_memory)
        self.uploaded, self.released = cuda.Event(timing=False), cuda.Event(timing=False)
        self.frames: list[tuple[int, weakref.ref, int] | None] = []  # (id, image, address); None once taken
        self.pins = 0  # uploads and swaps using the slot now: it is not reused meanwhile
        self.stamp = 0  # order of the uploads

    def wait_idle(self) -> None:
        """Host wait until its upload is done (the pinned mirror is no longer read) and no swap reads or writes
        its frames any more."""
        self.uploaded.synchronize()
        self.released.synchronize()

    def free(self) -> None:
        self.wait_idle()
        self.staging.free()
        self.uploaded.free()
        self.released.free()


@dataclass(frozen=True)
class ResidentFrame:
    """A frame's contiguous device copy: its address in its slot's staging buffer."""

    slot: FrameSlot
    address: int

    @property
    def buffer(self) -> cuda.DeviceBuffer:
        return self.slot.staging.device


class ResidentFrames:
    """Frames kept on the device after an upload, found again by the identity of their host arrays.

    Device detection uploads each chunk of frames into a slot (``acquire``, then the staging and
    ``uploaded`` event of the slot), and ``keep``s them once it no longer reads them. A swap of the same
    array objects then ``find``s their device copies: it orders its work after the slot's ``uploaded``
    event, and with ``consume`` (the paste-back writes into the copy) the copy is no longer offered; it
    ``release``s the slots after its last device work on them (``released`` recorded on that stream). A
    slot is reused, oldest first, once its upload and the work of every swap that used it are done (host
    waits); at most ``capacity`` slots exist unless every one is in use. A frame whose slot was reused
    before its swap is uploaded by the swap (as any frame not found). Frames must not change in place between
    their upload and the swap: the swap would read them as they were uploaded. Thread-safe."""

    def __init__(self, host_memory: str = "staged", capacity: int = RESIDENT_UPLOADS) -> None:
        self.host_memory, self.capacity = host_memory, capacity
        self.slots: list[FrameSlot] = []
        self._index: dict[int, tuple[FrameSlot, int]] = {}  # id(image) -> its latest device copy
        self._stamps = 0
        self._closed = False
        self._lock = threading.Lock()

    def acquire(self) -> FrameSlot:
        """A slot to upload into (its frames are forgotten), held until ``keep``."""
        with self._lock:
            if self._closed:
                raise EngineError("the device frames are closed")
            idle = [slot for slot in self.slots if not slot.pins]
            if len(self.slots) < self.capacity or not idle:
                slot = FrameSlot(self.host_memory)
                self.slots.append(slot)
            else:
                slot = min(idle, key=lambda s: s.stamp)  # the oldest: its swaps are the likeliest to be done
                self._forget(slot)
            slot.pins += 1
        try:
            slot.wait_idle()
        except BaseException:
            self.keep(slot)
            raise
        return slot

    def keep(self, slot: FrameSlot, images: Sequence[np.ndarray] = (), addresses: Sequence[int] = ()) -> None:
        """Release ``slot`` from ``acquire``; ``images``' contiguous device copies are at ``addresses``, uploaded
        before ``slot.uploaded`` was recorded. Nothing is kept when ``images`` is empty (a failed upload)."""
        with self._lock:
            slot.pins -= 1
            self._stamps += 1
            slot.stamp = self._stamps
            for image, address in zip(images, addresses, strict=True):
                older = self._index.get(id(image))
                if older is not None:  # an earlier upload of the same array: only the latest one is found
                    older[0].frames[older[1]] = None
                self._index[id(image)] = (slot, len(slot.frames))
                slot.frames.append((id(image), weakref.ref(image), address))

    def find(self, images: Sequence[np.ndarray], consume: bool) -> list[ResidentFrame | None]:
        """Each image's device copy (None where there is none); the slots found are held until ``release``.
        ``consume``: the caller writes into the copies, which are then no longer offered."""
        found: list[ResidentFrame | None] = []
        with self._lock:
            for image in images:
                hit = self._index.get(id(image))
                entry = hit[0].frames[hit[1]] if hit is not None else None
                if entry is None or entry[1]() is not image:  # taken, or the id of an array that is gone
                    found.append(None)
                    continue
                slot, k = hit
                found.append(ResidentFrame(slot, entry[2]))
                slot.pins += 1
                if consume:
                    slot.frames[k] = None
                    del self._index[id(image)]
        return found

    def release(self, found: Sequence[ResidentFrame | None], stream: cuda.Stream) -> None:
        """After the caller's last work on the frames ``find`` gave it is enqueued on ``stream``."""
        with self._lock:
            for slot in {id(r.slot): r.slot for r in found if r is not None}.values():
                slot.released.record(stream)
            for resident in found:
                if resident is not None:
                    resident.slot.pins -= 1

    def memory(self) -> MemoryUse:
        with self._lock:
            return sum((slot.staging.memory() for slot in self.slots), MemoryUse())

    def _forget(self, slot: FrameSlot) -> None:
        for k, entry in enumerate(slot.frames):
            if entry is not None and self._index.get(entry[0]) == (slot, k):
                del self._index[entry[0]]
        slot.frames = []

    def close(self) -> None:
        """Wait for every slot's upload and users, then free them. Idempotent."""
        with self._lock:
            self._closed = True
            slots, self.slots = self.slots, []
            self._index.clear()
        for slot in slots:
            slot.free()
