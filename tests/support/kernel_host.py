"""The kernels' host build driven through ctypes (the ``host`` fixture of support/kernel_build.py), with the
frames, faces and normalisations the kernel tests and their GPU twins share."""

import ctypes

import numpy as np

from simswap_trt.device.tables import (
    crop_to_frame_matrices,
    frame_tables,
    letterbox_tables,
    pack_pasteback,
    pasteback_tables,
    preprocess_tables,
)
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.detect import CenterFace, Scrfd

FRONTAL = np.array([[39.73, 51.14], [72.27, 51.14], [56.0, 68.49], [42.46, 87.01], [69.54, 87.01]])


def ptr(array, kind=ctypes.c_void_p):
    return array.ctypes.data_as(kind)


def pointer_array(arrays):
    return (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])


def face_matrix(center, size, angle_deg, crop=224):
    angle = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return alignment_matrix((FRONTAL - 56) * (size / 112) @ rotation.T + center, "multipose", crop)


FRAMES = [(481, 643), (333, 517), (300, 401)]


FACES = [  # (frame, centre, face size, angle)
    (0, (320, 240), 180, 0),
    (1, (250, 170), 150, 90),
    (0, (20, 10), 160, 17),
    (2, (395, 296), 120, -35),
    (1, (60, 300), 90, 180),
    (2, (200, 150), 260, 5),
]


PREPROCESS_TABLES = ("frames", "pitches", "widths", "heights", "frame_of_face", "inverse")  # the kernel's order
LETTERBOX_TABLES = ("frames", "pitches", "widths", "heights", "resized", "scales")


def preprocess(host, frames, matrices, frame_of_face, size, dtype):
    """The host build's preprocessing, from the tables the device path plans (host addresses here)."""
    out = np.zeros((len(matrices), 3, size, size), dtype)
    tables = preprocess_tables(frames, frame_of_face, crop_to_frame_matrices(matrices))
    tables["frames"][:] = [f.ctypes.data for f in frames]
    host.simswap_preprocess_host(
        *[ptr(tables[name]) for name in PREPROCESS_TABLES],
        len(matrices),
        size,
        int(dtype == np.float16),
        ptr(out),
    )
    return out


def pasteback(host, frames, per_frame, generator_out, size=224):
    """The host build's paste-back of ``generator_out`` (NCHW RGB [0, 1], float32 or float16, faces in
    paste order) into copies of ``frames``; also returns the packed batch."""
    batch = pack_pasteback([f.shape for f in frames], per_frame, size)
    out = [f.copy() for f in frames]
    crops = np.array([crop.ctypes.data for crop in generator_out], np.uint64)
    tables = {**frame_tables(out), **pasteback_tables(batch, crops)}  # the device path's planning
    tables["frames"][:] = [f.ctypes.data for f in out]
    host.simswap_pasteback_host(
        *[ptr(tables[name]) for name in ("frames", "pitches")],
        len(out),
        *[ptr(tables[name]) for name in ("union_rois", "face_begin", "crops")],
        size,
        int(generator_out.dtype == np.float16),
        *[ptr(tables[name]) for name in ("forward", "rois", "masks", "mask_offsets")],
    )
    return out, batch


NORMALISATIONS = {"centerface": CenterFace.normalisation, "scrfd": Scrfd.normalisation}


SHAPES = [(301, 433), (433, 301), (97, 61), (640, 640), (1080, 1921), (5, 3)]


def run_host(host, frames, canvas, normalisation, dtype=np.float32):
    host.simswap_letterbox_host.restype = None
    tables = letterbox_tables(frames, canvas)  # the device path's planning
    tables["frames"][:] = [f.ctypes.data for f in frames]
    out = np.full((len(frames), 3, canvas, canvas), np.nan, dtype)
    swap_rb, mean, scale = normalisation
    host.simswap_letterbox_host(
        *[tables[name].ctypes.data_as(ctypes.c_void_p) for name in LETTERBOX_TABLES],
        len(frames),
        canvas,
        int(swap_rb),
        ctypes.c_float(mean),
        ctypes.c_float(scale),
        int(dtype == np.float16),
        out.ctypes.data_as(ctypes.c_void_p),
    )
    return out
