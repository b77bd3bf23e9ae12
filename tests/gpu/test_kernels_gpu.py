"""GPU suite for the CUDA kernels (``pytest -m gpu``): the device kernels, loaded from the CMake fatbin and
compiled with NVRTC, give the same results as the host build of the same per-pixel code."""

import numpy as np
import pytest
from support.kernel_host import FACES, FRAMES, face_matrix, pasteback, preprocess

from simswap_trt import cuda
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.device.tables import crop_to_frame_matrices, pasteback_tables, preprocess_tables
from simswap_trt.kernels import DeviceKernels, PasteBackTables, PreprocessTables, load_device_kernels

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("source", ["fatbin", "nvrtc"])
@pytest.mark.parametrize("size", [224, 512])
def test_device_kernels_equal_the_host_build(build, host, monkeypatch, source, size):
    monkeypatch.setenv(
        "SIMSWAP_KERNELS_FATBIN", str(build / "simswap_kernels.fatbin") if source == "fatbin" else "/none"
    )
    kernels = DeviceKernels(load_device_kernels())
    stream = cuda.Stream()
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in FRAMES]
    matrices = [face_matrix(c, s, a, size) for _, c, s, a in FACES]
    count = len(FACES)
    frame_of_face = np.array([f for f, *_ in FACES], np.int32)
    device_frames = [cuda_memory.DeviceBuffer.from_array(f) for f in frames]
    planned = preprocess_tables(frames, frame_of_face, crop_to_frame_matrices(matrices))
    planned["frames"][:] = [b.ptr for b in device_frames]
    meta = {name: cuda_memory.DeviceBuffer.from_array(a).ptr for name, a in planned.items()}
    for dtype in (np.float32, np.float16):
        out = cuda_memory.DeviceBuffer(count * 3 * size * size * np.dtype(dtype).itemsize)
        kernels.preprocess(stream.handle, PreprocessTables(**meta), count, size, dtype == np.float16, out.ptr)
        stream.synchronize()
        expected = preprocess(host, frames, matrices, frame_of_face, size, dtype)
        np.testing.assert_array_equal(out.to_array(expected), expected)  # same code, no FMA: bit-exact

    order = [i for f in range(len(FRAMES)) for i in range(count) if FACES[i][0] == f]
    per_frame = [[matrices[i] for i in order if FACES[i][0] == f] for f in range(len(FRAMES))]
    generator_out = rng.random((count, 3, size, size), dtype=np.float32)
    expected_frames, batch = pasteback(host, frames, per_frame, generator_out, size)
    crops = cuda_memory.DeviceBuffer.from_array(generator_out)
    crop_table = np.array([crops.ptr + i * generator_out[0].nbytes for i in range(count)], np.uint64)
    paste = {k: cuda_memory.DeviceBuffer.from_array(v).ptr for k, v in pasteback_tables(batch, crop_table).items()}
    tables = PasteBackTables(frames=meta["frames"], pitches=meta["pitches"], **paste)
    kernels.pasteback(stream.handle, tables, batch.union_rois, size, False)
    stream.synchronize()
    for device_frame, frame in zip(device_frames, expected_frames, strict=True):
        np.testing.assert_array_equal(device_frame.to_array(frame), frame)
