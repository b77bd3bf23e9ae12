"""Landmark smoothing per track with the One Euro filter (Casiez, Roussel, Vogel, CHI 2012).

A first-order low-pass whose cutoff rises with speed: at rest it removes detector jitter (cutoff
``min_cutoff``), on fast motion the cutoff grows by ``beta`` per unit of speed, so the filtered landmarks
follow without visible lag. Speed is measured in face sizes per second (see ``face_scale``), so one set of
parameters fits small and large faces alike. Time steps come from the frame timestamps, so variable frame
rate is handled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from simswap_trt.errors import ConfigError
from simswap_trt.video.tracking import TrackedFrame, face_scale


@dataclass(frozen=True)
class SmoothingOptions:
    """One Euro parameters. ``min_cutoff`` (Hz): lower removes more jitter at rest but lags slow drifts.
    ``beta`` (per face size per second): higher follows fast moves with less lag; the steady lag on a
    constant fast move tends to ``1 / (2 pi beta)`` face sizes. ``d_cutoff`` (Hz): smoothing of the speed
    estimate. ``enabled=False`` uses the raw detector landmarks."""

    min_cutoff: float = 1.0
    beta: float = 5.0
    d_cutoff: float = 1.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ConfigError("smoothing needs min_cutoff > 0, d_cutoff > 0 and beta >= 0")


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter of a point set [K, 2] moving as one: a single speed (mean point speed divided by
    ``scale``) sets the cutoff of all points."""

    def __init__(self, options: SmoothingOptions) -> None:
        self.options = options
        self._time: float | None = None
        self._value: np.ndarray | None = None
        self._speed = np.zeros(0)

    def __call__(self, time: float, value: np.ndarray, scale: float = 1.0) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if self._value is None or self._time is None or time <= self._time:
            # first sample (or a timestamp that does not advance): nothing to filter against
            self._time, self._value, self._speed = time, value, np.zeros_like(value)
            return value.copy()
        dt = time - self._time
        speed = (value - self._value) / dt
        self._speed = self._speed + _alpha(self.options.d_cutoff, dt) * (speed - self._speed)
        magnitude = float(np.linalg.norm(self._speed, axis=-1).mean()) / max(scale, 1e-9)
        cutoff = self.options.min_cutoff + self.options.beta * magnitude
        self._value = self._value + _alpha(cutoff, dt) * (value - self._value)
        self._time = time
        return self._value.copy()


class LandmarkSmoother:
    """One filter per track: ``smooth`` replaces each face's landmarks by the filtered ones. A new track
    (e.g. after a cut) starts a fresh filter, so it never blends positions of different shots."""

    def __init__(self, options: SmoothingOptions) -> None:
        self.options = options
        self._filters: dict[int, OneEuroFilter] = {}

    def smooth(self, frame: TrackedFrame) -> TrackedFrame:
        if not self.options.enabled:
            return frame
        faces = []
        for face in frame.faces:
            landmarks = face.detection.landmarks
            smoothing = self._filters.get(face.track)
            if smoothing is None:
                smoothing = self._filters[face.track] = OneEuroFilter(self.options)
            smoothed = smoothing(frame.time, landmarks, face_scale(landmarks))
            faces.append(replace(face, detection=replace(face.detection, landmarks=smoothed.astype(np.float32))))
        return replace(frame, faces=faces)

    def keep_only(self, tracks: set[int]) -> None:
        """Forget the filters of tracks that ended."""
        self._filters = {t: f for t, f in self._filters.items() if t in tracks}
