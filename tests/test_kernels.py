"""The CUDA kernels' per-pixel math, built for the host by CMake from the same header as the device
kernels, against OpenCV and the CPU pipeline on random frames, faces and transforms (odd sizes, faces at
and beyond the frame border, 90° rotations, several faces from several frames).

Tolerances: preprocessing <= 1e-4 on [0, 1] floats against OpenCV's bilinear warp of the float frame;
paste-back <= 1 level against the CPU paste-back and the official full-frame method."""

import ctypes

import cv2
import numpy as np
import pytest

from simswap_build.bench.official_style import paste_back_official
from simswap_trt.kernels import crop_to_frame_matrices, fatbin_targets, pack_pasteback
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.pasteback import paste_back

FRONTAL = np.array([[39.73, 51.14], [72.27, 51.14], [56.0, 68.49], [42.46, 87.01], [69.54, 87.01]])


def ptr(array, kind=ctypes.c_void_p):
    return array.ctypes.data_as(kind)


def pointer_array(arrays):
    return (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])


def face_matrix(center, size, angle_deg, crop=224):
    angle = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return alignment_matrix((FRONTAL - 56) * (size / 112) @ rotation.T + center, "multipose", crop)


FRAMES = [(481, 643), (333, 517), (300, 401)]
FACES = [  # (frame, centre, face size, angle)
    (0, (320, 240), 180, 0),
    (1, (250, 170), 150, 90),
    (0, (20, 10), 160, 17),
    (2, (395, 296), 120, -35),
    (1, (60, 300), 90, 180),
    (2, (200, 150), 260, 5),
]


def preprocess(host, frames, matrices, frame_of_face, size, dtype):
    out = np.zeros((len(matrices), 3, size, size), dtype)
    host.simswap_preprocess_host(
        pointer_array(frames),
        ptr(np.array([f.strides[0] for f in frames], np.int32)),
        ptr(np.array([f.shape[1] for f in frames], np.int32)),
        ptr(np.array([f.shape[0] for f in frames], np.int32)),
        ptr(frame_of_face),
        ptr(crop_to_frame_matrices(matrices)),
        len(matrices),
        size,
        int(dtype == np.float16),
        ptr(out),
    )
    return out


def test_preprocess_matches_opencv(host):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in FRAMES]
    size = 224
    matrices = [face_matrix(c, s, a) for _, c, s, a in FACES]
    frame_of_face = np.array([f for f, *_ in FACES], np.int32)
    out = preprocess(host, frames, matrices, frame_of_face, size, np.float32)
    half = preprocess(host, frames, matrices, frame_of_face, size, np.float16)
    np.testing.assert_array_equal(half, out.astype(np.float16))  # FP16 output: round-to-nearest-even of FP32
    for i, (f, *_) in enumerate(FACES):
        warped = cv2.warpAffine(
            frames[f].astype(np.float32),
            matrices[i],
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        expected = warped[..., ::-1].transpose(2, 0, 1) / 255
        assert np.abs(out[i] - expected).max() <= 1e-4, (i, np.abs(out[i] - expected).max())
    assert out.std() > 0.1  # the faces really were sampled


def test_pasteback_matches_the_cpu_paths(host):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in FRAMES]
    swaps = [rng.random((224, 224, 3), dtype=np.float32) for _ in FACES]
    crops = np.stack([s[..., ::-1] * 255 for s in swaps]).astype(np.float32)
    order = sorted(range(len(FACES)), key=lambda i: FACES[i][0])  # faces grouped by frame, in paste order
    per_frame = [[face_matrix(*FACES[i][1:]) for i in order if FACES[i][0] == f] for f in range(len(FRAMES))]
    batch = pack_pasteback([f.shape for f in frames], per_frame, 224)
    out = [f.copy() for f in frames]
    host.simswap_pasteback_host(
        pointer_array(out),
        ptr(np.array([f.strides[0] for f in out], np.int32)),
        len(out),
        ptr(batch.union_rois),
        ptr(batch.face_begin),
        ptr(np.ascontiguousarray(crops[order])),
        224,
        ptr(batch.forward),
        ptr(batch.rois),
        ptr(batch.masks),
        ptr(batch.mask_offsets),
    )
    for f, frame in enumerate(frames):
        mine = [i for i in order if FACES[i][0] == f]
        cpu = paste_back(frame, [(crops[i], face_matrix(*FACES[i][1:])) for i in mine])
        official = paste_back_official(frame, [swaps[i] for i in mine], [face_matrix(*FACES[i][1:]) for i in mine])
        assert np.abs(out[f].astype(int) - cpu).max() <= 1
        assert np.abs(out[f].astype(int) - official).max() <= 1
        assert np.abs(out[f].astype(int) - frame).max() > 100  # faces were pasted


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
    log = b" " * log_size
    nvrtc.nvrtcGetProgramLog(program, log)
    assert result == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
    _, size = nvrtc.nvrtcGetPTXSize(program)
    ptx = b" " * size
    nvrtc.nvrtcGetPTX(program, ptx)
    assert all(name.encode() in ptx for name in KERNEL_NAMES)
