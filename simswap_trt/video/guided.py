"""Track-guided face detection for video: the whole frame is searched only every ``every`` frames; in
between, only regions around the faces being tracked are, which costs a fraction of a whole-frame search.

A whole-frame detection runs on the first frame, every ``every`` frames, on a frame that looks like a
cut (its thumbnail differs from the previous frame's by more than ``CUT_LEVELS`` on average, so a new
shot's faces are swapped from its first frame), and on the frame after one where a tracked face was not
found. On the other frames each live track's last box is expanded ``expand`` times around its centre and
searched with the detector's ``detect_regions`` (a ``RegionDetector``: the host and the device detectors),
at the scale and on the grid of the whole-frame detection, so a face well inside its region gets the same
landmarks. A region that finds nothing leaves the gap to the tracker's bridging, as a detector miss.
A frame searched whole on the device comes with its copy on the device (``FaceSwapper.detect_frames``),
which its swap reads instead of uploading the frame again; a frame searched in regions only is uploaded by
its swap.

A face that enters between two whole-frame searches is first found by the next one. The frames since the
previous whole-frame search are therefore held back (at most ``every - 1``) and, when a whole-frame search
finds a new face, searched backwards around it until it is no longer found: the face is swapped from the
frame where it appears, as with a whole-frame search on every frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from simswap_trt.stages import Resident
from simswap_trt.swapper import FaceSwapper
from simswap_trt.video.tracking import Tracker, TrackingOptions, box_iou, landmark_distance
from simswap_trt.vision.detect import Detection, RegionDetector

log = logging.getLogger(__name__)

THUMBNAIL = (32, 18)  # width, height: enough to tell shots apart, about a millisecond for a 1080p frame
CUT_LEVELS = 24.0  # mean absolute thumbnail difference (0-255) above which a frame starts a new shot
Detected = tuple[Any, list[Detection], Resident | None]  # a frame's payload, faces and copy on the device


class GuidedDetection:
    """Detect faces frame after frame, the whole frame every ``every`` frames (1: every frame, batched as
    ``FaceSwapper.detect``) and regions around the tracked faces in between (see the module docstring).
    ``push`` takes frames and returns those whose faces are final, in order, at most ``every - 1`` frames
    later, as ``(payload, faces, resident)`` (the frame's copy on the device, or None); ``flush`` returns
    the rest at the end of the stream."""

    def __init__(
        self, swapper: FaceSwapper, every: int, tracking: TrackingOptions = TrackingOptions(), expand: float = 2.0
    ) -> None:
        self.swapper = swapper
        self.every = every
        self.expand = expand
        self.tracking = tracking
        self._tracker = Tracker(tracking)  # its own: detection runs ahead of the swap stage's tracker
        self._since_full: int | None = None  # frames since the last whole-frame detection; None: none yet
        self._lost = False
        self._frames = 0
        self._thumbnail: np.ndarray | None = None
        self._held: list[tuple[np.ndarray, Any, list[Detection]]] = []  # frames since the last whole-frame search
        detector = swapper.detector
        self._regions = detector if isinstance(detector, RegionDetector) else None
        if every > 1 and self._regions is None:
            log.info("video: %s has no region detection; the whole frame is searched on every frame", detector)
            self.every = 1

    def push(self, images: Sequence[np.ndarray], payloads: Sequence[Any]) -> list[Detected]:
        """Detect the faces of the next frames; returns ``(payload, faces, resident)`` of the frames that are
        final."""
        if self.every == 1:
            if not len(images):
                return []
            batch = self.swapper.detect_frames(images)
            resident = batch.resident if batch.resident is not None else [None] * len(images)
            return list(zip(payloads, batch.faces, resident, strict=True))
        out = []
        for image, payload in zip(images, payloads, strict=True):
            out += self._next(image, payload)
        return out

    def flush(self) -> list[Detected]:
        """The frames still held, at the end of the stream."""
        out, self._held = [(payload, faces, None) for _, payload, faces in self._held], []
        return out

    def _next(self, image: np.ndarray, payload: Any) -> list[Detected]:
        tracked = self._tracker.last_seen
        cut = self._cut(image)  # always updates the thumbnail
        full = cut or self._since_full is None or self._since_full + 1 >= self.every or self._lost
        copy = None
        if full:
            batch = self.swapper.detect_frames([image])
            detections, copy = batch.faces[0], batch.resident[0] if batch.resident is not None else None
            self._since_full = 0
        else:
            regions = [self._region(d) for d, _ in tracked]  # none: nothing to search until the next whole frame
            detections = self._regions.detect_regions(image, regions) if regions else []
            self._since_full += 1
        known = self._tracker.live_tracks
        frame = self._tracker.update(float(self._frames), detections)
        self._frames += 1
        self._tracker.release(final=True)  # only the tracks are needed here, not the frames
        self._lost = any(missed for _, missed in self._tracker.last_seen)
        if not full:
            self._held.append((image, payload, detections))
            return []
        started = [f.detection for f in frame.faces if f.track not in known]
        if started and not cut:  # after a cut the held frames belong to the previous shot
            self._search_back(started)
        out: list[Detected] = [(p, faces, None) for _, p, faces in self._held] + [(payload, detections, copy)]
        self._held = []
        return out

    def _search_back(self, started: list[Detection]) -> None:
        """Add each newly found face to the held frames where it already was, newest first."""
        for face in started:
            for image, _, detections in reversed(self._held):
                found = [
                    d
                    for d in self._regions.detect_regions(image, [self._region(face)])
                    if self._same(d, face) and not any(self._same(d, other) for other in detections)
                ]
                if not found:
                    break
                face = max(found, key=lambda d: box_iou(d.box, face.box))
                detections.append(face)

    def _same(self, a: Detection, b: Detection) -> bool:
        """Whether two detections are one face, by the tracker's association rule."""
        return box_iou(a.box, b.box) >= self.tracking.min_iou or landmark_distance(a, b) <= self.tracking.max_distance

    def _cut(self, image: np.ndarray) -> bool:
        """Whether ``image`` differs from the previous frame like a new shot does."""
        thumbnail = cv2.resize(image, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.float32)
        previous, self._thumbnail = self._thumbnail, thumbnail
        return previous is not None and float(np.abs(thumbnail - previous).mean()) > CUT_LEVELS

    def _region(self, detection: Detection) -> np.ndarray:
        centre = (detection.box[:2] + detection.box[2:]) / 2
        half = (detection.box[2:] - detection.box[:2]) * self.expand / 2
        return np.concatenate([centre - half, centre + half])
