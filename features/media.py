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
    """Return the (N, 2) float64 start/end time in seconds of every decodable frame.

    decord's ``get_frame_timestamp`` is the source; where it gives nonsense (negative or
    decreasing times, as it does for every frame of some AVI files) the times come from the
    container's packet timestamps through PyAV instead.
    """
    import decord

    path = Path(path)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as e:  # decord raises both for unreadable files
        raise MediaError(f"{path}: cannot open video: {e}") from e
    stamps = np.asarray(reader.get_frame_timestamp(np.arange(len(reader))), dtype=np.float64).reshape(-1, 2)
    if len(stamps) and (stamps.min() < 0 or np.any(np.diff(stamps[:, 0]) <= 0)):
        stamps = _packet_timestamps(path, len(stamps))
    return stamps


def _packet_timestamps(path: Path, frames: int) -> np.ndarray:
    """(frames, 2) start/end times from the video packets' presentation times (PyAV)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        starts = sorted(float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None)
    if len(starts) < frames:
        raise MediaError(f"{path}: {frames} frames decode but only {len(starts)} packets carry timestamps")
    starts_array = np.asarray(starts[:frames]) - starts[0]
    step = float(np.median(np.diff(starts_array))) if frames > 1 else 0.0
    ends = np.append(starts_array[1:], starts_array[-1] + step)
    return np.stack([starts_array, ends], axis=1)


def video_duration(path: str | Path) -> float:
    """End time in seconds of the last decodable frame (decord), the clock audio is cropped to."""
    stamps = frame_timestamps(path)
    return float(stamps[-1, 1]) if len(stamps) else 0.0


def decode_audio(path: str | Path, sample_rate: int = 16000, duration: float | None = None) -> np.ndarray | None:
    """Decode the first audio stream of ``path`` to a (N,) float32 mono waveform at ``sample_rate``.

    PyAV decodes and libswresample downmixes and resamples (decord's audio reader corrupts
    stereo and resamples late). Sample 0 is put at the time of the video's first frame, the
    zero of decord's frame timestamps: audio that starts later is preceded by zeros, audio that
    starts earlier loses its head. With ``duration`` (seconds, usually :func:`video_duration`)
    the result is cropped or zero-padded to ``round(duration * sample_rate)`` samples.
    Returns None when the file has no audio stream; raises :class:`MediaError` naming the file
    when it cannot be opened or decoded.
    """
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            video_start = 0.0
            if container.streams.video:
                video = container.streams.video[0]
                if video.start_time is not None and video.time_base is not None:
                    video_start = float(video.start_time * video.time_base)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            pieces: list[np.ndarray] = []
            first_time: float | None = None
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
            # The resampler holds back the tail of its filter until flushed.
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as e:
        raise MediaError(f"{path}: cannot decode audio: {e}") from e
    wave = np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.zeros(0, np.float32)
    offset = int(round(((first_time or 0.0) - video_start) * sample_rate))
    if offset > 0:
        wave = np.concatenate([np.zeros(offset, np.float32), wave])
    elif offset < 0:
        wave = wave[-offset:]
    if duration is not None:
        target = max(int(round(duration * sample_rate)), 0)
        wave = wave[:target] if len(wave) >= target else np.pad(wave, (0, target - len(wave)))
    return np.ascontiguousarray(wave, dtype=np.float32)
