"""Tracking and smoothing on synthetic landmark trajectories with known truth (no video, no models)."""

import numpy as np
import pytest

from simswap_trt.video.smoothing import LandmarkSmoother, OneEuroFilter, SmoothingOptions
from simswap_trt.video.tracking import TrackedFace, TrackedFrame, Tracker, TrackingOptions, face_scale
from simswap_trt.vision.detect import Detection

# 5 landmarks of a frontal face around its centre (ArcFace order); face_scale of this shape is ~18.5 px
SHAPE = np.array([[-20, -10], [20, -10], [0, 5], [-15, 20], [15, 20]], float)
FPS = 30.0


def face(cx: float, cy: float, zoom: float = 1.0, angle: float = 0.0) -> Detection:
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    landmarks = zoom * SHAPE @ np.array([[c, s], [-s, c]]) + [cx, cy]
    box = np.array([cx - 30 * zoom, cy - 35 * zoom, cx + 30 * zoom, cy + 35 * zoom], np.float32)
    return Detection(box, 0.9, landmarks.astype(np.float32))


def run(tracker: Tracker, detections: list[list[Detection]]) -> list[TrackedFrame]:
    out = []
    for i, per_frame in enumerate(detections):
        tracker.update(i / FPS, per_frame)
        out += tracker.release()
    return out + tracker.release(final=True)


def ids(frame: TrackedFrame) -> list[int]:
    return sorted(f.track for f in frame.faces)


def test_face_scale_is_rotation_invariant_and_proportional_to_size():
    assert face_scale(face(0, 0).landmarks) == pytest.approx(np.linalg.norm(SHAPE - SHAPE.mean(0), axis=1).mean())
    assert face_scale(face(50, 9, 2.0, 33).landmarks) == pytest.approx(2 * face_scale(face(0, 0).landmarks), 1e-5)


def test_two_moving_zooming_rotating_faces_keep_their_ids():
    frames = [
        [face(60 + 3 * i, 100, 1 + 0.01 * i, 2 * i), face(260 - 2 * i, 120 + i, 1.2 - 0.005 * i, -i)] for i in range(40)
    ]
    out = run(Tracker(TrackingOptions(max_gap=2)), frames)
    assert len(out) == 40 and [f.index for f in out] == list(range(40))
    first = {f.track: f.detection.landmarks[2, 0] for f in out[0].faces}
    left = min(first, key=first.get)
    for frame in out:
        assert ids(frame) == [0, 1]
        by_track = {f.track: f.detection for f in frame.faces}
        assert by_track[left].landmarks[2, 0] < by_track[1 - left].landmarks[2, 0]


def test_a_gap_within_max_gap_is_bridged_by_interpolation():
    truth = [face(50 + 4 * i, 80 + i) for i in range(20)]
    detections = [[d] for d in truth]
    detections[8] = detections[9] = []  # the detector misses two frames
    out = run(Tracker(TrackingOptions(max_gap=2)), detections)
    assert all(ids(frame) == [0] for frame in out)
    for i in (8, 9):
        (bridged,) = out[i].faces
        assert bridged.bridged
        # linear motion: interpolating between frames 7 and 10 is exact
        np.testing.assert_allclose(bridged.detection.landmarks, truth[i].landmarks, atol=1e-4)
        np.testing.assert_allclose(bridged.detection.box, truth[i].box, atol=1e-4)
    assert not any(f.bridged for i, frame in enumerate(out) if i not in (8, 9) for f in frame.faces)


def test_a_longer_absence_ends_the_track_and_nothing_is_invented():
    detections = [[face(100, 100)] for _ in range(20)]
    for i in range(5, 9):  # leaves for 4 frames, comes back at the same place
        detections[i] = []
    out = run(Tracker(TrackingOptions(max_gap=3)), detections)
    assert [len(frame.faces) for frame in out[5:9]] == [0, 0, 0, 0]
    assert ids(out[4]) == [0] and ids(out[9]) == [1]


