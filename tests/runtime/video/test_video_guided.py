"""Track-guided detection for video (simswap_trt/video/guided.py, FaceDetector.detect_regions) on short
synthetic frames (tests/support/video_clips.py): region landmarks against whole-frame detection, late entry
bounded by full_detect_every - 1 frames, faceless frames untouched, every=1 equal to per-batch detection,
and how often the whole frame is searched."""

from __future__ import annotations

import numpy as np
import pytest
from support.video_clips import FACE, SIZE, background, face_frame, moving_face

from simswap_trt import FaceSwapper
from simswap_trt.errors import ConfigError
from simswap_trt.video import GuidedDetection, StreamSwapper, VideoOptions, swap_frames
from simswap_trt.vision.detect import CenterFace, FaceDetector

# SIZE is 256x192, letterboxed at 2.5 canvas pixels per frame pixel; a face well inside its region sees the
# same canvas pixels on the same detector grid as in the whole frame, only the region's edges differ
TOLERANCE = 0.5  # frame pixels (1.25 canvas pixels)


@pytest.fixture(scope="module")
def detector():
    return CenterFace(threads=2)


class Counting(FaceDetector):
    """Wraps a detector and counts the frames searched whole and the region searches."""

    def __init__(self, inner: CenterFace) -> None:
        self.inner, self.input_size, self.full, self.regions = inner, inner.input_size, [], 0

    def detect_batch(self, images, batch_size=8):
        self.full.append(len(images))
        return self.inner.detect_batch(images, batch_size)

    def detect_regions(self, image, regions):
        self.regions += 1
        return self.inner.detect_regions(image, regions)

    def _decode(self, canvas, scales, shapes):
        raise NotImplementedError


@pytest.fixture
def counted(tiny_bundle, detector):
    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=2, max_batch=8, detector=Counting(detector))
    swapper.set_source(np.ascontiguousarray(FACE))
    swapper.detector.full.clear()
    return swapper


def expanded(box: np.ndarray, factor: float = 2.0) -> np.ndarray:
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) * factor / 2
    return np.concatenate([centre - half, centre + half])


def two_faces(i: int, size=(384, 192)) -> np.ndarray:
    """Two faces moving towards each other (regions overlap)."""
    left, right = face_frame(120 + 2 * i, 96, 0.9, 2 * i, size), face_frame(270 - 2 * i, 100, 0.8, -i, size)
    plain = background(size)
    moved = np.any(right != plain, axis=-1)
    left[moved] = right[moved]
    return left


def test_region_landmarks_equal_whole_frame_detection_on_moving_faces(detector):
    frames = moving_face(12)
    previous = detector.detect(frames[0])
    for i, frame in enumerate(frames[1:], 1):
        (whole,) = detector.detect(frame)
        (region,) = detector.detect_regions(frame, [expanded(previous[0].box)])  # tracked from the last frame
        np.testing.assert_allclose(region.landmarks, whole.landmarks, atol=TOLERANCE, err_msg=f"frame {i}")
        np.testing.assert_allclose(region.box, whole.box, atol=2 * TOLERANCE, err_msg=f"frame {i}")
        assert region.score == pytest.approx(whole.score, abs=0.05)
        previous = [whole]


def test_overlapping_regions_give_each_face_once(detector):
    for i in (0, 10):
        image = two_faces(i)
        whole = sorted(detector.detect(image), key=lambda d: d.box[0])
        assert len(whole) == 2
        regions = [expanded(d.box) for d in whole] + [expanded(whole[0].box) + 6]  # overlapping regions
        found = sorted(detector.detect_regions(image, regions), key=lambda d: d.box[0])
        assert len(found) == 2
        for a, b in zip(found, whole, strict=True):
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=TOLERANCE)


def test_regions_without_a_face_find_nothing(detector):
    image = face_frame(60, 96)
    assert detector.detect_regions(image, [np.array([150, 40, 250, 150])]) == []
    assert detector.detect_regions(image, []) == []


def test_whole_frame_searched_every_n_frames_and_after_a_lost_face(counted):
    frames = moving_face(8) + [background()] * 5 + moving_face(6)  # lost at frame 8, back at frame 13
    out = list(swap_frames(counted, frames, options=VideoOptions(batch=4, full_detect_every=3)))
    # whole frames: 0, 3, 6 (every 3rd); 9, 10, 11 (the face was lost at 8, until its track ends after
    # max_gap=3 misses); 14, 17 (every 3rd since 11). Regions around the face: 1, 2, 4, 5, 7, 8, 15, 16, 18,
    # and back from 14, where the face is new again: 13 (found) and 12 (not found, the search stops)
    assert sum(counted.detector.full) == 8 and set(counted.detector.full) == {1}
    assert counted.detector.regions == 11
    # the face came back at frame 13: found at the whole-frame search of frame 14, then in frame 13
    swapped = [o is not f for o, f in zip(out, frames, strict=True)]
    assert swapped == [True] * 8 + [False] * 5 + [True] * 6


