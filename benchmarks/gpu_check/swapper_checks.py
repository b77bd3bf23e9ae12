"""Checks of the device path of FaceSwapper with the stand-in plans: against the CPU path, frame streams,
detection on the device, device choice, the parser, whole-sequence graphs, frames uploaded once."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from simswap_trt import cuda
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.kernels import DeviceKernels

from . import standins
from .kernel_checks import address_of, check_parser_kernels
from .scenes import face_landmarks, smooth_frame, video_batches, worst_levels
from .standins import (
    KernelStandinEngine,
    RecordingDecoder,
    StandinDetectorEngine,
    StandinEngine,
    StandinEnhancerEngine,
    content_parser,
    detector_standin_numpy,
)


def swappers(crop_size: int, folder: Path, max_batch: int = 16):
    """A host-path and a device-path FaceSwapper over an untrained bundle with the stand-in generator."""
    from simswap_build.convert.architectures import ArcFaceConfig, GeneratorConfig
    from simswap_build.convert.bundle import untrained_bundle
    from simswap_trt import FaceSwapper
    from simswap_trt.bundle import Bundle
    from simswap_trt.engines import OnnxRuntimeEngine

    arch = "224" if crop_size == 224 else "512"
    root = folder / f"bundle-{crop_size}"
    small = GeneratorConfig.from_name(arch, ngf=8, n_blocks=1), ArcFaceConfig(layers=(1, 1, 1, 1), width=16)
    bundle = Bundle.load(root) if root.is_dir() else untrained_bundle(root, arch, None, 0, *small)  # graphs unused
    arcface = OnnxRuntimeEngine(bundle.path_of("arcface"))
    latent = np.random.default_rng(1).normal(size=512).astype(np.float32)
    latent /= np.linalg.norm(latent)
    host = FaceSwapper(bundle, StandinEngine(crop_size, max_batch), arcface, device_path=False)
    device = FaceSwapper(bundle, StandinEngine(crop_size, max_batch), arcface, device_path=True)
    host.source_latent = device.source_latent = latent
    return host, device


def check_device_path(folder: Path, crop_size: int) -> dict:
    from simswap_trt.swapper import FrameBatch
    from simswap_trt.vision.detect import Detection

    host, device = swappers(crop_size, folder, max_batch=3)
    alignment = host.bundle.alignment
    rng = np.random.default_rng(2)

    def face(center, size, angle):
        landmarks = face_landmarks(center, size, angle, crop_size, alignment)
        return Detection(np.r_[landmarks.min(0), landmarks.max(0)].astype(np.float32), 0.9, landmarks)

    first_faces = [  # a face fully outside between two inside, a face at the border, a frame without faces
        [face((100, 120), 120, 0), face((5000, 90), 120, 0), face((330, 160), 100, 12)],
        [face((12, 20), 110, 90)],
        [],
    ]
    batches = [
        FrameBatch(
            [smooth_frame(rng, 301, 433), smooth_frame(rng, 257, 389), smooth_frame(rng, 120, 170)], first_faces
        ),
        FrameBatch([smooth_frame(rng, 211, 307)], [[face((150, 100), 140, 180), face((170, 120), 100, 5)]]),
    ]
    worst = 0
    for batch, results in zip(batches, device.swap_stream(batches), strict=True):
        for want, got in zip(host.swap_faces(batch.images, batch.faces), results, strict=True):
            worst = max(worst, int(np.abs(got.image.astype(int) - want.image).max()))
    device.close()
    host.close()
    if worst > 1:
        raise AssertionError(f"the device path differs from the CPU path by {worst} levels")
    return {"max_levels_vs_cpu": worst}


def check_frame_stream(folder: Path, batches: int) -> dict:
    """``swap_stream`` over 1080p frames, 4 frames of 2 faces per batch, two batches in flight."""
    from simswap_trt.swapper import FrameBatch
    from simswap_trt.vision.detect import Detection

    host, device = swappers(224, folder)
    rng = np.random.default_rng(3)
    frames = [smooth_frame(rng, 1080, 1920) for _ in range(4)]
    faces = [
        [
            Detection(np.zeros(4, np.float32), 0.9, face_landmarks((600 + 40 * k, 500), 230, 5, 224)),
            Detection(np.zeros(4, np.float32), 0.9, face_landmarks((1300 - 40 * k, 560), 200, -8, 224)),
        ]
        for k in range(4)
    ]
    stream = [FrameBatch(frames, faces) for _ in range(batches)]
    first = next(iter(device.swap_stream(stream[:1])))  # warm-up, and the output against the CPU path
    worst = max(
        int(np.abs(g.image.astype(int) - w.image).max())
        for g, w in zip(first, host.swap_faces(frames, faces), strict=True)
    )
    start = time.perf_counter()
    for _ in device.swap_stream(stream):
        pass
    seconds = time.perf_counter() - start
    device.close()
    host.close()
    if worst > 1:
        raise AssertionError(f"the streamed output differs from the CPU path by {worst} levels")
    return {"frames_per_s": round(batches * len(frames) / seconds, 1), "max_levels_vs_cpu": worst}


def check_enhancer(folder: Path, batches: int) -> dict:
    """The face enhancer on the device path (stand-in restorer at 512) over 1080p frames of two faces: equal to
    the CPU path within one level, the restorer's faces per second, and the share of the wall time the host
    spends (process CPU time / wall time) with and without the enhancer, which must not grow with it."""
    from simswap_trt import FaceSwapper
    from simswap_trt.swapper import FrameBatch
    from simswap_trt.vision.detect import Detection
    from simswap_trt.vision.enhance import FaceEnhancer

    plain_host, plain = swappers(224, folder)
    engine = StandinEnhancerEngine()
    enhancers = FaceEnhancer(StandinEnhancerEngine(), "ffhq"), FaceEnhancer(engine, "ffhq")
    host, device = (
        FaceSwapper(plain.bundle, swapper.generator, swapper.arcface, device_path=on_device, enhance=enhancer)
        for swapper, enhancer, on_device in zip((plain_host, plain), enhancers, (False, True), strict=True)
    )
    host.source_latent = device.source_latent = plain.source_latent
    if not device.on_device:
        raise AssertionError(f"the swapper with the enhancer runs on the {device.stages} stages, not the device")
    rng = np.random.default_rng(4)
    frames = [smooth_frame(rng, 1080, 1920) for _ in range(4)]
    faces = [
        [Detection(np.zeros(4, np.float32), 0.9, face_landmarks((700 + 30 * k, 520), 240, 4, 224)) for k in range(2)]
        for _ in frames
    ]
    worst = max(
        int(np.abs(g.image.astype(int) - w.image).max())
        for g, w in zip(device.swap_faces(frames, faces), host.swap_faces(frames, faces), strict=True)
    )
    stream = [FrameBatch(frames, faces) for _ in range(batches)]
    shares, seconds = {}, {}
    for name, swapper in (("without", plain), ("with", device)):
        list(swapper.swap_stream(stream[:1]))  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in swapper.swap_stream(stream):
            pass
        seconds[name] = time.perf_counter() - wall
        shares[name] = (time.process_time() - cpu) / seconds[name]
    calls = engine.calls
    for swapper in (device, host, plain, plain_host):
        swapper.close()
    if worst > 1:
        raise AssertionError(f"the device path with the enhancer differs from the CPU path by {worst} levels")
    if shares["with"] > shares["without"] + 0.05:
        raise AssertionError(f"the host's share of the frame time grows with the enhancer: {shares}")
    enhanced = batches * sum(len(f) for f in faces)
    return {
        "max_levels_vs_cpu": worst,
        "enhanced_faces_per_s": round(enhanced / seconds["with"], 1),
        "frames_per_s": {name: round(batches * len(frames) / s, 1) for name, s in seconds.items()},
        "host_share": {name: round(share, 3) for name, share in shares.items()},
        "enhancer_calls": calls,
    }


def check_device_detection(kernels: dict, canvas: int = 640) -> dict:
    """``DeviceDetector`` (upload, letterbox kernel, stand-in plan on its buffers, output download) vs the
    stand-in's function of the CPU detector's input: the heatmap within 1/255 (each canvas level within 1)."""
    from simswap_trt.device.detect import DeviceDetector
    from simswap_trt.vision.detect import letterbox, normalise

    rng = np.random.default_rng(7)
    frames = [smooth_frame(rng, h, w) for h, w in ((301, 433), (433, 301), (97, 61), (720, 1281), (211, 157))]
    decoder = RecordingDecoder(canvas)
    engine = StandinDetectorEngine(canvas, max_batch=4)
    detector = DeviceDetector(decoder, engine, DeviceKernels(kernels))
    try:
        detector.detect_batch(frames)  # two calls of the plan: 4 + 1 frames
        got = np.concatenate([outputs[0] for outputs in decoder.outputs])
        expected = detector_standin_numpy(normalise(letterbox(frames, canvas)[0], decoder.normalisation))[0]
        worst = float(np.abs(got - expected).max() * 255)
        if worst > 1.001 or engine.calls != 2:
            raise AssertionError(f"device detection's heatmap differs by {worst} levels ({engine.calls} plan calls)")
        big = [smooth_frame(rng, 1080, 1920) for _ in range(8)]
        detector.detect_batch(big)  # warm-up
        start = time.perf_counter()
        detector.detect_batch(big, batch_size=4)
        milliseconds = (time.perf_counter() - start) * 1e3
    finally:
        detector.close()
    return {"max_heatmap_levels_vs_cpu": round(worst, 4), "detect_8_1080p_frames_ms": round(milliseconds, 2)}


def kernel_swappers(folder: Path, crop_size: int = 224, max_batch: int = 16, **device_options):
    """A host-path FaceSwapper and a device-path one (``device_options``: ``device``, ``parser``,
    ``cuda_graphs``) with the kernel stand-in generator, over ``swappers``' untrained bundle."""
    from simswap_trt import FaceSwapper

    base, torch_device = swappers(crop_size, folder, max_batch)
    for swapper in (base, torch_device):
        swapper.close()
    bundle, arcface, parser, on = base.bundle, base.arcface, device_options.get("parser"), device_options.get("device")
    host = FaceSwapper(bundle, StandinEngine(crop_size, max_batch), arcface, parser=parser, device_path=False)
    engine = KernelStandinEngine(crop_size, max_batch, standins.standin_kernel(on), on)
    device = FaceSwapper(bundle, engine, arcface, device_path=True, **device_options)
    host.source_latent = device.source_latent = base.source_latent
    return host, device


