"""GPU check of mapped pinned host memory (``pytest -m gpu``): the device address of a ``MappedBuffer`` reaches
the same bytes as its host array, in both directions, on any GPU that can map host memory."""

import numpy as np
import pytest

from simswap_trt import cuda
from simswap_trt.cuda import memory as cuda_memory

pytestmark = pytest.mark.gpu


def test_mapped_buffer_is_the_same_memory_for_host_and_device():
    rng = np.random.default_rng(5)
    mapped = cuda_memory.MappedBuffer((4, 3, 8, 8), np.float32)
    device = cuda_memory.DeviceBuffer(mapped.nbytes)
    stream = cuda.Stream()
    mapped.array[...] = rng.random(mapped.array.shape, dtype=np.float32)
    mapped.upload(mapped.array, stream)  # a view of its own memory: nothing to copy
    cudart = cuda.runtime()

    def device_copy(dst, src):
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        cuda.cuda_call("cudaMemcpyAsync", cudart.cudaMemcpyAsync(dst, src, mapped.nbytes, kind, stream.handle))

    device_copy(device.ptr, mapped.ptr)
    stream.synchronize()
    np.testing.assert_array_equal(device.to_array(mapped.array), mapped.array)  # the GPU read the host's bytes
    written = rng.random(mapped.array.shape, dtype=np.float32)
    source = cuda_memory.DeviceBuffer.from_array(written)
    device_copy(mapped.ptr, source.ptr)
    stream.synchronize()
    np.testing.assert_array_equal(mapped.array, written)  # the host sees what the GPU wrote
    for buffer in (mapped, device, source, stream):
        buffer.free()
