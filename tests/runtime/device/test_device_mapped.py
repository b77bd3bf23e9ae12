"""The device stages on an integrated GPU (as Jetson Orin, on the CPU stand-in): frames and tables are written
into mapped pinned host memory that the kernels read in place, so nothing is uploaded; the results are
identical to the staged path of a discrete GPU."""

import logging

import numpy as np
import pytest
from support import fake_gpu
from support.device_path import install_device, latent, plan_bundle, scenes

from simswap_trt import FaceSwapper
from simswap_trt.swapper import FrameBatch

pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


def swap(bundle, monkeypatch, host, batches, **gpu):
    gpu_state, _ = install_device(monkeypatch, host, bundle, **gpu)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as swapper:
        swapper.source_latent = latent()
        results = list(swapper.swap_stream(FrameBatch(images, faces) for images, faces in batches))
        stages = swapper._stages
        staging = [s.device for ws in stages.workspaces for s in (ws.inputs, ws.masks)]
    assert not gpu_state.live
    return results, list(fake_gpu.COPIES), stages.host_memory, staging


def test_integrated_gpus_read_mapped_frames_without_uploads(tiny_bundle, host, monkeypatch, tmp_path, caplog):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    batches = scenes(224, bundle.alignment)
    staged, staged_copies, staged_mode, _ = swap(bundle, monkeypatch, host, batches)
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        # integrated, with I/O coherency (sm_72 and later); the plan's compute capability
        mapped, mapped_copies, mapped_mode, staging = swap(bundle, monkeypatch, host, batches, integrated=True)
    assert (staged_mode, mapped_mode) == ("staged", "mapped")
    assert "device stages: mapped host memory for frames and tables" in caplog.text
    assert all(isinstance(buffer, fake_gpu.FakeMappedBuffer) for buffer in staging)
    for want_batch, got_batch in zip(staged, mapped, strict=True):
        for want, got in zip(want_batch, got_batch, strict=True):
            np.testing.assert_array_equal(got.image, want.image)
    assert sum(kind == "upload" for kind, _ in staged_copies) == 4  # frames + tables, masks; per batch
    assert not [c for c in mapped_copies if c[0] == "upload"]
    # only the changed regions come back, in both modes
    assert [c for c in mapped_copies if c[0] == "download"] == [c for c in staged_copies if c[0] == "download"]
