"""A real local Ray cluster (2 CPUs, 2 actors) swaps a folder: results equal the single-process swapper's,
a corrupt file is reported and skipped, a rerun leaves finished outputs alone."""

import logging
from dataclasses import replace

import cv2
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the batch job needs the 'ray' extra")

from support.paths import ROOT, TESTS  # noqa: E402

from simswap_trt import FaceSwapper  # noqa: E402
from simswap_trt.distributed import JobOptions, list_inputs, output_for, run_job  # noqa: E402
from simswap_trt.images import read_image  # noqa: E402

OPTIONS = JobOptions(actors=2, batch=2, gpus_per_actor=0, cpus_per_actor=1, threads=1)
LOSSLESS = 0  # libx264 CRF


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("ray_inputs")
    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])
    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    small = cv2.resize(astronaut, (256, 256))
    cv2.imwrite(str(root / "a_astronaut.png"), astronaut)
    cv2.imwrite(str(root / "b_group.png"), np.hstack([cv2.resize(camera, (256, 256)), small]))
    cv2.imwrite(str(root / "c_small.jpg"), small)
    cv2.imwrite(str(root / "d_flat.png"), np.full((96, 96, 3), 90, np.uint8))  # no face
    (root / "e_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root, astronaut


@pytest.fixture(scope="module")
def reference(tiny_bundle, folder):
    swapper = FaceSwapper.from_bundle(tiny_bundle.root, threads=1)
    swapper.set_source(folder[1])
    return swapper


def check_against_single_process(reference, reports, written_names):
    assert sorted(r.source.rsplit("/", 1)[-1] for r in reports if r.status == "written") == written_names
    for report in reports:
        if report.status != "written":
            continue
        expected = reference.swap(read_image(report.source.removeprefix("file://")))
        got = read_image(report.output.removeprefix("file://"))
        assert report.faces_swapped == expected.swapped_count >= 1
        # other batch compositions on the actors: ONNX Runtime may round a value differently (1 LSB);
        # JPEG outputs are compared after the same lossy encoding
        if report.output.endswith(".jpg"):
            want = cv2.imdecode(cv2.imencode(".jpg", expected.image)[1], cv2.IMREAD_COLOR)
            assert np.abs(got.astype(int) - want).max() <= 2
        else:
            assert np.abs(got.astype(int) - expected.image).max() <= 1


def test_folder_job_equals_single_process_and_reports_failures(cluster, tiny_bundle, folder, reference, tmp_path):
    root, _ = folder
    out = tmp_path / "out"
    pairs = [(s, output_for(s, str(out))) for s in list_inputs(str(root))]
    reports = run_job(tiny_bundle.root, reference.source_latent, pairs, OPTIONS)
    assert [(r.source, r.output) for r in reports] == pairs
    by_name = {r.source.rsplit("/", 1)[-1]: r for r in reports}
    assert by_name["e_corrupt.png"].status == "failed" and "not a readable image" in by_name["e_corrupt.png"].message
    assert by_name["d_flat.png"].status == "skipped" and "none selected" in by_name["d_flat.png"].message
    check_against_single_process(reference, reports, ["a_astronaut.png", "b_group.png", "c_small.jpg"])
    assert sorted(p.name for p in out.iterdir()) == ["a_astronaut.png", "b_group.png", "c_small.jpg"]  # no temp files

    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_job(tiny_bundle.root, reference.source_latent, pairs, OPTIONS)
    assert {r.source.rsplit("/", 1)[-1]: r.status for r in again} == {
        "a_astronaut.png": "done before",
        "b_group.png": "done before",
        "c_small.jpg": "done before",
        "d_flat.png": "skipped",  # unfinished items are tried again
        "e_corrupt.png": "failed",
    }
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_uri_paths_and_inputs_never_overwritten(cluster, tiny_bundle, folder, reference, tmp_path):
    root, _ = folder
    out = f"file://{tmp_path}/uri-out"
    sources = [s for s in list_inputs(f"file://{root}") if "corrupt" not in s and "flat" not in s]
    assert sources[0] == f"file://{root}/a_astronaut.png"
    reports = run_job(tiny_bundle.root, reference.source_latent, [(s, output_for(s, out)) for s in sources], OPTIONS)
    check_against_single_process(reference, reports, ["a_astronaut.png", "b_group.png", "c_small.jpg"])
    with pytest.raises(Exception, match="is also an input"):
        run_job(tiny_bundle.root, reference.source_latent, [(sources[0], sources[0])], OPTIONS)


def test_batch_command(cluster, tiny_bundle, folder, tmp_path, capsys):
    from simswap_trt.cli import main

    root, astronaut = folder
    cv2.imwrite(str(tmp_path / "source.png"), astronaut)
    argv = ["batch", "--ray", "--bundle", str(tiny_bundle.root), "--source", str(tmp_path / "source.png")]
    argv += ["--input", str(root), "--output", str(tmp_path / "out"), "--threads", "1", "--batch", "2"]
    assert main(argv) == 3  # the corrupt and the faceless image
    printed = capsys.readouterr().out
    assert "e_corrupt.png: failed" in printed and "d_flat.png: skipped" in printed and "3 written" in printed
    for name in ("a_astronaut.png", "b_group.png", "c_small.jpg"):  # every written item is listed
        assert f"{root / name}: written -> {tmp_path / 'out' / name} (" in printed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_astronaut.png", "b_group.png", "c_small.jpg"]


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, folder):
    """An image, a short clip with a moving face, a clip without a face and a truncated clip."""
    pytest.importorskip("av", reason="video items need the 'video' extra")
    from support.video_clips import background, moving_face, write_clip

    root = tmp_path_factory.mktemp("ray_mixed")
    cv2.imwrite(str(root / "a_astronaut.png"), folder[1])
    write_clip(root / "b_clip.mp4", moving_face(12, CLIP_SIZE))
    write_clip(root / "c_noface.mkv", [background(CLIP_SIZE)] * 4)
    data = (root / "b_clip.mp4").read_bytes()
    (root / "d_corrupt.mov").write_bytes(data[: len(data) // 3])
    return root


CLIP_SIZE = (160, 120)


def test_videos_swapped_like_single_process_and_not_redone(cluster, tiny_bundle, mixed_folder, reference, tmp_path):
    from support.video_clips import decoded, planes

    from simswap_trt.video import VideoOptions, swap_video

    out = tmp_path / "out"
    pairs = [(s, output_for(s, str(out))) for s in list_inputs(str(mixed_folder))]
    assert [s.rsplit("/", 1)[-1] for s, _ in pairs] == [
        "a_astronaut.png",
        "b_clip.mp4",
        "c_noface.mkv",
        "d_corrupt.mov",
    ]
    # lossless video outputs: they decode to exactly the frames that were encoded. A lossy libx264 encode of
    # the same frames is not reproducible on CPUs with AVX-512 (its bitstream changes with the process's
    # memory history), so lossy outputs of two processes cannot be compared pixel for pixel
    options = replace(OPTIONS, crf=LOSSLESS)
    reports = run_job(tiny_bundle.root, reference.source_latent, pairs, options)
    by_name = {r.source.rsplit("/", 1)[-1]: r for r in reports}
    assert [by_name[n].status for n in sorted(by_name)] == ["written", "written", "skipped", "failed"]
    assert "no face selected" in by_name["c_noface.mkv"].message
    assert "d_corrupt.mov" in by_name["d_corrupt.mov"].message  # the one-line reason names the file
    check_against_single_process(reference, [by_name["a_astronaut.png"]], ["a_astronaut.png"])

    # the single-process video pipeline on the same clip, with the actor's detector/generator batch size
    expected = swap_video(
        reference, mixed_folder / "b_clip.mp4", tmp_path / "expected.mp4", VideoOptions(batch=2), crf=LOSSLESS
    )
    assert by_name["b_clip.mp4"].faces_swapped == expected.frames_swapped >= 1
    want, got = decoded(tmp_path / "expected.mp4"), decoded(out / "b_clip.mp4")
    assert len(got) == len(want) == 12
    # same swapper inputs, batches and threads give the same BGR frames, hence the same lossless outputs
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(planes(a), planes(b))
    assert sorted(p.name for p in out.iterdir()) == ["a_astronaut.png", "b_clip.mp4"]  # no temp files

    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_job(tiny_bundle.root, reference.source_latent, pairs, options)
    assert {r.source.rsplit("/", 1)[-1]: r.status for r in again} == {
        "a_astronaut.png": "done before",
        "b_clip.mp4": "done before",
        "c_noface.mkv": "skipped",
        "d_corrupt.mov": "failed",
    }
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_video_uri_is_reported(cluster, tiny_bundle, mixed_folder, reference, tmp_path):
    source = f"file://{mixed_folder}/b_clip.mp4"
    [report] = run_job(tiny_bundle.root, reference.source_latent, [(source, f"file://{tmp_path}/b.mp4")], OPTIONS)
    assert report.status == "failed" and "local or shared paths" in report.message


def test_batch_outputs_are_signed(cluster, tiny_bundle, mixed_folder, reference, tmp_path):
    pytest.importorskip("c2pa", reason="signing needs the 'provenance' extra")
    from support.c2pa_certs import make_chain

    from simswap_trt.provenance import Signer, verify

    chain = make_chain(tmp_path)
    options = replace(OPTIONS, signer=Signer.from_files(chain.cert, chain.key), sources=("ab" * 32,))
    names = ("a_astronaut.png", "b_clip.mp4")
    pairs = [(str(mixed_folder / n), str(tmp_path / "out" / n)) for n in names]
    reports = run_job(tiny_bundle.root, reference.source_latent, pairs, options)
    assert [r.status for r in reports] == ["written", "written"]
    for name in names:
        result = verify(tmp_path / "out" / name, chain.root)
        assert (result.status, result.trust, result.tampered) == ("valid", "trusted", False)
        assert result.models["source_sha256"] == ["ab" * 32]
        assert result.actions[-1]["action"] == "c2pa.edited"


def test_an_unwritable_output_folder_is_one_error_before_ray_starts(tiny_bundle, folder, tmp_path, monkeypatch, capsys):
    from support.folders import unwritable_folder

    from simswap_trt.cli import main
    from simswap_trt.distributed import batch
    from simswap_trt.errors import OutputError

    def no_ray(*args):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(batch, "_run_ray", no_ray)
    root, astronaut = folder
    locked = unwritable_folder(tmp_path)
    pairs = [(s, output_for(s, str(locked / "out"))) for s in list_inputs(str(root))]
    with pytest.raises(OutputError, match="is not writable"):
        run_job(tiny_bundle.root, np.zeros(512, np.float32), pairs, OPTIONS)
    cv2.imwrite(str(tmp_path / "source.png"), astronaut)
    argv = ["batch", "--bundle", str(tiny_bundle.root), "--source", str(tmp_path / "source.png")]
    assert main([*argv, "--input", str(root), "--output", str(locked / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "is not writable" in err and len(err.splitlines()) == 1, err


def test_more_actors_than_cpus_says_how_many_run_and_ray_warns_nothing(cluster, tiny_bundle, folder, reference, caplog):
    root, _ = folder
    pairs = [(str(root / "c_small.jpg"), str(root.parent / "actors-out" / "c_small.jpg"))]
    ray_data = logging.getLogger("ray.data")  # does not propagate to the root logger: listen to it directly
    ray_data.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING"):
            [report] = run_job(tiny_bundle.root, reference.source_latent, pairs, replace(OPTIONS, actors=4))
    finally:
        ray_data.removeHandler(caplog.handler)
    assert report.status == "written"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("4 actors asked" in w and "running 2 actor(s)" in w for w in warnings), warnings
    assert not any("deprecated" in w for w in warnings), warnings


def test_select_reference_swaps_like_the_single_process_swapper(cluster, tiny_bundle, folder, reference, tmp_path):
    root, astronaut = folder
    matcher = FaceSwapper.from_bundle(tiny_bundle.root, threads=1)
    matcher.source_latent = reference.source_latent
    matcher.set_reference(cv2.cvtColor(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR))
    options = replace(OPTIONS, select="reference", threshold=0.5)
    sources = [str(root / "a_astronaut.png"), str(root / "b_group.png")]
    pairs = [(s, output_for(s, str(tmp_path / "out"))) for s in sources]
    with pytest.raises(Exception, match="reference"):
        run_job(tiny_bundle.root, reference.source_latent, pairs, options)
    reports = run_job(tiny_bundle.root, reference.source_latent, pairs, options, reference=matcher.reference_latent)
    for report in reports:
        expected = matcher.swap(read_image(report.source), "reference", 0.5)
        if not expected.swapped_count:
            assert report.status == "skipped"
            continue
        assert report.status == "written" and report.faces_swapped == expected.swapped_count
        assert np.abs(read_image(report.output).astype(int) - expected.image).max() <= 1
    assert any(r.status == "written" for r in reports)


def test_webm_videos_are_swapped_as_vp9(cluster, tiny_bundle, reference, tmp_path):
    pytest.importorskip("av", reason="video items need the 'video' extra")
    import av
    from support.video_clips import moving_face, write_clip

    clip = write_clip(tmp_path / "clip.webm", moving_face(6, CLIP_SIZE), audio=False, codec="libvpx-vp9")
    [report] = run_job(
        tiny_bundle.root, reference.source_latent, [(str(clip), str(tmp_path / "out" / "clip.webm"))], OPTIONS
    )
    assert report.status == "written", report.message
    with av.open(str(tmp_path / "out" / "clip.webm")) as container:
        assert container.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")
        assert len(list(container.decode(video=0))) == 6


def test_sigterm_during_batch_exits_143_and_leaves_no_temporary(tiny_bundle, folder, tmp_path):
    pytest.importorskip("av", reason="video items need the 'video' extra")
    import os
    import signal
    import subprocess
    import sys
    import time

    from support.video_clips import moving_face, write_clip

    inputs = tmp_path / "in"
    inputs.mkdir()
    write_clip(inputs / "long.mp4", moving_face(400, CLIP_SIZE), audio=False, crf=30)
    cv2.imwrite(str(tmp_path / "source.png"), folder[1])
    out = tmp_path / "out"
    argv = ["batch", "--bundle", str(tiny_bundle.root), "--source", str(tmp_path / "source.png")]
    argv += ["--input", str(inputs), "--output", str(out), "--actors", "1", "--threads", "1", "--batch", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen([sys.executable, "-m", "simswap_trt.cli", *argv], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (out.exists() and any(out.iterdir())) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.1)
    assert any(p.name.endswith(".partial.mp4") for p in out.iterdir())  # the actor is writing the video
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 143, process.stderr.read().decode()[-2000:]
    assert list(out.iterdir()) == []
