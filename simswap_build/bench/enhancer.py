"""The enhancer section of ``simswap-build bench --enhancer`` (also ``python -m benchmarks.enhancer``).

On 1920x1080 frames with two faces, interleaved round by round on the same fresh frame:

* ``enhancer-stage-<backend>``: the restorer alone on the frame's two 512 px faces (reported per face);
* ``swap-<backend>``: the whole-image swap without the enhancer;
* ``swap+enhance-<backend>``: the swap with the enhancer in the pipeline (one detection, the composed warp,
  the restorer batched over the faces, one paste-back);
* ``peers-onnxruntime``: the peers' order (FaceFusion, Deep-Live-Cam): the swap and its paste-back, then a
  second pass per face on the swapped frame: detect again, warp the frame to the 512 FFHQ crop, restore one
  face, paste back, blend ``blend·enhanced + (1 − blend)·frame`` over the whole frame; ONNX Runtime FP32, as
  those tools run it on the CPU.

* ``... (restorer stubbed)``: the ONNX Runtime pipeline with the enhancer and the peers' order again, with the
  restorer replaced by the identity, so that each order's own work around the restorer (ours: the composed
  warp, the blend, the 512 px paste-back; theirs: the second detection, the per-face warps, paste-backs and
  full-frame blends) is timed apart from the restorer both share.

Speed-ups are taken round by round (median and 10th-90th percentile). The peers' second detection is run
and timed, but the faces it restores are the first detection's: an untrained generator's output is not
reliably found again, a trained one's is, at the same place.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from simswap_build.bench.measure import Stats, interleaved, ratio_stats
from simswap_build.convert.bundle import add_enhancer, untrained_bundle
from simswap_build.convert.enhancers import GFPGANv1Clean
from simswap_trt.bundle import Bundle
from simswap_trt.errors import SimswapError
from simswap_trt.swapper import FaceSwapper
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.preprocess import tensor_to_bgr

FRAME_SIZE = (1080, 1920)
PEERS = "peers-onnxruntime"
STUBBED = " (restorer stubbed)"


def _face_columns(variant: int) -> tuple[int, int]:
    shift = (variant % 5) * 16
    return 300 + shift, 1100 - shift


def two_face_frame(variant: int) -> np.ndarray:
    """A 1920x1080 frame with two faces (the public-domain astronaut at 480 px, rows 300-780) on a noise
    background, shifted per ``variant`` so that every round gets fresh pixels."""
    from skimage import data

    face = cv2.resize(np.ascontiguousarray(data.astronaut()[..., ::-1]), (480, 480))
    frame = np.random.default_rng(variant + 2000).integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8)
    for x in _face_columns(variant):
        frame[300 : 300 + 480, x : x + 480] = face
    return frame


def face_tensors(frame: np.ndarray, variant: int, size: int) -> np.ndarray:
    """float32 [2,3,size,size] RGB [0,1]: the frame's two face squares at the restorer's size (real image
    content for the restorer alone, whose speed on a CPU may depend on the values, e.g. through denormals)."""
    squares = [cv2.resize(frame[300:780, x : x + 480], (size, size)) for x in _face_columns(variant)]
    return np.ascontiguousarray(np.stack(squares)[..., ::-1].transpose(0, 3, 1, 2), np.float32) / np.float32(255)


def random_weight_enhancer(bundle_root: Path, folder: Path) -> Bundle:
    """``bundle_root`` with a full-size GFPGAN v1.4 of seeded random weights added (speed does not depend on
    the weights). Needs torch."""
    import torch  # optional (the 'build' extra), as the GFPGAN model: the harness runs without them

    from simswap_build.models.gfpgan import GFPGAN

    torch.manual_seed(0)
    checkpoint = folder / "GFPGANv1.4.pth"
    torch.save({"params_ema": GFPGAN(GFPGANv1Clean()).state_dict()}, checkpoint)
    return add_enhancer(bundle_root, checkpoint)


def second_pass(swapper: FaceSwapper, enhancer, frame: np.ndarray, faces) -> np.ndarray:
    """The peers' order on one swapped frame: detect again, then per face warp, restore, paste back, blend."""
    swapper.detect([frame])
    for face in faces:
        matrix = enhancer.matrix(face.landmarks)
        crop = cv2.warpAffine(frame, matrix, (enhancer.size, enhancer.size))
        tensor = np.ascontiguousarray(crop[..., ::-1].transpose(2, 0, 1)[None], np.float32) * np.float32(1 / 255)
        pasted = paste_back(frame, [(tensor_to_bgr(enhancer.run(tensor))[0], matrix)])
        frame = cv2.addWeighted(pasted, enhancer.blend, frame, 1 - enhancer.blend, 0)
    return frame


