"""The GPU check (benchmarks/gpu_check) without a GPU: its arguments, its refusal to run, its stand-in
generator, and its device-path comparison run on the CPU stand-in of the GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.fake_gpu import install_fake_cuda
from support.paths import ROOT, TESTS
from support.real_gpu import gpu_available

from benchmarks.gpu_check import cli, kernel_checks, report, standins, swapper_checks

QUICK = ["--faces", "2", "--stream-batches", "2", "--repeats", "2"]


def run_documented(*args: str, standin: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m benchmarks.gpu_check ARGS`` as documented, in a subprocess; with ``standin`` (a CMake build
    folder) on the CPU stand-in of two GPUs (tests/support/standin_site/sitecustomize.py)."""
    env = {k: v for k, v in os.environ.items() if k != "SIMSWAP_STANDIN_GPU"}
    env["PYTHONPATH"] = os.pathsep.join(map(str, (TESTS / "support" / "standin_site", TESTS, ROOT)))
    if standin is not None:
        env["SIMSWAP_STANDIN_GPU"] = str(standin)
    command = [sys.executable, "-m", "benchmarks.gpu_check", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_arguments_have_defaults_and_refuse_non_positive_counts(capsys):
    args = cli.parse_args([])
    assert (args.faces, args.stream_batches, args.repeats) == (64, 8, 20)
    assert args.output.name == "gpu-check.json" and args.output.parent.name == "results"
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--faces", "0"])
    assert exit_info.value.code == 2
    assert "argument --faces: must be a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.skipif(gpu_available(), reason="checks the situation of a machine without a usable GPU")
def test_without_a_gpu_it_says_why_and_writes_nothing(tmp_path, capsys):
    output = tmp_path / "gpu-check.json"
    assert cli.main(["--output", str(output)]) == 2
    assert capsys.readouterr().out.startswith("skipped: no usable CUDA device: cudaGetDeviceCount failed")
    assert not output.exists()


def test_the_stand_in_generator_is_the_same_function_in_numpy_and_torch():
    rng = np.random.default_rng(0)
    target, latent = rng.random((3, 3, 16, 16), dtype=np.float32), rng.normal(size=(3, 512)).astype(np.float32)
    expected = np.clip(
        1 - target.astype(np.float64) * 0.8 + latent.astype(np.float64).mean(1)[:, None, None, None], 0, 1
    )
    np.testing.assert_allclose(standins.standin_numpy(target, latent), expected, atol=1e-6)
    got = standins.standin_torch(torch.from_numpy(target), torch.from_numpy(latent)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("size", [224, 512])
def test_the_device_path_check_runs_on_the_stand_in(size, host, monkeypatch, tmp_path):
    gpu = install_fake_cuda(monkeypatch, host_lib=host)

    def execute_device(self, addresses, batch, stream):  # the torch engine's work, on the stand-in's memory
        enqueue_standin(gpu, addresses, batch, self.crop_size, stream)
        self.calls += 1

    monkeypatch.setattr(standins.StandinEngine, "execute_device", execute_device)
    details = swapper_checks.check_device_path(tmp_path, size)
    assert details["max_levels_vs_cpu"] <= 1
    assert gpu.executed.count("simswap_pasteback_kernel") >= 2 and gpu.executed.count("execute") >= 3
    assert not gpu.live  # the check closes what it opened


@pytest.mark.parametrize("size", [224, 512])
def test_the_kernel_check_runs_on_the_stand_in(size, host, monkeypatch):
    gpu = install_fake_cuda(monkeypatch, host_lib=host)
    kernels = {name: name for name in ("simswap_preprocess_kernel", "simswap_pasteback_kernel")}
    details = kernel_checks.check_kernels(kernels, host, size)
    assert details["preprocess_bit_exact"] and details["preprocess_max_levels_vs_cpu"] <= 1.001
    assert details["pasteback_max_levels_vs_cpu"] <= 1
    assert gpu.executed.count("simswap_preprocess_kernel") == gpu.executed.count("simswap_pasteback_kernel") == 1
    assert not gpu.live


def test_the_cuda_layer_check_runs_on_the_stand_in(monkeypatch):
    from support.fake_gpu import fake_cudart

    from simswap_trt import cuda

    gpu = install_fake_cuda(monkeypatch)
    calls = []
    cudart = fake_cudart(calls)
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    details = kernel_checks.check_cuda_layer()
    assert details["copy_and_download_ms"] == 1.0  # the stand-in's event interval
    assert ("graph launch", 1) in calls and ("cudaGraphDestroy", 1) in calls
    assert not gpu.live


def test_the_letterbox_check_runs_on_the_stand_in(host, monkeypatch):
    gpu = install_fake_cuda(monkeypatch, host_lib=host)
    details = kernel_checks.check_letterbox({"simswap_letterbox_kernel": "simswap_letterbox_kernel"}, host)
    assert details["bit_exact_with_host_build"]
    assert details["centerface_fp32_max_levels_vs_cpu"] == details["scrfd_fp32_max_levels_vs_cpu"] == 1
    assert details["centerface_fp16_max_levels_vs_cpu"] <= 1.07 and details["scrfd_fp16_max_levels_vs_cpu"] <= 1.07
    assert gpu.executed.count("simswap_letterbox_kernel") == 4  # two detectors, FP32 and FP16
    assert not gpu.live


def test_the_stand_in_detector_is_the_same_function_in_numpy_and_torch():
    blob = np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32) * 255
    heat = standins.detector_standin_numpy(blob)[0]
    pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(blob[:, :1]).double(), 4) / 255
    np.testing.assert_allclose(heat, pooled.float().numpy(), atol=1e-7)
    assert heat[0, 0, 1, 2] == pytest.approx(blob[0, 0, 4:8, 8:12].mean() / 255, abs=1e-6)


