"""Video files end to end on short synthetic clips (tests/support/video_clips.py): timestamps, audio, metadata,
bit-exact pass-through, gap bridging, bounded memory, interruption, bad inputs, the CLI."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from support.video_clips import FACE, SIZE, background, decoded, face_frame, moving_face, packets, planes, write_clip  # noqa: E402

from simswap_trt import FaceSwapper  # noqa: E402
from simswap_trt.cli import main  # noqa: E402
from simswap_trt.errors import ConfigError, OutputError  # noqa: E402
from simswap_trt.video import TrackingOptions, VideoOptions, swap_frames, swap_video  # noqa: E402
from simswap_trt.vision.detect import CenterFace, FaceDetector  # noqa: E402

LOSSLESS = 0  # libx264 --crf 0: decoded output equals what was encoded, so pass-through is checked exactly


@pytest.fixture(scope="module")
def detector():
    return CenterFace(threads=2)


@pytest.fixture(scope="module")
def swapper(tiny_bundle, detector):
    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=2, max_batch=8, detector=detector)
    swapper.set_source(np.ascontiguousarray(FACE))
    return swapper


def times_of(frames) -> list[float]:
    return [float(f.time) for f in frames]


def test_output_keeps_timing_audio_and_metadata(swapper, tmp_path):
    clip = write_clip(tmp_path / "in.mp4", moving_face(24), colour=True, sar=Fraction(4, 3))
    report = swap_video(swapper, clip, tmp_path / "out.mp4", crf=LOSSLESS)
    source, output = decoded(clip), decoded(tmp_path / "out.mp4")
    assert report.frames == len(output) == len(source) == 24
    assert report.frames_swapped == 24 and report.tracks == 1
    assert times_of(output) == times_of(source)
    assert packets(tmp_path / "out.mp4") == packets(clip)  # audio copied bit for bit, same timestamps
    with av.open(str(clip)) as a, av.open(str(tmp_path / "out.mp4")) as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        assert (vb.width, vb.height, vb.sample_aspect_ratio) == (va.width, va.height, Fraction(4, 3))
        assert float(b.duration) == pytest.approx(float(a.duration), abs=0.05)
    first = output[0]
    assert (first.colorspace, first.color_range, first.color_primaries, first.color_trc) == (1, 1, 1, 1)
    # the face was swapped (random generator); pixels away from it are the decoded input's, exactly
    diff = np.abs(planes(first).astype(int) - planes(source[0]))
    assert diff[50:140, 65:140].mean() > 1 and diff[:192, :40].max() == 0


def test_subtitle_and_audio_streams_are_copied_bit_for_bit(swapper, tmp_path):
    events = [(0, 400, "Hello"), (400, 300, "{\\i1}moving{\\i0} face"), (700, 260, "Grüße, 再见")]
    clip = write_clip(tmp_path / "in.mkv", moving_face(24), subtitles=events)
    swap_video(swapper, clip, tmp_path / "out.mkv")
    with av.open(str(clip)) as a, av.open(str(tmp_path / "out.mkv")) as b:
        assert [s.type for s in b.streams] == [s.type for s in a.streams] == ["video", "audio", "subtitle"]
        assert b.streams.subtitles[0].codec_context.name == a.streams.subtitles[0].codec_context.name == "ssa"
    subtitles = packets(tmp_path / "out.mkv", "subtitles")
    assert subtitles == packets(clip, "subtitles")  # same bytes at the same times
    assert [pts for pts, _ in subtitles] == [start for start, _, _ in events]
    assert subtitles[2][1].decode().endswith("Grüße, 再见")
    assert packets(tmp_path / "out.mkv") == packets(clip)


def test_variable_frame_rate_and_rotation_are_kept(swapper, tmp_path):
    times = np.cumsum([0.0] + [0.03, 0.05, 0.04, 0.09] * 5)
    upright = moving_face(len(times), size=(SIZE[1], SIZE[0]))  # portrait, displayed after a quarter turn
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]
    clip = write_clip(tmp_path / "in.mkv", stored, times=list(times), rotation=90)
    report = swap_video(swapper, clip, tmp_path / "out.mkv")
    output = decoded(tmp_path / "out.mkv")
    assert times_of(output) == pytest.approx(list(times), abs=1e-6)
    assert output[0].rotation == 90 and (output[0].width, output[0].height) == SIZE
    assert report.frames_swapped == len(times)  # found upright: the display rotation was applied


@pytest.mark.parametrize("every", [1, 2, 4])
def test_frames_without_faces_are_bit_exact_and_faces_are_swapped(swapper, tmp_path, every):
    frames = moving_face(10) + [background()] * 6 + moving_face(10)
    clip = write_clip(tmp_path / "in.mp4", frames, audio=False)
    options = VideoOptions(full_detect_every=every)
    report = swap_video(swapper, clip, tmp_path / "out.mp4", options, crf=LOSSLESS)
    source, output = decoded(clip), decoded(tmp_path / "out.mp4")
    # the face came back as a new track at frame 16. With every=2 or 4 the whole-frame search of frame 17 finds
    # it (the lost track made 11, 12 and 13 whole-frame searches; 16 got none) and frame 16 is searched back
    assert report.frames_swapped == 20 and report.tracks == 2
    for i, (a, b) in enumerate(zip(source, output, strict=True)):
        if 10 <= i < 16:
            np.testing.assert_array_equal(planes(a), planes(b), err_msg=f"frame {i}")
        else:
            change = np.abs(planes(a).astype(int) - planes(b).astype(int)).mean()
            assert change > 0.1, f"frame {i} not swapped ({change})"


def test_changed_pixels_are_patched_into_the_decoded_frame():
    """from_bgr against an independent reference: OpenCV's BGR -> I420 conversion of each changed area
    (two areas far enough apart to be patched as separate boxes)."""
    import cv2

    from simswap_trt.video.io import BOX_GAP, changed_boxes, from_bgr, to_bgr

    rng = np.random.default_rng(0)
    height, width = 90, 250
    like = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), np.uint8), format="bgr24")
    like = like.reformat(format="yuv420p")
    before = to_bgr(like)
    after = before.copy()
    changes = [(31, 52, 17, 61), (9, 20, 61 + BOX_GAP + 3, 201)]  # odd edges: chroma sites shared
    for y0, y1, x0, x1 in changes:
        after[y0:y1, x0:x1] = rng.integers(0, 256, (y1 - y0, x1 - x0, 3), np.uint8)
    assert len(changed_boxes(cv2.absdiff(before, after))) == 2
    out = from_bgr(before, after, like).to_ndarray().astype(int)
    source = like.to_ndarray().astype(int)
    y = out[:height]
    untouched = np.ones((height, width), bool)
    sites = np.zeros((height // 2, width // 2), bool)
    reference = cv2.cvtColor(after, cv2.COLOR_BGR2YUV_I420)[:height].astype(int)  # luma is per pixel
    for y0, y1, x0, x1 in changes:
        # luma: the changed pixels equal the reference (BT.601 limited range, within rounding)
        assert np.abs(y[y0:y1, x0:x1] - reference[y0:y1, x0:x1]).max() <= 1
        untouched[y0:y1, x0:x1] = False
        sites[y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2] = True
    assert np.array_equal(y[untouched], source[:height][untouched])  # every other pixel untouched
    # chroma: only the 2x2 sites touching a change differ
    size = height * width
    u_out = out.reshape(-1)[size : size * 5 // 4].reshape(height // 2, width // 2)
    u_src = source.reshape(-1)[size : size * 5 // 4].reshape(height // 2, width // 2)
    assert np.array_equal(u_out[~sites], u_src[~sites]) and not np.array_equal(u_out[sites], u_src[sites])


@pytest.mark.parametrize(
    "pixel_format, height, width", [("yuv420p10le", 90, 250), ("yuv422p10le", 91, 250), ("yuv444p", 89, 249)]
)
def test_changed_pixels_are_patched_into_other_planar_yuv_formats(pixel_format, height, width):
    """10-bit, 4:2:2 and odd-sized 4:4:4 frames keep every untouched sample; changed luma equals swscale's
    conversion of the whole frame (luma is per pixel)."""
    import cv2

    from simswap_trt.video.io import _to_format, from_bgr, to_bgr

    rng = np.random.default_rng(2)
    like = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), np.uint8), format="bgr24")
    like = like.reformat(format=pixel_format)
    before = to_bgr(like)
    after = before.copy()
    changes = [(31, 52, 17, 61), (9, 20, 140, 201)]
    for y0, y1, x0, x1 in changes:
        after[y0:y1, x0:x1] = rng.integers(0, 256, (y1 - y0, x1 - x0, 3), np.uint8)
    out = from_bgr(before, after, like)
    whole = _to_format(after, like)
    changed = cv2.absdiff(before, after).any(axis=2)
    for k in range(3):
        got, source, reference = (samples(frame, k) for frame in (out, like, whole))
        sy, sx = height // got.shape[0], width // got.shape[1]  # chroma subsampling of this plane
        touched = np.zeros(got.shape, bool)
        for y0, y1, x0, x1 in changes:
            touched[y0 // sy : (y1 - 1) // sy + 1, x0 // sx : (x1 - 1) // sx + 1] = True
        assert np.array_equal(got[~touched], source[~touched]), f"plane {k}: an untouched sample changed"
        assert not np.array_equal(got[touched], source[touched])
        if k == 0:
            assert np.array_equal(got[changed], reference[changed])


def samples(frame, k: int) -> np.ndarray:
    """Plane ``k`` of a planar frame as [height, width] samples (8 bits, or 16-bit little-endian words)."""
    plane = frame.planes[k]
    dtype = np.uint8 if frame.format.components[0].bits == 8 else np.dtype("<u2")
    return np.frombuffer(bytes(plane), dtype).reshape(plane.height, -1)[:, : plane.width]


def test_changed_boxes_hold_every_change_in_separate_even_boxes():
    from simswap_trt.video.io import BOX_GAP, changed_boxes

    rng = np.random.default_rng(1)
    for _ in range(50):
        diff = np.zeros((60, 400, 3), np.uint8)
        for _ in range(rng.integers(1, 4)):
            y0, x0 = rng.integers(0, 50), rng.integers(0, 380)
            diff[y0 : y0 + rng.integers(1, 10), x0 : x0 + rng.integers(1, 20), rng.integers(0, 3)] = 1
        boxes = changed_boxes(diff)
        covered = np.zeros(diff.shape[:2], bool)
        for y0, y1, x0, x1 in boxes:
            assert y0 % 2 == x0 % 2 == y1 % 2 == x1 % 2 == 0 and 0 <= y0 < y1 <= 60 and 0 <= x0 < x1 <= 400
            assert not covered[y0:y1, x0:x1].any()  # boxes do not overlap
            covered[y0:y1, x0:x1] = True
        assert covered[diff.any(axis=2)].all()
        changed_cols = np.flatnonzero(diff.any(axis=(0, 2)))
        assert len(boxes) == 1 + int((np.diff(changed_cols) > BOX_GAP + 1).sum())
    assert changed_boxes(np.zeros((4, 4, 3), np.uint8)) == []


class Misses(FaceDetector):
    """Wraps a detector and reports no face on chosen frames (counted over all calls)."""

    def __init__(self, inner: FaceDetector, misses: set[int]) -> None:
        self.inner, self.misses, self.input_size, self.seen = inner, misses, inner.input_size, 0

    def detect_batch(self, images, batch_size=8):
        found = self.inner.detect_batch(images, batch_size)
        out = [[] if self.seen + i in self.misses else f for i, f in enumerate(found)]
        self.seen += len(images)
        return out

    def _decode(self, canvas, scales, shapes):
        raise NotImplementedError


@pytest.mark.parametrize("max_gap, swapped", [(2, True), (0, False)])
def test_a_face_missed_for_two_frames_is_swapped_from_its_track(tiny_bundle, detector, tmp_path, max_gap, swapped):
    clip = write_clip(tmp_path / "in.mp4", moving_face(16), audio=False)
    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=2, detector=Misses(detector, {7, 8}))
    swapper.set_source(np.ascontiguousarray(FACE))
    swapper.detector.seen = 0  # count video frames only
    options = VideoOptions(tracking=TrackingOptions(max_gap=max_gap))
    report = swap_video(swapper, clip, tmp_path / "out.mp4", options, crf=LOSSLESS)
    source, output = decoded(clip), decoded(tmp_path / "out.mp4")
    assert report.bridged == (2 if swapped else 0)
    for i in (7, 8):
        same = np.array_equal(planes(source[i]), planes(output[i]))
        assert same is not swapped, f"frame {i}"


def test_start_and_duration_take_part_of_the_clip(swapper, tmp_path):
    clip = write_clip(tmp_path / "in.mp4", moving_face(30))
    swap_video(swapper, clip, tmp_path / "out.mp4", start=0.4, duration=0.5)
    output = decoded(tmp_path / "out.mp4")
    assert times_of(output) == pytest.approx([i / 25 for i in range(13)], abs=1e-6)  # frames 10..22, from 0
    source_audio, audio = packets(clip), packets(tmp_path / "out.mp4")
    first = [data for _, data in source_audio].index(audio[0][1])
    # a contiguous run of the input's audio packets, unchanged, shifted to start with the video
    assert [d for _, d in audio] == [d for _, d in source_audio[first : first + len(audio)]]
    assert abs(audio[0][0] / 16000 - (source_audio[first][0] / 16000 - 0.4)) < 1e-6
    assert 0.4 <= len(audio) * 1024 / 16000 <= 0.6


def test_a_raw_stream_without_timestamps_is_timed_at_its_rate(swapper, tmp_path):
    """A raw H.264 elementary stream carries no timestamps: frames are timed at the stream's frame rate."""
    raw = tmp_path / "in.h264"
    with av.open(str(raw), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for i, image in enumerate(moving_face(6)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(raw)) as container:
        assert all(frame.pts is None for frame in container.decode(video=0))  # really without timestamps
    report = swap_video(swapper, raw, tmp_path / "out.mp4")
    assert report.frames == report.frames_swapped == 6
    assert times_of(decoded(tmp_path / "out.mp4")) == pytest.approx([i / 24 for i in range(6)], abs=1e-3)


def test_an_odd_frame_size_is_kept_in_a_format_without_chroma_subsampling(swapper, tmp_path):
    """4:2:0 cannot hold an odd size: H.264 4:4:4 keeps it; an encoder with only 4:2:0 is refused clearly."""
    width, height = SIZE[0] - 1, SIZE[1] - 1
    frames = [np.ascontiguousarray(f[:height, :width]) for f in moving_face(6)]
    clip = write_clip(tmp_path / "odd.mkv", frames, audio=False, codec="ffv1")  # lossless, any size
    report = swap_video(swapper, clip, tmp_path / "out.mkv")
    out = decoded(tmp_path / "out.mkv")
    assert len(out) == 6 and report.frames_swapped == 6
    assert (out[0].width, out[0].height, out[0].format.name) == (width, height, "yuv444p")
    with pytest.raises(ConfigError, match=f"odd frame size {width}x{height}"):
        swap_video(swapper, clip, tmp_path / "out.avi", codec="mpeg4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mkv", "out.mkv"]  # nothing left behind


def test_swap_frames_generator_keeps_order_and_returns_faceless_frames_as_is(swapper):
    frames = moving_face(5) + [background()] * 4 + moving_face(4)  # a gap longer than max_gap (3)
    out = list(swap_frames(swapper, frames, fps=25, options=VideoOptions(batch=4)))
    assert len(out) == len(frames)
    # the face is back at frame 9: found at the next whole-frame search (full_detect_every=2), frame 10, and
    # in frame 9 by the search back from there
    assert all(out[i] is frames[i] for i in range(5, 9))
    assert all(np.abs(out[i].astype(int) - frames[i]).mean() > 0.1 for i in (*range(5), *range(9, 13)))


def test_interruption_and_errors_leave_no_output(swapper, tmp_path):
    clip = write_clip(tmp_path / "in.mp4", moving_face(20))
    out = tmp_path / "out" / "out.mp4"

    def interrupt(count, total, seen=[]):  # noqa: B006 - counts calls
        seen.append(count)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        swap_video(swapper, clip, out, progress=interrupt)
    assert list(out.parent.iterdir()) == []
    with pytest.raises(ConfigError, match="codec"):
        swap_video(swapper, clip, out, codec="no-such-codec")
    assert list(out.parent.iterdir()) == []
    out.write_bytes(b"keep")
    with pytest.raises(OutputError, match="overwrite"):
        swap_video(swapper, clip, out)
    assert out.read_bytes() == b"keep"


def test_memory_stays_flat_over_a_clip_ten_times_the_window(tiny_bundle, tmp_path):
    """A fixed face on tiny frames, 10x more frames than can be in flight: RSS must not grow with them."""

    class Fixed(FaceDetector):
        input_size = 64

        def detect_batch(self, images, batch_size=8):
            return [[fixed] for _ in images]

        def _decode(self, canvas, scales, shapes):
            raise NotImplementedError

    from simswap_trt.vision.detect import Detection

    size = (96, 96)
    landmarks = np.array([[36, 40], [60, 40], [48, 52], [38, 64], [58, 64]], np.float32)
    fixed = Detection(np.array([24, 20, 72, 80], np.float32), 0.9, landmarks)
    options = VideoOptions(batch=4, window=4)
    in_flight = 2 * options.window + 3 * options.batch + options.tracking.max_gap
    count = 10 * in_flight
    rng = np.random.default_rng(0)
    frames = [np.clip(face_frame(48, 48, 0.5, 0, size) + rng.integers(0, 8, (96, 96, 3)), 0, 255).astype(np.uint8)]
    clip = write_clip(tmp_path / "long.mp4", frames * count, audio=True)
    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=2, detector=Fixed())
    swapper.set_source_crops(np.zeros((1, 224, 224, 3), np.uint8))
    rss = []

    def sample(_count, _total):
        with open("/proc/self/statm") as f:
            rss.append(int(f.read().split()[1]) * 4096)

    swap_video(swapper, clip, tmp_path / "warm.mp4", options, duration=2.0)  # allocator and engines warmed up
    rss.clear()
    report = swap_video(swapper, clip, tmp_path / "out.mp4", options, progress=sample)
    assert report.frames == count == len(rss)
    half = np.array(rss[count // 4 :], float)
    slope = np.polyfit(np.arange(len(half)), half, 1)[0]
    # growth per frame well under one frame's worth of pixels (27 KiB): nothing is kept per frame
    assert slope * len(half) < 2 * 2**20, f"RSS grew {slope * len(half) / 2**20:.2f} MiB over {len(half)} frames"


def make_bad_inputs(folder):
    good = write_clip(folder / "good.mp4", moving_face(8))
    data = good.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not a video\n")
    # audio only; a video stream without frames (and audio); audio with a cover picture (its artwork, stored
    # as a one-picture video stream marked attached_pic)
    for name in ("tone.m4a", "empty.mkv", "song.mp4"):
        with av.open(str(folder / name), "w") as container:
            if name == "empty.mkv":
                video = container.add_stream("libx264", rate=25)
                video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
            stream = container.add_stream("aac", rate=16000)
            if name == "song.mp4":
                cover = container.add_stream("mjpeg")
                cover.width, cover.height, cover.pix_fmt = SIZE[0], SIZE[1], "yuvj420p"
                cover.disposition = av.stream.Disposition.attached_pic
                picture = av.VideoFrame.from_ndarray(moving_face(1)[0], format="bgr24").reformat(format="yuvj420p")
                picture.pts = 0
                container.mux(cover.encode(picture) + cover.encode(None))
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    return good


@pytest.mark.parametrize(
    "name, message",
    [
        ("truncated.mp4", "not a readable video"),
        ("notes.txt", "not a readable video"),
        ("tone.m4a", "no video stream (audio)"),
        ("song.mp4", "no video stream (audio, a cover picture)"),
        ("empty.mkv", "no decodable frames"),
        ("missing.mp4", "no such file"),
    ],
)
def test_cli_bad_inputs_exit_1_with_one_line(tiny_bundle, tmp_path, capsys, name, message):
    make_bad_inputs(tmp_path)
    out = tmp_path / "out" / "out.mp4"
    source = tmp_path / "me.png"
    import cv2

    cv2.imwrite(str(source), FACE)
    code = main(
        ["video", "--bundle", str(tiny_bundle.root), "--source", str(source), "--target", str(tmp_path / name)]
        + ["--output", str(out), "--threads", "2"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_cli_video(tiny_bundle, tmp_path, capsys):
    import cv2

    clip = write_clip(tmp_path / "in.mp4", moving_face(12))
    source = tmp_path / "me.png"
    cv2.imwrite(str(source), FACE)
    out = tmp_path / "out.mkv"
    args = ["video", "--bundle", str(tiny_bundle.root), "--source", str(source), "--target", str(clip)]
    args += ["--output", str(out), "--threads", "2", "--max-gap", "1", "--min-cutoff", "0.5", "--beta", "3"]
    args += ["--full-detect-every", "3"]
    assert main(args) == 0
    assert "12 frames, 12 with a swapped face, 1 track" in capsys.readouterr().out
    assert len(decoded(out)) == 12
    # MP4 -> MKV: Matroska has no negative timestamps, so the muxer shifts every stream by the audio's
    # priming delay (64 ms) alike; the packets themselves are unchanged
    (a, b), shift = (packets(clip), packets(out)), 1024
    assert [d for _, d in b] == [d for _, d in a] and [t for t, _ in b] == [(t + shift) // 16 for t, _ in a]
    assert [round(f.time * 1000) for f in decoded(out)] == [round(f.time * 1000) + 64 for f in decoded(clip)]
    assert main(args) == 1 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--start", "0.2", "--duration", "0.2", "--crf", "30"]) == 0
    assert len(decoded(out)) == 5
    assert main([*args, "--overwrite", "--select", "reference"]) == 1
    assert "--reference" in capsys.readouterr().err


def test_cli_damaged_packets_are_skipped_with_exit_3(tiny_bundle, tmp_path, capsys):
    import cv2

    clip = write_clip(tmp_path / "in.mkv", moving_face(12), audio=False)
    with av.open(str(clip)) as container:
        pos, size = next((p.pos, p.size) for i, p in enumerate(container.demux(video=0)) if i == 5)
    data = bytearray(clip.read_bytes())
    data[pos + 4 : pos + size] = b"\xff" * (size - 4)  # the 6th frame's payload destroyed
    (tmp_path / "damaged.mkv").write_bytes(bytes(data))
    source = tmp_path / "me.png"
    cv2.imwrite(str(source), FACE)
    args = ["video", "--bundle", str(tiny_bundle.root), "--source", str(source), "--threads", "2"]
    code = main([*args, "--target", str(tmp_path / "damaged.mkv"), "--output", str(tmp_path / "out.mkv")])
    assert code == 3 and "1 damaged video packet(s)" in capsys.readouterr().out
    assert len(decoded(tmp_path / "out.mkv")) == 11
