"""Face enhancement cost: the enhancer stage per face, and the whole swap + enhance pipeline against the
usual face-enhancer order (swap and paste, then a second pass per face: detect again, warp the frame to
the 512 FFHQ crop, enhance one face, paste back, blend 80 % with the frame), on the same frames in the
same run. Full-size GFPGAN v1.4 architecture with random weights (speed does not depend on the weights),
the full-size SimSwap 224 generator (untrained bundle), ONNX Runtime on the CPU.

    python -m benchmarks.enhancer [--frames 2] [--repeats 1] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from simswap_build.bench.measure import machine
from simswap_trt.files import write_atomic

FRAME = (1080, 1920)


def _frames(count: int) -> list[np.ndarray]:
    """1080p frames with two faces each: scikit-image's astronaut (public domain) twice, shifted per frame."""
    from skimage import data

    face = cv2.resize(np.ascontiguousarray(data.astronaut()[..., ::-1]), (480, 480))
    frames = []
    for i in range(count):
        frame = np.full((*FRAME, 3), 90, np.uint8)
        for x in (300 + 8 * i, 1100 - 8 * i):
            frame[300 : 300 + 480, x : x + 480] = face
        frames.append(frame)
    return frames


def _make_bundle(folder: Path):
    import torch

    from simswap_build.convert import add_enhancer, untrained_bundle
    from simswap_build.enhancers import GFPGANv1Clean
    from simswap_build.models.gfpgan import GFPGAN

    bundle = untrained_bundle(folder / "bundle")
    torch.manual_seed(0)
    torch.save({"params_ema": GFPGAN(GFPGANv1Clean()).state_dict()}, folder / "GFPGANv1.4.pth")
    return add_enhancer(bundle.root, folder / "GFPGANv1.4.pth")


def _second_pass(swapper, enhancer, frames: list[np.ndarray], faces, blend: float) -> list[np.ndarray]:
    """The usual order: on each already swapped frame, detect again and enhance face by face. The detection
    runs (and is timed), but the faces enhanced are the given ones: an untrained generator's output is not
    reliably detected as a face, a trained one's is, at the same place."""
    from simswap_trt.preprocess import tensor_to_bgr
    from simswap_trt.vision.pasteback import paste_back

    swapper.detect(frames)
    out = []
    for frame, per_frame in zip(frames, faces, strict=True):
        for face in per_frame:
            matrix = enhancer.matrix(face.landmarks)
            crop = cv2.warpAffine(frame, matrix, (enhancer.size,) * 2)[..., ::-1].transpose(2, 0, 1)[None]
            restored = enhancer.run(np.ascontiguousarray(crop, np.float32) / 255)
            pasted = paste_back(frame, [(tensor_to_bgr(restored)[0], matrix)])
            frame = cv2.addWeighted(pasted, blend, frame, 1 - blend, 0)
        out.append(frame)
    return out


def _time(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    from simswap_trt import FaceSwapper

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "enhancer.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        bundle = _make_bundle(Path(tmp))
        options = {"threads": args.threads, "max_batch": 8, "device_path": False}
        plain = FaceSwapper.from_bundle(bundle.root, **options)
        enhancing = FaceSwapper.from_bundle(bundle.root, enhance=True, **options)
        frames = _frames(args.frames)
        faces = plain.detect(frames)
        plain.set_source(frames[0]), enhancing.set_source(frames[0])
        count = sum(len(f) for f in faces)
        enhancer = enhancing.enhancer
        faces_in = np.random.default_rng(0).random((count, 3, 512, 512), dtype=np.float32)
        enhancer.run(faces_in[:1])  # warm-up
        stage = _time(lambda: enhancer.run(faces_in), args.repeats)
        ours = _time(lambda: enhancing.swap_faces(frames, faces), args.repeats)

        def peers():
            swapped = [r.image for r in plain.swap_faces(frames, faces)]
            _second_pass(plain, enhancer, swapped, faces, enhancer.blend)

        theirs = _time(peers, args.repeats)
        swap_only = _time(lambda: plain.swap_faces(frames, faces), args.repeats)

    per_face = statistics.median(stage) / count
    result = {
        "machine": machine(),
        "frames": args.frames,
        "faces": count,
        "enhancer_s_per_face": per_face,
        "swap_only_s": statistics.median(swap_only),
        "swap_enhance_in_pipeline_s": statistics.median(ours),
        "swap_then_second_pass_s": statistics.median(theirs),
        "speedup": statistics.median(theirs) / statistics.median(ours),
        "repeats": args.repeats,
    }
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.output, (json.dumps(result, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
