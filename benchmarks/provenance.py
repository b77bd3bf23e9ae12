"""What labelling and signing cost per output: the XMP synthetic-media label and a signed C2PA manifest on a
1920x1080 JPEG and PNG, and a signed manifest on a 1080p H.264 clip (hashed once, after encoding).

    python -m benchmarks.provenance [--repeats 5] [--seconds 10]

The clip is ``--seconds`` long at 24 fps (a panning photo with grain, libx264 CRF 18); signing hashes the whole file,
so the cost per minute of video is given for the clip's bitrate, scaled from the measured throughput. Uses
a throwaway test certificate chain (tests/support/c2pa_certs.py). Writes benchmarks/results/provenance.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

from simswap_build.bench.measure import machine
from simswap_trt.images import encode_image
from simswap_trt.provenance import Provenance, Signer, tag_image
from tests.support.c2pa_certs import make_chain

SIZE = (1920, 1080)


def median_ms(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def photo() -> np.ndarray:
    return cv2.resize(np.ascontiguousarray(data.astronaut()[..., ::-1]), SIZE, interpolation=cv2.INTER_CUBIC)


def images(provenance: Provenance, repeats: int) -> dict:
    image, results = photo(), {}
    target = encode_image(image, ".png")
    height, width = image.shape[:2]
    for suffix in (".jpg", ".png"):
        plain = encode_image(image, suffix)
        labelled = tag_image(plain, suffix, width, height)
        results[suffix] = {
            "bytes": len(labelled),
            "encode_ms": median_ms(lambda s=suffix: encode_image(image, s), repeats),
            "label_ms": median_ms(lambda s=suffix, d=plain: tag_image(d, s, width, height), repeats),
            "sign_ms": median_ms(lambda s=suffix, d=labelled: provenance.sign_image(d, s, target, "out"), repeats),
        }
    return results


def clip(path: Path, seconds: float) -> Path:
    wide, rng = cv2.resize(photo(), (SIZE[0] * 2, SIZE[1])), np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.codec_context.options = {"crf": "18", "preset": "ultrafast"}
        count = int(seconds * 24)
        for i in range(count):
            x = int(i * SIZE[0] / count)
            view = wide[:, x : x + SIZE[0]]
            grain = cv2.add(view, rng.integers(0, 6, view.shape, np.uint8))  # film grain: a camera-like bitrate
            frame = av.VideoFrame.from_ndarray(grain, format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def video(provenance: Provenance, seconds: float, repeats: int, folder: Path) -> dict:
    source = clip(folder / "clip.mp4", seconds)
    size = source.stat().st_size
    times = []
    for k in range(repeats):
        copy = folder / f"out{k}.mp4"
        copy.write_bytes(source.read_bytes())
        start = time.perf_counter()
        provenance.sign_file(copy, source, copy.name)
        times.append(time.perf_counter() - start)
    sign_s = statistics.median(times)
    return {
        "seconds": seconds,
        "bytes": size,
        "megabits_per_second": size * 8 / seconds / 1e6,
        "sign_s": sign_s,
        "sign_megabytes_per_second": size / sign_s / 1e6,
        "sign_s_per_minute_at_this_bitrate": sign_s * 60 / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "provenance.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        chain = make_chain(Path(folder))
        provenance = Provenance(signer=Signer.from_files(chain.cert, chain.key))
        result = {
            "benchmark": "provenance",
            "machine": machine(),
            "image_1920x1080": images(provenance, args.repeats),
            "video_1080p24": video(provenance, args.seconds, 3, Path(folder)),
        }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
