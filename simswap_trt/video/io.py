"""Video files in and out with PyAV (FFmpeg): demux and decode the input, encode the video and copy
every audio and subtitle packet unchanged into the output.

The output video stream keeps the input's time base and frame timestamps (so variable frame rate stays
variable), size, pixel format (where the encoder supports it), sample aspect ratio, display matrix
(rotation) and colour description. Frames the caller does not change are encoded from the decoded frame
itself, never through an RGB round trip; in changed frames only the changed pixels are replaced.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from simswap_trt.errors import ConfigError, InputError, OutputError, SimswapError

try:
    import av
    from av.sidedata.sidedata import Type as SideDataType
    from av.stream import Disposition
    from av.video.frame import PictureType
    from av.video.reformatter import Interpolation
except ImportError:  # the CLI and API explain how to install it
    av = None

log = logging.getLogger(__name__)

COPIED_STREAM_TYPES = ("audio", "subtitle")
MP4_SUFFIXES = (".mp4", ".m4v", ".mov")
# swscale's default rounding moves luma by ~1.7 levels on a YUV -> BGR -> YUV round trip; accurate
# rounding (used where BGR is converted back) brings that to ~0.01
ACCURATE = "AREA|ACCURATE_RND"


def require_av() -> None:
    if av is None:
        raise SimswapError("video needs PyAV: pip install 'simswap-trt[video]'")


@dataclass
class Frame:
    """A decoded video frame: ``image`` BGR uint8 for the swapper, ``source`` the decoded frame itself."""

    index: int
    time: float  # seconds, from the input's timestamps
    image: np.ndarray
    source: av.VideoFrame


def _flags(names: str) -> int:
    flags = 0
    for name in names.split("|"):
        flags |= Interpolation[name]
    return flags


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns from the stored to the displayed picture (the display matrix)."""
    return round((frame.rotation or 0) / 90) % 4


def to_bgr(frame: av.VideoFrame) -> np.ndarray:
    """The frame as BGR uint8 as it is displayed (upright, so faces are found), converted with its own
    colour matrix and range."""
    image = frame.reformat(
        format="bgr24", src_colorspace=frame.colorspace or None, src_color_range=frame.color_range or None
    ).to_ndarray()
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _to_format(image: np.ndarray, like: av.VideoFrame) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24").reformat(
        format=like.format.name,
        dst_colorspace=like.colorspace or None,
        dst_color_range=like.color_range or None,
        interpolation=_flags(ACCURATE),
    )


