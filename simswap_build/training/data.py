"""Training faces: found, detected and aligned by the runtime's own pipeline (CenterFace, the bundle's
alignment templates, the same warp), cached on disk, and drawn as (target, source) pairs.

Input is a folder with one sub-folder of photos per identity, or a list file whose lines are
``IDENTITY<TAB>PATH`` (relative paths are relative to the list file). The largest face of each photo is
kept when the region the aligned crop covers in the photo is at least ``min_face`` pixels wide, so that
no crop is an upsampled small face (the paper keeps images of at least 250×250).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from simswap_trt.errors import InputError
from simswap_trt.files import write_atomic_with
from simswap_trt.images import list_images, read_image
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.detect import CenterFace
from simswap_trt.vision.warp import warp_faces

log = logging.getLogger(__name__)

DEFAULT_MIN_FACE = 250
CACHE_VERSION = 1


@dataclass(frozen=True)
class FaceSet:
    """Aligned uint8 BGR crops [N,S,S,3] (memory-mapped when read from the cache), each crop's identity
    index, the identity names and each crop's source file."""

    crops: np.ndarray
    identities: np.ndarray
    names: tuple[str, ...]
    files: tuple[str, ...]

    def __post_init__(self) -> None:
        counts = np.bincount(self.identities, minlength=len(self.names))
        if len(self.names) < 2 or (counts > 0).sum() < 2:
            raise InputError(
                f"training needs faces of at least 2 identities, found {int((counts > 0).sum())}; "
                "give one sub-folder of photos per person"
            )


def list_sources(data: Path) -> list[tuple[str, Path]]:
    """(identity, image path) pairs from a folder of identity folders or from a list file, in a fixed order."""
    data = Path(data)
    if data.is_dir():
        folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
        sources = [(folder.name, path) for folder in folders for path in list_images(folder)]
    elif data.is_file():
        sources = []
        for number, line in enumerate(data.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            identity, sep, path = line.partition("\t")
            if not sep or not identity or not path:
                raise InputError(f"{data}:{number}: expected 'IDENTITY<TAB>PATH', got {line!r}")
            sources.append((identity, (data.parent / path).resolve()))
    else:
        raise InputError(f"training data not found: {data} (a folder of identity folders or a list file)")
    if not sources:
        raise InputError(f"no images in {data}: expected one sub-folder of photos per identity")
    return sources


def face_footprint(matrix: np.ndarray, crop_size: int) -> float:
    """Width in photo pixels of the region an aligned crop covers (crop size over the warp's scale)."""
    return crop_size / float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def _cache_key(sources: Sequence[tuple[str, Path]], crop_size: int, alignment: str, min_face: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}:{crop_size}:{alignment}:{min_face}:centerface".encode())
    for identity, path in sources:
        stat = path.stat() if path.is_file() else None
        digest.update(f"{identity}\0{path.resolve()}\0{stat and stat.st_size}\0{stat and stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def prepare_faces(
    data: Path,
    cache_dir: Path,
    crop_size: int,
    alignment: str,
    min_face: int = DEFAULT_MIN_FACE,
    progress: bool = True,
) -> FaceSet:
    """Detect, filter and align the training faces once; later calls with the same files and settings
    read the cache in ``cache_dir``."""
    sources = list_sources(data)
    cache_dir = Path(cache_dir)
    key = _cache_key(sources, crop_size, alignment, min_face)
    crops_path, meta_path = cache_dir / f"faces-{key}.npy", cache_dir / f"faces-{key}.json"
    if crops_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        log.info("training faces from cache %s (%d crops)", crops_path, len(meta["identities"]))
        return FaceSet(
            np.load(crops_path, mmap_mode="r"),
            np.asarray(meta["identities"], np.int64),
            tuple(meta["names"]),
            tuple(meta["files"]),
        )
    names = sorted({identity for identity, _ in sources})
    crops, identities, files, dropped = _align_faces(sources, names, crop_size, alignment, min_face, progress)
    if not crops:
        raise InputError(f"no usable face in the {len(sources)} image(s) of {data} (min face {min_face} px)")
    faces = FaceSet(np.stack(crops), np.asarray(identities, np.int64), tuple(names), tuple(files))
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_atomic_with(crops_path, lambda f: np.save(f, faces.crops))
    meta = {"identities": identities, "names": names, "files": files, "dropped": dropped}
    write_atomic_with(meta_path, lambda f: f.write(json.dumps(meta).encode()))
    return faces


def _align_faces(
    sources: list[tuple[str, Path]], names: list[str], crop_size: int, alignment: str, min_face: int, progress: bool
) -> tuple[list[np.ndarray], list[int], list[str], dict[str, int]]:
    """The aligned crop of the largest face of each source photo, its identity's index in ``names`` and its
    file; photos unreadable, without a face or with a face narrower than ``min_face`` are counted and dropped."""
    detector = CenterFace()
    index = {name: i for i, name in enumerate(names)}
    crops, identities, files = [], [], []
    dropped = {"unreadable": 0, "no face": 0, "too small": 0}
    for identity, path in tqdm(sources, desc="training faces", unit="image", disable=not progress):
        try:
            image = read_image(path)
        except InputError as exc:
            log.warning("skipping %s", exc)
            dropped["unreadable"] += 1
            continue
        faces = detector.detect(image)
        if not faces:
            dropped["no face"] += 1
            continue
        matrix = alignment_matrix(max(faces, key=lambda d: d.area).landmarks, alignment, crop_size)
        if face_footprint(matrix, crop_size) < min_face:
            dropped["too small"] += 1
            continue
        crops.append(warp_faces([image], [(0, matrix)], crop_size)[0])
        identities.append(index[identity])
        files.append(str(path))
    log.info(
        "training faces: %d kept of %d images (dropped: %s)",
        len(crops),
        len(sources),
        ", ".join(f"{n} {reason}" for reason, n in dropped.items()),
    )
    return crops, identities, files, dropped


class PairSampler:
    """Batches of (target, source) crop indices. Same-identity batches take the source from another photo
    of the target's person (the same photo when there is only one); different-identity batches take it
    from a different person."""

    def __init__(self, faces: FaceSet) -> None:
        self.identities = faces.identities
        self.members = [np.flatnonzero(faces.identities == i) for i in range(len(faces.names))]
        self.present = np.asarray([i for i, m in enumerate(self.members) if len(m)])

    def sample(self, rng: np.random.Generator, batch_size: int, same_identity: bool) -> tuple[np.ndarray, np.ndarray]:
        targets = rng.integers(0, len(self.identities), batch_size)
        sources = np.empty_like(targets)
        for b, t in enumerate(targets):
            person = self.identities[t]
            if same_identity:
                others = self.members[person][self.members[person] != t]
                sources[b] = rng.choice(others) if len(others) else t
            else:
                other_person = rng.choice(self.present[self.present != person])
                sources[b] = rng.choice(self.members[other_person])
        return targets, sources
