"""Stand-ins for the plans the GPU check needs without TensorRT: a generator and a detector computing a
known function on the device buffers they are given (torch, or a CUDA kernel that a graph can capture),
with the same function in NumPy for the CPU path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simswap_trt.bundle import contract
from simswap_trt.engines.base import Engine


def standin_numpy(target: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """What the stand-in generator computes: a smooth, crop- and latent-dependent change of the crop."""
    shift = latent.mean(axis=1, dtype=np.float32)[:, None, None, None]
    return np.clip(1.0 - target * np.float32(0.8) + shift, 0.0, 1.0).astype(np.float32)


def standin_torch(target, latent):
    import torch

    shift = latent.mean(dim=1)[:, None, None, None]
    return torch.clamp(1.0 - target * 0.8 + shift, 0.0, 1.0)


class _StandinPlan(Engine):
    """What the torch stand-in plans share: ``execute_device`` and ``device_context`` (a ``DeviceEngine`` on the
    current device) over the subclass's ``launch`` on the caller's stream; ``calls`` counts the runs."""

    backend = "torch stand-in"
    device: int | None = None  # the current device
    calls = 0

    def execute_device(self, addresses, batch: int, stream) -> None:
        self.launch(addresses, batch, stream)
        self.calls += 1

    def device_context(self, memory: int | None = None) -> StandinContext:
        return StandinContext(self)

    def launch(self, addresses, batch: int, stream) -> None:
        raise NotImplementedError


class StandinEngine(_StandinPlan):
    """A TensorRT-shaped generator engine (``execute_device`` on device addresses, ordered on the caller's
    stream) computing ``standin_torch`` with torch on the device buffers it is given, without copies."""

    def __init__(self, crop_size: int, max_batch: int = 16) -> None:
        self.inputs, self.outputs = contract("generator", crop_size)
        self.crop_size, self.min_batch, self.max_batch = crop_size, 1, max_batch

    def launch(self, addresses, batch: int, stream) -> None:
        import torch

        size = self.crop_size

        def tensor(address: int, shape: tuple[int, ...]):
            view = _ArrayInterface(address, shape)
            return torch.as_tensor(view, device="cuda")

        with torch.cuda.stream(torch.cuda.ExternalStream(stream.handle)):  # in order on the caller's stream
            target = tensor(addresses["target"], (batch, 3, size, size))
            latent = tensor(addresses["latent"], (batch, 512))
            tensor(addresses["swapped"], (batch, 3, size, size)).copy_(standin_torch(target, latent))

    def _run_impl(self, feeds):  # the host path's generator (run, submit/collect), in NumPy
        return {"swapped": standin_numpy(feeds["target"], feeds["latent"])}


def enhancer_standin_numpy(face: np.ndarray) -> np.ndarray:
    """What the stand-in face enhancer computes: a smooth, content-dependent change of the crop in [0, 1]."""
    return np.clip(0.9 - face * np.float32(0.7), 0.0, 1.0).astype(np.float32)


class StandinEnhancerEngine(_StandinPlan):
    """A TensorRT-shaped face enhancer (``face`` → ``enhanced``, ``size`` crops) computing
    ``enhancer_standin_numpy`` with torch on the device buffers it is given, in order on the caller's stream."""

    def __init__(self, size: int = 512, max_batch: int = 8) -> None:
        from simswap_trt.schema import TensorSpec

        image = ("batch", 3, size, size)
        self.inputs, self.outputs = (TensorSpec("face", "float32", image),), (TensorSpec("enhanced", "float32", image),)
        self.size, self.min_batch, self.max_batch = size, 1, max_batch

    def launch(self, addresses, batch: int, stream) -> None:
        import torch

        shape = (batch, 3, self.size, self.size)
        with torch.cuda.stream(torch.cuda.ExternalStream(stream.handle)):
            face = torch.as_tensor(_ArrayInterface(addresses["face"], shape), device="cuda")
            enhanced = torch.as_tensor(_ArrayInterface(addresses["enhanced"], shape), device="cuda")
            enhanced.copy_(torch.clamp(0.9 - face * 0.7, 0.0, 1.0))

    def _run_impl(self, feeds):  # the host path's restorer, in NumPy
        return {"enhanced": enhancer_standin_numpy(feeds["face"])}


class _ArrayInterface:
    """float32 device memory at ``address`` described by ``__cuda_array_interface__`` (for torch / CuPy)."""

    def __init__(self, address: int, shape: tuple[int, ...]) -> None:
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": "<f4",
            "data": (address, False),
            "strides": None,
            "version": 3,
            "stream": None,
        }


