"""Paste-back speed: the fast ROI implementation vs the official full-frame float64 method and vs the
crop-size-mask method FaceFusion publishes (a blurred box mask at crop size, crop and mask warped to the
box the crop covers, a float32 blend on a copy of the frame per face), on a 1920x1080 frame with one and with three
faces. The three are timed interleaved (round by round, rotating order, same frame), and each speed-up is
taken per round and reported as median [p10-p90]; minor page faults per call are counted too. Prints a
table and writes JSON to benchmarks/results/.

    python -m benchmarks.pasteback [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
from pathlib import Path

import cv2
import numpy as np

from simswap_build.bench.measure import Stats, interleaved, machine, ratio_stats
from simswap_build.bench.official_style import paste_back_official
from simswap_trt.files import write_atomic
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.pasteback import paste_back

FRAME = (1080, 1920)
# a ~230 px wide face, slightly rotated: a typical close-up in 1080p footage
LANDMARKS = np.array([[900, 500], [1000, 508], [948, 562], [905, 612], [993, 618]], float)


OFFSETS = (0, -560, 560)  # the three faces: the one above and two beside it


def box_mask(size: int, blur: float = 0.3) -> np.ndarray:
    """The crop-size mask of the crop-mask method: ones with a border of blur/4 of the half size set to 0,
    Gaussian-blurred with sigma blur/8 of the half size; float32 [size, size] in [0, 1]."""
    amount = int(size * 0.5 * blur)
    border = max(amount // 2, 1)
    mask = np.ones((size, size), np.float32)
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = 0, 0, 0, 0
    return cv2.GaussianBlur(mask, (0, 0), amount * 0.25) if amount else mask


def paste_back_crop_mask(frame: np.ndarray, faces: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Baseline: FaceFusion's published paste-back method (``paste_back_facefusion``) face after face."""
    for crop, matrix in faces:
        frame = paste_back_facefusion(frame, crop, box_mask(crop.shape[0]), matrix)
    return frame


def paste_back_facefusion(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """FaceFusion's paste-back of one BGR crop with its crop-size ``mask``: crop (replicated borders) and
    mask warped into the box the crop covers, a copy of the whole frame, ``frame·(1 - mask) + crop·mask``
    over the box (float32, as its arrays are), truncated to uint8."""
    height, width = frame.shape[:2]
    size = crop.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64) @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, [width, height])
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int), 0, [width, height])
    inverse[:, 2] -= (x0, y0)
    warped_mask = cv2.warpAffine(mask, inverse, (x1 - x0, y1 - y0)).clip(0, 1)[..., None]
    warped = cv2.warpAffine(crop, inverse, (x1 - x0, y1 - y0), borderMode=cv2.BORDER_REPLICATE)
    frame = frame.copy()
    region = frame[y0:y1, x0:x1]
    frame[y0:y1, x0:x1] = (region * (1 - warped_mask) + warped * warped_mask).astype(frame.dtype)
    return frame


def page_faults(function, calls: int = 5) -> float:
    """Minor page faults per call of ``function``, after one warm-up call."""
    function()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        function()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def compare(frame: np.ndarray, faces: int, repeats: int, rng: np.random.Generator) -> dict:
    """The three methods on ``faces`` faces of ``frame``, interleaved; times, speed-ups and page faults."""
    matrices = [alignment_matrix(LANDMARKS + [dx, 0], "multipose", 224) for dx in OFFSETS[:faces]]
    swaps = [rng.random((224, 224, 3), dtype=np.float32) for _ in matrices]
    crops = [np.ascontiguousarray(swap[..., ::-1] * 255) for swap in swaps]  # BGR [0, 255], the model output
    calls = {
        "official full-frame float64": lambda _: paste_back_official(frame, swaps, matrices),
        "crop-mask method (FaceFusion)": lambda _: paste_back_crop_mask(
            frame, [(c.astype(np.uint8), m) for c, m in zip(crops, matrices, strict=True)]
        ),
        "simswap-trt ROI": lambda _: paste_back(frame, list(zip(crops, matrices, strict=True))),
    }
    seconds = interleaved(calls, lambda i: None, repeats)
    ours = seconds["simswap-trt ROI"]
    diff = np.abs(calls["simswap-trt ROI"](None).astype(int) - calls["official full-frame float64"](None))
    return {
        "faces": faces,
        "results": {
            name: {
                "stats": Stats.of(times).to_json(),
                "speedup_of_simswap_trt": ratio_stats(times, ours).to_json(),
                "minor_page_faults_per_call": page_faults(lambda call=call: call(None)),
            }
            for name, (call, times) in ((n, (calls[n], seconds[n])) for n in calls)
        },
        "max_abs_difference_vs_official": int(diff.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "pasteback.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (*FRAME, 3), dtype=np.uint8)
    runs = [compare(frame, faces, args.repeats, rng) for faces in (1, 3)]
    print(
        f"paste-back, {FRAME[1]}x{FRAME[0]} frame, {args.repeats} interleaved rounds, "
        f"{cv2.getNumThreads()} OpenCV threads"
    )
    print(f"{'faces':<6}{'implementation':<32}{'median ms':>10}{'simswap-trt is':>24}{'page faults':>13}")
    for run in runs:
        for name, row in run["results"].items():
            ratio = row["speedup_of_simswap_trt"]
            spread = f"{ratio['median']:.2f}x [{ratio['p10']:.2f}-{ratio['p90']:.2f}]"
            print(
                f"{run['faces']:<6}{name:<32}{row['stats']['median'] * 1e3:>10.2f}"
                f"{spread:>24}"
                f"{row['minor_page_faults_per_call']:>13.0f}"
            )
        print(f"      max abs difference from the official method: {run['max_abs_difference_vs_official']} level(s)")

    write_atomic(
        args.output,
        json.dumps(
            {
                "benchmark": "pasteback",
                "frame": list(FRAME),
                "repeats": args.repeats,
                "machine": machine(),
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
