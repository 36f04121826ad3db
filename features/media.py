"""Media decoding: stream facts from the container, exact frame timestamps from the decoder.

Frame rates in Aff-Wild2 vary per video and some files have variable frame rates, so no code
in this project derives a frame's time from ``index / fps``: timestamps come from decord's
``get_frame_timestamp`` (frame start and end, in seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """Container-level facts about a video file, read without decoding pixels.

    ``fps`` is the stream's average rate (frames / duration); ``frames`` the container's frame
    count (0 when the container does not say). ``has_audio`` tells whether any audio stream exists.
    """

    path: Path
    fps: float
    frames: int
    duration: float
    width: int
    height: int
    has_audio: bool


class MediaError(RuntimeError):
    """A media file could not be opened or decoded; the message names the file."""


def probe(path: str | Path) -> VideoInfo:
    """Read stream facts of ``path`` from its container header (PyAV; fast, no pixel decoding)."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(0)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:
                duration = 0.0
            return VideoInfo(
                path=path,
                fps=float(rate),
                frames=int(stream.frames or 0),
                duration=duration,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                has_audio=bool(container.streams.audio),
            )
    except av.FFmpegError as e:
        raise MediaError(f"{path}: cannot open video: {e}") from e


def frame_timestamps(path: str | Path) -> np.ndarray:
    """Return the (N, 2) float64 start/end time in seconds of every decodable frame (decord)."""
    import decord

    path = Path(path)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except decord.DECORDError as e:
        raise MediaError(f"{path}: cannot open video: {e}") from e
    return np.asarray(reader.get_frame_timestamp(np.arange(len(reader))), dtype=np.float64).reshape(-1, 2)