def test_a_cut_starts_a_new_track():
    detections = [[face(60, 100)] for _ in range(10)] + [[face(250, 60, 1.5)] for _ in range(10)]
    out = run(Tracker(), detections)
    assert {f.track for frame in out[:10] for f in frame.faces} == {0}
    assert {f.track for frame in out[10:] for f in frame.faces} == {1}


def test_frames_are_held_back_exactly_the_delay():
    tracker = Tracker(TrackingOptions(max_gap=2), delay=4)
    assert tracker.delay == 4
    released = []
    for i in range(10):
        tracker.update(i / FPS, [face(100, 100)])
        released.append(len(tracker.release()))
    assert released == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert [f.index for f in tracker.release(final=True)] == [6, 7, 8, 9]


def test_overlapping_faces_keep_their_ids():
    # two faces whose boxes overlap more and more: the pair with the best combined cost wins
    frames = [[face(100 + 5 * i, 100), face(200 - 5 * i, 104)] for i in range(9)]
    out = run(Tracker(), frames)
    first = {f.track: f.detection.landmarks[2, 0] for f in out[0].faces}
    moving_right = min(first, key=first.get)
    xs = [next(f.detection.landmarks[2, 0] for f in frame.faces if f.track == moving_right) for frame in out]
    assert np.all(np.diff(xs) > 0)


# -- smoothing -----------------------------------------------------------------------------------------------


