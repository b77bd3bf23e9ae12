"""Swap faces in a video file: decoding, detection, swapping and encoding run at the same time in four
stages joined by bounded queues, so a fixed number of frames is in flight whatever the video's length.

    decode --(window frames)--> detect (batches) --(2 batches)--> track, smooth, swap (caller's thread)
      |                                                                    |
      +------------ audio/subtitle packets ------------> encode <--(window frames)

When the swapper's stages run on the device, the swap stage keeps ``options.depth`` batches in flight
there (``FaceSwapper.start_batch``/``finish_batch``), so uploads, device work and downloads of
consecutive batches overlap.

The output is written to a hidden temporary file next to ``output`` and renamed at the end; an error or
Ctrl-C deletes it, so no partial output is ever left.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simswap_trt.errors import InputError, OutputError
from simswap_trt.files import check_output, ensure_folder
from simswap_trt.provenance.metadata import video_metadata
from simswap_trt.provenance.signing import Provenance
from simswap_trt.swapper import FaceSwapper
from simswap_trt.video.io import Frame, VideoReader, VideoWriter, av, from_bgr, temporary_path
from simswap_trt.video.stream import StreamSwapper, SwappedFrame, VideoOptions

log = logging.getLogger(__name__)

_END = object()


@dataclass(frozen=True)
class VideoReport:
    frames: int  # frames written
    frames_swapped: int  # frames with at least one swapped face
    tracks: int  # face tracks seen
    bridged: int  # faces filled in from their track where the detector missed them
    damaged: int  # input packets that could not be decoded (skipped)
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


class _Stage(threading.Thread):
    """A thread that records its exception, for the caller to re-raise."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._work = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event, producer: threading.Thread):
    """The next item, or ``_END`` once the producer has stopped (its error is raised here)."""
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if not producer.is_alive():
                error = getattr(producer, "error", None)
                if error is not None:
                    raise error from None
                if q.empty():
                    return _END
    return _END


def swap_video(
    swapper: FaceSwapper,
    target: str | Path,
    output: str | Path,
    options: VideoOptions = VideoOptions(),
    start: float = 0.0,
    duration: float | None = None,
    codec: str = "libx264",
    crf: int | None = 18,
    overwrite: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    provenance: Provenance = Provenance(),
) -> VideoReport:
    """Swap the source identity of ``swapper`` onto the faces of the video ``target`` and write ``output``.

    Audio and subtitle streams are copied bit for bit; the video keeps its timestamps, size, aspect,
    rotation and colour description and is encoded with ``codec`` (``crf`` for libx264/libx265; 0 is
    lossless). Frames without a selected face are encoded from the decoded frame unchanged. ``start`` and
    ``duration`` (seconds) select part of the clip. ``progress(written, expected)`` is called after each
    frame written (``expected`` is None when the file does not tell). ``provenance``: the synthetic-media
    container tags (on by default) and, with a signer, a C2PA manifest signed into the finished file before
    it is renamed into place (a failure leaves nothing). Raises ``InputError`` for unreadable
    inputs and ``OutputError`` for outputs that may not be written (an existing one without ``overwrite``).
    """
    target, output = Path(target), Path(output)
    if not check_output(output, [target], overwrite):
        raise OutputError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    began = time.perf_counter()
    stream = StreamSwapper(swapper, options)
    reader = VideoReader(target, start, duration)
    ensure_folder(output.parent)
    partial = temporary_path(output)
    try:
        metadata = video_metadata() if provenance.synthetic else None
        writer = VideoWriter(partial, reader, codec, crf, metadata)
    except BaseException:
        reader.close()
        partial.unlink(missing_ok=True)
        raise
    expected = reader.frame_count
    stop = threading.Event()
    frames_in: queue.Queue = queue.Queue(options.window)
    detected: queue.Queue = queue.Queue(2)  # batches of (frame, faces)
    frames_out: queue.Queue = queue.Queue(options.window)
    counts = {"frames": 0, "swapped": 0, "bridged": 0}

    def decode() -> None:
        try:
            for item in reader:
                if stop.is_set():
                    return
                _put(frames_in if isinstance(item, Frame) else frames_out, item, stop)
        except av.FFmpegError as exc:
            raise InputError(f"{target}: decoding failed ({exc}); is the file complete?") from None
        _put(frames_in, _END, stop)

    def encode() -> None:
        while True:
            item = _get(frames_out, stop, swapping)
            if item is _END:
                return
            try:
                write(item)
            except av.FFmpegError as exc:
                raise InputError(f"{output}: encoding with {codec} failed ({exc})") from None

    def write(item) -> None:
        if not isinstance(item, SwappedFrame):
            writer.write_packet(item)
            return
        frame: Frame = item.payload
        writer.write_frame(from_bgr(frame.image, item.image, frame.source) if item.changed else frame.source)
        counts["frames"] += 1
        counts["swapped"] += item.changed
        counts["bridged"] += sum(face.bridged for face in item.faces)
        if progress is not None:
            progress(counts["frames"], expected)

    def detect() -> None:
        done = False
        while not done:
            batch: list[Frame] = []
            while len(batch) < options.batch:
                item = _get(frames_in, stop, decoding)
                if item is _END:
                    done = True
                    break
                batch.append(item)
            released = stream.detection.push([f.image for f in batch], batch)  # may hold frames back
            if done:
                released += stream.detection.flush()
            if released:
                _put(detected, released, stop)
        _put(detected, _END, stop)

    decoding, detecting = _Stage(decode, "video-decode"), _Stage(detect, "video-detect")
    encoding = _Stage(encode, "video-encode")
    swapping = threading.current_thread()
    stages = (decoding, detecting, encoding)
    try:
        for stage in stages:
            stage.start()
        while (released := _get(detected, stop, detecting)) is not _END:
            batch, detections = [f for f, _ in released], [faces for _, faces in released]
            for frame in stream.push([f.image for f in batch], [f.time for f in batch], batch, detections):
                _put(frames_out, frame, stop)
        for frame in stream.flush():
            _put(frames_out, frame, stop)
        _put(frames_out, _END, stop)
        encoding.join()
        if encoding.error is not None:
            raise encoding.error
        writer.close()
        provenance.sign_file(partial, target, output.name)
        os.replace(partial, output)
    except BaseException:
        stop.set()
        for stage in stages:
            if stage.is_alive():
                stage.join()
        writer.abort()
        partial.unlink(missing_ok=True)
        raise
    finally:
        reader.close()
    report = VideoReport(
        counts["frames"],
        counts["swapped"],
        stream.tracker.tracks_started,
        counts["bridged"],
        reader.decode_errors,
        time.perf_counter() - began,
    )
    log.info("video: %s", report)
    return report