def _calls(bundle: Bundle, backends: Sequence[str], threads: int | None, skipped: dict) -> tuple[dict, list]:
    """The timed calls (each takes ``(frame, faces for the restorer alone)``) and the swappers they use."""
    calls: dict[str, Callable] = {}
    opened: list[FaceSwapper] = []
    options = {"threads": threads, "max_batch": 8, "device_path": False}
    source = two_face_frame(-100)
    for backend in backends:
        engine, _, precision = backend.partition("-")
        chosen = {"backend": engine, "precision": precision or None, **options}
        try:
            plain = FaceSwapper.from_bundle(bundle.root, **chosen)
            enhancing = FaceSwapper.from_bundle(bundle.root, enhance=True, **chosen)
        except SimswapError as exc:
            skipped[backend] = str(exc).splitlines()[0]
            continue
        opened += [plain, enhancing]
        plain.set_source(source)
        enhancing.source_latent = plain.source_latent
        enhancer = enhancing.enhancer
        calls[f"enhancer-stage-{backend}"] = lambda data, e=enhancer: e.run(data[1])
        calls[f"swap-{backend}"] = lambda data, s=plain: s.swap(data[0])
        calls[f"swap+enhance-{backend}"] = lambda data, s=enhancing: s.swap(data[0])
        if backend == "onnxruntime":
            peer = FaceSwapper.from_bundle(bundle.root, backend=backend, enhance=True, **{**options, "max_batch": 1})
            opened.append(peer)
            calls[PEERS] = _peers(plain, peer.enhancer)
            stub = _stubbed(enhancer)
            calls[f"swap+enhance-{backend}{STUBBED}"] = lambda data, s=enhancing.with_restorer(stub): s.swap(data[0])
            calls[f"{PEERS}{STUBBED}"] = _peers(plain, _stubbed(peer.enhancer))
    return calls, opened


def _peers(plain: FaceSwapper, enhancer) -> Callable:
    def peers(data):
        (faces,) = plain.detect([data[0]])
        return second_pass(plain, enhancer, plain.swap_faces([data[0]], [faces])[0].image, faces)

    return peers


def _stubbed(enhancer):
    """A copy of ``enhancer`` whose restorer returns its input (its cost left out)."""
    stub = copy.copy(enhancer)
    stub.run = lambda faces: faces
    return stub


def enhancer_comparison(
    bundle_path: Path | None,
    repeats: int,
    backends: Sequence[str] = ("onnxruntime", "openvino"),
    threads: int | None = None,
) -> dict:
    """The section's figures (module docstring) for ``bundle_path`` (None: an untrained full-size 224 bundle
    with a random-weight GFPGAN v1.4; needs torch). A given bundle needs an enhancer. ``backends``: CPU
    backends, each optionally with a precision (``openvino-bf16``: ``--backend openvino --precision bf16``)."""
    with tempfile.TemporaryDirectory() as tmp:
        if bundle_path is None:
            bundle = random_weight_enhancer(untrained_bundle(Path(tmp) / "untrained-224").root, Path(tmp))
        else:
            bundle = Bundle.load(bundle_path)
            bundle.require_enhancer()
        skipped: dict[str, str] = {}
        calls, opened = _calls(bundle, backends, threads, skipped)
        if not calls:
            raise SimswapError(f"no backend could run the enhancer benchmark: {skipped}")
        faces, size = 2, opened[-1].enhancer.size

        def make(i: int):
            frame = two_face_frame(i)
            return frame, face_tensors(frame, i, size)

        try:
            seconds = interleaved(calls, make, repeats)
        finally:
            for swapper in opened:
                swapper.close()
    return summarize(seconds, faces, skipped)


def summarize(seconds: dict[str, list[float]], faces: int, skipped: dict[str, str]) -> dict:
    """Stats per call, the restorer per face, and the speed-ups: each pipeline with the enhancer over the
    peers' order, and the enhancer's cost over the swap alone, round by round."""
    rows = {}
    for name, times in seconds.items():
        row = {"stats": Stats.of(times).to_json()}
        if name.startswith("enhancer-stage-"):
            row["per_face_s"] = Stats.of([t / faces for t in times]).to_json()
        if name.startswith("swap+enhance-"):
            stubbed = name.endswith(STUBBED)
            backend = name.removeprefix("swap+enhance-").removesuffix(STUBBED)
            peers = PEERS + STUBBED if stubbed else PEERS
            if peers in seconds:
                row["speedup_vs_peers"] = ratio_stats(seconds[peers], times).to_json()
            row["slowdown_vs_swap_only"] = ratio_stats(times, seconds[f"swap-{backend}"]).to_json()
        rows[name] = row
    return {"frame": list(FRAME_SIZE), "faces_per_frame": faces, "rows": rows, "skipped": skipped}


def print_enhancer_report(section: dict) -> None:
    print(f"\nface enhancer on a 1920x1080 frame, {section['faces_per_frame']} faces, interleaved; median [p10-p90]")
    print(f"{'call':<46}{'median s':>10}{'per face s':>12}{'vs peers':>22}{'vs swap only':>22}")
    for name, row in section["rows"].items():
        per_face = f"{row['per_face_s']['median']:.2f}" if "per_face_s" in row else "-"
        print(
            f"{name:<46}{row['stats']['median']:>10.2f}{per_face:>12}{_ratio(row.get('speedup_vs_peers')):>22}"
            f"{_ratio(row.get('slowdown_vs_swap_only')):>22}"
        )
    for name, reason in section["skipped"].items():
        print(f"skipped {name}: {reason}")


def _ratio(stats: dict | None) -> str:
    return f"{stats['median']:.2f}x [{stats['p10']:.2f}-{stats['p90']:.2f}]" if stats else "-"