def check_devices(folder: Path) -> dict:
    """Every visible device listed; a bad id refused naming them; with several, the device path on the last."""
    count = cuda.device_count()
    listed = [f"{d}: {cuda.device_info(d).name}" for d in range(count)]
    try:
        cuda.check_device(count)
        raise AssertionError(f"device id {count} was accepted with {count} devices")
    except cuda.DeviceNotFoundError as exc:
        if listed and listed[0].split(": ")[1] not in str(exc):
            raise AssertionError(f"the error does not name the devices: {exc}") from None
    details: dict = {"devices": listed}
    if count > 1:
        last = count - 1
        host, device = kernel_swappers(folder, device=last, max_batch=4)
        batches = video_batches(2)
        worst = worst_levels(device.swap_stream(batches), [host.swap_faces(b.images, b.faces) for b in batches])
        device.close()
        host.close()
        if worst > 1:
            raise AssertionError(f"the device path on device {last} differs from the CPU path by {worst} levels")
        details.update(device_path_on=last, max_levels_vs_cpu=worst)
    return details


def check_parsing_blend(kernels: dict, host, folder: Path) -> dict:
    """The blend kernel vs the host build (bit-exact, float32 and float16 buffers), then the device path with
    a face parser vs the CPU path with it."""
    from simswap_trt.kernels import ParsingTables
    from simswap_trt.vision.parsing import FaceParser

    device_kernels, rng, size = DeviceKernels(kernels), np.random.default_rng(5), 224
    stream = cuda.Stream()
    exact = []
    for half_in, half_out in ((False, False), (True, True)):
        swapped = rng.random((3, 3, size, size), dtype=np.float32).astype(np.float16 if half_out else np.float32)
        targets = rng.random((3, 3, size, size), dtype=np.float32).astype(np.float16 if half_in else np.float32)
        masks, faces = rng.random((2, size, size), dtype=np.float32), np.array([2, 0], np.int32)
        buffers = [cuda_memory.DeviceBuffer.from_array(a) for a in (swapped, targets, masks, faces)]
        tables = ParsingTables(masks=buffers[2].ptr, faces=buffers[3].ptr, count=2)
        device_kernels.parsing_blend(stream.handle, tables, size, buffers[0].ptr, half_out, buffers[1].ptr, half_in)
        stream.synchronize()
        got = buffers[0].to_array(swapped)
        if host is not None:
            expected = swapped.copy()
            host.simswap_parsing_blend_host.restype = None
            out, inputs, *rest = [address_of(a) for a in (expected, targets, masks, faces)]
            host.simswap_parsing_blend_host(out, int(half_out), inputs, int(half_in), *rest, 2, size)
            if not np.array_equal(got, expected):
                raise AssertionError(f"the blend (half {half_in}/{half_out}) is not bit-exact with the host build")
            exact.append(True)
        for buffer in buffers:
            buffer.free()
    exact.append(check_parser_kernels(device_kernels, host, stream) if host is not None else True)
    stream.free()
    parser = FaceParser(content_parser(folder / "parser.onnx"))
    host_swapper, device = kernel_swappers(folder, max_batch=4, parser=parser)
    batches = video_batches(2)
    worst = worst_levels(device.swap_stream(batches), [host_swapper.swap_faces(b.images, b.faces) for b in batches])
    device.close()
    host_swapper.close()
    if worst > 1:
        raise AssertionError(f"the device path with a parser differs from the CPU path by {worst} levels")
    return {"blend_bit_exact": bool(exact) and all(exact), "parser_max_levels_vs_cpu": worst}


