"""Media decoding: stream facts from the container, frames and their times as a player shows them.

Frame rates in Aff-Wild2 vary per video and some files have variable frame rates, so no code
in this project derives a frame's time from ``index / fps``: times are the video packets'
presentation timestamps (the numbers decord's ``get_frame_timestamp`` reports, in float64).
Some files begin with encoder pre-roll, packets with negative timestamps that the container's
edit list hides: players and PyAV's decoder skip them, decord counts them. Frames here are the
displayed ones only, and time 0 is the first of them (see :class:`FrameIndex`).
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


@dataclass(frozen=True)
class FrameIndex:
    """The frames of a video as a player shows them, from its packets (no pixels decoded).

    ``stamps`` (N, 2) float64 start/end seconds of each displayed frame, 0 = the first;
    ``pts`` (N,) int64 their presentation timestamps in the stream's time base, by which a
    frame can be found; ``hidden`` how many decodable frames come before the first displayed
    one (pre-roll the edit list hides; decord's index counts them).
    """

    stamps: np.ndarray
    pts: np.ndarray
    hidden: int


def frame_index(path: str | Path) -> FrameIndex:
    """Index the displayed frames of ``path`` by demuxing its video packets (PyAV).

    A displayed frame is a packet the demuxer does not flag for discarding: that flag is how an
    edit list hides pre-roll, and the decoder drops flagged frames. Packets without a
    presentation time cannot be placed and are not counted. A frame ends where its packet's
    duration says, or, without one, where the next frame starts.
    """
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            time_base = float(stream.time_base)
            # The final packet the demuxer yields is an empty flush marker, not a frame.
            packets = [(p.pts, p.duration or 0, p.is_discard) for p in container.demux(stream)
                       if p.size and p.pts is not None]
    except av.FFmpegError as e:
        raise MediaError(f"{path}: cannot open video: {e}") from e
    shown = sorted((pts, duration) for pts, duration, discard in packets if not discard)
    if not shown:
        return FrameIndex(np.zeros((0, 2)), np.zeros(0, np.int64), 0)
    pts = np.array([p for p, _ in shown], dtype=np.int64)
    # Discarded packets past the last shown one (an edit list may cut a tail too) sit after the
    # displayed frames in decord's index and shift nothing.
    hidden = sum(1 for p, _, discard in packets if discard and p < pts[0])
    starts = (pts - pts[0]) * time_base
    durations = np.array([d for _, d in shown], dtype=np.float64) * time_base
    step = float(np.median(np.diff(starts))) if len(starts) > 1 else float(durations[0])
    following = np.append(starts[1:], starts[-1] + step)
    ends = np.where(durations > 0, starts + durations, following)
    return FrameIndex(np.stack([starts, ends], axis=1), pts, hidden)


def frame_timestamps(path: str | Path) -> np.ndarray:
    """Return the (N, 2) float64 start/end time in seconds of every displayed frame of ``path``.

    N counts the frames a player shows, not the decodable ones (hidden pre-roll is left out),
    and time 0 is the first shown frame: see :func:`frame_index`.
    """
    return frame_index(path).stamps


def decode_frames(path: str | Path, pts: np.ndarray) -> np.ndarray:
    """uint8 ``(len(pts), H, W, 3)`` RGB frames of ``path`` presented at ``pts`` (stream time base,
    one or more).

    PyAV seeks to the keyframe before the earliest and decodes forward, matching frames by
    presentation time, so hidden pre-roll can never take a displayed frame's place (its pixels
    equal decord's). Raises :class:`MediaError` when a requested frame does not come out.
    """
    import av

    path = Path(path)
    wanted = {int(p) for p in pts}
    first, last = min(wanted), max(wanted)
    found: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(first, stream=stream)  # backward: the keyframe at or before
            for frame in container.decode(stream):
                if frame.pts in wanted:
                    found[frame.pts] = frame.to_ndarray(format="rgb24")
                if frame.pts is not None and frame.pts >= last:
                    break
    except av.FFmpegError as e:
        raise MediaError(f"{path}: cannot decode video: {e}") from e
    missing = sorted(wanted - found.keys())
    if missing:
        raise MediaError(f"{path}: no frame decodes at pts {missing[:5]}")
    return np.stack([found[int(p)] for p in pts])


def video_duration(path: str | Path) -> float:
    """End time in seconds of the last displayed frame, the clock audio is cropped to."""
    stamps = frame_timestamps(path)
    return float(stamps[-1, 1]) if len(stamps) else 0.0


def decode_audio(path: str | Path, sample_rate: int = 16000, duration: float | None = None) -> np.ndarray | None:
    """Decode the first audio stream of ``path`` to a (N,) float32 mono waveform at ``sample_rate``.

    PyAV decodes and libswresample downmixes and resamples (decord's audio reader corrupts
    stereo and resamples late). Sample 0 is put at the video stream's start time, the
    presentation time of its first displayed frame (hidden pre-roll excluded) and so the zero
    of :func:`frame_timestamps`: audio that starts later is preceded by zeros, audio that
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