def test_the_device_detection_check_runs_on_the_stand_in(host, monkeypatch):
    gpu = install_fake_cuda(monkeypatch, host_lib=host)

    def execute_device(self, addresses, batch, stream):  # the torch engine's work, on the stand-in's memory
        def view(name, shape):
            return gpu.view(addresses[name], int(np.prod(shape)) * 4).view(np.float32).reshape(shape)

        def run():
            outputs = standins.detector_standin_numpy(view("input.1", (batch, 3, self.canvas, self.canvas)))
            for spec, value in zip(self.outputs, outputs, strict=True):
                view(spec.name, value.shape)[...] = value

        gpu.enqueue(stream.handle, "execute", run)
        self.calls += 1

    monkeypatch.setattr(standins.StandinDetectorEngine, "execute_device", execute_device)
    details = swapper_checks.check_device_detection({"simswap_letterbox_kernel": "simswap_letterbox_kernel"}, canvas=96)
    assert details["max_heatmap_levels_vs_cpu"] <= 1.001
    assert gpu.executed.count("simswap_letterbox_kernel") == 2 + 2 + 2  # 5 frames, then 8 frames twice, 4 a call


def enqueue_standin(gpu, addresses: dict, batch: int, crop_size: int, stream) -> None:
    """The stand-in generator's work on ``batch`` crops as NumPy queued on ``stream`` of the stand-in GPU."""

    def view(name, shape):
        return gpu.view(addresses[name], int(np.prod(shape)) * 4).view(np.float32).reshape(shape)

    image = (batch, 3, crop_size, crop_size)

    def run():
        view("swapped", image)[...] = standins.standin_numpy(view("target", image), view("latent", (batch, 512)))

    gpu.enqueue(stream.handle, "execute", run)


def kernel_standin_on(gpu, monkeypatch):
    """The kernel stand-in generator's launches as queued NumPy work on the stand-in's memory."""

    def launch(self, addresses, batch, stream):
        enqueue_standin(gpu, addresses, batch, self.crop_size, stream)

    monkeypatch.setattr(standins, "standin_kernel", lambda device=None: "standin_generator")
    monkeypatch.setattr(standins.KernelStandinEngine, "launch", launch)