def check_graphs(folder: Path, batches: int) -> dict:
    """The whole per-batch sequence replayed as CUDA graphs vs the same sequence enqueued eagerly: equal
    outputs, a graph per batch size, and the time per batch of both (two batch sizes of 1080p frames)."""
    launches = []
    launch = cuda.Graph.launch

    def counted(graph, stream):
        launches.append(graph)
        launch(graph, stream)

    host, eager = kernel_swappers(folder, max_batch=8)
    _, graphed = kernel_swappers(folder, max_batch=8, cuda_graphs=True)
    stream = video_batches(batches) + video_batches(batches, faces_per_frame=1)  # 8, then 4 faces per batch
    timings = {}
    cuda.Graph.launch = counted
    try:
        results = {}
        for name, swapper in (("eager", eager), ("graphs", graphed)):
            list(swapper.swap_stream(stream[:1]))  # warm-up (and the first capture)
            start = time.perf_counter()
            results[name] = list(swapper.swap_stream(stream))
            timings[name] = (time.perf_counter() - start) / len(stream) * 1e3
    finally:
        cuda.Graph.launch = launch
    captured = sum(len(ws.graphs) for ws in graphed._stages.workspaces)
    worst = worst_levels(results["graphs"], results["eager"])
    cpu = worst_levels(results["graphs"][:1], [host.swap_faces(stream[0].images, stream[0].faces)])
    for swapper in (host, eager, graphed):
        swapper.close()
    if worst or cpu > 1:
        raise AssertionError(f"graph replays differ from the eager sequence by {worst} levels (CPU path: {cpu})")
    if not launches or captured < 2:
        raise AssertionError(f"{len(launches)} replays, {captured} graphs: expected replays and a graph per size")
    return {
        "graphs": captured,
        "replays": len(launches),
        "eager_ms_per_batch": round(timings["eager"], 3),
        "graph_ms_per_batch": round(timings["graphs"], 3),
        "graph_vs_eager": round(timings["graphs"] / timings["eager"], 3),
    }


