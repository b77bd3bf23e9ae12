"""Swapping a large set of images and videos over a Ray cluster with Ray Data.

The driver computes the source identity once and lists the work; finished outputs are left out before Ray
starts, so a rerun only does what is missing. Ray Data feeds batches of file names to a pool of actors,
each holding one ``FaceSwapper`` (on one GPU with ``gpus_per_actor=1``). An actor reads, swaps and
writes each item (atomically: a temporary file, then a rename or move) and answers one report per item, so a
failed item is reported and does not fail the job. Paths may be local (shared by the cluster's nodes) or
URIs that pyarrow's filesystems open (``s3://``, ``gs://``, ``file://``...). Videos (``VIDEO_SUFFIXES``) are
swapped by the actor's swapper with ``simswap_trt.video.swap_video``, one whole video per item; they need
local (shared) paths, since PyAV reads files, and the ``video`` extra.

Local outputs are checked before Ray starts (never an input, a folder that can be written), so a bad
output folder is one error, not one failure per item. Ctrl-C or SIGTERM stops the job; the temporaries of
the outputs being written are deleted (those of actors on other nodes by the next run there).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from simswap_trt.errors import ConfigError, InputError, OutputError, SimswapError
from simswap_trt.files import (
    Inputs,
    check_output,
    host_temporaries,
    remove_stale_temporaries,
    terminate_as_interrupt,
    write_atomic,
)
from simswap_trt.images import IMAGE_SUFFIXES, MAX_PIXELS, decode_image, encode_image, list_images
from simswap_trt.provenance.signing import Provenance, Signer
from simswap_trt.selection import DEFAULT_MATCH_THRESHOLD
from simswap_trt.vision.enhance import DEFAULT_ENHANCE_BLEND

log = logging.getLogger(__name__)

STATUSES = ("written", "skipped", "failed", "done before")
# containers FFmpeg reads; the output keeps the input's name and container (encoded H.264, WebM as VP9/AV1,
# like 'simswap-trt video')
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
INPUT_SUFFIXES = (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES)


@dataclass(frozen=True)
class JobOptions:
    """How the job runs. ``gpus_per_actor`` None: 1 when the cluster has GPUs, else 0 (logged)."""

    actors: int = 2
    batch: int = 8  # items per actor call (and the swapper's max batch)
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    threads: int | None = None  # ONNX Runtime threads per actor (default: the CPUs it may use)
    backend: str = "auto"
    precision: str | None = None  # which of the bundle's graphs (default: FP32 on ONNX Runtime)
    select: str = "all"
    threshold: float = DEFAULT_MATCH_THRESHOLD
    copy_unchanged: bool = False
    synthetic_tag: bool = True
    signer: Signer | None = None  # sign a C2PA manifest into each output (simswap_trt.provenance)
    sources: tuple[str, ...] = ()  # sha256 of the source photos, recorded in the manifests (--credit-source)
    overwrite: bool = False
    max_pixels: int = MAX_PIXELS  # images' and video frames' limit
    crf: int = 18  # quality of the video outputs, as 'simswap-trt video --crf' (libx264: 0 lossless to 51)
    codec: str | None = None  # video encoder (None: libx264; WebM: VP9 or AV1)
    enhance: bool = False  # restore each swapped face with the bundle's enhancer (simswap_trt.vision.enhance)
    enhance_blend: float = DEFAULT_ENHANCE_BLEND  # share of the restored face, 0-1


@dataclass(frozen=True)
class ItemReport:
    """What happened to one input: ``status`` is one of ``STATUSES``; ``message`` says why for the others.
    ``faces_swapped``: faces swapped in an image, frames with a swapped face in a video."""

    source: str
    output: str
    status: str
    message: str = ""
    faces_swapped: int = 0


def is_uri(path: str) -> bool:
    return "://" in path


def _fs(uri: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)


def read_bytes(path: str) -> bytes:
    if not is_uri(path):
        return Path(path).read_bytes()
    filesystem, inner = _fs(path)
    with filesystem.open_input_stream(inner) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Atomic: readers see the old object or the whole new one, never a partial file."""
    if not is_uri(path):
        write_atomic(path, data)
        return
    filesystem, inner = _fs(path)
    parent, name = inner.rsplit("/", 1)
    filesystem.create_dir(parent, recursive=True)
    temporary = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    with filesystem.open_output_stream(temporary) as f:
        f.write(data)
    filesystem.move(temporary, inner)