def test_the_device_parsing_and_graph_checks_run_on_the_stand_in(host, monkeypatch, tmp_path):
    from support.fake_gpu import fake_cudart

    from simswap_trt import cuda

    gpu = install_fake_cuda(monkeypatch, host_lib=host, devices=2)
    calls = []
    cudart = fake_cudart(calls)
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    kernel_standin_on(gpu, monkeypatch)

    devices = swapper_checks.check_devices(tmp_path)
    assert devices["devices"] == ["0: Fake H100", "1: Fake H100"]
    assert devices["device_path_on"] == 1 and devices["max_levels_vs_cpu"] <= 1
    from simswap_trt.kernels import KERNEL_NAMES

    kernels = {name: name for name in KERNEL_NAMES}
    parsing = swapper_checks.check_parsing_blend(kernels, host, tmp_path)
    assert parsing["blend_bit_exact"] and parsing["parser_max_levels_vs_cpu"] <= 1
    assert gpu.executed.count("simswap_parsing_blend_kernel") >= 4  # 2 direct, 1 per batch of the device path
    assert gpu.executed.count("simswap_parser_input_kernel") == gpu.executed.count("simswap_parser_labels_kernel") == 1
    graphs = swapper_checks.check_graphs(tmp_path, 3)
    # a graph per batch size in each of the two workspaces (two batches in flight), replayed
    assert graphs["graphs"] == 4 and graphs["replays"] >= 2
    assert not gpu.live


def test_the_frames_uploaded_once_check_runs_on_the_stand_in(host, monkeypatch, tmp_path):
    """The check's detection uploads are what its swaps read: every frame is found on the device."""
    gpu = install_fake_cuda(monkeypatch, host_lib=host)

    def view(addresses, name, shape):
        return gpu.view(addresses[name], int(np.prod(shape)) * 4).view(np.float32).reshape(shape)

    def generator(self, addresses, batch, stream):  # the torch engines' work, on the stand-in's memory
        image = (batch, 3, self.crop_size, self.crop_size)

        def run():
            target, latent = view(addresses, "target", image), view(addresses, "latent", (batch, 512))
            view(addresses, "swapped", image)[...] = standins.standin_numpy(target, latent)

        gpu.enqueue(stream.handle, "execute", run)

    def detector(self, addresses, batch, stream):
        def run():
            outputs = standins.detector_standin_numpy(view(addresses, "input.1", (batch, 3, self.canvas, self.canvas)))
            for spec, value in zip(self.outputs, outputs, strict=True):
                view(addresses, spec.name, value.shape)[...] = value

        gpu.enqueue(stream.handle, "execute", run)

    monkeypatch.setattr(standins.StandinEngine, "execute_device", generator)
    monkeypatch.setattr(standins.StandinDetectorEngine, "execute_device", detector)
    details = swapper_checks.check_resident_frames(tmp_path, 2, canvas=96, rounds=1)
    assert details["frames_found_on_device"] == "8/8" and details["max_levels_vs_cpu"] <= 1
    assert gpu.executed.count("simswap_letterbox_kernel") == 2 + 2 * 2  # 2 batches, then 2 twice, one a batch
    assert not gpu.live


def test_the_throughput_checks_run_on_the_stand_in_and_free_what_they_allocate(host, monkeypatch):
    from simswap_trt.kernels import KERNEL_NAMES

    gpu = install_fake_cuda(monkeypatch, host_lib=host)
    kernels = {name: name for name in KERNEL_NAMES}
    assert kernel_checks.check_letterbox_throughput(kernels, repeats=2, count=2, canvas=64)["frames"] == 2
    assert kernel_checks.check_throughput(kernels, faces=2, repeats=2)["faces"] == 2
    # one warm-up call and the timed repeats of each kernel, between timing events that are freed too
    timed = ("simswap_letterbox_kernel", "simswap_preprocess_kernel", "simswap_pasteback_kernel")
    assert [gpu.executed.count(k) for k in timed] == [3, 3, 3]
    assert not gpu.live


