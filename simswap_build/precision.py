"""Precision recipes: FP16 and INT8 (Q/DQ) variants of a bundle's FP32 graphs, written as ONNX so that
TensorRT 10.3 and 11.x (strongly typed) take the precision from the graph, and so that ONNX Runtime can
check it on a CPU.

* FP16 (onnxconverter-common's float16 converter): convolutions, their weights and the activations
  between them in FP16; the instance norms, the identity-injection (style) arithmetic, the input
  normalisation and the latent's L2 normalisation stay FP32 behind Cast nodes (eps 1e-8 is 0 in FP16 and
  the mean of squares can overflow). Graph inputs and outputs stay FP32, so every precision has one
  contract.
* INT8 (ONNX Runtime ``quantize_static``, QDQ format): symmetric INT8 activations and per-channel INT8
  weights with zero points 0, only around Conv (what TensorRT fuses), calibrated on aligned faces from the
  user's images; the style Gemms and everything else stay FP32. A sensitivity pass measures, for each
  quantized convolution, how many dB of signal-to-quantization-noise ratio are lost between its input and
  its output, and keeps the convolutions that lose most in FP32.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from simswap_trt.errors import BuildError, ConfigError, InputError

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")
# Convolutions left in FP32 by the INT8 recipe, per role: measured on IR-SE-101 / G224 with BatchNorm
# statistics from real faces, the fewest that reach the goals (generator >= 35 dB, ArcFace cosine >= 0.98).
DEFAULT_KEEP_FP32 = {"generator": 4, "arcface": 20}


def fp32_islands(model: onnx.ModelProto) -> list[str]:
    """Nodes kept in FP32 by the FP16 recipe (names from the graph writer)."""
    keep = ("InstanceNormalization",)
    markers = (".style", "normalize.", "denormalize.", "l2norm.", "subsample.")
    return [n.name for n in model.graph.node if n.op_type in keep or any(m in n.name for m in markers)]


def fp16_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The FP16 variant of an FP32 graph written by ``onnx_graphs`` (FP32 I/O, FP32 islands)."""
    from onnxconverter_common import float16

    with warnings.catch_warnings(record=True) as clamped:  # one warning per weight below FP16's range
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=fp32_islands(model))
    if clamped:
        log.info("FP16: %d weights of magnitude < 1e-7 were set to +-1e-7 by the converter", len(clamped))
    onnx.checker.check_model(converted)
    return converted


# -- calibration ----------------------------------------------------------------------------------------


def calibration_crops(
    folder: Path, alignment: str, crop_size: int, limit: int = 64, cache_dir: Path | None = None
) -> np.ndarray:
    """Aligned uint8 BGR crops of the largest face in each image of ``folder`` (sorted by name), detected
    and aligned by the runtime's own pipeline. Deterministic for the same files; cached by their content."""
    from tqdm import tqdm

    from simswap_trt.images import list_images, read_image
    from simswap_trt.vision.detect import CenterFace
    from simswap_trt.vision.warp import largest_face_crop

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"calibration folder not found: {folder}")
    files = list_images(folder)[:limit]
    if not files:
        raise InputError(f"no images in the calibration folder {folder}")
    digest = hashlib.sha256(f"{alignment}:{crop_size}".encode())
    for path in files:
        digest.update(path.read_bytes())
    cache = (cache_dir or folder) / f".simswap-calibration-{digest.hexdigest()[:16]}.npz"
    if cache.is_file():
        log.info("calibration crops from cache %s", cache)
        return np.load(cache)["crops"]
    detector = CenterFace()
    crops = []
    for path in tqdm(files, desc="calibration faces", unit="image"):
        try:
            image = read_image(path)
        except InputError as exc:
            log.warning("calibration: skipping %s", exc)
            continue
        faces = detector.detect(image)
        if not faces:
            log.warning("calibration: no face in %s", path.name)
            continue
        crops.append(largest_face_crop(image, faces, alignment, crop_size))
    if not crops:
        raise InputError(f"no usable face in the {len(files)} calibration image(s) of {folder}")
    stacked = np.stack(crops)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, crops=stacked)
    return stacked


def _calibration_feeds(role: str, crops: np.ndarray, latent: np.ndarray | None) -> list[dict[str, np.ndarray]]:
    from simswap_trt.preprocess import crops_to_tensor

    tensor = crops_to_tensor(crops, crops.shape[1])
    if role == "arcface":
        return [{"crop": tensor[i : i + 1]} for i in range(len(tensor))]
    return [{"target": tensor[i : i + 1], "latent": latent[i : i + 1]} for i in range(len(tensor))]


# -- INT8 -------------------------------------------------------------------------------------------------


def _quantize(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], exclude: Sequence[str]) -> onnx.ModelProto:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, source)
        quantize_static(
            str(source),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "AddQDQPairToWeight": True,
                "QDQOpTypePerChannelSupportToAxis": {"Conv": 0},
            },
        )
        return onnx.load(target)


