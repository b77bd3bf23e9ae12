"""Swap faces in a video file: decoding, detection, swapping and encoding run at the same time in four
stages joined by bounded queues (``VideoJob``, one method per stage), so a fixed number of frames is in
flight whatever the video's length.

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
    partial = temporary_path(output)
    writer = _open_writer(reader, partial, output, codec, crf, provenance.synthetic)
    job = VideoJob(stream, reader, writer, options, progress)
    try:
        job.run()
        provenance.sign_file(partial, target, output.name)
        os.replace(partial, output)
    except BaseException:
        writer.abort()
        partial.unlink(missing_ok=True)
        raise
    finally:
        reader.close()
    return _report(job, target, reader.decode_errors, time.perf_counter() - began, declared)


def _open_writer(
    reader: VideoReader, partial: Path, output: Path, codec: str, crf: int | None, synthetic: bool
) -> VideoWriter:
    """The writer of ``partial`` (the temporary file of ``output``), after removing a killed run's leftovers;
    if it cannot be opened, the reader is closed and nothing is left."""
    ensure_folder(output.parent)
    remove_stale_temporaries(output.parent)
    try:
        metadata = video_metadata() if synthetic else None
        return VideoWriter(partial, reader, codec, crf, name=output, metadata=metadata)
    except BaseException:
        reader.close()
        partial.unlink(missing_ok=True)
        raise


class VideoJob:
    """One run of the four stages over one reader and writer: ``decode``, ``detect`` and ``encode`` each in
    a thread of its own, ``swap`` (track, smooth, swap) in the caller's; ``run`` runs them and closes the
    writer. They share the queues and the stop event; the counts are the encoder's."""

    def __init__(
        self,
        stream: StreamSwapper,
        reader: VideoReader,
        writer: VideoWriter,
        options: VideoOptions,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> None:
        self.stream, self.reader, self.writer, self.options = stream, reader, writer, options
        self.progress = progress
        self.expected = reader.frame_count  # from the header, while the reader is open
        self.stop = threading.Event()
        self.frames_in: queue.Queue = queue.Queue(options.window)
        self.detected: queue.Queue = queue.Queue(2)  # batches of (frame, faces)
        self.frames_out: queue.Queue = queue.Queue(options.window)
        self.frames = self.frames_swapped = self.bridged = 0

    def run(self) -> None:
        """All four stages to the end, then the writer closed. A stage's error (or the caller's) stops the
        others within 0.1 s and is raised here, the stage's own with its traceback."""
        stages = [_Stage(work, f"video-{work.__name__}", self.stop) for work in (self.decode, self.detect, self.encode)]
        try:
            for stage in stages:
                stage.start()
            self.swap()
            stages[-1].join()
            if self.stop.is_set():
                raise _Stopped
            self.writer.close()
        except BaseException as exc:
            self.stop.set()
            for stage in stages:
                if stage.is_alive():
                    stage.join()
            failed = next((stage.error for stage in stages if stage.error is not None), None)
            if isinstance(exc, _Stopped) and failed is not None:
                raise failed from None  # the stage's own error, with its traceback
            raise

    def decode(self) -> None:
        """Frames to the detector, audio and subtitle packets straight to the encoder."""
        try:
            for item in self.reader:
                _put(self.frames_in if isinstance(item, Frame) else self.frames_out, item, self.stop)
        except av.FFmpegError as exc:
            raise InputError(f"{self.reader.path}: decoding failed ({exc}); is the file complete?") from None
        _put(self.frames_in, _END, self.stop)

    def detect(self) -> None:
        """Batches of frames with their faces; guided detection may hold frames back until its next
        whole-frame search."""
        detection, done = self.stream.detection, False
        while not done:
            batch: list[Frame] = []
            while len(batch) < self.options.batch:
                item = _get(self.frames_in, self.stop)
                if item is _END:
                    done = True
                    break
                batch.append(item)
            released = detection.push([f.image for f in batch], batch)
            if done:
                released += detection.flush()
            if released:
                _put(self.detected, released, self.stop)
        _put(self.detected, _END, self.stop)

    def swap(self) -> None:
        """Track, smooth, select and swap the detected frames, in order, to the encoder."""
        while (released := _get(self.detected, self.stop)) is not _END:
            batch, detections = [f for f, _, _ in released], [faces for _, faces, _ in released]
            resident = [copy for _, _, copy in released]  # the frames' copies on the device, from detection
            times = [f.time for f in batch]
            for frame in self.stream.push([f.image for f in batch], times, batch, detections, resident):
                _put(self.frames_out, frame, self.stop)
        for frame in self.stream.flush():
            _put(self.frames_out, frame, self.stop)
        _put(self.frames_out, _END, self.stop)

    def encode(self) -> None:
        """Write packets as they are and frames (swapped or the decoded frame unchanged), counting them."""
        while (item := _get(self.frames_out, self.stop)) is not _END:
            if not isinstance(item, SwappedFrame):
                self.writer.write_packet(item)
                continue
            frame: Frame = item.payload
            self.writer.write_frame(from_bgr(frame.image, item.image, frame.source) if item.changed else frame.source)
            self.frames += 1
            self.frames_swapped += item.changed
            self.bridged += sum(face.bridged for face in item.faces)
            if self.progress is not None:
                self.progress(self.frames, self.expected)


def _report(job: VideoJob, target: Path, damaged: int, seconds: float, declared: int | None) -> VideoReport:
    """The report of a finished job, with a warning when the input was truncated."""
    report = VideoReport(
        job.frames, job.frames_swapped, job.stream.tracker.tracks_started, job.bridged, damaged, seconds, declared
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
