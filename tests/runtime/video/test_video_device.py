"""Video on the device path, on the CPU stand-in of the GPU (tests/support/fake_gpu.py, as in test_device_path.py):
the swap stage keeps batches in flight with start_batch/finish_batch, and the output equals the host
(CPU) video path's within one level, with the same frames, timestamps and audio."""

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")

from support.device_path import install_device, latent, plan_bundle  # noqa: E402
from support.video_clips import background, decoded, moving_face, packets, planes, write_clip  # noqa: E402

from simswap_trt import FaceSwapper  # noqa: E402
from simswap_trt.errors import ConfigError  # noqa: E402
from simswap_trt.video import VideoOptions, swap_video  # noqa: E402
from simswap_trt.vision.detect import CenterFace  # noqa: E402

LOSSLESS = 0


def spy_on_batches(swapper) -> list[tuple[str, int]]:
    """Record ("start", n) and ("finish", n) calls of the swapper's batches, n counting starts."""
    calls: list[tuple[str, int]] = []
    start, finish = swapper.start_batch, swapper.finish_batch
    numbers: dict[int, int] = {}

    def started(*args, **kwargs):
        batch = start(*args, **kwargs)
        numbers[id(batch)] = len(numbers)
        calls.append(("start", numbers[id(batch)]))
        return batch

    def finished(batch):
        calls.append(("finish", numbers[id(batch)]))
        return finish(batch)

    swapper.start_batch, swapper.finish_batch = started, finished
    return calls


def most_in_flight(calls: list[tuple[str, int]]) -> int:
    count = most = 0
    for kind, _ in calls:
        count += 1 if kind == "start" else -1
        most = max(most, count)
    return most


def test_device_video_keeps_batches_in_flight_and_equals_the_host_video(tiny_bundle, host, monkeypatch, tmp_path):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b", max_batch=3)
    detector = CenterFace(threads=2)
    frames = moving_face(14) + [background()] * 5 + moving_face(7)  # a gap longer than max_gap (3)
    clip = write_clip(tmp_path / "in.mp4", frames)
    options = VideoOptions(batch=4)

    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="onnxruntime", detector=detector) as on_host:
        assert not on_host.on_device
        on_host.source_latent = latent()
        host_calls = spy_on_batches(on_host)
        swap_video(on_host, clip, tmp_path / "host.mp4", options, crf=LOSSLESS)
    gpu, module = install_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", detector=detector) as on_device:
        assert on_device.on_device
        on_device.source_latent = latent()
        device_calls = spy_on_batches(on_device)
        report = swap_video(on_device, clip, tmp_path / "device.mp4", options, crf=LOSSLESS)

    # the host finishes each batch before starting the next; the device keeps two in flight, never more
    assert most_in_flight(host_calls) == 1
    assert most_in_flight(device_calls) == 2 and [n for kind, n in device_calls if kind == "finish"] == sorted(
        n for kind, n in device_calls if kind == "start"
    )
    assert gpu.executed.count("simswap_pasteback_kernel") == len(device_calls) // 2
    assert [c for c in module.calls if c[0] == "execute"]  # the generator ran on the (stand-in) plan

    source, on_cpu, on_gpu = decoded(clip), decoded(tmp_path / "host.mp4"), decoded(tmp_path / "device.mp4")
    assert report.frames == len(on_gpu) == len(on_cpu) == len(source) == len(frames)
    assert report.frames_swapped == 21
    assert [f.time for f in on_gpu] == [f.time for f in on_cpu] == [f.time for f in source]
    assert packets(tmp_path / "device.mp4") == packets(clip)
    for i, (src, want, got) in enumerate(zip(source, on_cpu, on_gpu, strict=True)):
        assert np.abs(planes(got).astype(int) - planes(want)).max() <= 1, f"frame {i}"
        if 14 <= i < 19:  # no face: the decoded input, bit for bit
            assert np.array_equal(planes(got), planes(src))
        else:
            assert np.abs(planes(got).astype(int) - planes(src)).max() > 20  # really swapped
    assert not gpu.live  # closing the swapper released every device buffer


def test_depth_is_checked_and_chosen_by_where_the_stages_run(tiny_bundle):
    with pytest.raises(ConfigError, match="depth must be at least 1"):
        VideoOptions(depth=0)
    from simswap_trt.video import StreamSwapper

    with FaceSwapper.from_bundle(tiny_bundle.root, threads=1) as swapper:
        assert StreamSwapper(swapper).depth == 1
        assert StreamSwapper(swapper, VideoOptions(depth=3)).depth == 3
