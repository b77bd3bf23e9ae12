"""Video faults planted one by one: a failing stage or callback stops the run (no hang, no leftover), bad
encoder settings and names are one-line errors before any work, full-range grey frames come back as
decoded, the pixel limit applies from the header, truncated inputs are reported, a full disk is reported
at the failing write, SIGTERM and killed runs leave nothing behind."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

av = pytest.importorskip("av")

from support.paths import ROOT, TESTS  # noqa: E402
from support.video_clips import FACE, background, decoded, moving_face, write_clip  # noqa: E402

from simswap_trt import FaceSwapper  # noqa: E402
from simswap_trt.cli import main  # noqa: E402
from simswap_trt.errors import ConfigError, InputError, OutputError  # noqa: E402
from simswap_trt.files import temporary_path  # noqa: E402
from simswap_trt.video import VideoOptions, swap_frames, swap_video  # noqa: E402
from simswap_trt.video.io import VideoWriter, to_bgr  # noqa: E402
from simswap_trt.vision.detect import CenterFace  # noqa: E402

SMALL = (96, 72)
TIGHT = VideoOptions(batch=2, window=2)  # few frames in flight: a stalled stage blocks the others at once


@pytest.fixture(scope="module")
def swapper(tiny_bundle):
    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=2, max_batch=8, detector=CenterFace(threads=2))
    swapper.set_source(np.ascontiguousarray(FACE))
    return swapper


@pytest.fixture()
def source(tmp_path) -> Path:
    path = tmp_path / "me.png"
    cv2.imwrite(str(path), FACE)
    return path


def within(seconds: float, work):
    """``work()``'s result or exception, failing the test if it has not returned after ``seconds`` (a hang)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a hang"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_raising_progress_callback_stops_every_stage_and_leaves_nothing(swapper, tmp_path):
    clip = write_clip(tmp_path / "in.mp4", [background(SMALL)] * 40, audio=False)
    out = tmp_path / "out" / "out.mp4"

    def broken(count, total):
        if count == 3:
            raise RuntimeError("the progress display broke")

    with pytest.raises(RuntimeError, match="progress display broke"):
        within(60, lambda: swap_video(swapper, clip, out, TIGHT, progress=broken))
    assert list(out.parent.iterdir()) == []
    assert not any(t.name.startswith("video-") for t in threading.enumerate())  # the stages ended


def test_a_failing_encoder_stops_every_stage_with_its_own_error(swapper, tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "in.mp4", [background(SMALL)] * 40, audio=False)
    out = tmp_path / "out.mp4"
    written = []
    real = VideoWriter.write_frame

    def fails_at_the_fourth(self, frame):
        if len(written) == 3:
            raise OutputError(f"{self.name}: encoding with {self.codec} failed (planted)")
        written.append(frame)
        real(self, frame)

    monkeypatch.setattr(VideoWriter, "write_frame", fails_at_the_fourth)
    with pytest.raises(OutputError, match="out.mp4: encoding with libx264 failed"):
        within(60, lambda: swap_video(swapper, clip, out, TIGHT))
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp4"]


@pytest.mark.parametrize(
    ("output", "codec", "crf", "error", "message"),
    [
        ("out.mp4", "aac", 18, ConfigError, "--codec aac is an audio encoder; give a video encoder"),
        ("out.mp4", "no-such-codec", 18, ConfigError, "--codec no-such-codec: no such encoder"),
        ("out.mp4", None, 99, ConfigError, r"--crf 99 is out of range for libx264: give 0 \(best\) to 51"),
        ("out.webm", "libx264", 18, ConfigError, "WebM takes VP8, VP9 or AV1 video, not libx264"),
        ("out", None, 18, OutputError, "--output .*out has no suffix"),
        ("out.xyz", None, 18, OutputError, "--output .*out.xyz: no container format for .xyz"),
    ],
)
def test_bad_encoder_settings_and_names_fail_before_any_work(swapper, tmp_path, output, codec, crf, error, message):
    clip = write_clip(tmp_path / "in.mp4", [background(SMALL)] * 4, audio=False)
    with pytest.raises(error, match=message) as caught:
        swap_video(swapper, clip, tmp_path / output, codec=codec, crf=crf)
    assert ".partial" not in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp4"]


