"""CPU pre- and post-processing per frame, everything but the models: simswap-trt's host path against
FaceFusion's method written from its published description, on the same 1920x1080 frame, the same
landmarks and the same fixed model output, with one and with three faces.

simswap-trt (``HostStages``): the official alignment (best of five templates), the crops warped into one
uint8 batch, one float32 NCHW tensor, the model output as BGR crops, and the ROI paste-back with the
official border mask (within 1 level of the official ``reverse2wholeimage``).

FaceFusion's method, per face: ``cv2.estimateAffinePartial2D`` (RANSAC, threshold 100) onto the frontal
template, the crop warped with a replicated border, the input tensor made in float64 (BGR→RGB, ÷255,
ImageNet mean and deviation, NCHW) and cast to float32, the model output clipped and scaled to BGR, the
crop-size box mask (made once per size, as FaceFusion caches it) and its paste-back (a copy of the frame
per face, mask and crop warped to the paste box, a float32 blend).

Both are timed interleaved (round by round, rotating order); each round times ``--frames`` frames per
method, and each speed-up is taken per round and reported as median [p10-p90]; minor page faults per
frame are counted too. Prints a table and writes JSON to benchmarks/results/cpu/.

    python -m benchmarks.prepost [--repeats 20] [--frames 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from benchmarks.pasteback import FRAME, LANDMARKS, OFFSETS, box_mask, page_faults, paste_back_facefusion
from simswap_build.bench.measure import Stats, interleaved, machine, ratio_stats
from simswap_trt.files import write_atomic
from simswap_trt.vision.align import MULTIPOSE_TEMPLATES_112, alignment_matrix
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.preprocess import crops_to_tensor, tensor_to_bgr
from simswap_trt.vision.warp import warp_faces

SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def ours(frame: np.ndarray, landmarks: list[np.ndarray], output: np.ndarray) -> np.ndarray:
    """simswap-trt's host pre/post for one frame; ``output`` is the generator's float32 [N,3,S,S]."""
    faces = [(0, alignment_matrix(points, "multipose", SIZE)) for points in landmarks]
    crops_to_tensor(warp_faces([frame], faces, SIZE), SIZE)  # the generator's input
    crops = tensor_to_bgr(output)
    return paste_back(frame, [(crop, matrix) for crop, (_, matrix) in zip(crops, faces, strict=True)])


@cache
def crop_box_mask(size: int) -> np.ndarray:
    """The crop-size box mask, made once per size."""
    return box_mask(size)


def facefusion_method(frame: np.ndarray, landmarks: list[np.ndarray], output: np.ndarray) -> np.ndarray:
    """FaceFusion's published per-face pre/post (see the module docstring), one face after the other."""
    template = MULTIPOSE_TEMPLATES_112[2] / 112 * SIZE  # the frontal template, FaceFusion's arcface_112_v1
    for points, out in zip(landmarks, output, strict=True):
        matrix = cv2.estimateAffinePartial2D(points, template, method=cv2.RANSAC, ransacReprojThreshold=100)[0]
        crop = cv2.warpAffine(frame, matrix, (SIZE, SIZE), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_AREA)
        tensor = (crop[:, :, ::-1] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        np.expand_dims(tensor.transpose(2, 0, 1), axis=0).astype(np.float32)  # the generator's input
        swapped = out.transpose(1, 2, 0).clip(0, 1)[:, :, ::-1] * 255
        mask = np.minimum.reduce([crop_box_mask(SIZE)]).clip(0, 1)
        frame = paste_back_facefusion(frame, swapped, mask, matrix)
    return frame


def compare(frame: np.ndarray, faces: int, repeats: int, frames: int, rng: np.random.Generator) -> dict:
    """Both methods on ``faces`` faces of ``frame``, interleaved; times per frame, speed-ups, page faults."""
    landmarks = [LANDMARKS + [dx, 0] for dx in OFFSETS[:faces]]
    output = rng.random((faces, 3, SIZE, SIZE), dtype=np.float32)  # the fixed model output

    def per_frame(method):
        def call(_):
            for _ in range(frames):
                method(frame, landmarks, output)

        return call

    calls = {"FaceFusion's method": per_frame(facefusion_method), "simswap-trt": per_frame(ours)}
    seconds = interleaved(calls, lambda i: None, repeats)
    seconds = {name: [s / frames for s in times] for name, times in seconds.items()}
    mine = seconds["simswap-trt"]
    return {
        "faces": faces,
        "results": {
            name: {
                "stats": Stats.of(times).to_json(),
                "speedup_of_simswap_trt": ratio_stats(times, mine).to_json(),
                "minor_page_faults_per_frame": page_faults(lambda m=method: m(frame, landmarks, output), 10),
            }
            for (name, times), method in zip(seconds.items(), (facefusion_method, ours), strict=True)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="interleaved rounds (default: 20)")
    parser.add_argument("--frames", type=int, default=4, help="frames per method per round (default: 4)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "cpu" / "prepost.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (*FRAME, 3), dtype=np.uint8)
    load_before = os.getloadavg()
    runs = [compare(frame, faces, args.repeats, args.frames, rng) for faces in (1, 3)]
    load_after = os.getloadavg()
    print(
        f"pre/post per frame, {FRAME[1]}x{FRAME[0]}, {args.repeats} interleaved rounds of {args.frames} frames, "
        f"{cv2.getNumThreads()} OpenCV threads"
    )
    print(f"{'faces':<6}{'method':<24}{'median ms':>10}{'simswap-trt is':>24}{'page faults':>13}")
    for run in runs:
        for name, row in run["results"].items():
            ratio = row["speedup_of_simswap_trt"]
            spread = f"{ratio['median']:.2f}x [{ratio['p10']:.2f}-{ratio['p90']:.2f}]"
            faults = row["minor_page_faults_per_frame"]
            print(f"{run['faces']:<6}{name:<24}{row['stats']['median'] * 1e3:>10.2f}{spread:>24}{faults:>13.0f}")
    print(f"load average (1/5/15 min) before {load_before}, after {load_after}")
    write_atomic(
        args.output,
        json.dumps(
            {
                "benchmark": "prepost",
                "frame": list(FRAME),
                "crop_size": SIZE,
                "repeats": args.repeats,
                "frames_per_round": args.frames,
                "opencv_threads": cv2.getNumThreads(),
                "machine": machine(),
                "load_average_1_5_15_min": {"before": list(load_before), "after": list(load_after)},
                "versions": {"numpy": np.__version__, "opencv": cv2.__version__, "python": platform.python_version()},
                "runs": runs,
            },
            indent=2,
        ).encode()
        + b"\n",
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
