"""The host planning of the kernels' tables: what each launch reads besides frames and crops (per-frame
addresses, pitches and sizes, letterbox sizes, crop→frame matrices, paste-back regions and border masks).
The border masks depend only on the geometry and are computed on the CPU (OpenCV, exactly the official
steps) while the generator runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simswap_trt.vision.align import invert_affine
from simswap_trt.vision.detect import letterbox_size
from simswap_trt.vision.enhance import compose_affine
from simswap_trt.vision.pasteback import border_mask, face_roi


@dataclass(frozen=True)
class PasteBackBatch:
    """Everything the paste-back kernel reads besides frames and crops, for a batch of frames. Every face
    keeps its packed position (the crops are indexed by it); a face whose region lies outside its frame
    gets an empty region and is listed in ``outside``."""

    union_rois: np.ndarray  # int32 [frames, 4]: x0, y0, x1, y1 covering every face of the frame
    face_begin: np.ndarray  # int32 [frames + 1]: faces of frame f are face_begin[f]:face_begin[f + 1]
    forward: np.ndarray  # float32 [faces, 6]: frame→crop matrices
    rois: np.ndarray  # int32 [faces, 4], (0, 0, 0, 0) for faces outside their frame
    masks: np.ndarray  # float32, every face's border mask over its ROI, concatenated
    mask_offsets: np.ndarray  # int64 [faces]
    outside: tuple[int, ...]  # packed positions of the faces outside their frame (nothing to paste)


def pack_pasteback(
    frame_shapes: Sequence[tuple[int, ...]],
    matrices: Sequence[Sequence[np.ndarray]],
    crop_size: int,
    sampled: Sequence[Sequence[np.ndarray]] | None = None,
) -> PasteBackBatch:
    """Regions, masks and matrices of ``matrices[f]`` (the faces of frame f, in paste order). ``sampled``: the
    frame→crop matrices the pasted crops are read through when they are not the crops that place the faces
    (enhanced faces: read in the enhancer's crop, placed by their swap's region and border mask)."""
    union_rois, face_begin, forward, rois, masks, offsets, outside = [], [0], [], [], [], [], []
    offset = 0
    for shape, faces, reads in zip(frame_shapes, matrices, sampled or matrices, strict=True):
        placed = []
        for matrix, read in zip(faces, reads, strict=True):
            roi = face_roi(matrix, crop_size, shape)
            if roi is None:
                outside.append(len(forward))
            else:
                mask = border_mask(matrix, crop_size, roi)
                masks.append(mask.ravel())
                placed.append(roi)
            forward.append(np.asarray(read, np.float32).reshape(6))
            rois.append(roi or (0, 0, 0, 0))
            offsets.append(offset)
            offset += mask.size if roi else 0
        face_begin.append(face_begin[-1] + len(faces))
        if placed:
            r = np.array(placed)
            union_rois.append([r[:, 0].min(), r[:, 1].min(), r[:, 2].max(), r[:, 3].max()])
        else:
            union_rois.append([0, 0, 0, 0])
    return PasteBackBatch(
        union_rois=np.array(union_rois, np.int32).reshape(-1, 4),
        face_begin=np.array(face_begin, np.int32),
        forward=np.array(forward, np.float32).reshape(-1, 6),
        rois=np.array(rois, np.int32).reshape(-1, 4),
        masks=np.concatenate(masks).astype(np.float32) if masks else np.zeros(1, np.float32),
        mask_offsets=np.array(offsets, np.int64),
        outside=tuple(outside),
    )


def frames_with_faces(
    images: Sequence[np.ndarray], faces: Sequence[tuple[int, np.ndarray]]
) -> tuple[list[int], list[np.ndarray], np.ndarray]:
    """Only frames with faces are used: their image indices, the frames (contiguous), and each face's frame
    position among them."""
    used = sorted({i for i, _ in faces})
    position = {image: k for k, image in enumerate(used)}
    frames = [np.ascontiguousarray(images[i]) for i in used]
    return used, frames, np.array([position[i] for i, _ in faces], np.int32)


def crop_to_frame_matrices(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """float32 [faces, 6] crop→frame matrices for the preprocessing kernel."""
    return np.array([invert_affine(np.asarray(m, np.float64)).reshape(6) for m in matrices], np.float32)


def enhancer_matrices(generator: Sequence[np.ndarray], enhancer: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The enhancer-input kernel's per-face matrices by field name of ``EnhancerTables``: each face's enhancer
    crop→frame matrix and enhancer crop→generator crop matrix (the inverse of the composed map
    ``simswap_trt.vision.enhance.compose_affine(E, G⁻¹)``), from its frame→generator-crop matrix ``G`` and
    frame→enhancer-crop matrix ``E``."""
    to_swap = [
        invert_affine(compose_affine(np.asarray(e, np.float64), invert_affine(np.asarray(g, np.float64))))
        for g, e in zip(generator, enhancer, strict=True)
    ]
    return {
        "enhancer_inverse": crop_to_frame_matrices(enhancer),
        "to_swap": np.array([m.reshape(6) for m in to_swap], np.float32).reshape(-1, 6),
    }


def frame_tables(frames: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The kernels' per-frame tables of ``frames`` by field name (``PreprocessTables``, ``LetterboxTables``):
    device addresses (zeros, for the caller to fill once the frames are placed), row pitches, widths and
    heights."""
    return {
        "frames": np.zeros(len(frames), np.uint64),
        "pitches": np.array([f.strides[0] for f in frames], np.int32),
        "widths": np.array([f.shape[1] for f in frames], np.int32),
        "heights": np.array([f.shape[0] for f in frames], np.int32),
    }


def preprocess_tables(
    frames: Sequence[np.ndarray], frame_of_face: np.ndarray, inverse: np.ndarray
) -> dict[str, np.ndarray]:
    """The preprocessing kernel's tables by field name of ``PreprocessTables``: face k is sampled from
    ``frames[frame_of_face[k]]`` through the crop→frame matrix ``inverse[k]`` (``crop_to_frame_matrices``)."""
    return {**frame_tables(frames), "frame_of_face": frame_of_face.astype(np.int32), "inverse": inverse}


def pasteback_tables(batch: PasteBackBatch, crops: np.ndarray) -> dict[str, np.ndarray]:
    """The paste-back kernel's tables of ``batch`` by field name of ``PasteBackTables``, but the frames' (those
    of the preprocessing); ``crops``: uint64 [faces], each face's generator output address, in paste order.
    The masks, whose size changes with every batch, come last: placed in this order, the other tables keep
    their addresses from batch to batch (graphs replay them)."""
    return {
        "union_rois": batch.union_rois,
        "face_begin": batch.face_begin,
        "crops": crops,
        "forward": batch.forward,
        "rois": batch.rois,
        "mask_offsets": batch.mask_offsets,
        "masks": batch.masks,
    }


def letterbox_tables(frames: Sequence[np.ndarray], canvas: int) -> dict[str, np.ndarray]:
    """The letterbox kernel's tables by field name of ``LetterboxTables``: ``frame_tables`` and each frame's
    resized (width, height) on the ``canvas`` and its source / resized size ratios (x, y)."""
    sizes = [letterbox_size(f.shape, canvas) for f in frames]  # (height, width)
    scales = [(f.shape[1] / w, f.shape[0] / h) for f, (h, w) in zip(frames, sizes, strict=True)]
    resized = np.array([(w, h) for h, w in sizes], np.int32)
    return {**frame_tables(frames), "resized": resized, "scales": np.array(scales, np.float32)}