def test_the_documented_command_runs_every_part_on_the_stand_in(build, tmp_path):
    """``python -m benchmarks.gpu_check`` in a subprocess: every part reports, only the TensorRT tests skip
    (no TensorRT here), one JSON is written, and the summary table lists every part."""
    output = tmp_path / "gpu-check.json"
    done = run_documented(*QUICK, "--build", str(build), "--output", str(output), standin=build)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(output.read_text())
    assert list(results["checks"]) == list(cli.PART_NAMES)
    outcomes = {name: check["result"] for name, check in results["checks"].items()}
    fatbin = "ok" if (build / "simswap_kernels.fatbin").is_file() else "skipped"
    expected = {name: "ok" for name in cli.PART_NAMES} | {"gpu-tests-tensorrt": "skipped"}
    expected |= {name: fatbin for name in outcomes if "fatbin" in name}
    assert outcomes == expected
    assert "TensorRT is not installed" in results["checks"]["gpu-tests-tensorrt"]["reason"]
    assert results["ok"] and results["device"] == "Fake H100"
    table = done.stdout[done.stdout.index("part ") :]
    assert all(f"\n{name} " in table for name in cli.PART_NAMES)
    assert "no part failed" in done.stdout and "rerun" not in done.stdout


@pytest.mark.skipif(gpu_available(), reason="checks the situation of a machine without a usable GPU")
def test_the_documented_command_without_a_gpu_says_skipped_and_exits_2(tmp_path):
    output = tmp_path / "gpu-check.json"
    done = run_documented("--output", str(output))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith("skipped: no usable CUDA device: ")
    assert not output.exists()


def test_torch_parts_skip_saying_why_and_the_others_run(build, monkeypatch, tmp_path, capsys):
    """Without torch on the GPU only the parts with a torch stand-in plan skip; a failed part is reported,
    the others still run, and the printed command reruns only the failed part, merging into the JSON."""
    from support.gpu_check_standin import install

    install(build, monkeypatch, devices=1)
    monkeypatch.setattr(standins, "torch_cuda_missing", lambda: "torch 2.9.1+cpu has no CUDA here")
    monkeypatch.setattr(kernel_checks, "check_cuda_layer", lambda: 1 / 0)  # a planted failure
    output = tmp_path / "gpu-check.json"
    argv = [*QUICK, "--build", str(build), "--output", str(output)]
    assert cli.main(argv) == 1
    checks = json.loads(output.read_text())["checks"]
    torch_parts = ("device-path-224", "device-path-512", "frame-stream", "enhancer", "device-detection")
    for name in (*torch_parts, "frames-uploaded-once"):
        assert (checks[name]["result"], checks[name]["reason"]) == ("skipped", "torch 2.9.1+cpu has no CUDA here")
    assert checks["cuda-layer"]["result"] == "FAIL" and "ZeroDivisionError" in checks["cuda-layer"]["error"]
    assert checks["graphs"]["result"] == checks["kernels-nvrtc-512"]["result"] == "ok"
    rerun = capsys.readouterr().out.split("rerun the failed parts with:\n  ")[1].strip()
    assert rerun == "python -m benchmarks.gpu_check " + " ".join(argv) + " --only cuda-layer"

    monkeypatch.setattr(kernel_checks, "check_cuda_layer", lambda: {"fixed": True})
    assert cli.main(rerun.split()[3:]) == 0
    merged = json.loads(output.read_text())
    assert merged["ok"] and merged["checks"]["cuda-layer"]["fixed"]
    assert merged["checks"]["graphs"] == checks["graphs"]  # kept from the first run
    assert "SOME PARTS FAILED" not in capsys.readouterr().out


def test_only_refuses_an_unknown_part_naming_the_parts(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--only", "kernels"])
    assert "no part named 'kernels'; the parts are: build-kernels," in capsys.readouterr().err


def test_a_part_that_cannot_run_says_why():
    outcomes = report.Report()
    outcomes.run(report.Part("x", lambda: (_ for _ in ()).throw(report.Skipped("needs y"))))
    assert outcomes.checks["x"]["result"] == "skipped" and outcomes.checks["x"]["reason"] == "needs y"
    assert not outcomes.failed
