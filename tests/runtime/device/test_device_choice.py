"""Choosing the CUDA device, on a stand-in with two GPUs (tests/support/fake_gpu.py): a swapper's engines, buffers,
streams and kernels live on its device, each call makes that device current (the stand-in refuses a launch
on another device's stream or memory), a bad id is refused naming the available devices, ``serve
--instances`` places instances round robin, and Ray actors use the GPU Ray assigned them."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest
from support.device_path import install_device, latent, plan_bundle, scenes
from support.fake_gpu import FakeDeviceBuffer, FakeStream, fake_cudart, install_fake_cuda

from simswap_trt import FaceSwapper, cli, cuda
from simswap_trt.distributed.batch import assigned_device
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.serving import place_instances

pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


def on_device(gpu, device):
    """Every live buffer and stream of the stand-in is on ``device`` (engines allocate their own I/O buffers
    only when ``run`` uses them, so there may be streams only)."""
    owners = [o for o in gpu.live if isinstance(o, FakeDeviceBuffer | FakeStream)]
    return bool(owners) and all(o.device == device for o in owners)


def test_each_swapper_works_on_its_own_device(tiny_bundle, host, monkeypatch, tmp_path, caplog):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    reference = FaceSwapper(
        bundle, OnnxRuntimeEngine(bundle.path_of("generator"), threads=2), OnnxRuntimeEngine(bundle.path_of("arcface"))
    )
    reference.source_latent = latent()
    gpu, _ = install_device(monkeypatch, host, bundle, devices=2)
    (images, faces), _ = scenes(224, bundle.alignment)
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        second = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", device=1)
    assert "CUDA device 1: Fake H100" in caplog.text and "device 1" in second.generator.backend
    assert on_device(gpu, 1) and gpu.kernel_devices == [1]
    first = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", device=0)
    first.source_latent = second.source_latent = latent()
    assert {o.device for o in gpu.live if isinstance(o, FakeDeviceBuffer | FakeStream)} == {0, 1}
    # alternate calls: each makes its device current, else the stand-in's launch checks fail
    want = reference.swap_faces(images, faces)
    for swapper in (second, first, second):
        for got, expected in zip(swapper.swap_faces(images, faces), want, strict=True):
            assert np.abs(got.image.astype(int) - expected.image).max() <= 1
    first.close()
    assert on_device(gpu, 1)  # what is left is the second swapper's
    second.close()
    assert not gpu.live


def test_the_stand_in_refuses_work_on_another_devices_memory(tiny_bundle, host, monkeypatch, tmp_path):
    """What makes the test above meaningful: without ``activate`` the launches go wrong."""
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    install_device(monkeypatch, host, bundle, devices=2)
    (images, faces), _ = scenes(224, bundle.alignment)
    swapper = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", device=1)
    swapper.source_latent = latent()
    monkeypatch.setattr(cuda, "activate", lambda device: None)
    cuda.set_device(0)
    with pytest.raises(AssertionError, match="while device 0 is current"):
        swapper.swap_faces(images, faces)


def test_a_bad_device_id_is_refused_naming_the_available_ones(tiny_bundle, host, monkeypatch, tmp_path):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    gpu, module = install_device(monkeypatch, host, bundle, devices=2)
    for bad in (2, -1):
        with pytest.raises(cuda.DeviceNotFoundError, match=r"no CUDA device .*available devices: 0 \(Fake H100\), 1 "):
            FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", device=bad)
    assert not any(c[0] == "deserialize" for c in module.calls) and not gpu.live  # refused before loading
    code = cli.main(["swap-aligned", "--bundle", str(bundle.root), "--source", "s.png", "--target", "t.png",
                     "--output", str(tmp_path / "o.png"), "--device", "7"])  # fmt: skip
    assert code == 1


def test_serve_places_instances_round_robin(tiny_bundle, host, monkeypatch, tmp_path, caplog):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    gpu, _ = install_device(monkeypatch, host, bundle, devices=2)
    assert place_instances(3) == [0, 1, 0] and place_instances(3, [1]) == [1, 1, 1]
    with pytest.raises(cuda.DeviceNotFoundError, match="no CUDA device 5"):
        place_instances(2, [0, 5])
    served = []

    def start(swappers, config):  # the Triton part is tested in test_serving; here: what it is given
        served.extend(swappers)
        return SimpleNamespace(serve=lambda: None, stop=lambda: None)

    monkeypatch.setattr("simswap_trt.serving.start", start)
    monkeypatch.setattr("simswap_trt.serving.check_ports", lambda config: None)  # 8000-8002 may be taken here
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        assert cli.main(["serve", "--bundle", str(bundle.root), "--instances", "3", "--threads", "1"]) == 0
    assert "instances on CUDA devices 0, 1, 0" in caplog.text
    assert [s.device for s in served] == [0, 1, 0]
    assert [s.generator.device for s in served] == [0, 1, 0] and all(s.stages.startswith("device") for s in served)
    stream_devices = sorted(s.device for s in gpu.live if isinstance(s, FakeStream))
    assert stream_devices.count(0) == 2 * stream_devices.count(1)  # two instances' streams on 0, one's on 1
    for swapper in served:
        swapper.close()
    served.clear()
    assert cli.main(["serve", "--bundle", str(bundle.root), "--devices", "1", "--instances", "2", "--cuda-graphs"]) == 0
    assert [s.device for s in served] == [1, 1] and on_device(gpu, 1)
    assert all(s._stages.graphs for s in served)
    assert cli.main(["serve", "--bundle", str(bundle.root), "--devices", "0,3"]) == 1


@pytest.mark.parametrize(
    "gpu_ids,visible,expected",
    [
        ([], None, None),  # no GPU assigned
        ([3], "3", 0),  # Ray's usual: only the assigned GPU is visible
        (["2"], "0,1,2,3", 2),  # all visible (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES)
        ([1], None, 1),
    ],
)
def test_ray_actors_use_their_assigned_gpu(gpu_ids, visible, expected):
    assert assigned_device(gpu_ids, visible) == expected


def test_the_cli_lists_the_devices_and_swaps_on_the_one_chosen(
    tiny_bundle, host, monkeypatch, tmp_path, capsys, caplog
):
    import cv2
    from skimage import data

    from simswap_trt.images import read_image

    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    astronaut = tmp_path / "astronaut.png"
    cv2.imwrite(str(astronaut), np.ascontiguousarray(data.astronaut()[..., ::-1]))
    common = ["swap", "--bundle", str(bundle.root), "--source", str(astronaut), "--target", str(astronaut)]
    assert cli.main([*common, "--output", str(tmp_path / "host.png"), "--backend", "onnxruntime"]) == 0
    _, module = install_device(monkeypatch, host, bundle, devices=2)
    calls = module.calls
    cudart = fake_cudart(calls)
    monkeypatch.setattr("simswap_trt.jetson.doctor_lines", lambda: [])  # Jetson lines: test_jetson_doctor.py
    assert cli.main(["doctor"]) == 0
    listed = capsys.readouterr().out
    assert "GPU 0         Fake H100 (sm_90" in listed and "GPU 1         Fake H100 (sm_90" in listed
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    argv = [*common, "--output", str(tmp_path / "device.png"), "--device", "1", "--cuda-graphs"]
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        assert cli.main(argv) == 0
    log = caplog.text
    assert "CUDA device 1: Fake H100" in log and "CUDA graphs of the whole per-batch sequence: on" in log
    assert [c[0] for c in calls if c[0] == "end capture"] == ["end capture"]  # one batch: run, captured
    assert "stages: device" in log
    device, reference = read_image(tmp_path / "device.png"), read_image(tmp_path / "host.png")
    assert np.abs(device.astype(int) - reference).max() <= 1
    assert np.abs(device.astype(int) - read_image(astronaut)).max() > 50  # a face was swapped


def test_the_device_places_onnx_runtime_cuda_sessions(tiny_bundle, monkeypatch, tmp_path, caplog):
    """--device N with the CUDA (or TensorRT) execution providers asks ONNX Runtime for device_id N in every
    session (generator, ArcFace, detector, face parser); CPU sessions get no option. The provider list is a
    stand-in (no onnxruntime-gpu needed): each session records what it was given and runs on the CPU."""
    import cv2
    import onnxruntime
    from skimage import data
    from support.parser_standin import fake_parser

    install_fake_cuda(monkeypatch, devices=2)
    gpu_providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: gpu_providers)
    cpu_session, given = onnxruntime.InferenceSession, []

    class Session:
        def __init__(self, source, options, providers, provider_options):
            given.append(dict(zip(providers, provider_options, strict=True)))
            self._session, self._providers = cpu_session(source, options, providers=["CPUExecutionProvider"]), providers

        def get_providers(self):
            return list(self._providers)

        def __getattr__(self, name):
            return getattr(self._session, name)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    astronaut = tmp_path / "astronaut.png"
    cv2.imwrite(str(astronaut), np.ascontiguousarray(data.astronaut()[..., ::-1]))
    parser = fake_parser(tmp_path / "parser.onnx", (128, 128, 384, 384))
    common = ["swap", "--bundle", str(tiny_bundle.root), "--source", str(astronaut), "--target", str(astronaut)]
    common += ["--backend", "onnxruntime", "--parsing-model", str(parser), "--threads", "2"]
    cuda_first = ["--providers", "CUDAExecutionProvider", "CPUExecutionProvider"]
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        assert cli.main([*common, *cuda_first, "--device", "1", "--output", str(tmp_path / "a.png")]) == 0
    assert len(given) == 4  # parser, generator, ArcFace, CenterFace
    assert all(options == {"CUDAExecutionProvider": {"device_id": 1}, "CPUExecutionProvider": {}} for options in given)
    assert "generator.onnx: CUDAExecutionProvider on CUDA device 1" in caplog.text
    given.clear()
    tensorrt_first = ["--providers", "TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert cli.main([*common, *tensorrt_first, "--device", "0", "--output", str(tmp_path / "b.png")]) == 0
    assert all(options["TensorrtExecutionProvider"] == {"device_id": 0} for options in given) and len(given) == 4
    given.clear()
    assert cli.main([*common, *cuda_first, "--output", str(tmp_path / "c.png")]) == 0  # ONNX Runtime's default
    assert given == [{"CUDAExecutionProvider": {}, "CPUExecutionProvider": {}}] * 4
    given.clear()
    assert cli.main([*common, "--device", "1", "--output", str(tmp_path / "d.png")]) == 0  # CPU only
    assert given == [{"CPUExecutionProvider": {}}] * 4
