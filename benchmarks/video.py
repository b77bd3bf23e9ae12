"""Video end to end: the simswap-trt pipeline (decode / batched swap / encode overlapped, tracking and
smoothing on, the video defaults: whole-frame face detection every 4th frame, regions around the
tracked faces in between; and once more with whole-frame detection on every frame) against the naive
loop (decode one frame, swap it as an image, encode it), on the same synthetic 1080p clip with one and
with several faces, in the same run. Each run's wall time and its process's CPU seconds (all threads:
the work, which other load on a shared machine does not change) are recorded. Prints a table, writes
JSON (with the CPU model and flags) and a bar chart to benchmarks/results/.

    python -m benchmarks.video [--bundle B] [--frames 48] [--repeats 1] [--pipeline-threads 1]

Without --bundle an UNTRAINED reduced-width 224 bundle (generator ngf 16, 3 blocks) is made for the run.
On a CPU the full-size generator takes seconds per face, which no pipeline can hide; the reduced one
makes decoding, detection, paste-back and encoding weigh as they do next to a fast (GPU) generator,
which is what the pipeline overlaps. Pass --bundle for any other bundle.

``--pipeline-threads N`` runs the pipeline (and its every-frame variant) with a swapper of N inference
threads per engine, and times the pipeline with the default swapper (all CPUs, as the naive loop) beside
it as ``pipeline_all_threads``: the pipeline runs detection and the swap in two threads at once, and this
measures whether splitting the cores between them pays (on 2 CPUs it does not: docs/cpu.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

from simswap_trt import FaceSwapper
from simswap_trt.backends import BACKENDS, PRECISIONS
from simswap_trt.video import VideoOptions, swap_video

SIZE = (1920, 1080)
FPS = 24


def cpu_facts() -> dict:
    facts = {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                facts.setdefault("model", value.strip())
            if key.strip() == "flags":
                facts.setdefault("flags", value.split())
    except OSError:
        pass
    return facts


def make_clip(path: Path, faces: int, frames: int) -> Path:
    """A 1080p clip of ``faces`` astronaut faces (public domain) drifting over a gradient, with a sine tone."""
    face = np.ascontiguousarray(data.astronaut()[20:240, 110:330, ::-1])
    w, h = SIZE
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    backdrop = np.stack([60 + 120 * x, 90 + 60 * y, 150 - 80 * x * y], -1).astype(np.uint8)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.codec_context.options = {"crf": "18", "preset": "veryfast"}
        tone = container.add_stream("aac", rate=48000)
        for i in range(frames):
            image = backdrop.copy()
            for k in range(faces):
                matrix = cv2.getRotationMatrix2D((110, 110), 0.3 * i * (-1) ** k, 1.2 + 0.1 * k)
                matrix[:, 2] += [300 + 550 * k + 3 * i - 110, 420 + 60 * k - 110]
                mask = cv2.warpAffine(np.full((220, 220), 255, np.uint8), matrix, SIZE) > 128
                image[mask] = cv2.warpAffine(face, matrix, SIZE)[mask]
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        t = np.arange(int(frames / FPS * 48000)) / 48000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, start
            container.mux(tone.encode(chunk))
        container.mux(tone.encode(None))
    return path


def naive(swapper: FaceSwapper, clip: Path, output: Path) -> int:
    """One frame at a time: decode, swap as an image, encode (video only, same codec and CRF)."""
    with av.open(str(clip)) as source, av.open(str(output), "w") as sink:
        stream = sink.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.codec_context.options = {"crf": "18"}
        count = 0
        for frame in source.decode(video=0):
            image = swapper.swap(frame.to_ndarray(format="bgr24")).image
            out = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            out.pts = count
            sink.mux(stream.encode(out))
            count += 1
        sink.mux(stream.encode(None))
    return count


def open_swapper(args: argparse.Namespace, threads: int | None) -> FaceSwapper:
    """The benchmark's swapper with ``threads`` inference threads per engine (None: all CPUs)."""
    swapper = FaceSwapper.from_bundle(
        args.bundle, max_batch=args.batch, backend=args.backend, precision=args.precision, threads=threads
    )
    swapper.set_source(np.ascontiguousarray(data.astronaut()[..., ::-1]))
    return swapper


def first_frame(clip: Path) -> np.ndarray:
    with av.open(str(clip)) as source:
        return next(source.decode(video=0)).to_ndarray(format="bgr24")


def timed(function) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all its threads) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - start, time.process_time() - cpu


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="bundle (default: an untrained reduced-width 224 bundle made for the run)",
    )
    parser.add_argument("--frames", type=int, default=48, help="clip length in frames at 24 fps (default: 48)")
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 3], help="faces per clip (default: 1 3)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="as 'simswap-trt video' (default: auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None, help="e.g. int8 or bf16 (docs/cpu.md)")
    parser.add_argument(
        "--pipeline-threads",
        type=int,
        default=None,
        help="inference threads per engine of the pipeline's swapper, as 'simswap-trt video --threads' "
        "(default: all CPUs, as the naive loop)",
    )
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "video.json")
    return parser.parse_args()


def reduced_bundle(folder: Path) -> tuple[Path, str]:
    """An untrained reduced-width 224 bundle in ``folder`` and how the report names it. ArcFace only sets the
    source identity here (select="all"), so it is reduced too."""
    from simswap_build.convert.architectures import ArcFaceConfig, GeneratorConfig
    from simswap_build.convert.bundle import untrained_bundle

    generator, arcface = GeneratorConfig(ngf=16, n_blocks=3), ArcFaceConfig(layers=(1, 1, 1, 1), width=16)
    untrained_bundle(folder / "bundle", generator_config=generator, arcface_config=arcface)
    return folder / "bundle", "untrained reduced-width 224 (generator ngf 16, 3 blocks)"


