"""The face enhancer on the device (see ``simswap_trt.vision.enhance`` for the method): between the generator
and the paste-back, on the workspace's compute stream,

1. one ``simswap_enhancer_input_kernel`` launch reads each face's generator output where it lies and writes the
   enhancer plan's input: the swap through the composed map into the enhancer's crop, the frame around it;
2. the enhancer plan runs on it in chunks (``Chunks``), through ``execute_device``;
3. one ``simswap_enhance_blend_kernel`` launch blends its output with its input in place;

and the paste-back reads the blended crops where they lie, through each face's frame→enhancer-crop matrix,
within the region and border mask of the face's swap. The frames are not uploaded again and nothing comes
back to the host in between.
"""

from __future__ import annotations

import numpy as np

from simswap_trt.device.chunks import Chunks
from simswap_trt.device.workspace import Workspace
from simswap_trt.engines.base import DeviceEngine
from simswap_trt.errors import EngineError
from simswap_trt.kernels import DeviceKernels, EnhancerTables
from simswap_trt.vision.enhance import INPUT, OUTPUT, FaceEnhancer


class DeviceEnhancer:
    """A ``FaceEnhancer`` whose restorer is a TensorRT plan, run on device buffers. Its ``blend`` is read at
    each batch."""

    def __init__(self, enhancer: FaceEnhancer) -> None:
        engine = enhancer.engine
        if not isinstance(engine, DeviceEngine):
            raise EngineError(f"the face enhancer runs on {engine.backend}, not TensorRT")
        self.enhancer, self.engine, self.size = enhancer, engine, enhancer.size
        self.input_dtype = np.dtype(engine.inputs[0].dtype)
        self.output_dtype = np.dtype(engine.outputs[0].dtype)
        if {self.input_dtype, self.output_dtype} - {np.dtype(np.float32), np.dtype(np.float16)}:
            raise EngineError(
                f"the device path needs a float32/float16 enhancer, got {engine.inputs[0].describe()} → "
                f"{engine.outputs[0].describe()}"
            )

    @property
    def name(self) -> str:
        return f"face enhancer on the device ({self.engine.backend}, {self.size} px crops)"

    @property
    def half_out(self) -> bool:
        """Whether the blended crops the paste-back reads are float16."""
        return self.output_dtype == np.float16

    def output_bytes(self) -> int:
        """Bytes of one face's blended crop (the paste-back's stride between faces)."""
        return 3 * self.size * self.size * self.output_dtype.itemsize

    def reserve(self, ws: Workspace, count: int) -> tuple[int, int]:
        """Device addresses of the enhancer's input and output for ``count`` faces in ``ws`` (room for the
        padding of the last chunk included)."""
        capacity, plane = Chunks.of(self.engine, count).capacity, 3 * self.size * self.size
        inputs = ws.enhancer_inputs.reserve(capacity * plane * self.input_dtype.itemsize)
        return inputs, ws.enhanced.reserve(capacity * plane * self.output_dtype.itemsize)

    def enqueue(
        self, kernels: DeviceKernels, ws: Workspace, tables: EnhancerTables, count: int, swap: tuple[int, int, bool]
    ) -> None:
        """Steps 1–3 on ``ws``'s compute stream for ``count`` faces, into the buffers ``reserve`` gave; ``swap``:
        (address, crop size, float16) of the generator's output."""
        inputs, outputs = self.reserve(ws, count)
        plane, half_in = 3 * self.size * self.size, self.input_dtype == np.float16
        stream = ws.compute.handle
        kernels.enhancer_input(stream, tables, count, swap, self.size, half_in, inputs)
        tensors = {
            INPUT: (inputs, plane * self.input_dtype.itemsize),
            OUTPUT: (outputs, plane * self.output_dtype.itemsize),
        }
        Chunks.of(self.engine, count).enqueue(self.engine, tensors, ws.compute)
        kernels.enhance_blend(stream, outputs, self.half_out, inputs, half_in, self.enhancer.blend, count * plane)