def detector_standin_numpy(blob: np.ndarray) -> list[np.ndarray]:
    """What the stand-in detector computes from its input: CenterFace-shaped outputs whose heatmap is the
    4x4 average of the first input channel / 255, the other maps zero."""
    n, _, c, _ = blob.shape
    heat = blob[:, :1].reshape(n, 1, c // 4, 4, c // 4, 4).mean(axis=(3, 5), dtype=np.float64) / 255
    zeros = [np.zeros((n, k, c // 4, c // 4), np.float32) for k in (2, 2, 10)]
    return [heat.astype(np.float32), *zeros]


class StandinDetectorEngine:
    """A TensorRT-shaped detector engine computing ``detector_standin_numpy`` with torch on the device
    buffers it is given (``execute_device``, ordered on the caller's stream), without copies."""

    backend = "torch stand-in"

    def __init__(self, canvas: int, max_batch: int = 4) -> None:
        from simswap_trt.schema import TensorSpec

        maps = canvas // 4
        self.canvas, self.min_batch, self.max_batch = canvas, 1, max_batch
        self.inputs = (TensorSpec("input.1", "float32", ("batch", 3, canvas, canvas)),)
        self.outputs = tuple(
            TensorSpec(name, "float32", ("batch", k, maps, maps))
            for name, k in (("537", 1), ("538", 2), ("539", 2), ("540", 10))
        )
        self.calls = 0

    def execute_device(self, addresses, batch: int, stream) -> None:
        import torch

        def tensor(name: str, shape: tuple[int, ...]):
            return torch.as_tensor(_ArrayInterface(addresses[name], shape), device="cuda")

        c, m = self.canvas, self.canvas // 4
        with torch.cuda.stream(torch.cuda.ExternalStream(stream.handle)):
            blob = tensor("input.1", (batch, 3, c, c))
            pooled = torch.nn.functional.avg_pool2d(blob[:, :1].double(), 4) / 255
            tensor("537", (batch, 1, m, m)).copy_(pooled.float())
            for spec in self.outputs[1:]:
                tensor(spec.name, (batch, spec.shape[1], m, m)).zero_()
        self.calls += 1

    def close(self) -> None:
        pass


class RecordingDecoder:
    """A CenterFace-like decoder that keeps the detector outputs it is given (and finds no face)."""

    def __init__(self, canvas: int) -> None:
        from simswap_trt.vision.detect import CenterFace

        self.input_size, self.normalisation, self.engine = canvas, CenterFace.normalisation, StandinDetectorEngine(32)
        self.outputs: list[list[np.ndarray]] = []

    def decode(self, outputs, scales, shapes):
        self.outputs.append(outputs)
        return [[] for _ in shapes]


STANDIN_KERNEL = r"""
extern "C" __global__ void standin_generator(const float* target, const float* latent, float* out, int size) {
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y, n = blockIdx.z;
    if (x >= size || y >= size) return;
    float sum = 0.0f;
    for (int i = 0; i < 512; ++i) sum += latent[n * 512 + i];
    for (int c = 0; c < 3; ++c) {
        long long i = ((long long)(n * 3 + c) * size + y) * size + x;
        out[i] = fminf(fmaxf(1.0f - target[i] * 0.8f + sum / 512.0f, 0.0f), 1.0f);
    }
}
"""


def standin_kernel(device: int | None = None):
    """``standin_numpy`` as a CUDA kernel (NVRTC) on ``device``: unlike torch, it can be captured in a graph."""
    from cuda.core import Device, Program, ProgramOptions

    gpu = Device(device)
    gpu.set_current()
    options = ProgramOptions(arch="sm_" + "".join(str(v) for v in gpu.compute_capability))
    return Program(STANDIN_KERNEL, code_type="c++", options=options).compile("cubin").get_kernel("standin_generator")


class KernelStandinEngine(StandinEngine):
    """The stand-in generator as one kernel launch on the caller's stream, with ``device_context`` (what
    the device stages capture in a CUDA graph with ``cuda_graphs=True``)."""

    backend = "CUDA-kernel stand-in"

    def __init__(self, crop_size: int, max_batch: int = 16, kernel=None, device: int | None = None) -> None:
        super().__init__(crop_size, max_batch)
        self.kernel, self.device = kernel, device

    def launch(self, addresses, batch: int, stream) -> None:
        from simswap_trt.kernels import launch, preprocess_grid

        pointers = [np.uint64(addresses[name]) for name in ("target", "latent", "swapped")]
        grid = preprocess_grid(self.crop_size, batch)
        launch(stream.handle, self.kernel, grid, [*pointers, np.int32(self.crop_size)])


class StandinContext:
    """``TensorRTEngine.device_context``'s interface for the stand-ins (the kernel one can be captured)."""

    def __init__(self, engine: _StandinPlan) -> None:
        self.engine, self.batch = engine, -1

    def enqueue(self, addresses, batch: int, stream) -> None:
        self.batch = batch
        self.engine.launch(addresses, batch, stream)

    def free(self) -> None:
        pass


def content_parser(path: Path) -> Path:
    """A face-parser ONNX whose labels follow the crop's content (a 1x1 convolution): skin (1) where the
    normalised red channel is above 0, inner mouth (11) where green is above 0.8 and red is not, else 0."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((19, 3, 1, 1), np.float32)
    bias = np.full(19, -100.0, np.float32)
    weight[1, 0], bias[1] = 1.0, 0.0
    weight[11, 1], bias[11] = 1.0, -0.8
    bias[0] = 0.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["logits"])],
        "content_parser",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 512, 512])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def torch_cuda_missing() -> str | None:
    """Why the torch stand-in plans cannot run here, or None when torch runs on the GPU."""
    try:
        import torch
    except ImportError:
        return "torch is not installed: this part's stand-in plan runs on torch with CUDA"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA here: this part's stand-in plan runs on torch with CUDA"
    return None
