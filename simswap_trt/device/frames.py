"""``ResidentFrames``: frames that device detection uploaded, kept on the device so that the swap of the same
frames reads them there instead of uploading them again.

Residency is a value: an upload into a slot gives each frame a ``ResidentFrame`` (``keep``), device detection
returns them with its detections (``DeviceDetector.detect_resident``), and the caller hands each one to the
swap together with its frame (``FaceSwapper.detect_frames`` gives a ``FrameBatch`` that carries them;
``start_batch(..., resident=)``). The swap ``take``s them; a frame whose copy is gone is uploaded by the swap.
"""

from __future__ import annotations

import threading
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
    that its last record completes once no swap reads or writes them any more. ``generation`` counts its
    uploads: the frames of an earlier one are gone."""

    def __init__(self, host_memory: str) -> None:
        self.staging = Staging(host_memory)
        self.uploaded, self.released = cuda.Event(timing=False), cuda.Event(timing=False)
        self.generation = 0
        self.taken: set[int] = set()  # addresses of this generation's frames that a swap wrote into
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


@dataclass(frozen=True, eq=False)
class ResidentFrame:
    """A frame's contiguous device copy: at ``address`` in the staging buffer of ``slot``, from its upload
    number ``generation``. ``shape``: the frame's, so that a copy handed to the swap with another frame is
    refused. It stands for the frame's pixels as they were uploaded."""

    slot: FrameSlot
    generation: int
    address: int
    shape: tuple[int, ...]

    @property
    def buffer(self) -> cuda_memory.DeviceBuffer:
        return self.slot.staging.device


class ResidentFrames:
    """Frames kept on the device after an upload, each one's copy handed out as a value (``ResidentFrame``).

    Device detection uploads each chunk of frames into a slot (``acquire``, then the staging and
    ``uploaded`` event of the slot), and ``keep``s them once it no longer reads them, which returns their
    ``ResidentFrame``s. A swap given them ``take``s them: it orders its work after the slot's ``uploaded``
    event, and with ``consume`` (the paste-back writes into the copy) the copy is not given out again; it
    ``release``s the slots after its last device work on them (``released`` recorded on that stream). A
    slot is reused, oldest first, once its upload and the work of every swap that used it are done (host
    waits); at most ``capacity`` slots exist unless every one is in use. A copy whose slot was reused before
    its swap is gone: that swap uploads the frame (as any frame without a copy). Thread-safe."""

    def __init__(self, host_memory: str = "staged", capacity: int = RESIDENT_UPLOADS) -> None:
        self.host_memory, self.capacity = host_memory, capacity
        self.slots: list[FrameSlot] = []
        self._stamps = 0
        self._closed = False
        self._lock = threading.Lock()

    def acquire(self) -> FrameSlot:
        """A slot to upload into (the copies of its earlier upload are gone), held until ``keep``."""
        with self._lock:
            if self._closed:
                raise EngineError("the device frames are closed")
            idle = [slot for slot in self.slots if not slot.pins]
            if len(self.slots) < self.capacity or not idle:
                slot = FrameSlot(self.host_memory)
                self.slots.append(slot)
            else:
                slot = min(idle, key=lambda s: s.stamp)  # the oldest: its swaps are the likeliest to be done
            slot.generation += 1
            slot.taken.clear()
            slot.pins += 1
        try:
            slot.wait_idle()
        except BaseException:
            self.keep(slot)
            raise
        return slot

    def keep(
        self, slot: FrameSlot, frames: Sequence[np.ndarray] = (), addresses: Sequence[int] = ()
    ) -> list[ResidentFrame]:
        """Release ``slot`` from ``acquire``; ``frames``' contiguous device copies are at ``addresses``, uploaded
        before ``slot.uploaded`` was recorded. Returns their copies (none after a failed upload)."""
        with self._lock:
            slot.pins -= 1
            self._stamps += 1
            slot.stamp = self._stamps
            return [
                ResidentFrame(slot, slot.generation, address, frame.shape)
                for frame, address in zip(frames, addresses, strict=True)
            ]

    def take(self, resident: Sequence[ResidentFrame | None], consume: bool) -> list[ResidentFrame | None]:
        """The copies of ``resident`` still on the device (None where a copy is gone: its slot was reused, a
        swap consumed it, or it is not one of these frames'; or where none was given); the slots are held
        until ``release``. ``consume``: the caller writes into the copies, which are not given out again."""
        found: list[ResidentFrame | None] = []
        with self._lock:
            for copy in resident:
                if copy is None or not self._live(copy):
                    found.append(None)
                    continue
                copy.slot.pins += 1
                if consume:
                    copy.slot.taken.add(copy.address)
                found.append(copy)
        return found

    def _live(self, copy: ResidentFrame) -> bool:
        slot = copy.slot
        mine = any(slot is other for other in self.slots)
        return mine and copy.generation == slot.generation and copy.address not in slot.taken

    def release(self, found: Sequence[ResidentFrame | None], stream: cuda.Stream) -> None:
        """After the caller's last work on the frames ``take`` gave it is enqueued on ``stream``."""
        with self._lock:
            for slot in {id(r.slot): r.slot for r in found if r is not None}.values():
                slot.released.record(stream)
            for resident in found:
                if resident is not None:
                    resident.slot.pins -= 1

    def memory(self) -> MemoryUse:
        with self._lock:
            return sum((slot.staging.memory() for slot in self.slots), MemoryUse())

    def close(self) -> None:
        """Wait for every slot's upload and users, then free them. Idempotent."""
        with self._lock:
            self._closed = True
            slots, self.slots = self.slots, []
        for slot in slots:
            slot.free()
