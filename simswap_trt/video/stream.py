"""Face swapping over a sequence of frames: batched detection, tracking, per-track selection, smoothing.

``StreamSwapper`` takes frames in batches and gives back swapped frames in order, ``delay`` frames later
(the tracker's look-ahead for bridging gaps and, with ``select="reference"``, for deciding per track).
On the device path it keeps two batches in flight (``FaceSwapper.start_batch``/``finish_batch`` on the
``engines.scheduler`` queue, as ``swap_stream``): the device swaps one batch while the next is uploaded
and the previous one downloaded, and a batch comes back one push after it went in. ``swap_frames`` wraps
it as a generator for live use.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simswap_trt.engines.scheduler import InFlightQueue
from simswap_trt.errors import ConfigError, InputError
from simswap_trt.selection import DEFAULT_MATCH_THRESHOLD, SELECT_MODES, select_faces
from simswap_trt.stages import Resident
from simswap_trt.swapper import FaceSwapper, InFlight
from simswap_trt.video.guided import Detected, GuidedDetection
from simswap_trt.video.smoothing import LandmarkSmoother, SmoothingOptions
from simswap_trt.video.tracking import TrackedFace, Tracker, TrackingOptions
from simswap_trt.vision.detect import Detection


@dataclass(frozen=True)
class VideoOptions:
    """How video is swapped.

    ``select``: ``"all"`` faces, the ``"largest"`` face of each frame, or the tracks of the
    ``set_reference`` person (``"reference"``): a track is swapped when the mean cosine similarity of its
    first ``votes`` detections is at least ``threshold``, and the decision holds for the whole track.
    ``batch``: frames per detector/generator call. ``window``: frames queued between the decoding,
    swapping and encoding stages. ``depth``: batches started and not yet finished (None: 2 when the
    swapper's stages run on the device, so the device swaps one batch while the next is uploaded and the
    previous one downloaded; else 1, as on the host starting a batch does all of its work). Memory is
    bounded by about ``2 * window + (2 + depth) * batch + delay`` frames.
    ``full_detect_every``: the whole frame is searched for faces on every this many frames (and on the
    first, at a cut, and after a tracked face was lost); in between only regions around the tracked faces
    are (``GuidedDetection``), which is much cheaper. A face entering the frame is found by the next
    whole-frame search and then searched for in the frames before it, so it is swapped from the frame where
    it appears; detection holds ``full_detect_every - 1`` frames for that. 1 searches every frame whole.
    """

    select: str = "all"
    threshold: float = DEFAULT_MATCH_THRESHOLD
    votes: int = 5
    batch: int = 8
    window: int = 16
    depth: int | None = None
    full_detect_every: int = 4
    tracking: TrackingOptions = field(default_factory=TrackingOptions)
    smoothing: SmoothingOptions = field(default_factory=SmoothingOptions)

    def __post_init__(self) -> None:
        if self.select not in SELECT_MODES:
            raise ConfigError(f"select must be one of {', '.join(SELECT_MODES)}, got {self.select!r}")
        if self.batch < 1 or self.window < 1 or self.votes < 1:
            raise ConfigError("batch, window and votes must be at least 1")
        if self.full_detect_every < 1:
            raise ConfigError(f"full_detect_every must be at least 1, got {self.full_detect_every}")
        if self.depth is not None and self.depth < 1:
            raise ConfigError(f"depth must be at least 1, got {self.depth}")


@dataclass
class SwappedFrame:
    """One output frame: ``image`` is the input array itself when no face was swapped in it."""

    index: int
    time: float
    image: np.ndarray
    faces: list[TrackedFace]  # smoothed landmarks
    swapped: list[bool]  # per face
    payload: Any = None

    @property
    def changed(self) -> bool:
        return any(self.swapped)


Started = tuple[list[SwappedFrame], InFlight | None]  # released frames and their swap, if any face is selected


class StreamSwapper:
    """Swap the source identity of ``swapper`` through a sequence of frames (see the module docstring)."""

    def __init__(self, swapper: FaceSwapper, options: VideoOptions = VideoOptions()) -> None:
        if options.select == "reference" and swapper.reference_latent is None:
            raise InputError('select="reference" needs a reference identity: call set_reference(images) first')
        self.swapper = swapper
        self.options = options
        look_ahead = options.votes - 1 if options.select == "reference" else 0
        self.tracker = Tracker(options.tracking, delay=look_ahead)
        self.smoother = LandmarkSmoother(options.smoothing)
        self.detection = GuidedDetection(swapper, options.full_detect_every, options.tracking)
        self._votes: dict[int, list[float]] = {}
        self._decisions: dict[int, float] = {}  # track -> its similarity to the reference (NaN: no votes)
        self.depth = options.depth if options.depth is not None else swapper.stream_depth
        self._in_flight: InFlightQueue[Started, list[SwappedFrame]] = InFlightQueue(self.depth, self._finished)

    @property
    def delay(self) -> int:
        """Frames between pushing a frame and getting it back (besides batching): the tracker's look-ahead
        and the frames detection holds until the next whole-frame search."""
        return self.tracker.delay + self.detection.every - 1

    def push(
        self,
        images: Sequence[np.ndarray],
        times: Sequence[float],
        payloads: Sequence[Any] | None = None,
        detections: Sequence[list[Detection]] | None = None,
        resident: Sequence[Resident | None] | None = None,
    ) -> list[SwappedFrame]:
        """Add frames with their times in seconds; returns the frames that are done, in order.

        ``detections``: their faces, when the caller detects them itself with ``self.detection`` (in another
        thread, say). Its ``push`` may hold frames back: pass the frames it released, with their faces and
        their copies on the device (``resident``), and the frames its ``flush`` released before calling
        ``flush`` here."""
        payloads = [None] * len(images) if payloads is None else payloads
        if detections is None:
            return self.push(*_unpack(self.detection.push(images, list(zip(images, times, payloads, strict=True)))))
        resident = [None] * len(images) if resident is None else resident
        frames = [
            self.tracker.update(t, d, (image, payload, copy))
            for image, t, d, payload, copy in zip(images, times, detections, payloads, resident, strict=True)
        ]
        if self.options.select == "reference":
            self._vote(frames)
        self._start(self.tracker.release())
        return self._finish(self.depth - 1)

    def flush(self) -> list[SwappedFrame]:
        """Finish every frame still held (at the end of the stream)."""
        out = self.push(*_unpack(self.detection.flush()))
        self._start(self.tracker.release(final=True))
        return out + self._finish(0)

    def _vote(self, frames) -> None:
        """Similarity to the reference of the first ``votes`` detections of each new track."""
        wanted = {}  # track -> votes still missing
        needed: list[list[TrackedFace]] = []
        for frame in frames:
            needed.append([])
            for f in frame.faces:
                if f.bridged or f.track in self._decisions:  # interpolated faces do not vote
                    continue
                missing = wanted.setdefault(f.track, self.options.votes - len(self._votes.setdefault(f.track, [])))
                if missing > 0:
                    needed[-1].append(f)
                    wanted[f.track] = missing - 1
        if not any(needed):
            return
        similarities = self.swapper.similarities(
            [frame.payload[0] for frame in frames],
            [[f.detection for f in faces] for faces in needed],
            [frame.payload[2] for frame in frames],
        )
        for faces, values in zip(needed, similarities, strict=True):
            for face, value in zip(faces, values, strict=True):
                self._votes[face.track].append(float(value))

    def _selected(self, faces: list[TrackedFace]) -> list[bool]:
        """``select_faces`` of one frame; with ``"reference"`` each face's similarity is its track's, the
        mean of its votes, decided once per track."""
        similarities = []
        if self.options.select == "reference":
            for face in faces:
                if face.track not in self._decisions:
                    votes = self._votes.pop(face.track, [])
                    self._decisions[face.track] = float(np.mean(votes)) if votes else float("nan")
            similarities = [self._decisions[face.track] for face in faces]
        areas = [face.detection.area for face in faces]
        return select_faces(self.options.select, areas, similarities, self.options.threshold)

    def _start(self, frames) -> None:
        """Smooth and select the released frames and start swapping those with a selected face."""
        out, copies = [], []
        for frame in frames:
            frame = self.smoother.smooth(frame)
            image, payload, copy = frame.payload
            out.append(SwappedFrame(frame.index, frame.time, image, frame.faces, self._selected(frame.faces), payload))
            copies.append(copy)
        todo = [k for k, f in enumerate(out) if f.changed]
        started = None
        if todo:
            started = self.swapper.start_batch(
                [out[k].image for k in todo],
                [[face.detection for face in out[k].faces] for k in todo],
                [out[k].swapped for k in todo],
                resident=[copies[k] for k in todo],
            )
        if out:
            self._in_flight.add((out, started))
        live = self.tracker.live_tracks
        self.smoother.keep_only(live)
        self._decisions = {t: d for t, d in self._decisions.items() if t in live}
        self._votes = {t: v for t, v in self._votes.items() if t in live}

    def _finish(self, keep: int) -> list[SwappedFrame]:
        """The frames of the oldest started batches, in order, until at most ``keep`` are in flight."""
        return [frame for frames in self._in_flight.finished(keep) for frame in frames]

    def _finished(self, started: Started) -> list[SwappedFrame]:
        frames, batch = started
        if batch is not None:
            results = iter(self.swapper.finish_batch(batch))
            for frame in frames:
                if frame.changed:
                    frame.image = next(results).image
        return frames


def _unpack(released: list[Detected]) -> tuple[list, list, list, list, list]:
    """Images, times, payloads, faces and copies on the device of the frames ``GuidedDetection`` released,
    given it ``(image, time, payload)`` payloads."""
    return (
        [p[0] for p, _, _ in released],
        [p[1] for p, _, _ in released],
        [p[2] for p, _, _ in released],
        [faces for _, faces, _ in released],
        [copy for _, _, copy in released],
    )


def swap_frames(
    swapper: FaceSwapper,
    frames: Iterable[np.ndarray],
    fps: float = 30.0,
    options: VideoOptions = VideoOptions(),
) -> Iterator[np.ndarray]:
    """Swap faces in a stream of BGR frames (a camera, a decoder) with tracking and smoothing; yields the
    output frames in order, ``options.batch - 1 + StreamSwapper.delay`` frames behind the input at most (plus
    ``depth - 1`` batches: one on the device path). Frames are timed at ``fps``. Frames without a selected
    face are yielded as the very input arrays. Raises ``ConfigError`` (a ``ValueError``) at once for an
    ``fps`` that is not a positive number."""
    if not (isinstance(fps, (int, float)) and 0 < fps < float("inf")):
        raise ConfigError(f"fps must be a positive number of frames per second, got {fps!r}")
    return _swapped_frames(StreamSwapper(swapper, options), frames, fps, options.batch)


def _swapped_frames(stream: StreamSwapper, frames: Iterable[np.ndarray], fps: float, size: int) -> Iterator[np.ndarray]:
    batch: list[np.ndarray] = []
    times: list[float] = []
    for index, image in enumerate(frames):
        batch.append(image)
        times.append(index / fps)
        if len(batch) == size:
            yield from (f.image for f in stream.push(batch, times))
            batch, times = [], []
    yield from (f.image for f in stream.push(batch, times))
    yield from (f.image for f in stream.flush())
