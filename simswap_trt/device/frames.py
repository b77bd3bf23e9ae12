"""``ResidentFrames``: frames that device detection uploaded, kept on the device so that the swap of the same
frames reads them there instead of uploading them again."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simswap_trt import cuda
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.cuda.memory import MemoryUse, Staging
from simswap_trt.errors import EngineError

RESIDENT_UPLOADS = 4  # uploads of frames kept on the device: the one being detected, two queued, one swapped


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
    def buffer(self) -> cuda_memory.DeviceBuffer:
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
