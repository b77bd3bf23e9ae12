"""Face tracks across frames: association by box overlap and landmark distance, track ids, and gaps
bridged by interpolation.

``Tracker.update`` assigns each detection of a frame to a track and keeps the frame; ``Tracker.release``
hands frames back in order once nothing can change them any more. A track missed by the detector for at
most ``max_gap`` frames and found again gets the missing frames filled in, with its box and landmarks
interpolated in time; so frames are held back ``max_gap`` frames (``delay``). A track missed for longer
ends, and a face seen again later starts a new track.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simswap_trt.errors import ConfigError
from simswap_trt.vision.detect import Detection


@dataclass(frozen=True)
class TrackingOptions:
    """``max_gap``: detector misses bridged, in frames (0 disables bridging). A detection continues a
    track when their boxes overlap by at least ``min_iou`` (intersection over union) or their landmarks
    are on average within ``max_distance`` face sizes (see ``face_scale``); the best pairs go first."""

    max_gap: int = 3
    min_iou: float = 0.3
    max_distance: float = 0.5

    def __post_init__(self) -> None:
        if self.max_gap < 0 or not 0 <= self.min_iou <= 1 or self.max_distance < 0:
            raise ConfigError("tracking needs max_gap >= 0, 0 <= min_iou <= 1 and max_distance >= 0")


@dataclass(frozen=True)
class TrackedFace:
    track: int
    detection: Detection
    bridged: bool = False  # filled in from the track: the detector missed it in this frame


@dataclass
class TrackedFrame:
    index: int
    time: float  # seconds
    faces: list[TrackedFace]
    payload: Any = None  # whatever the caller attached (the image, the decoded frame)


@dataclass
class _Track:
    id: int
    index: int  # frame of the last detection
    time: float
    detection: Detection


def face_scale(landmarks: np.ndarray) -> float:
    """A face's size in pixels from its 5 landmarks: their mean distance to their centroid (about half the
    eye distance plus a bit); rotation invariant and stable when the box is clipped at the border."""
    landmarks = np.asarray(landmarks, np.float64)
    return max(float(np.linalg.norm(landmarks - landmarks.mean(axis=0), axis=1).mean()), 1.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:4], b[2:4]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(a[2:4] - a[:2]) + np.prod(b[2:4] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


def landmark_distance(a: Detection, b: Detection) -> float:
    """Mean landmark distance between two faces, in face sizes of ``a``."""
    return float(np.linalg.norm(a.landmarks - b.landmarks, axis=1).mean()) / face_scale(a.landmarks)


def _interpolate(a: Detection, b: Detection, w: float) -> Detection:
    return Detection(
        ((1 - w) * a.box + w * b.box).astype(np.float32),
        (1 - w) * a.score + w * b.score,
        ((1 - w) * a.landmarks + w * b.landmarks).astype(np.float32),
    )


@dataclass
class Tracker:
    options: TrackingOptions = TrackingOptions()
    delay: int = 0  # frames held back; at least max_gap (more when the caller needs to look ahead)
    _tracks: dict[int, _Track] = field(default_factory=dict)
    _held: deque[TrackedFrame] = field(default_factory=deque)
    _next_id: int = 0
    _index: int = 0

    def __post_init__(self) -> None:
        self.delay = max(self.delay, self.options.max_gap)

    def update(self, time: float, detections: list[Detection], payload: Any = None) -> TrackedFrame:
        """Track the detections of the next frame; returns the frame (held until ``release``)."""
        index = self._index
        self._index += 1
        pairs = []
        for track in self._tracks.values():
            for d, detection in enumerate(detections):
                overlap = box_iou(track.detection.box, detection.box)
                distance = landmark_distance(track.detection, detection)
                if overlap >= self.options.min_iou or distance <= self.options.max_distance:
                    pairs.append((1 - overlap + distance, track.id, d))
        taken_tracks: set[int] = set()
        assigned: dict[int, int] = {}
        for _, track_id, d in sorted(pairs):
            if track_id not in taken_tracks and d not in assigned:
                taken_tracks.add(track_id)
                assigned[d] = track_id
        faces = []
        for d, detection in enumerate(detections):
            if d in assigned:
                track = self._tracks[assigned[d]]
                self._bridge(track, index, time, detection)
                track.index, track.time, track.detection = index, time, detection
            else:
                track = _Track(self._next_id, index, time, detection)
                self._tracks[track.id] = track
                self._next_id += 1
            faces.append(TrackedFace(track.id, detection))
        frame = TrackedFrame(index, time, faces, payload)
        self._held.append(frame)
        for track_id in [t.id for t in self._tracks.values() if index - t.index > self.options.max_gap]:
            del self._tracks[track_id]
        return frame

    def _bridge(self, track: _Track, index: int, time: float, detection: Detection) -> None:
        """Fill the held frames between the track's last detection and this one."""
        if index - track.index < 2:
            return
        for frame in self._held:
            if track.index < frame.index < index:
                w = (frame.time - track.time) / (time - track.time) if time > track.time else 0.5
                frame.faces.append(TrackedFace(track.id, _interpolate(track.detection, detection, w), bridged=True))

    def release(self, final: bool = False) -> list[TrackedFrame]:
        """Frames that no later detection can change (all of them when ``final``), in order."""
        out = []
        while self._held and (final or self._held[0].index < self._index - self.delay):
            out.append(self._held.popleft())
        return out

    @property
    def last_seen(self) -> list[tuple[Detection, int]]:
        """Each live track's last detection and the frames since it (0: found in the latest frame)."""
        return [(t.detection, self._index - 1 - t.index) for t in self._tracks.values()]

    @property
    def tracks_started(self) -> int:
        return self._next_id

    @property
    def live_tracks(self) -> set[int]:
        """Tracks that may still appear in frames not yet released."""
        return set(self._tracks) | {face.track for frame in self._held for face in frame.faces}
