"""GPU suite for the CUDA kernels (``pytest -m gpu``): the device kernels, loaded from the CMake fatbin and
compiled with NVRTC, give the same results as the host build of the same per-pixel code."""

import numpy as np
import pytest
from test_kernels import FACES, FRAMES, face_matrix, pointer_array, preprocess, ptr

from simswap_trt import cuda
from simswap_trt.kernels import crop_to_frame_matrices, load_device_kernels, pack_pasteback

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("source", ["fatbin", "nvrtc"])
def test_device_kernels_equal_the_host_build(build, host, monkeypatch, source):
    from cuda.core import Device, LaunchConfig, launch

    monkeypatch.setenv(
        "SIMSWAP_KERNELS_FATBIN", str(build / "simswap_kernels.fatbin") if source == "fatbin" else "/none"
    )
    kernels = load_device_kernels()
    stream = Device().create_stream()
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in FRAMES]
    matrices = [face_matrix(c, s, a) for _, c, s, a in FACES]
    size, count = 224, len(FACES)
    frame_of_face = np.array([f for f, *_ in FACES], np.int32)
    inverse = crop_to_frame_matrices(matrices)
    device_frames = [cuda.DeviceBuffer.from_array(f) for f in frames]
    meta = {
        name: cuda.DeviceBuffer.from_array(a)
        for name, a in {
            "frames": np.array([b.ptr for b in device_frames], np.uint64),
            "pitches": np.array([f.strides[0] for f in frames], np.int32),
            "widths": np.array([f.shape[1] for f in frames], np.int32),
            "heights": np.array([f.shape[0] for f in frames], np.int32),
            "frame_of_face": frame_of_face,
            "inverse": inverse,
        }.items()
    }
    out = cuda.DeviceBuffer(count * 3 * size * size * 4)
    args = [np.uint64(meta[k].ptr) for k in ("frames", "pitches", "widths", "heights", "frame_of_face", "inverse")]
    launch(
        stream,
        LaunchConfig(grid=(14, 14, count), block=(16, 16, 1)),
        kernels["simswap_preprocess_kernel"],
        *args,
        np.int32(size),
        np.int32(0),
        np.uint64(out.ptr),
    )
    stream.sync()
    expected = preprocess(host, frames, matrices, frame_of_face, size, np.float32)
    np.testing.assert_allclose(out.to_array(expected), expected, atol=1e-6)

    per_frame = [[face_matrix(*FACES[i][1:]) for i in range(count) if FACES[i][0] == f] for f in range(len(FRAMES))]
    order = [i for f in range(len(FRAMES)) for i in range(count) if FACES[i][0] == f]
    crops = (rng.random((count, size, size, 3), dtype=np.float32) * 255)[order]
    batch = pack_pasteback([f.shape for f in frames], per_frame, size)
    tables = {
        k: cuda.DeviceBuffer.from_array(v)
        for k, v in {
            "union": batch.union_rois,
            "begin": batch.face_begin,
            "crops": crops,
            "forward": batch.forward,
            "rois": batch.rois,
            "masks": batch.masks,
            "offsets": batch.mask_offsets,
        }.items()
    }
    width = int((batch.union_rois[:, 2] - batch.union_rois[:, 0]).max())
    height = int((batch.union_rois[:, 3] - batch.union_rois[:, 1]).max())
    launch(
        stream,
        LaunchConfig(grid=(-(-width // 16), -(-height // 16), len(frames)), block=(16, 16, 1)),
        kernels["simswap_pasteback_kernel"],
        np.uint64(meta["frames"].ptr),
        np.uint64(meta["pitches"].ptr),
        np.uint64(tables["union"].ptr),
        np.uint64(tables["begin"].ptr),
        np.uint64(tables["crops"].ptr),
        np.int32(size),
        np.uint64(tables["forward"].ptr),
        np.uint64(tables["rois"].ptr),
        np.uint64(tables["masks"].ptr),
        np.uint64(tables["offsets"].ptr),
    )
    stream.sync()
    expected_frames = [f.copy() for f in frames]
    host.simswap_pasteback_host(
        pointer_array(expected_frames),
        ptr(np.array([f.strides[0] for f in frames], np.int32)),
        len(frames),
        ptr(batch.union_rois),
        ptr(batch.face_begin),
        ptr(crops),
        size,
        ptr(batch.forward),
        ptr(batch.rois),
        ptr(batch.masks),
        ptr(batch.mask_offsets),
    )
    for device_frame, frame in zip(device_frames, expected_frames, strict=True):
        np.testing.assert_array_equal(device_frame.to_array(frame), frame)