def from_bgr(before: np.ndarray, after: np.ndarray, like: av.VideoFrame) -> av.VideoFrame:
    """The decoded frame ``like`` with the pixels where the displayed BGR image ``after`` differs from
    ``before`` (its ``to_bgr``) replaced: every other sample keeps its decoded value exactly. Planar YUV
    (4:2:0, 4:2:2, 4:4:4; 8 to 16 bits) is patched so; other formats are converted as a whole."""
    turns = _quarter_turns(like)
    if turns:
        before, after = (np.ascontiguousarray(np.rot90(x, -turns)) for x in (before, after))
    h, w = after.shape[:2]
    layout = _patch_layout(like.format, w, h)
    if layout is None:
        out = _to_format(after, like)
    else:
        dtype, steps = layout
        out = av.VideoFrame(w, h, like.format.name)
        planes = [_plane(out, k, dtype) for k in range(3)]
        for k, plane in enumerate(planes):
            np.copyto(plane, _plane(like, k, dtype))
        diff = cv2.absdiff(before, after)
        for y0, y1, x0, x1 in changed_boxes(diff):
            y1, x1 = min(y1, h), min(x1, w)  # odd sizes (4:4:4): the even box may end one past the frame
            patch = _to_format(after[y0:y1, x0:x1], like)
            box = diff[y0:y1, x0:x1]
            mask = (box[..., 0] | box[..., 1] | box[..., 2]) != 0
            for k, (sx, sy) in enumerate(steps):
                sites = mask  # the samples of plane k that a changed pixel touches
                if sy == 2:
                    sites = sites[0::2] | sites[1::2]
                if sx == 2:
                    sites = sites[:, 0::2] | sites[:, 1::2]
                view = planes[k][y0 // sy : y1 // sy, x0 // sx : x1 // sx]
                np.copyto(view, _plane(patch, k, dtype), where=sites)
    out.pts = like.pts
    if like.time_base is not None:
        out.time_base = like.time_base
    for attribute in ("color_primaries", "color_trc", "colorspace", "color_range"):
        setattr(out, attribute, getattr(like, attribute))
    return out


def _patch_layout(fmt: av.VideoFormat, width: int, height: int) -> tuple[np.dtype, list[tuple[int, int]]] | None:
    """For planar YUV with one plane per component, chroma subsampled at most 2x and dividing the size, in
    native little-endian samples: the sample type and each plane's (x, y) subsampling. None otherwise."""
    components = fmt.components
    if fmt.is_rgb or fmt.is_big_endian or [c.plane for c in components] != [0, 1, 2]:
        return None
    steps = _subsampling(fmt.name)
    bits = {c.bits for c in components}
    if not _holds(fmt.name, width, height) or max(max(step) for step in steps) > 2 or len(bits) != 1 or max(bits) > 16:
        return None
    return np.dtype(np.uint8 if bits == {8} else "<u2"), steps


def _plane(frame: av.VideoFrame, index: int, dtype: np.dtype = np.dtype(np.uint8)) -> np.ndarray:
    """A writable [height, width] view of one plane of a planar frame (rows are ``line_size`` bytes apart)."""
    plane = frame.planes[index]
    rows = np.frombuffer(plane, dtype).reshape(-1, plane.line_size // dtype.itemsize)
    return rows[: plane.height, : plane.width]


# changed columns further apart than this are patched as separate boxes (faces side by side)
BOX_GAP = 64


def changed_boxes(diff: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) boxes with even edges that together hold every non-zero pixel of ``diff``: one box
    per run of changed columns (runs split where more than ``BOX_GAP`` unchanged columns lie between),
    each as tall as that run's changed rows."""
    h = diff.shape[0]
    rows = np.flatnonzero(diff.reshape(h, -1).max(axis=1))
    if not rows.size:
        return []
    band = diff[rows[0] : rows[-1] + 1]
    cols = np.flatnonzero(band.reshape(len(band), -1).max(axis=0).reshape(-1, diff.shape[2]).max(axis=1))
    splits = np.flatnonzero(np.diff(cols) > BOX_GAP + 1)
    boxes = []
    for run in np.split(cols, splits + 1):
        x0, x1 = run[0] // 2 * 2, (run[-1] + 2) // 2 * 2
        run_rows = rows[0] + np.flatnonzero(band[:, x0:x1].reshape(len(band), -1).max(axis=1))
        boxes.append((run_rows[0] // 2 * 2, (run_rows[-1] + 2) // 2 * 2, x0, x1))
    return boxes


class VideoReader:
    """The first video stream of a file, decoded from ``start`` seconds for ``duration`` seconds, and the
    audio and subtitle packets of the same span. Opening decodes the first frame, so a file without
    frames fails here, before any output is created."""

    def __init__(self, path: str | Path, start: float = 0.0, duration: float | None = None) -> None:
        require_av()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        if start < 0 or (duration is not None and duration <= 0):
            raise InputError("--start must be >= 0 and --duration > 0")
        try:
            self.container = av.open(str(self.path), metadata_errors="ignore")
        except av.FFmpegError as exc:
            msg = f"{self.path}: not a readable video ({exc.strerror or exc}); is it a complete file?"
            raise InputError(msg) from None
        # a cover picture (an audio file's artwork) is a one-picture "video" stream: not a video
        videos = [s for s in self.container.streams.video if not s.disposition & Disposition.attached_pic]
        if not videos:
            kinds = sorted({s.type for s in self.container.streams} - {"video"})
            kinds += ["a cover picture"] if self.container.streams.video else []
            self.container.close()
            raise InputError(f"{self.path}: no video stream ({', '.join(kinds) or 'no streams'}); give a video file")
        self.video = videos[0]
        self.video.thread_type = "AUTO"
        self.copied = [s for s in self.container.streams if s.type in COPIED_STREAM_TYPES]
        skipped = [s for s in self.container.streams if s is not self.video and s not in self.copied]
        if skipped:
            log.warning("%s: only the first video stream and the audio/subtitle streams are kept", self.path)
        self.start, self.end = start, None if duration is None else start + duration
        self.decode_errors = 0
        if start > 0:
            self.container.seek(int(start / self.video.time_base), stream=self.video, backward=True)
        self._items = self._demux()
        self._early: list[av.Packet] = []
        for item in self._items:
            if isinstance(item, Frame):
                self.first = item
                break
            self._early.append(item)
        else:
            self.container.close()
            where = f" after {start:g} s" if start else ""
            raise InputError(f"{self.path}: the video stream has no decodable frames{where}")

    @property
    def frame_count(self) -> int | None:
        """Frames to expect (from the container's frame count or duration), for progress; None if unknown."""
        rate = self.video.average_rate or self.video.guessed_rate
        duration = self.video.duration * self.video.time_base if self.video.duration else None
        if duration is None and self.container.duration:
            duration = Fraction(self.container.duration, 1_000_000)
        total = self.video.frames or (int(duration * rate) if duration and rate else None)
        if total and rate and (self.start or self.end):
            span = (self.end or float(duration or 0)) - self.start
            total = min(total, max(int(span * rate), 0))
        return total or None

    def __iter__(self) -> Iterator[Frame | av.Packet]:
        """The first frame, then frames and copied packets in file order."""
        yield from self._early
        self._early = []
        yield self.first
        yield from self._items

    def _in_span(self, time: float) -> bool:
        # from the very beginning when not trimmed: audio priming packets have negative timestamps
        return (not self.start or time >= self.start - 1e-9) and (self.end is None or time < self.end - 1e-9)

    def _demux(self) -> Iterator[Frame | av.Packet]:
        index, video_done = 0, False
        for packet in self.container.demux([self.video, *self.copied]):
            stream = packet.stream
            if stream is not self.video:
                if packet.dts is None and packet.pts is None:
                    continue  # an empty flush packet
                time = float((packet.pts if packet.pts is not None else packet.dts) * stream.time_base)
                if self._in_span(time):
                    yield packet
                elif self.end is not None and time >= self.end and video_done:
                    return
                continue
            if video_done:
                continue
            try:
                frames = packet.decode()
            except av.InvalidDataError as exc:
                self.decode_errors += 1
                log.warning("%s: a damaged video packet was skipped (%s)", self.path, exc)
                continue
            for frame in frames:
                if frame.pts is None:  # a raw stream without timestamps: frames at the stream's rate
                    frame.time_base = frame.time_base or self.video.time_base
                    frame.pts = round(index / float(self.video.guessed_rate or 25) / frame.time_base)
                time = float(frame.time)
                if self.end is not None and time >= self.end - 1e-9:
                    video_done = True
                    break
                if self._in_span(time):
                    yield Frame(index, time, to_bgr(frame), frame)
                    index += 1

    def close(self) -> None:
        self.container.close()


def temporary_path(output: Path) -> Path:
    """A hidden file next to ``output`` with the same suffix (FFmpeg picks the container format by it)."""
    return output.with_name(f".{output.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial{output.suffix}")


def _subsampling(name: str) -> list[tuple[int, int]]:
    """Each component's (x, y) subsampling in the pixel format ``name``: 1 full size, 2 half, ..."""
    return [(1024 // c.width, 1024 // c.height) for c in av.VideoFormat(name, 1024, 1024).components]


def _holds(name: str, width: int, height: int) -> bool:
    """Whether frames of this size fit the pixel format: its chroma subsampling divides the size."""
    return all(width % sx == 0 and height % sy == 0 for sx, sy in _subsampling(name))


def _output_format(first: av.VideoFrame, formats: list[str], codec: str) -> str:
    """The input's pixel format where the encoder takes it, else the encoder's first. A frame size that the
    format cannot hold (odd, for 4:2:0) gets a colour format without chroma subsampling, the input's bit
    depth first: H.264 4:4:4, which keeps the size but which some players do not play."""
    name = first.format.name if not formats or first.format.name in formats else formats[0]
    width, height = first.width, first.height
    if not formats or _holds(name, width, height):
        return name
    depth = first.format.components[0].bits
    fitting = [f for f in formats if len(av.VideoFormat(f).components) >= 3 and _holds(f, width, height)]
    if not fitting:
        raise ConfigError(
            f"{codec} cannot encode the odd frame size {width}x{height} (its formats {', '.join(formats)} "
            "subsample chroma); use --codec libx264 (4:4:4) or ffv1"
        )
    chosen = min(fitting, key=lambda f: av.VideoFormat(f).components[0].bits != depth)  # first of equal depth
    log.warning(
        "video: the frame size %dx%d does not fit %s (chroma subsampled); encoding %s instead, which some "
        "players do not play",
        width,
        height,
        name,
        chosen,
    )
    return chosen


class VideoWriter:
    """Encode frames and copy packets into ``path``, mirroring ``reader``'s streams. Timestamps are shifted
    by the reader's start, so a trimmed clip starts at zero."""

    def __init__(
        self,
        path: Path,
        reader: VideoReader,
        codec: str = "libx264",
        crf: int | None = 18,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """``metadata``: container tags to write (MP4/MOV keep custom keys: movflags=use_metadata_tags)."""
        require_av()
        first = reader.first.source
        options = {"movflags": "use_metadata_tags"} if metadata and path.suffix.lower() in MP4_SUFFIXES else {}
        try:
            self.container = av.open(str(path), "w", options=options)
        except (av.FFmpegError, ValueError) as exc:
            raise OutputError(f"{path.suffix or path}: no output container format for this name ({exc})") from None
        self.container.metadata.update(metadata or {})
        try:
            self.video = self._add_video(reader, first, codec, crf)
            self.copies = {}
            for stream in reader.copied:
                try:
                    self.copies[stream.index] = self.container.add_stream_from_template(stream)
                except (av.FFmpegError, ValueError) as exc:
                    raise InputError(
                        f"the {stream.type} stream #{stream.index} ({stream.codec_context.name}) cannot be copied "
                        f"into {path.suffix}: {exc}; write .mkv, which takes any stream"
                    ) from None
        except BaseException:
            self.container.close()
            raise
        self.shift = reader.start

    def _add_video(self, reader: VideoReader, first: av.VideoFrame, codec: str, crf: int | None):
        try:
            video = self.container.add_stream(codec, rate=reader.video.average_rate or reader.video.guessed_rate)
        except (av.FFmpegError, ValueError) as exc:
            raise ConfigError(f"video codec {codec!r} is not available in this FFmpeg build ({exc})") from None
        formats = [f.name for f in video.codec_context.codec.video_formats or []]
        self.pix_fmt = _output_format(first, formats, codec)
        video.width, video.height, video.pix_fmt = first.width, first.height, self.pix_fmt
        video.time_base = reader.video.time_base
        video.codec_context.time_base = reader.video.time_base
        if reader.video.sample_aspect_ratio:
            video.sample_aspect_ratio = reader.video.sample_aspect_ratio
        for attribute in ("color_primaries", "color_trc", "colorspace", "color_range"):
            setattr(video.codec_context, attribute, getattr(first, attribute))
        matrix = first.side_data.get(SideDataType.DISPLAYMATRIX)
        if matrix is not None:
            video.set_display_matrix(list(np.frombuffer(bytes(matrix), np.int32)))
        if crf is not None and codec in ("libx264", "libx265", "libx264rgb"):
            video.codec_context.options = {"crf": str(crf)}
        return video

    def write_frame(self, frame: av.VideoFrame) -> None:
        if frame.format.name != self.pix_fmt:
            frame = frame.reformat(format=self.pix_fmt)
        frame.pict_type = PictureType.NONE  # the encoder chooses frame types, not the input's decoder
        frame.pts -= round(self.shift / self.video.time_base)
        self.container.mux(self.video.encode(frame))

    def write_packet(self, packet: av.Packet) -> None:
        stream = self.copies[packet.stream.index]
        offset = round(self.shift / packet.time_base) if self.shift else 0
        if packet.pts is not None:
            packet.pts -= offset
        if packet.dts is not None:
            packet.dts -= offset
        packet.stream = stream
        self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        self.container.mux(self.video.encode(None))
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # the file is deleted anyway; the original error matters
            log.debug("closing an aborted output failed", exc_info=True)