@pytest.mark.parametrize("every", [1, 2, 3, 4])
def test_a_face_entering_is_swapped_from_the_frame_where_it_appears(counted, every):
    entry = 5
    frames = [background()] * entry + moving_face(8)
    out = list(swap_frames(counted, frames, options=VideoOptions(batch=4, full_detect_every=every)))
    swapped = [o is not f for o, f in zip(out, frames, strict=True)]
    assert swapped == [False] * entry + [True] * 8
    assert all(o is f for o, f in zip(out[:entry], frames[:entry], strict=True))  # passed through untouched
    # whole frames at 0, every, 2 * every, ...: the face is found at the first one at or after its entry,
    # then searched for backwards in the frames held since the previous one, down to the empty frame before
    # the entry; later frames between whole-frame searches search the region around the face
    found = -(-entry // every) * every
    back = min(found - entry + 1, every - 1) if found > entry else 0
    assert counted.detector.regions == back + sum(1 for i in range(found + 1, len(frames)) if i % every)


def test_a_face_entering_next_to_a_tracked_one_is_found_back_once_per_frame(counted):
    entry, size = 3, (384, 192)
    frames = [face_frame(120 + 2 * i, 96, 0.9, 2 * i, size) if i < entry else two_faces(i, size) for i in range(9)]
    detection = GuidedDetection(counted, every=4)
    released = detection.push(frames[:5], range(5)) + detection.push(frames[5:], range(5, 9)) + detection.flush()
    assert [i for i, _, _ in released] == list(range(9))  # every frame once, in order
    assert all(on_device is None for _, _, on_device in released)  # a host detector leaves nothing on a device
    # whole frames 0, 4, 8; regions 1, 2, 3 and 5, 6, 7 around the tracked faces; the entering face is
    # found at 4, then searched back in 3 (found) and 2 (not there)
    assert sum(counted.detector.full) == 3 and counted.detector.regions == 3 + 3 + 2
    for i, faces, _ in released:
        whole = sorted(counted.detector.inner.detect(frames[i]), key=lambda d: d.box[0])
        assert len(faces) == len(whole) == (1 if i < entry else 2), f"frame {i}"  # nothing doubled or missed
        for a, b in zip(sorted(faces, key=lambda d: d.box[0]), whole, strict=True):
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=TOLERANCE, err_msg=f"frame {i}")


def test_the_first_frame_of_a_new_shot_is_searched_whole(counted):
    """A cut onto a face elsewhere in the picture, on a frame that would get only a region search."""
    first = moving_face(5)  # whole-frame searches at 0, 2, 4 with every=2; the cut comes at 5
    w, h = SIZE
    # the next shot: the face mirrored to the other side, on the background mirrored and at 60 % light
    shot = (face_frame(w * 0.25, h * 0.4, 0.8)[:, ::-1] * 0.6).astype(np.uint8)
    frames = first + [np.ascontiguousarray(shot)] * 4
    out = list(swap_frames(counted, frames, options=VideoOptions(batch=4, full_detect_every=2)))
    assert all(o is not f for o, f in zip(out, frames, strict=True))  # the new shot is swapped from its first frame
    # whole frames: 0, 2, 4 (every 2nd), 5 (the cut), then 6, 7, 8 while the first shot's track goes unseen
    assert sum(counted.detector.full) == 7 and counted.detector.regions == 2  # regions: frames 1 and 3


def test_every_one_reproduces_per_batch_detection_exactly(counted):
    frames = moving_face(10) + [background()] * 3 + moving_face(5)
    options = VideoOptions(batch=4, full_detect_every=1)
    guided = list(swap_frames(counted, frames, options=options))
    assert counted.detector.regions == 0 and counted.detector.full == [4, 4, 4, 4, 2]
    # the previous behaviour: every batch detected whole by FaceSwapper.detect, handed to the stream
    stream, previous = StreamSwapper(counted, options), []
    for start in range(0, len(frames), 4):
        batch = frames[start : start + 4]
        times = [i / 30.0 for i in range(start, start + len(batch))]
        previous += [f.image for f in stream.push(batch, times, detections=counted.detect(batch))]
    previous += [f.image for f in stream.flush()]
    assert len(guided) == len(previous) == len(frames)
    for i, (a, b) in enumerate(zip(guided, previous, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {i}")


@pytest.mark.parametrize("n", [2, 4])
def test_guided_swaps_stay_close_to_every_frame_detection(counted, n):
    frames = moving_face(12)
    every = list(swap_frames(counted, frames, options=VideoOptions(batch=4, full_detect_every=1)))
    guided = list(swap_frames(counted, frames, options=VideoOptions(batch=4, full_detect_every=n)))
    assert counted.detector.regions == 12 - 12 // n  # whole frames 0, n, 2n, ...
    for i, (a, b, f) in enumerate(zip(every, guided, frames, strict=True)):
        # the swaps differ by the sub-pixel landmark differences only: far less than the swap changes
        change = np.abs(a.astype(int) - f).mean()
        assert np.abs(a.astype(int) - b).mean() < 0.2 * change, f"frame {i}"


def test_full_detect_every_must_be_positive():
    with pytest.raises(ConfigError, match="full_detect_every"):
        VideoOptions(full_detect_every=0)
    assert SIZE == (256, 192)