def exists(path: str) -> bool:
    if not is_uri(path):
        return Path(path).exists()
    from pyarrow import fs

    filesystem, inner = _fs(path)
    return filesystem.get_file_info(inner).type != fs.FileType.NotFound


def is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def list_inputs(folder: str) -> list[str]:
    """The images and videos directly inside a folder or URI prefix, sorted by name."""
    if not is_uri(folder):
        return [str(p) for p in list_images(Path(folder), INPUT_SUFFIXES)]
    from pyarrow import fs

    filesystem, inner = _fs(folder)
    scheme = folder.split("://", 1)[0]
    infos = filesystem.get_file_info(fs.FileSelector(inner))
    found = [i.path for i in infos if i.type == fs.FileType.File and Path(i.path).suffix.lower() in INPUT_SUFFIXES]
    return [f"{scheme}://{p}" for p in sorted(found)]


def output_for(source: str, output_folder: str) -> str:
    return f"{output_folder.rstrip('/')}/{source.rsplit('/', 1)[-1]}"


def assigned_device(gpu_ids: Sequence, visible: str | None) -> int | None:
    """The CUDA device id, in this process, of the first GPU Ray assigned to the actor (``ray.get_gpu_ids()``),
    given ``CUDA_VISIBLE_DEVICES`` (Ray sets it to the assigned GPUs, so this is usually 0); None without one."""
    if not gpu_ids:
        return None
    if visible is None:
        return int(gpu_ids[0])
    names = [name.strip() for name in visible.split(",")]
    return names.index(str(gpu_ids[0])) if str(gpu_ids[0]) in names else 0


