"""GPU check for a short lease: every GPU line that runs without TensorRT, in a few minutes.

    python -m benchmarks.gpu_check [--faces 64] [--stream-batches 8] [--repeats 20] [--only PART ...]

Needs an NVIDIA GPU with a driver for the installed CUDA runtime and cuda-python (cuda.bindings, cuda.core
with NVRTC). Torch with CUDA runs the torch stand-in plans: without it those parts (device-path-*,
frame-stream, enhancer, device-detection, frames-uploaded-once) are skipped, each saying why, and the others run.
CuPy is recorded when present. TensorRT is not needed; where it is installed, the ``-m gpu`` tests run
as well. Parts, in order (the names ``--only`` takes):

build-kernels            CMake build of the host library and, with nvcc, the fatbin
load-kernels-fatbin/-nvrtc  the device kernels from the fatbin and from NVRTC
kernels-{fatbin,nvrtc}-{224,512}  preprocess and paste-back vs the host build (bit-exact) and the CPU
                         pipeline (within 1 level)
cuda-layer               device and pinned buffers, rectangle downloads, two streams ordered by an event,
                         event timing, graph capture and replay, the out-of-memory error
device-path-{224,512}    FaceSwapper's device path with a torch stand-in generator vs the CPU path, faces at
                         and beyond the border
frame-stream             swap_stream (two batches in flight) on 1080p frames
enhancer                 the face enhancer on the device path (torch stand-in restorer) vs the CPU path,
                         enhanced faces per second, the host's share of the frame time with and without it
kernel-throughput        preprocess and paste-back of --faces faces from 1080p frames (target <= 1 ms each
                         on an H100/H200-class GPU)
letterbox-{fatbin,nvrtc} the detector-input kernel (CenterFace and SCRFD, FP32 and FP16) vs the host build
                         (bit-exact) and the CPU detector's input (within 1 level)
letterbox-throughput     the detector-input kernel for 8 1080p frames onto the 640 canvas
device-detection         DeviceDetector with a torch stand-in detector plan vs the CPU detector's input
devices                  every device listed, a bad id refused naming them, the device path on the last
parsing-blend            the parsing blend and parser kernels vs the host build, the device path with a
                         face parser vs the CPU path
graphs                   whole-sequence CUDA graphs (a CUDA-kernel stand-in generator) vs eager: equal
                         outputs, a graph per batch size, time per batch
frames-uploaded-once     detection on the device then the swap of the same frames takes every copy on
                         the device; detect + swap timed against uploading the frames again
gpu-tests-tensorrt       pytest -m gpu over tests/gpu, where TensorRT is installed

Each part reports ok, FAIL or skipped (with the reason). At the end the check prints a summary table,
writes benchmarks/results/gpu-check.json (device, driver, versions, each part's outcome and figures) and,
when a part failed, the command that reruns only the failed parts. Without a usable GPU it says
"skipped" with the reason and exits 2; a failed part exits 1.
"""