def trajectory(centres: np.ndarray, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = np.arange(len(centres)) / FPS
    truth = SHAPE[None] + centres[:, None]
    return times, truth, truth + np.random.default_rng(seed).normal(0, noise, truth.shape)


def filtered(options: SmoothingOptions, times, points) -> np.ndarray:
    f = OneEuroFilter(options)
    return np.array([f(t, p, face_scale(p)) for t, p in zip(times, points, strict=True)])


def error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean landmark distance per frame, pixels."""
    return np.linalg.norm(a - b, axis=-1).mean(-1)


def test_smoothing_removes_jitter_at_rest_and_on_a_slow_sway():
    t = np.arange(120) / FPS
    for centres in (np.full((120, 2), 150.0), np.stack([150 + 10 * np.sin(2 * np.pi * 0.3 * t), 150 + 0 * t], -1)):
        times, truth, noisy = trajectory(centres, noise=1.0)
        raw = np.sqrt((error(noisy, truth)[10:] ** 2).mean())
        smooth = np.sqrt((error(filtered(SmoothingOptions(), times, noisy), truth)[10:] ** 2).mean())
        assert smooth < 0.75 * raw, (smooth, raw)


def test_fast_move_lags_less_than_the_stated_bound():
    # 300 px/s = 16 face sizes per second, starting at rest after 1 s
    t = np.arange(90) / FPS
    centres = np.stack([100 + 300 * np.clip(t - 1, 0, None), np.full_like(t, 150)], -1)
    times, truth, noisy = trajectory(centres, noise=1.0)
    options = SmoothingOptions()
    scale = face_scale(SHAPE)
    lag = error(filtered(options, times, noisy), truth)[36:] / scale  # from 0.2 s into the move
    # steady lag of the One Euro filter on a constant fast move tends to 1/(2 pi beta) face sizes (0.03
    # at beta=5); allow the speed estimate's settling and the noise on top
    assert lag.mean() < 0.1 and lag.max() < 0.2, (lag.mean(), lag.max())
    # a fixed low-pass with the same cutoff at rest would trail by more than a face
    fixed = error(filtered(SmoothingOptions(beta=0.0), times, noisy), truth)[36:] / scale
    assert fixed.mean() > 1.0


def test_variable_frame_rate_uses_the_timestamps():
    # the same motion sampled irregularly: time steps, not frame counts, set the filter
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.uniform(0.5, 1.5, 120)) / FPS
    centres = np.stack([150 + 10 * np.sin(2 * np.pi * 0.3 * times), np.full_like(times, 150)], -1)
    truth = SHAPE[None] + centres[:, None]
    noisy = truth + rng.normal(0, 1.0, truth.shape)
    smooth = filtered(SmoothingOptions(), times, noisy)
    assert np.sqrt((error(smooth, truth)[10:] ** 2).mean()) < 0.75 * np.sqrt((error(noisy, truth)[10:] ** 2).mean())


def test_smoother_keeps_one_filter_per_track_and_restarts_new_tracks():
    smoother = LandmarkSmoother(SmoothingOptions())
    a, b = face(100, 100), face(300, 100)
    for i in range(5):
        jitter = np.float32(i % 2)
        frame = TrackedFrame(i, i / FPS, [TrackedFace(0, a), TrackedFace(1, b)])
        frame.faces[0] = TrackedFace(0, Detection(a.box, 0.9, a.landmarks + jitter))
        out = smoother.smooth(frame)
    # each track is filtered around its own position, never pulled towards the other face
    assert abs(out.faces[0].detection.landmarks[:, 0].mean() - 100) < 2
    assert abs(out.faces[1].detection.landmarks[:, 0].mean() - 300) < 1e-3
    # a new track (a cut) starts at its raw landmarks, with no memory of the old one
    cut = face(40, 40)
    out = smoother.smooth(TrackedFrame(5, 5 / FPS, [TrackedFace(2, cut)]))
    np.testing.assert_array_equal(out.faces[0].detection.landmarks, cut.landmarks)
    smoother.keep_only({2})
    assert set(smoother._filters) == {2}
    disabled = LandmarkSmoother(SmoothingOptions(enabled=False)).smooth(frame)
    assert disabled is frame


# -- per-track selection (StreamSwapper with a stand-in swapper: the decisions are the point) --------------


class StandInSwapper:
    """Two faces per frame; similarities to the reference flicker around the threshold frame by frame."""

    reference_latent = np.ones(512, np.float32)
    on_device = False
    stream_depth = 1
    detector = None  # no region search: every frame is searched whole

    def __init__(self, similarity: dict[float, list[float]]) -> None:
        self.similarity = similarity  # face x position -> similarity per frame
        self.frame = 0
        self.masks: list[list[bool]] = []

    def detect_frames(self, images):
        from simswap_trt.swapper import FrameBatch

        return FrameBatch(images, [[face(100, 100), face(300, 100)] for _ in images])

    def similarities(self, images, faces, resident=None):
        out = []
        for per_frame in faces:
            out.append(np.array([self.similarity[round(float(f.landmarks[2, 0]))].pop(0) for f in per_frame]))
        return out

    def start_batch(self, images, faces, select, threshold=0.5, resident=None):
        from simswap_trt.swapper import SwapResult

        self.masks += [list(m) for m in select]
        return [SwapResult(image + 1, ()) for image in images]

    def finish_batch(self, started):
        return started


def test_reference_selection_is_decided_once_per_track():
    from simswap_trt.video.stream import StreamSwapper, VideoOptions

    frames = 12
    # face at x=100: mean of its first 5 values 0.53 >= 0.5, though single frames fall below (0.45)
    # face at x=300: mean 0.47 < 0.5, though single frames rise above (0.55)
    similarity = {100: [0.6, 0.45, 0.6, 0.45, 0.55] * 3, 300: [0.55, 0.4, 0.55, 0.4, 0.45] * 3}
    swapper = StandInSwapper(similarity)
    stream = StreamSwapper(swapper, VideoOptions(select="reference", votes=5, batch=4))
    assert stream.delay == 4  # frames wait until their tracks have 5 votes
    images = [np.zeros((4, 4, 3), np.uint8) for _ in range(frames)]
    out = []
    for start in range(0, frames, 4):
        out += stream.push(images[start : start + 4], [i / FPS for i in range(start, start + 4)])
    out += stream.flush()
    assert [f.index for f in out] == list(range(frames))
    for frame in out:
        by_x = {round(float(f.detection.landmarks[2, 0])): s for f, s in zip(frame.faces, frame.swapped, strict=True)}
        assert by_x == {100: True, 300: False}
    # only the first 5 detections of each track were scored
    assert len(similarity[100]) == len(similarity[300]) == 10
    assert all(frame.image is not images[frame.index] for frame in out)
