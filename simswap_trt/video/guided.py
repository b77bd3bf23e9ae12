"""Track-guided face detection for video: the whole frame is searched only every ``every`` frames; in
between, only regions around the faces being tracked are, which costs a fraction of a whole-frame search.

A whole-frame detection runs on the first frame, every ``every`` frames, on a frame that looks like a
cut (its thumbnail differs from the previous frame's by more than ``CUT_LEVELS`` on average, so a new
shot's faces are swapped from its first frame), and on the frame after one where a tracked face was not
found. On the other frames each live track's last box is
expanded ``expand`` times around its centre and searched with ``FaceDetector.detect_regions``, at the
scale and on the grid of the whole-frame detection, so a face well inside its region gets the same
landmarks. A face entering the frame is found at the next whole-frame detection, at most ``every - 1``
frames late; a region that finds nothing leaves the gap to the tracker's bridging, as a detector miss.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from simswap_trt.swapper import FaceSwapper
from simswap_trt.video.tracking import Tracker, TrackingOptions
from simswap_trt.vision.detect import Detection

log = logging.getLogger(__name__)

THUMBNAIL = (32, 18)  # width, height: enough to tell shots apart, about a millisecond for a 1080p frame
CUT_LEVELS = 24.0  # mean absolute thumbnail difference (0-255) above which a frame starts a new shot


class GuidedDetection:
    """Detect faces frame after frame, the whole frame every ``every`` frames (1: every frame, batched as
    ``FaceSwapper.detect``) and regions around the tracked faces in between (see the module docstring)."""

    def __init__(
        self, swapper: FaceSwapper, every: int, tracking: TrackingOptions = TrackingOptions(), expand: float = 2.0
    ) -> None:
        self.swapper = swapper
        self.every = every
        self.expand = expand
        self._tracker = Tracker(tracking)  # its own: detection runs ahead of the swap stage's tracker
        self._since_full: int | None = None  # frames since the last whole-frame detection; None: none yet
        self._lost = False
        self._frames = 0
        self._thumbnail: np.ndarray | None = None
        detector = getattr(swapper, "detector", None)
        if every > 1 and not hasattr(detector, "detect_regions"):
            log.info("video: %s has no region detection; the whole frame is searched on every frame", detector)
            self.every = 1

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """The faces of each of the next frames, in order."""
        if self.every == 1:
            return self.swapper.detect(images) if len(images) else []
        return [self._next(image) for image in images]

    def _next(self, image: np.ndarray) -> list[Detection]:
        tracked = self._tracker.last_seen
        full = self._since_full is None or self._since_full + 1 >= self.every or self._lost
        full = self._cut(image) or full  # always updates the thumbnail
        if full:
            detections = self.swapper.detect([image])[0]
            self._since_full = 0
        else:
            regions = [self._region(d) for d, _ in tracked]  # none: nothing to search until the next whole frame
            detections = self.swapper.detector.detect_regions(image, regions) if regions else []
            self._since_full += 1
        self._tracker.update(float(self._frames), detections)
        self._frames += 1
        self._tracker.release(final=True)  # only the tracks are needed here, not the frames
        self._lost = any(missed for _, missed in self._tracker.last_seen)
        return detections

    def _cut(self, image: np.ndarray) -> bool:
        """Whether ``image`` differs from the previous frame like a new shot does."""
        thumbnail = cv2.resize(image, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.float32)
        previous, self._thumbnail = self._thumbnail, thumbnail
        return previous is not None and float(np.abs(thumbnail - previous).mean()) > CUT_LEVELS

    def _region(self, detection: Detection) -> np.ndarray:
        centre = (detection.box[:2] + detection.box[2:]) / 2
        half = (detection.box[2:] - detection.box[:2]) * self.expand / 2
        return np.concatenate([centre - half, centre + half])