def interleaved(runs: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds of each run, ``repeats`` rounds interleaved, the order rotating from round to round."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for _ in range(repeats):
        for name in order:
            wall, used = timed(runs[name])
            times[name].append(wall)
            cpu[name].append(used)
        order = order[1:] + order[:1]
    return times, cpu


def measure_clip(args, swapper, piped, folder: Path, faces: int) -> dict:
    """One clip of ``faces`` faces: the naive loop against the pipeline (and with detection on every frame),
    interleaved; the row of the report."""
    options = VideoOptions(batch=args.batch)
    every_frame = VideoOptions(batch=args.batch, full_detect_every=1)
    clip = make_clip(folder / f"clip{faces}.mp4", faces, args.frames)
    swap_video(piped, clip, folder / "warm.mp4", options, duration=8 / FPS, overwrite=True)  # warm-up
    swapper.swap(first_frame(clip))
    runs = {
        "naive": lambda: naive(swapper, clip, folder / "naive.mp4"),
        "pipeline": lambda: swap_video(piped, clip, folder / "out.mp4", options, overwrite=True),
        "pipeline_full_detect": lambda: swap_video(piped, clip, folder / "out.mp4", every_frame, overwrite=True),
    }
    if piped is not swapper:  # the pipeline with the default threads too, for the difference
        runs["pipeline_all_threads"] = lambda: swap_video(swapper, clip, folder / "out.mp4", options, overwrite=True)
    times, cpu = interleaved(runs, args.repeats)
    ratios = {name: [n / t for n, t in zip(times["naive"], times[name], strict=True)] for name in list(runs)[1:]}
    fps = {name: args.frames / statistics.median(t) for name, t in times.items()}
    return {
        "faces": faces,
        "frames": args.frames,
        "naive_fps": fps["naive"],
        "pipeline_fps": fps["pipeline"],
        "pipeline_full_detect_fps": fps["pipeline_full_detect"],
        "speedup_median": fps["pipeline"] / fps["naive"],
        "speedup_full_detect_median": fps["pipeline_full_detect"] / fps["naive"],
        "speedup_per_round": ratios["pipeline"],
        "speedup_full_detect_per_round": ratios["pipeline_full_detect"],
        "speedup_all_threads_per_round": ratios.get("pipeline_all_threads"),
        "cpu_ratio_per_round": [n / t for n, t in zip(cpu["naive"], cpu["pipeline"], strict=True)],
        "seconds": times,
        "cpu_seconds": cpu,
    }


def print_table(args, rows: list[dict], load_before, load_after) -> None:
    print(f"video end to end, {SIZE[0]}x{SIZE[1]}, {args.frames} frames, batch {args.batch}, {args.repeats} run(s)")
    print(f"{'faces':>6}{'naive fps':>12}{'pipeline fps':>14}{'speed-up':>10}{'detect-all fps':>16}{'speed-up':>10}")
    for row in rows:
        print(
            f"{row['faces']:>6}{row['naive_fps']:>12.2f}{row['pipeline_fps']:>14.2f}{row['speedup_median']:>9.2f}x"
            f"{row['pipeline_full_detect_fps']:>16.2f}{row['speedup_full_detect_median']:>9.2f}x"
        )
    for row in rows:
        spread = row["speedup_per_round"]
        print(f"{row['faces']} face(s): pipeline / naive per round {', '.join(f'{r:.2f}x' for r in spread)}")
        if row["speedup_all_threads_per_round"]:
            spread = row["speedup_all_threads_per_round"]
            print(f"   with all threads per engine, per round {', '.join(f'{r:.2f}x' for r in spread)}")
        cpu_ratios = ", ".join(f"{r:.2f}x" for r in row["cpu_ratio_per_round"])
        print(f"   CPU seconds, naive / pipeline per round {cpu_ratios} (independent of other work on the machine)")
    print(
        f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
        f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} on {len(os.sched_getaffinity(0))} CPUs"
    )


def plot(rows: list[dict], result: dict, path: Path) -> None:
    """The frames-per-second chart next to the JSON (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5, 3))
    x = np.arange(len(rows))
    ax.bar(x - 0.27, [r["naive_fps"] for r in rows], 0.27, label="naive loop")
    ax.bar(x, [r["pipeline_full_detect_fps"] for r in rows], 0.27, label="video, detection every frame")
    ax.bar(x + 0.27, [r["pipeline_fps"] for r in rows], 0.27, label="video (defaults)")
    ax.set_xticks(x, [f"{r['faces']} face(s)" for r in rows])
    ax.set_ylabel("frames per second")
    ax.set_title(f"1080p video end to end, {result['machine']['cpus']} CPUs", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=100)


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()  # other work on the machine depresses the ratio: recorded with it
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = "given bundle"
        if args.bundle is None:
            args.bundle, model = reduced_bundle(folder)
        swapper = open_swapper(args, None)
        piped = swapper if args.pipeline_threads is None else open_swapper(args, args.pipeline_threads)
        rows = [measure_clip(args, swapper, piped, folder, faces) for faces in args.faces]
    load_after = os.getloadavg()
    print_table(args, rows, load_before, load_after)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "video",
        "frame": list(SIZE),
        "fps": FPS,
        "batch": args.batch,
        "full_detect_every": VideoOptions().full_detect_every,
        "repeats": args.repeats,
        "model": model,
        "untrained_bundle": swapper.bundle.untrained,
        "backend": swapper.generator.backend,
        "pipeline_threads": args.pipeline_threads,
        "machine": cpu_facts(),
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "versions": {"pyav": av.__version__, "ffmpeg": av.ffmpeg_version_info, "python": platform.python_version()},
        "results": rows,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    plot(rows, result, args.output)


if __name__ == "__main__":
    main()
