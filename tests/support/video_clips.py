"""Short synthetic video clips for the video tests, made with PyAV from scikit-image's public-domain
astronaut photo: a face that moves, zooms and rotates over a plain gradient (no other face-like content),
optional sine-tone audio, variable frame rate, rotation and colour metadata."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

SIZE = (256, 192)  # width, height
SAMPLE_RATE = 16000


def _face() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[20:240, 110:330, ::-1])  # 220 px around the face, BGR


FACE = _face()


def background(size: tuple[int, int] = SIZE) -> np.ndarray:
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    return np.stack([60 + 120 * x, 90 + 60 * y, 150 - 80 * x * y], -1).astype(np.uint8)


def face_frame(cx: float, cy: float, zoom: float = 1.0, angle: float = 0.0, size: tuple[int, int] = SIZE) -> np.ndarray:
    """The astronaut's face (about 100 px wide at zoom 1) centred at (cx, cy), rotated by ``angle``."""
    image = background(size)
    matrix = cv2.getRotationMatrix2D((110, 110), angle, zoom * 100 / 220)
    matrix[:, 2] += [cx - 110, cy - 110]
    mask = cv2.warpAffine(np.full(FACE.shape[:2], 255, np.uint8), matrix, size) > 128
    image[mask] = cv2.warpAffine(FACE, matrix, size)[mask]
    return image


def moving_face(count: int, size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    """A face drifting right, zooming in and turning a little."""
    w, h = size
    return [face_frame(w * 0.4 + 1.5 * i, h / 2, 0.9 + 0.005 * i, 0.5 * i, size) for i in range(count)]


def write_clip(
    path: Path,
    frames: Sequence[np.ndarray],
    fps: int = 25,
    times: Sequence[float] | None = None,
    audio: bool = True,
    rotation: int = 0,
    colour: bool = False,
    sar: Fraction | None = None,
    crf: int = 12,
    subtitles: Sequence[tuple[int, int, str]] = (),
    codec: str = "libx264",
) -> Path:
    """Encode BGR frames (H.264, or ``codec`` in 4:2:0) with optional AAC sine tone; ``times`` (seconds) makes
    it variable rate. ``subtitles``: (start ms, duration ms, text) events of an ASS subtitle track (Matroska
    outputs)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        if codec == "libx264":
            video.codec_context.options = {"crf": str(crf)}
        if times is not None:
            video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            video.set_display_rotation(rotation)
        if colour:
            for attribute in ("color_primaries", "color_trc", "colorspace"):
                setattr(video.codec_context, attribute, 1)  # BT.709
            video.codec_context.color_range = 1  # limited (MPEG)
        if sar:
            video.sample_aspect_ratio = sar
        tone = container.add_stream("aac", rate=SAMPLE_RATE) if audio else None
        captions = container.add_stream("ass") if subtitles else None
        for order, (start, duration, text) in enumerate(subtitles):
            # a Matroska ASS event: ReadOrder, Layer, Style, Name, MarginL, MarginR, MarginV, Effect, Text
            packet = av.Packet(f"{order},0,Default,,0,0,0,,{text}".encode())
            packet.stream, packet.time_base = captions, Fraction(1, 1000)
            packet.pts, packet.dts, packet.duration = start, start, duration
            container.mux(packet)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709" if colour else None)
            frame.pts = round(times[i] * 1000) if times is not None else i
            if colour:
                frame.colorspace, frame.color_range = 1, 1
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if tone is not None:
            seconds = (times[-1] if times is not None else len(frames) / fps) + 0.1
            t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, len(samples), 1024):
                chunk = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
                container.mux(tone.encode(chunk))
            container.mux(tone.encode(None))
    return path


def decoded(path: Path) -> list[av.VideoFrame]:
    """Every video frame of a file."""
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def planes(frame: av.VideoFrame) -> np.ndarray:
    """The frame's raw pixel data (all planes, as decoded)."""
    return frame.to_ndarray(format=frame.format.name)


def packets(path: Path, kind: str = "audio") -> list[tuple[int | None, bytes]]:
    """(pts, bytes) of every packet of the first stream of ``kind`` ("audio", "subtitles")."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [(p.pts, bytes(p)) for p in container.demux(stream) if p.size]
