"""The face parser beside the device stages (official ``--use_mask``): the parsing masks of a batch's target
crops, made while the generator runs, for the parsing-blend kernel before the paste-back.

* With the parser's TensorRT plan, on a stream of its own: one launch makes the parser's input from the
  generator's input, the plan runs in chunks, one launch reduces its logits to labels, and only the labels
  come back.
* Without one, the preprocessed generator input is downloaded and parsed on the host.
"""

from __future__ import annotations

import logging

import numpy as np

from simswap_trt import cuda
from simswap_trt.constants import PARSING_CLASSES, PARSING_SIZE
from simswap_trt.device.chunks import Chunks
from simswap_trt.device.workspace import Workspace
from simswap_trt.kernels import DeviceKernels
from simswap_trt.vision.parsing import mask_from_labels

log = logging.getLogger(__name__)


class DeviceParsing:
    """The masks of a ``FaceParser`` (None: no parsing) for the device stages; ``engine``: its plan, to parse on
    the device."""

    def __init__(self, parser, engine, kernels: DeviceKernels, crop_size: int, target_dtype: np.dtype) -> None:
        self.parser, self.engine, self.kernels = parser, engine, kernels
        self.crop_size, self.target_dtype = crop_size, target_dtype
        self.stream = cuda.Stream() if engine is not None else None
        if engine is not None:
            log.info(
                "face parser: %s on the device (input and labels kernels, only the labels come back); the "
                "parsing-mask blend runs on the device",
                engine.backend,
            )
        elif parser is not None:
            log.info(
                "face parser: %s on the host, on the target crops downloaded from the device; the parsing-mask "
                "blend runs on the device",
                parser.engine.backend,
            )

    def masks(self, ws: Workspace, count: int, download_stream: cuda.Stream) -> list[np.ndarray]:
        """The parsing masks of the ``count`` target crops in ``ws`` (synchronous): [masks float32 [M,S,S], faces
        int32 [M]] for the M faces with a mask, or [] when none has one or there is no parser (their swaps are
        pasted unblended)."""
        if self.parser is None:
            return []
        size = self.crop_size
        if self.engine is not None:
            masks = [mask_from_labels(labels, size) for labels in self._labels(ws, count)]
        else:
            shape = (count, 3, size, size)
            nbytes = int(np.prod(shape)) * self.target_dtype.itemsize
            crops = ws.crops.reserve(nbytes).view(self.target_dtype).reshape(shape)
            download_stream.wait(ws.preprocessed)
            ws.targets.buffer.download(crops, download_stream)
            ws.crops_downloaded.record(download_stream)
            ws.crops_downloaded.synchronize()
            masks = self.parser.masks(crops.astype(np.float32))
        masked = [k for k, mask in enumerate(masks) if mask is not None]
        if not masked:
            return []
        return [np.stack([masks[k] for k in masked]).astype(np.float32), np.array(masked, np.int32)]

    def _labels(self, ws: Workspace, count: int) -> np.ndarray:
        """The parser's class maps uint8 [count, 512, 512] of the target crops, on the parser's stream (beside the
        generator on the compute stream)."""
        engine, plane, stream = self.engine, PARSING_SIZE * PARSING_SIZE, self.stream
        chunks = Chunks.of(engine, count)
        inputs = ws.parser_inputs.reserve(chunks.capacity * 3 * plane * 4)
        logits = ws.parser_logits.reserve(chunks.capacity * PARSING_CLASSES * plane * 4)
        labels = ws.parser_labels.reserve(count * plane)
        stream.wait(ws.preprocessed)
        half = self.target_dtype == np.float16
        self.kernels.parser_input(stream.handle, ws.targets.buffer.ptr, half, count, self.crop_size, inputs)
        tensors = {engine.inputs[0].name: (inputs, 3 * plane * 4)}
        tensors[engine.outputs[0].name] = (logits, PARSING_CLASSES * plane * 4)
        chunks.enqueue(engine, tensors, stream)
        self.kernels.parser_labels(stream.handle, logits, count, labels)
        host = ws.crops.reserve(count * plane).reshape(count, PARSING_SIZE, PARSING_SIZE)
        ws.parser_labels.buffer.download(host, stream)
        ws.crops_downloaded.record(stream)
        ws.crops_downloaded.synchronize()
        return host
