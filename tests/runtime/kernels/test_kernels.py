"""The CUDA kernels' per-pixel math, built for the host by CMake from the same header as the device
kernels, against OpenCV and the CPU pipeline on random frames, faces and transforms (odd sizes, faces at
and beyond the frame border, 90° rotations, several faces from several frames).

Tolerances: preprocessing <= 1e-4 on [0, 1] floats against OpenCV's bilinear warp of the float frame;
paste-back <= 1 level against the CPU paste-back and the official full-frame method."""

import cv2
import numpy as np
import pytest
from support.kernel_host import FACES, FRAMES, face_matrix, pasteback, preprocess
from support.real_gpu import gpu_available

from simswap_build.bench.official_style import paste_back_official
from simswap_trt.kernels import fatbin_targets
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.preprocess import crops_to_tensor
from simswap_trt.vision.warp import warp_faces


def test_preprocess_matches_the_cpu_pipeline(host):
    """The kernel rounds its bilinear sample to a level, as OpenCV's uint8 warp (the CPU pipeline's crop)
    does; OpenCV quantizes sub-pixel positions to 1/32, so a few pixels land one level apart."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in FRAMES]
    size = 224
    matrices = [face_matrix(c, s, a) for _, c, s, a in FACES]
    frame_of_face = np.array([f for f, *_ in FACES], np.int32)
    out = preprocess(host, frames, matrices, frame_of_face, size, np.float32)
    half = preprocess(host, frames, matrices, frame_of_face, size, np.float16)
    np.testing.assert_array_equal(half, out.astype(np.float16))  # FP16 output: round-to-nearest-even of FP32
    cpu = crops_to_tensor(warp_faces(frames, [(f, m) for (f, *_), m in zip(FACES, matrices, strict=True)], size), size)
    difference = np.abs(out - cpu)
    assert difference.max() <= 1 / 255 + 1e-6, difference.max() * 255
    assert (difference > 0).mean() < 1e-3, (difference > 0).mean()  # OpenCV positions are 1/32-pixel fixed point
    for i, (f, *_) in enumerate(FACES):  # and the sample itself is OpenCV's bilinear warp of the float frame
        warped = cv2.warpAffine(
            frames[f].astype(np.float32),
            matrices[i],
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        expected = warped[..., ::-1].transpose(2, 0, 1) / 255
        assert np.abs(out[i] - expected).max() <= 0.5 / 255 + 1e-4, (i, np.abs(out[i] - expected).max())
    assert out.std() > 0.1  # the faces really were sampled


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_pasteback_matches_the_cpu_paths(host, dtype):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in FRAMES]
    swaps = [rng.random((224, 224, 3), dtype=np.float32).astype(dtype).astype(np.float32) for _ in FACES]
    order = sorted(range(len(FACES)), key=lambda i: FACES[i][0])  # faces grouped by frame, in paste order
    per_frame = [[face_matrix(*FACES[i][1:]) for i in order if FACES[i][0] == f] for f in range(len(FRAMES))]
    generator_out = np.ascontiguousarray(np.stack([swaps[i].transpose(2, 0, 1) for i in order]).astype(dtype))
    out, _ = pasteback(host, frames, per_frame, generator_out)
    for f, frame in enumerate(frames):
        mine = [i for i in order if FACES[i][0] == f]
        cpu = paste_back(frame, [(swaps[i][..., ::-1] * 255, face_matrix(*FACES[i][1:])) for i in mine])
        official = paste_back_official(frame, [swaps[i] for i in mine], [face_matrix(*FACES[i][1:]) for i in mine])
        assert np.abs(out[f].astype(int) - cpu).max() <= 1
        assert np.abs(out[f].astype(int) - official).max() <= 1
        assert np.abs(out[f].astype(int) - frame).max() > 100  # faces were pasted


def test_a_face_outside_the_frame_keeps_every_later_face_on_its_own_crop(host):
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (300, 640, 3), dtype=np.uint8)
    matrices = [face_matrix((120, 150), 150, 0), face_matrix((5000, 150), 150, 0), face_matrix((500, 150), 150, 10)]
    swaps = rng.random((3, 224, 224, 3), dtype=np.float32)
    generator_out = np.ascontiguousarray(swaps.transpose(0, 3, 1, 2))
    (out,), batch = pasteback(host, [frame], [matrices], generator_out)
    assert batch.outside == (1,)
    cpu = paste_back(frame, [(swaps[i][..., ::-1] * 255, matrices[i]) for i in (0, 2)])
    assert np.abs(out.astype(int) - cpu).max() <= 1
    assert np.abs(out.astype(int) - frame)[:, 400:].max() > 100  # the third face was pasted, with its own crop


def test_launch_grids_cover_any_crop_size_and_region():
    from simswap_trt.kernels import BLOCK, pasteback_grid, preprocess_grid

    for size in (224, 256, 512):
        grid = preprocess_grid(size, 5)
        assert grid[2] == 5 and grid[0] * BLOCK[0] >= size and (grid[0] - 1) * BLOCK[0] < size
        assert grid[1] * BLOCK[1] >= size
    rois = np.array([[10, 20, 610, 300], [0, 0, 0, 0], [5, 5, 100, 700]], np.int32)
    grid = pasteback_grid(rois)
    assert grid[0] * BLOCK[0] >= 600 and grid[1] * BLOCK[1] >= 695 and grid[2] == 3


def test_fatbin_has_sass_for_every_target_and_ptx(build):
    fatbin = build / "simswap_kernels.fatbin"
    if not fatbin.is_file():
        pytest.skip("nvcc not available: no fatbin built")
    targets = fatbin_targets(fatbin)
    assert {arch for kind, arch in targets if kind == "sass"} >= {75, 80, 86, 87, 89, 90}
    assert [kind for kind, _ in targets].count("ptx") == 1


def test_shipped_source_compiles_with_nvrtc():
    """The runtime's fallback without a fatbin: NVRTC compiles the packaged source (no GPU needed for PTX)."""
    from simswap_trt.kernels import KERNEL_NAMES, SOURCE_DIR

    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    source = (SOURCE_DIR / "simswap_kernels.cu").read_bytes()
    try:
        _, program = nvrtc.nvrtcCreateProgram(source, b"simswap_kernels.cu", 0, [], [])
    except Exception as exc:  # cuda-pathfinder raises when libnvrtc is not installed
        pytest.skip(f"libnvrtc not available: {exc}")
    options = [b"--gpu-architecture=compute_80", b"--fmad=false", f"--include-path={SOURCE_DIR}".encode()]
    (result,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
    _, log_size = nvrtc.nvrtcGetProgramLogSize(program)
    log = bytearray(log_size)  # NVRTC writes into it; b" " * 1 would be the interpreter-wide b" " object
    nvrtc.nvrtcGetProgramLog(program, log)
    assert result == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
    _, size = nvrtc.nvrtcGetPTXSize(program)
    ptx = bytearray(size)
    nvrtc.nvrtcGetPTX(program, ptx)
    assert all(name.encode() in ptx for name in KERNEL_NAMES)


@pytest.mark.skipif(gpu_available(), reason="checks the situation of a machine without a usable GPU")
def test_unusable_kernels_are_a_clear_error(monkeypatch):
    from simswap_trt.errors import EngineError
    from simswap_trt.kernels import DeviceKernels

    pytest.importorskip("cuda.core")
    monkeypatch.setenv("SIMSWAP_KERNELS_FATBIN", "/nonexistent.fatbin")
    with pytest.raises(
        EngineError, match=r"the CUDA kernels are not usable \(compiling simswap_kernels.cu with NVRTC\)"
    ):
        DeviceKernels()