class SwapActor:
    """One Ray actor: one ``FaceSwapper`` (on the GPU Ray assigned to it, if any); called with batches of
    ``source``/``output`` columns."""

    def __init__(self, bundle: str, latent: np.ndarray, options: dict, reference: np.ndarray | None = None) -> None:
        import ray

        from simswap_trt.swapper import FaceSwapper

        self.options = JobOptions(**options)
        o = self.options
        gpu_ids = ray.get_gpu_ids() if o.backend in ("auto", "tensorrt") else []  # the CPU backends
        device = assigned_device(gpu_ids, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if device is not None:
            log.info("actor on GPU %s (CUDA device %d in this process)", gpu_ids[0], device)
        self.swapper = FaceSwapper.from_bundle(
            bundle,
            threads=o.threads,
            max_batch=o.batch,
            backend=o.backend,
            precision=o.precision,
            device=device,
            enhance=o.enhance,
            enhance_blend=o.enhance_blend,
        )
        self.swapper.source_latent = np.asarray(latent, np.float32)
        self.provenance = Provenance(o.synthetic_tag, o.signer, sources=tuple(o.sources)).with_models(self.swapper)
        if reference is not None:
            self.swapper.reference_latent = np.asarray(reference, np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        o = self.options
        sources, outputs = [str(s) for s in batch["source"]], [str(s) for s in batch["output"]]
        status, message, swapped = ["failed"] * len(sources), [""] * len(sources), [0] * len(sources)
        images, readable, encoded = [], [], {}
        for k, source in enumerate(sources):
            if is_video(source):
                status[k], message[k], swapped[k] = self._video(source, outputs[k])
                continue
            try:
                encoded[k] = read_bytes(source)
                images.append(decode_image(encoded[k], source, o.max_pixels))
                readable.append(k)
            except (InputError, OSError) as exc:
                message[k] = str(exc)
        results = self.swapper.swap_batch(images, o.select, o.threshold) if images else []
        for k, result in zip(readable, results, strict=True):
            if not result.swapped_count and not o.copy_unchanged:
                status[k], message[k] = "skipped", f"{len(result.faces)} face(s), none selected"
                continue
            try:
                suffix = Path(outputs[k]).suffix or ".png"
                data = encode_image(result.image, suffix, o.synthetic_tag and result.swapped_count > 0)
                if result.swapped_count:
                    data = self.provenance.sign_image(data, suffix, encoded[k], outputs[k])
                write_bytes(outputs[k], data)
                status[k], swapped[k] = "written", result.swapped_count
            except (InputError, OutputError, OSError) as exc:
                message[k] = f"{outputs[k]}: {exc}"
        return {
            "source": np.array(sources, dtype=object),
            "output": np.array(outputs, dtype=object),
            "status": np.array(status, dtype=object),
            "message": np.array(message, dtype=object),
            "faces_swapped": np.array(swapped, np.int64),
        }

    def _video(self, source: str, output: str) -> tuple[str, str, int]:
        """Status, message and frames with a swapped face for one video."""
        o = self.options
        if is_uri(source) or is_uri(output):
            return "failed", "videos need local or shared paths (PyAV reads files), not URIs", 0
        from simswap_trt.video import VideoOptions, swap_video

        try:
            report = swap_video(
                self.swapper,
                source,
                output,
                VideoOptions(o.select, o.threshold, batch=o.batch),
                codec=o.codec,
                crf=o.crf,
                overwrite=o.overwrite,
                provenance=self.provenance,
                max_pixels=o.max_pixels,
            )
        except (SimswapError, OSError) as exc:  # SimswapError: also a missing 'video' extra (PyAV)
            return "failed", str(exc), 0
        if not report.frames_swapped and not o.copy_unchanged:
            Path(output).unlink()
            return "skipped", f"{report.frames} frame(s), no face selected in any", 0
        notes = [f"{report.damaged} damaged packet(s) skipped"] if report.damaged else []
        if report.frames_missing:
            notes.append(f"{report.frames} of {report.frames_declared} declared frames could be read (truncated)")
        return "written", "; ".join(notes), report.frames_swapped


def run_job(
    bundle: str | Path,
    latent: np.ndarray,
    pairs: Sequence[tuple[str, str]],
    options: JobOptions = JobOptions(),
    address: str | None = None,
    reference: np.ndarray | None = None,
) -> list[ItemReport]:
    """Swap ``latent`` onto every ``(source, output)`` pair whose output does not exist yet (all of them
    with ``overwrite``); returns one report per pair, in order. ``reference``: the identity latent that
    ``select="reference"`` matches faces against (``FaceSwapper.set_reference``). Local outputs are
    checked first (``OutputError`` for one that is an input or cannot be written; ``ConfigError`` for video
    settings no output can use), before Ray starts. Connects to the Ray cluster at ``address`` (None:
    ``RAY_ADDRESS`` or a new local cluster) unless Ray is already initialised."""
    if options.select == "reference" and reference is None:
        raise ConfigError('select="reference" needs a reference latent (--reference photos)')
    check_outputs(pairs, options)
    todo = [(s, o) for s, o in pairs if options.overwrite or not exists(o)]
    reports = {(s, o): ItemReport(s, o, "done before") for s, o in pairs}
    if todo:
        for row in _run_ray(str(bundle), latent, reference, todo, options, address):
            key = (row["source"], row["output"])
            reports[key] = ItemReport(*key, row["status"], row["message"], int(row["faces_swapped"]))
    return [reports[(s, o)] for s, o in pairs]


def check_outputs(pairs: Sequence[tuple[str, str]], options: JobOptions) -> None:
    """What ``run_job`` checks before any work, for a caller to check before it loads models: no output is
    an input (by path, or for local files by identity), every local output's folder can be written, and the
    video encoder settings fit each video output's container."""

    def where(path: str) -> str:
        return path if is_uri(path) else str(Path(path).resolve())

    inputs = {where(s) for s, _ in pairs}
    local = Inputs(s for s, _ in pairs if not is_uri(s))
    checked_folders, checked_suffixes = set(), set()
    for source, output in pairs:
        if where(output) in inputs:
            raise OutputError(f"{output} is also an input: inputs are never overwritten")
        if is_uri(output):
            continue
        folder = Path(output).parent
        if folder not in checked_folders or output in local:
            check_output(output, local, overwrite=True)  # raises for an input or an unwritable folder
            checked_folders.add(folder)
        suffix = Path(output).suffix.lower()
        if is_video(source) and suffix not in checked_suffixes:
            from simswap_trt.video.io import av

            if av is not None:  # without PyAV each video item fails with how to install it
                from simswap_trt.video.pipeline import check_encoding

                check_encoding(output, options.codec, options.crf)
            checked_suffixes.add(suffix)


def _actor_count(ray, options: JobOptions, gpus: float) -> int:
    """``options.actors``, or as many as the cluster's CPUs and GPUs hold at once (said in a warning)."""
    resources = ray.cluster_resources()
    cpus, gpus_total = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    fit = options.actors
    if options.cpus_per_actor > 0:
        fit = min(fit, int(cpus // options.cpus_per_actor))
    if gpus > 0:
        fit = min(fit, int(gpus_total // gpus))
    if fit < 1:
        raise ConfigError(
            f"no actor fits the Ray cluster ({cpus:g} CPU(s), {gpus_total:g} GPU(s)) with "
            f"{options.cpus_per_actor:g} CPU(s) and {gpus:g} GPU(s) per actor"
        )
    if fit < options.actors:
        log.warning(
            "%d actors asked, but the Ray cluster has %g CPU(s) and %g GPU(s) for %g CPU(s) and %g GPU(s) each: "
            "running %d actor(s)",
            options.actors,
            cpus,
            gpus_total,
            options.cpus_per_actor,
            gpus,
            fit,
        )
    return fit


def _run_ray(bundle: str, latent, reference, todo, options: JobOptions, address: str | None) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise SimswapError("the Ray batch job needs Ray Data: pip install 'simswap-trt[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        with terminate_as_interrupt():  # ray.init replaces the SIGTERM handler with an exit
            return _map(ray, bundle, latent, reference, todo, options)
    except BaseException:
        if started:
            ray.shutdown()  # stops the actors
        _remove_temporaries([o for _, o in todo if not is_uri(o)])
        raise


def _map(ray, bundle: str, latent, reference, todo, options: JobOptions) -> list[dict]:
    gpus = options.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    actors = min(_actor_count(ray, options, gpus), len(todo))  # an actor without an item would idle
    log.info(
        "Ray job: %d item(s), %d actor(s) with %g GPU and %g CPU each", len(todo), actors, gpus, options.cpus_per_actor
    )
    dataset = ray.data.from_items([{"source": s, "output": o} for s, o in todo])
    swapped = dataset.map_batches(
        SwapActor,
        fn_constructor_kwargs={"bundle": bundle, "latent": latent, "options": asdict(options), "reference": reference},
        batch_size=max(1, min(options.batch, -(-len(todo) // actors))),  # every actor gets items
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=gpus,
        num_cpus=options.cpus_per_actor,
    )
    return swapped.take_all()


def _remove_temporaries(outputs: Sequence[str], wait: float = 10.0) -> None:
    """Delete the temporaries that this host's stopped actors left next to ``outputs``, waiting up to
    ``wait`` seconds for the actors to exit."""
    import time

    deadline = time.monotonic() + wait
    pending = {Path(o).parent for o in outputs}
    while pending:
        for folder in pending:
            remove_stale_temporaries(folder)
        pending = {folder for folder in pending if host_temporaries(folder)}
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(0.2)