def conv_sensitivity(
    fp32: onnx.ModelProto, int8: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]
) -> dict[str, dict[str, float]]:
    """For every convolution ``int8`` quantized: the SQNR (dB) of its output against the FP32 graph, and
    the SQNR it loses between its input and its output (``loss_db``): the noise the layer itself adds
    or amplifies. Q/DQ run as written (graph optimizations off: fake quantization)."""
    import onnxruntime as ort

    convs = {n.name: n for n in int8.graph.node if n.op_type == "Conv"}
    quantized = [
        n for n in fp32.graph.node if n.op_type == "Conv" and n.name in convs and convs[n.name].input[0] != n.input[0]
    ]  # the int8 graph feeds it through Q/DQ
    tensors = {n.name: (n.input[0], convs[n.name].input[0], n.output[0]) for n in quantized}
    runs = []
    for index, model in enumerate((fp32, int8)):
        exposed = onnx.ModelProto()
        exposed.CopyFrom(model)
        wanted = {t[index] for t in tensors.values()} | {t[2] for t in tensors.values()}
        exposed.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in wanted)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        runs.append([dict(zip(names, session.run(None, f), strict=True)) for f in feeds])

    def sqnr(reference_name: str, test_name: str) -> float:
        signal = sum(float(np.sum(r[reference_name].astype(np.float64) ** 2)) for r in runs[0])
        noise = sum(
            float(np.sum((r[reference_name].astype(np.float64) - q[test_name]) ** 2))
            for r, q in zip(*runs, strict=True)
        )
        return 10 * np.log10(signal / max(noise, 1e-30))

    out = {}
    for name, (fp32_in, int8_in, output) in tensors.items():
        at_output = sqnr(output, output)
        out[name] = {"sqnr_db": at_output, "loss_db": sqnr(fp32_in, int8_in) - at_output}
    return out


def int8_graph(
    model: onnx.ModelProto,
    role: str,
    crops: np.ndarray,
    latents: np.ndarray | None = None,
    keep_fp32: int = 4,
) -> tuple[onnx.ModelProto, dict[str, dict[str, float]]]:
    """The INT8 Q/DQ variant of ``model`` calibrated on aligned ``crops`` (and, for the generator, the
    identity ``latents`` paired with them); the ``keep_fp32`` convolutions that lose the most SQNR are left in
    FP32. Returns the graph and the per-layer sensitivity of the first, all-INT8 pass."""
    if len(crops) == 0:
        raise InputError("INT8 calibration needs at least one face crop")
    if role == "generator" and (latents is None or len(latents) != len(crops)):
        raise BuildError("generator calibration needs one identity latent per crop")
    feeds = _calibration_feeds(role, crops, latents)
    first = _quantize(model, feeds, exclude=[])
    sensitivity = conv_sensitivity(model, first, feeds[: min(len(feeds), 8)])
    worst = sorted(sensitivity, key=lambda name: -sensitivity[name]["loss_db"])[:keep_fp32]
    if worst:
        log.info(
            "INT8 %s: keeping %s in FP32 (they lose %s dB)",
            role,
            worst,
            [round(sensitivity[w]["loss_db"], 1) for w in worst],
        )
    final = _quantize(model, feeds, exclude=worst) if worst else first
    final.metadata_props.add(key="simswap_trt.fp32_layers", value=",".join(worst))
    return final, sensitivity


# -- bundle integration -------------------------------------------------------------------------------------


def _rotated_latents(bundle_root: Path, crops: np.ndarray) -> np.ndarray:
    """Each crop's FP32 ArcFace latent, shifted by one: target i gets identity i+1, a real swap pairing."""
    from simswap_trt.backends import open_engine
    from simswap_trt.bundle import Bundle
    from simswap_trt.preprocess import crops_to_tensor

    arcface = open_engine(Bundle.load(bundle_root), "arcface", "onnxruntime")
    latents = arcface.run({"crop": crops_to_tensor(crops, crops.shape[1])})["latent"]
    return np.roll(latents, -1, axis=0)


def add_precisions(
    bundle_root: str | Path,
    calibration_folder: Path | None,
    precisions: Sequence[str] = PRECISIONS,
    keep_fp32: Mapping[str, int] = DEFAULT_KEEP_FP32,
) -> dict[str, dict[str, dict[str, float]]]:
    """Write the FP16 / INT8 variants of both graphs into the bundle and register them in its manifest.
    Returns the INT8 sensitivity (per-layer SQNR, dB) by role."""
    from simswap_build.engine_builder import register_variants
    from simswap_trt.bundle import Bundle

    bundle = Bundle.load(bundle_root)
    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        raise ConfigError(f"unknown precision(s) {sorted(unknown)}; choose from {', '.join(PRECISIONS)}")
    crops = latents = None
    if "int8" in precisions:
        if calibration_folder is None:
            raise InputError("INT8 needs calibration images: pass --images FOLDER (photos with faces)")
        crops = calibration_crops(calibration_folder, bundle.alignment, bundle.crop_size, cache_dir=bundle.root)
        latents = _rotated_latents(bundle.root, crops)
    graphs, sensitivity = {}, {}
    for role in ("generator", "arcface"):
        fp32 = onnx.load(bundle.path_of(role))
        for precision in precisions:
            if precision == "fp16":
                graphs[(role, precision)] = fp16_graph(fp32)
            else:
                graphs[(role, precision)], sensitivity[role] = int8_graph(fp32, role, crops, latents, keep_fp32[role])
    calibration = {"faces": len(crops), "folder": str(calibration_folder)} if crops is not None else {}
    register_variants(bundle, graphs, calibration)
    return sensitivity