def check_resident_frames(folder: Path, batches: int, canvas: int = 640, rounds: int = 3) -> dict:
    """Detection on the device (``DeviceDetector`` with the stand-in detector plan, sharing the device stages'
    ``frames``), then ``swap_stream`` of the same frames with their copies, two batches in flight: the swap
    must take every frame's copy on the device and equal the CPU path within 1 level. Then ``batches``
    batches of 4 1080p frames are detected and swapped ``rounds`` times, alternately with the frames' copies
    taken and the frames uploaded again for the swap; the medians give the speed-up."""
    from simswap_trt.device.detect import DeviceDetector
    from simswap_trt.swapper import FrameBatch

    host, device = swappers(224, folder)
    stages = device._stages
    pool, detector_engine = stages.frames, StandinDetectorEngine(canvas, max_batch=4)
    detector = DeviceDetector(RecordingDecoder(canvas), detector_engine, stages.kernels, frames=pool)
    stream = [FrameBatch([image.copy() for image in b.images], b.faces) for b in video_batches(batches)]
    take, found = pool.take, []

    def counted(resident, consume):
        result = take(resident, consume)
        found.extend(r is not None for r in result)
        return result

    def detected(batches):  # each batch detected on the device just before it is started, as in the video loop
        for batch in batches:
            yield replace(batch, resident=detector.detect_resident(batch.images)[1])

    seconds: dict[str, list[float]] = {"resident": [], "uploaded_again": []}
    try:
        pool.take = counted
        first = list(device.swap_stream(detected(stream[:2])))
        worst = worst_levels(first, [host.swap_faces(b.images, b.faces) for b in stream[:2]])
        if worst > 1 or not found or not all(found):
            raise AssertionError(f"{sum(found)} of {len(found)} frames found on the device, {worst} levels off")
        for _ in range(rounds):
            for mode, lookup in (
                ("uploaded_again", lambda resident, consume: [None] * len(resident)),
                ("resident", take),
            ):
                pool.take = lookup
                start = time.perf_counter()
                for _ in device.swap_stream(detected(stream)):
                    pass
                seconds[mode].append(time.perf_counter() - start)
    finally:
        pool.take = take
        detector.close()
        device.close()
        host.close()
    frames = sum(len(b.images) for b in stream)
    medians = {mode: float(np.median(values)) for mode, values in seconds.items()}
    return {
        "frames_found_on_device": f"{sum(found)}/{len(found)}",
        "max_levels_vs_cpu": worst,
        "frames_per_s_resident": round(frames / medians["resident"], 1),
        "frames_per_s_uploaded_again": round(frames / medians["uploaded_again"], 1),
        "speedup": round(medians["uploaded_again"] / medians["resident"], 3),
    }
