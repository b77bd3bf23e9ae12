"""Video face swapping: streaming file I/O with PyAV (audio and subtitles copied), face tracking with
gap bridging, One Euro landmark smoothing, and a threaded decode / swap / encode pipeline.

    from simswap_trt import FaceSwapper
    from simswap_trt.images import read_image
    from simswap_trt.video import VideoOptions, swap_video

    swapper = FaceSwapper.from_bundle("bundle")
    swapper.set_source(read_image("me.jpg"))
    report = swap_video(swapper, "in.mp4", "out.mp4", VideoOptions(select="largest"))

For live frames (a camera), ``swap_frames(swapper, frames, fps)`` is a generator of output frames.
File I/O needs the ``video`` extra (PyAV); ``swap_frames`` does not.
"""

from simswap_trt.video.guided import GuidedDetection
from simswap_trt.video.pipeline import VideoReport, swap_video
from simswap_trt.video.smoothing import OneEuroFilter, SmoothingOptions
from simswap_trt.video.stream import StreamSwapper, SwappedFrame, VideoOptions, swap_frames
from simswap_trt.video.tracking import TrackedFace, TrackedFrame, Tracker, TrackingOptions

__all__ = [
    "GuidedDetection",
    "OneEuroFilter",
    "SmoothingOptions",
    "StreamSwapper",
    "SwappedFrame",
    "TrackedFace",
    "TrackedFrame",
    "Tracker",
    "TrackingOptions",
    "VideoOptions",
    "VideoReport",
    "swap_frames",
    "swap_video",
]