def test_cli_audio_codec_and_crf_are_one_line_errors(tiny_bundle, source, tmp_path, capsys):
    clip = write_clip(tmp_path / "in.mp4", [background(SMALL)] * 4, audio=False)
    args = ["video", "--bundle", str(tiny_bundle.root), "--source", str(source), "--target", str(clip)]
    for extra, message in ((["--codec", "aac"], "audio encoder"), (["--crf", "99"], "0 (best) to 51")):
        assert main([*args, "--output", str(tmp_path / "out.mp4"), *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_webm_output_is_vp9_by_default(swapper, tmp_path):
    clip = write_clip(tmp_path / "in.mp4", moving_face(6, SMALL), audio=False)
    report = swap_video(swapper, clip, tmp_path / "out.webm")
    with av.open(str(tmp_path / "out.webm")) as container:
        assert container.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")
    assert report.frames == len(decoded(tmp_path / "out.webm")) == 6


def test_swap_frames_refuses_a_zero_rate_at_once(swapper):
    with pytest.raises(ValueError, match="fps must be a positive number"):
        swap_frames(swapper, [], fps=0)


def grey_clip(path: Path, count: int = 4) -> Path:
    """Lossless grey frames (FFV1, pixel format gray) without a colour range tag: FFmpeg reads grey as full
    range (0-255)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = SMALL[0], SMALL[1], "gray"
        for i in range(count):
            ramp = np.tile(np.linspace(0, 255, SMALL[0]), (SMALL[1], 1)) + 9 * i
            frame = av.VideoFrame.from_ndarray(np.clip(ramp, 0, 255).astype(np.uint8), format="gray")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("kind", ["gray", "yuvj420p"])
def test_full_range_frames_without_faces_come_back_as_decoded(swapper, tmp_path, kind):
    if kind == "gray":
        clip = grey_clip(tmp_path / "in.mkv")
    else:
        frames = [cv2.cvtColor(cv2.cvtColor(background(SMALL), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)] * 4
        clip = write_clip(tmp_path / "in.mkv", frames, audio=False, crf=0)
    report = swap_video(swapper, clip, tmp_path / "out.mkv", crf=0)
    assert report.frames == 4 and report.frames_swapped == 0
    # as displayed: each decoded frame converted with its own range and matrix
    for before, after in zip(decoded(clip), decoded(tmp_path / "out.mkv"), strict=True):
        assert np.array_equal(to_bgr(before), to_bgr(after))


def test_frames_over_the_pixel_limit_are_refused_from_the_header(swapper, tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "in.mkv", [background(SMALL)] * 4, audio=False)
    from simswap_trt.video import io

    def no_decoding(self):
        raise AssertionError("a frame was decoded")

    monkeypatch.setattr(io.VideoReader, "_demux", no_decoding)
    with pytest.raises(InputError, match=r"96x72 \(6,912 pixels\), over the --max-pixels limit of 5,000"):
        swap_video(swapper, clip, tmp_path / "out.mkv", max_pixels=5000)
    assert [p.name for p in tmp_path.iterdir()] == ["in.mkv"]


def test_a_truncated_input_is_written_and_reported_with_exit_3(tiny_bundle, source, tmp_path, capsys):
    # the audio outlasts the video by 0.1 s: the container's duration is longer than the video's, which
    # must not count as missing frames
    clip = write_clip(tmp_path / "whole.mkv", moving_face(48, SMALL), audio=True, crf=30)
    data = clip.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "out.mkv"
    args = ["video", "--bundle", str(tiny_bundle.root), "--source", str(source), "--threads", "2"]
    assert main([*args, "--target", str(tmp_path / "cut.mkv"), "--output", str(out)]) == 3
    written = len(decoded(out))
    assert 0 < written < 48
    assert f"declares 48 frames and only {written} could be read" in capsys.readouterr().out
    assert main([*args, "--target", str(clip), "--output", str(tmp_path / "whole_out.mkv")]) == 0


def test_a_full_disk_is_reported_at_the_failing_write_naming_the_output(swapper, tmp_path):
    """A file size limit makes the writes fail as a full disk does (EFBIG instead of ENOSPC)."""
    rng = np.random.default_rng(0)
    noisy = [rng.integers(0, 255, (SMALL[1], SMALL[0], 3), np.uint8) for _ in range(60)]  # big when lossless
    clip = write_clip(tmp_path / "in.mkv", noisy, audio=False, crf=0)
    out = tmp_path / "out.mkv"
    written = []
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    try:
        with pytest.raises(OutputError) as caught:
            within(60, lambda: swap_video(swapper, clip, out, TIGHT, crf=0, progress=lambda n, _: written.append(n)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert str(caught.value) == f"cannot write {out}: File too large"
    assert len(written) < 30  # stopped at the failing write, not after every frame
    assert [p.name for p in tmp_path.iterdir()] == ["in.mkv"]


def test_sigterm_during_video_leaves_no_partial_and_exits_143(tiny_bundle, source, tmp_path):
    clip = write_clip(tmp_path / "in.mp4", moving_face(400, SMALL), audio=False, crf=30)
    out = tmp_path / "out" / "out.mp4"
    argv = ["video", "--bundle", str(tiny_bundle.root), "--source", str(source), "--target", str(clip)]
    argv += ["--output", str(out), "--threads", "1", "--batch", "2", "--window", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    process = subprocess.Popen([sys.executable, "-m", "simswap_trt.cli", *argv], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out.parent.exists() and any(out.parent.iterdir())) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    time.sleep(0.5)  # frames in flight in every stage
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 143
    assert "terminated" in process.stderr.read().decode()
    assert list(out.parent.iterdir()) == []


def test_a_killed_runs_temporary_is_removed_by_the_next_run(swapper, tmp_path):
    clip = write_clip(tmp_path / "in.mp4", [background(SMALL)] * 3, audio=False)
    out = tmp_path / "out.mp4"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(str(temporary_path(out)).replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    stale.write_bytes(b"left by a killed run")
    running = temporary_path(out)  # this process's: still being written, as far as the next run knows
    running.write_bytes(b"in progress")
    swap_video(swapper, clip, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.mp4", "out.mp4", running.name])
