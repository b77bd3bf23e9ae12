"""Swap faces in a video file: decoding, detection, swapping and encoding run at the same time in four
stages joined by bounded queues, so a fixed number of frames is in flight whatever the video's length.

    decode --(window frames)--> detect (batches) --(2 batches)--> track, smooth, swap (caller's thread)
      |                                                                    |
      +------------ audio/subtitle packets ------------> encode <--(window frames)

When the swapper's stages run on the device, the swap stage keeps ``options.depth`` batches in flight
there (``FaceSwapper.start_batch``/``finish_batch``), so uploads, device work and downloads of
consecutive batches overlap.

The output is written to a hidden temporary file next to ``output`` (``files.temporary_path``) and renamed
at the end; an error, Ctrl-C or SIGTERM deletes it, so no partial output is left. A stage that fails
stops the others at once (each waits on its queues for at most 0.1 s before it checks), and its error is
raised in the caller's thread.
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
from simswap_trt.files import check_output, ensure_folder, remove_stale_temporaries, temporary_path
from simswap_trt.provenance.metadata import video_metadata
from simswap_trt.provenance.signing import Provenance
from simswap_trt.swapper import FaceSwapper
from simswap_trt.video.io import VIDEO_MAX_PIXELS, Frame, VideoReader, VideoWriter, av, from_bgr, video_encoder
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
    frames_declared: int | None = None  # frames the input's header declares for the span read (None: unknown)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def frames_missing(self) -> int:
        """Declared frames that could not be read (a truncated or damaged input), beyond a small tolerance:
        a header's frame count is exact, one from duration and rate may be off by a frame or two."""
        if not self.frames_declared:
            return 0
        missing = self.frames_declared - self.frames
        return missing if missing > max(2, self.frames_declared // 20) else 0


class _Stopped(Exception):
    """Raised in a stage waiting on a queue when the run stops (another stage failed, or the caller's)."""


class _Stage(threading.Thread):
    """A thread that records its exception for the caller to re-raise and stops every other stage."""

    def __init__(self, target: Callable[[], None], name: str, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._work = target
        self._halt = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
            self._halt.set()


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                raise _Stopped from None


def check_encoding(output: str | Path, codec: str | None = None, crf: int | None = 18) -> str:
    """The encoder that ``swap_video`` will use for ``output`` (see ``video_encoder``), after checking that
    the name has a container suffix and that ``codec`` and ``crf`` fit: for the caller to fail before any
    work (loading models). ``OutputError`` or ``ConfigError``, one line."""
    output = Path(output)
    if not output.suffix:
        raise OutputError(f"--output {output} has no suffix; name the container: .mp4, .mkv, .mov or .webm")
    return video_encoder(output, codec, crf)[0]


def swap_video(
    swapper: FaceSwapper,
    target: str | Path,
    output: str | Path,
    options: VideoOptions = VideoOptions(),
    start: float = 0.0,
    duration: float | None = None,
    codec: str | None = None,
    crf: int | None = 18,
    overwrite: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    max_pixels: int = VIDEO_MAX_PIXELS,
    provenance: Provenance = Provenance(),
) -> VideoReport:
    """Swap the source identity of ``swapper`` onto the faces of the video ``target`` and write ``output``.

    Audio and subtitle streams are copied bit for bit; the video keeps its timestamps, size, aspect,
    rotation and colour description (range included) and is encoded with ``codec`` (None: libx264, for
    .webm VP9 or AV1; ``crf`` for the encoders with a quality scale, checked against its range; 0 is
    lossless for libx264). Frames without a selected face are encoded from the decoded frame unchanged.
    ``start`` and ``duration`` (seconds) select part of the clip. ``progress(written, expected)`` is called
    after each frame written (``expected`` is None when the file does not tell); an exception it raises
    stops the run and is raised here. Frames over ``max_pixels`` are refused from the stream's header.
    ``provenance``: the synthetic-media container tags (on by default) and, with a signer, a C2PA manifest
    signed into the finished file before it is renamed into place (a failure leaves nothing).
    Raises ``InputError`` for unreadable inputs, ``ConfigError`` for an encoder or ``crf`` that cannot be
    used, and ``OutputError`` for outputs that may not be written (an existing one without ``overwrite``, a
    full disk). The output is written to a hidden temporary file and renamed when complete: an error,
    Ctrl-C or SIGTERM (under ``files.terminate_as_interrupt``) deletes it; one left by a killed run is
    deleted by the next run writing in that folder. A video that ends before the frames its header declares
    is written with what could be read: see ``VideoReport.frames_missing``.
    """
    target, output = Path(target), Path(output)
    codec = check_encoding(output, codec, crf)  # a bad name, encoder or crf fails before any work
    if not check_output(output, [target], overwrite):
        raise OutputError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    began = time.perf_counter()
    stream = StreamSwapper(swapper, options)
    reader = VideoReader(target, start, duration, max_pixels)
    declared = reader.declared_frames  # from the header: PyAV refuses stream attributes once it is closed
    ensure_folder(output.parent)
    remove_stale_temporaries(output.parent)
    partial = temporary_path(output)
    try:
        metadata = video_metadata() if provenance.synthetic else None
        writer = VideoWriter(partial, reader, codec, crf, name=output, metadata=metadata)
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
                _put(frames_in if isinstance(item, Frame) else frames_out, item, stop)
        except av.FFmpegError as exc:
            raise InputError(f"{target}: decoding failed ({exc}); is the file complete?") from None
        _put(frames_in, _END, stop)

    def encode() -> None:
        while (item := _get(frames_out, stop)) is not _END:
            write(item)

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
                item = _get(frames_in, stop)
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

    stages = [_Stage(work, f"video-{work.__name__}", stop) for work in (decode, detect, encode)]
    try:
        for stage in stages:
            stage.start()
        while (released := _get(detected, stop)) is not _END:
            batch, detections = [f for f, _, _ in released], [faces for _, faces, _ in released]
            resident = [copy for _, _, copy in released]  # the frames' copies on the device, from detection
            for frame in stream.push([f.image for f in batch], [f.time for f in batch], batch, detections, resident):
                _put(frames_out, frame, stop)
        for frame in stream.flush():
            _put(frames_out, frame, stop)
        _put(frames_out, _END, stop)
        stages[-1].join()
        if stop.is_set():
            raise _Stopped
        writer.close()
        provenance.sign_file(partial, target, output.name)
        os.replace(partial, output)
    except BaseException as exc:
        stop.set()
        for stage in stages:
            if stage.is_alive():
                stage.join()
        writer.abort()
        partial.unlink(missing_ok=True)
        failed = next((stage.error for stage in stages if stage.error is not None), None)
        if isinstance(exc, _Stopped) and failed is not None:
            raise failed from None  # the stage's own error, with its traceback
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
        declared,
    )
    if report.frames_missing:
        log.warning(
            "%s: %d of the %d frames its header declares could be read (truncated or damaged); wrote those",
            target,
            report.frames,
            report.frames_declared,
        )
    log.info("video: %s", report)
    return report
