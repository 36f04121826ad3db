"""Media decoding: stream facts from the container, frames and their times as a player shows them.

Frame rates in Aff-Wild2 vary per video and some files have variable frame rates, so no code
in this project derives a frame's time from ``index / fps``: times are the video packets'
presentation timestamps (the numbers decord's ``get_frame_timestamp`` reports, in float64).
Some files begin with encoder pre-roll, packets with negative timestamps that the container's
edit list hides: players and PyAV's decoder skip them, decord counts them. Frames here are the
displayed ones only, and time 0 is the first of them (see :class:`FrameIndex`).

One clock for every stream: a frame's time is its presentation time less that of the first
displayed frame (:attr:`FrameIndex.start`), so the first frame is at 0.0 even where the
container puts it at, say, 0.027 s, and audio sample 0 is put at the video stream's start
time, the same instant in every container but AVI (see :func:`decode_audio`), whether the
audio stream starts before or after the video. Whichever stream
comes first in the file, the video is ``streams.video[0]`` and the audio ``streams.audio[0]``.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable, Iterator
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
    one (pre-roll the edit list hides; decord's index counts them); ``time_base`` the seconds
    one tick of ``pts`` lasts (1/1000 in FLV and Matroska, whose timestamps are milliseconds).
    """

    stamps: np.ndarray
    pts: np.ndarray
    hidden: int
    time_base: float

    @property
    def start(self) -> float:
        """Presentation time in seconds, on the container's clock, of the first displayed frame:
        the instant ``stamps`` counts from, and so where audio sample 0 is put (0.0 without
        frames)."""
        return float(self.pts[0]) * self.time_base if len(self.pts) else 0.0


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
            # The final packet the demuxer yields is an empty flush marker, not a frame. Packed
            # arrays, not a list of tuples: an hour of video is 108,000 packets.
            stamps, spans, discards = array("q"), array("q"), array("b")
            for p in container.demux(stream):
                if p.size and p.pts is not None:
                    stamps.append(p.pts)
                    spans.append(p.duration or 0)
                    discards.append(p.is_discard)
    except av.FFmpegError as e:
        raise MediaError(f"{path}: cannot open video: {e}") from e
    all_pts, discard = np.frombuffer(stamps, np.int64), np.frombuffer(discards, np.int8).astype(bool)
    shown_pts, shown_durations = all_pts[~discard], np.frombuffer(spans, np.int64)[~discard]
    if not len(shown_pts):
        return FrameIndex(np.zeros((0, 2)), np.zeros(0, np.int64), 0, time_base)
    order = np.lexsort((shown_durations, shown_pts))  # by time, as a player shows them
    pts = shown_pts[order]
    # Discarded packets past the last shown one (an edit list may cut a tail too) sit after the
    # displayed frames in decord's index and shift nothing.
    hidden = int(np.count_nonzero(discard & (all_pts < pts[0])))
    starts = (pts - pts[0]) * time_base
    durations = shown_durations[order].astype(np.float64) * time_base
    step = float(np.median(np.diff(starts))) if len(starts) > 1 else float(durations[0])
    following = np.append(starts[1:], starts[-1] + step)
    ends = np.where(durations > 0, starts + durations, following)
    return FrameIndex(np.stack([starts, ends], axis=1), pts, hidden, time_base)


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
    equal decord's). Some demuxers (MPEG-TS, whose decoding times start before the presentation
    times) seek past the frames asked for, or to nothing: the frames a seek missed are then
    decoded from the start. Raises :class:`MediaError` when a requested frame does not come out.
    """
    path = Path(path)
    wanted = {int(p) for p in pts}
    found = _frames_at(path, wanted, seek=True)
    if len(found) < len(wanted):
        found.update(_frames_at(path, wanted - found.keys(), seek=False))
    missing = sorted(wanted - found.keys())
    if missing:
        raise MediaError(f"{path}: no frame decodes at pts {missing[:5]}")
    return np.stack([found[int(p)] for p in pts])


def _frames_at(path: Path, wanted: set[int], seek: bool) -> dict[int, np.ndarray]:
    """:func:`decode_frames`' decoding pass: the frames of ``wanted`` that come out, by pts,
    decoding from the keyframe before the earliest (``seek``) or from the start."""
    import av

    last = max(wanted)
    found: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if seek:
                container.seek(min(wanted), stream=stream)  # backward: the keyframe at or before
            for frame in container.decode(stream):
                if frame.pts in wanted:
                    found[frame.pts] = frame.to_ndarray(format="rgb24")
                if frame.pts is not None and frame.pts >= last:
                    break
    except av.FFmpegError as e:
        raise MediaError(f"{path}: cannot decode video: {e}") from e
    return found


def displayed_frames(path: str | Path, index: FrameIndex, rows: np.ndarray,
                     size: int | None = None) -> Iterator[tuple[int, np.ndarray, tuple[int, int]]]:
    """Yield ``(row, image, (width, height))`` for the displayed frames ``rows`` (0-based, in
    increasing order) of ``path``, decoded in one pass from the start (PyAV, frames found by
    presentation time as in :func:`decode_frames`): uint8 RGB images scaled by the decoder's
    scaler so that the longest side is at most ``size`` (None: as decoded); the full frame's
    size comes with each. Raises :class:`MediaError` when the file cannot be decoded or a
    wanted frame does not come out.
    """
    import av

    path = Path(path)
    wanted = {int(index.pts[r]): int(r) for r in rows}
    seen = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                row = wanted.get(frame.pts)
                if row is None:
                    continue
                width, height = frame.width, frame.height
                shrink = 1.0 if size is None else min(1.0, size / max(width, height))
                if shrink < 1.0:
                    frame = frame.reformat(width=max(1, round(width * shrink)), height=max(1, round(height * shrink)),
                                           format="rgb24", interpolation="AREA")
                yield row, frame.to_ndarray(format="rgb24"), (width, height)
                seen += 1
                if seen == len(wanted):
                    return
    except av.FFmpegError as e:
        raise MediaError(f"{path}: cannot decode video: {e}") from e
    raise MediaError(f"{path}: {len(wanted) - seen} of {len(wanted)} frames did not decode")


def video_duration(path: str | Path) -> float:
    """End time in seconds of the last displayed frame, the clock audio is cropped to."""
    stamps = frame_timestamps(path)
    return float(stamps[-1, 1]) if len(stamps) else 0.0


def is_variable_frame_rate(starts: np.ndarray, time_base: float) -> bool:
    """Whether frames starting at ``starts`` (seconds, increasing) come at a variable rate.

    Timestamps are whole ticks of the stream's ``time_base`` (seconds), so a constant rate
    that is not a whole number of ticks shows steps one tick apart: 29.97 fps in FLV or
    Matroska (milliseconds) steps 33, 33, 34 ms. That is rounding, not a variable rate. The
    rate is variable when the steps, each first allowed one tick of difference from their mean,
    still spread by more than 1 % of the mean step (root mean square).
    """
    steps = np.diff(np.asarray(starts, np.float64))
    if steps.size == 0:
        return False
    mean = steps.mean()
    # A hair over one tick: the float seconds of whole ticks are not exact.
    beyond_rounding = np.maximum(np.abs(steps - mean) - time_base * (1 + 1e-6), 0.0)
    return bool(np.sqrt(np.mean(beyond_rounding ** 2)) > 0.01 * mean)


def audio_samples(duration: float, sample_rate: int) -> int:
    """How many samples audio cropped or padded to ``duration`` seconds has: the length
    :func:`decode_audio` and :func:`audio_pieces` give."""
    return max(int(round(duration * sample_rate)), 0)


def decode_audio(path: str | Path, sample_rate: int = 16000, duration: float | None = None) -> np.ndarray | None:
    """Decode the first audio stream of ``path`` to a (N,) float32 mono waveform at ``sample_rate``.

    PyAV decodes and libswresample downmixes and resamples (decord's audio reader corrupts
    stereo and resamples late). Sample 0 is put at the video stream's start time: the
    presentation time of its first displayed frame (hidden pre-roll excluded) and so the zero of
    :func:`frame_timestamps`, except in AVI, whose demuxer shows H.264 frames one tick late
    (there the start time is where the writer put the first frame and the first audio sample).
    Audio that starts later is preceded by zeros, audio that starts earlier loses its head; in a
    file without a video stream sample 0 is at the container's time 0. With ``duration`` (seconds, usually :func:`video_duration`) the result is cropped or
    zero-padded to ``round(duration * sample_rate)`` samples.
    Returns None when the file has no audio stream; raises :class:`MediaError` naming the file
    when it cannot be opened or decoded. The whole waveform at once: :func:`audio_pieces`
    gives the same samples piece by piece.
    """
    pieces = audio_pieces(path, sample_rate, duration)
    if pieces is None:
        return None
    return np.ascontiguousarray(np.concatenate([np.zeros(0, np.float32), *pieces]), dtype=np.float32)


def audio_pieces(path: str | Path, sample_rate: int = 16000, duration: float | None = None,
                 piece_seconds: float = 10.0) -> Iterator[np.ndarray] | None:
    """The samples :func:`decode_audio` returns, as consecutive float32 pieces of about
    ``piece_seconds`` (the last may be shorter), decoded as they are consumed: memory is bounded
    by a piece, not by the file. Their concatenation equals :func:`decode_audio`'s waveform
    (same alignment to the first displayed video frame, same crop or padding to
    ``duration``). None when the file has no audio stream; :class:`MediaError` naming the
    file when it cannot be opened, or, from the iterator, when it cannot be decoded.
    """
    import av

    path = Path(path)
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise MediaError(f"{path}: cannot decode audio: {e}") from e
    if not container.streams.audio:
        container.close()
        return None
    target = None if duration is None else audio_samples(duration, sample_rate)
    return _aligned_pieces(path, container, sample_rate, target, max(int(piece_seconds * sample_rate), 1))


def _aligned_pieces(path: Path, container, sample_rate: int, target: int | None, piece: int) -> Iterator[np.ndarray]:
    """:func:`audio_pieces`' generator; it owns ``container`` and closes it."""
    import av

    try:
        with container:
            video_start = _video_start(path, container)
            decoded = _resampled(container.decode(container.streams.audio[0]), sample_rate)
            # The shift onto the video clock comes from the first decoded frame that has a time;
            # samples decoded before it wait (in practice the very first frame has one).
            held, first_time = [], None
            for samples, time in decoded:
                held.append(samples)
                if time is not None:
                    first_time = time
                    break
            offset = int(round(((first_time or 0.0) - video_start) * sample_rate))
            chunks = itertools.chain(_zeros(max(offset, 0), piece), held, (samples for samples, _ in decoded))
            yield from _regroup(chunks, max(-offset, 0), target, piece)
    except av.FFmpegError as e:
        raise MediaError(f"{path}: cannot decode audio: {e}") from e


def _video_start(path: Path, container) -> float:
    """Where audio sample 0 goes on the container's clock: the video stream's start time.

    It is the first displayed frame's presentation time in every container tried (MP4 with
    edit lists and B-frames, Matroska, MPEG-TS, FLV, MOV), except AVI: AVI stores no
    presentation times, and its demuxer puts every H.264 frame one tick after its decoding
    time, while the stream's start time (0) is where the file's writer put its first frame
    and its first audio sample. A stream without a start time falls back to the first
    displayed frame's time (:attr:`FrameIndex.start`); a file without video to time 0.
    """
    if not container.streams.video:
        return 0.0
    video = container.streams.video[0]
    if video.start_time is not None and video.time_base is not None:
        return float(video.start_time * video.time_base)
    return frame_index(path).start


def _resampled(frames: Iterable, sample_rate: int) -> Iterator[tuple[np.ndarray, float | None]]:
    """Each decoded audio frame's samples, downmixed and resampled (float32 mono at
    ``sample_rate``; possibly none yet), with the frame's time in seconds (None when it has
    none); then the resampler's tail, without a time."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)

    def joined(outs: list) -> np.ndarray:
        if len(outs) == 1:  # the usual case: no copy
            return outs[0].to_ndarray().reshape(-1)
        return np.concatenate([np.zeros(0, np.float32)] + [out.to_ndarray().reshape(-1) for out in outs])

    for frame in frames:
        yield joined(resampler.resample(frame)), None if frame.time is None else float(frame.time)
    # The resampler holds back the tail of its filter until flushed.
    yield joined(resampler.resample(None)), None


def _zeros(count: int, piece: int) -> Iterator[np.ndarray]:
    """``count`` float32 zeros in arrays of at most ``piece``: padding never held at once."""
    for start in range(0, count, piece):
        yield np.zeros(min(piece, count - start), np.float32)


def _regroup(chunks: Iterable[np.ndarray], skip: int, target: int | None, piece: int) -> Iterator[np.ndarray]:
    """The samples of ``chunks`` less their first ``skip``, in pieces of ``piece`` samples.

    With a ``target`` they end after exactly ``target`` samples, zeros past the chunks' end;
    without one they end with the chunks (the last piece may be shorter).
    """
    if target is not None:
        chunks = itertools.chain(chunks, itertools.repeat(np.zeros(piece, np.float32)))
    held: list[np.ndarray] = []
    size = sent = 0
    for chunk in chunks:
        if skip:
            dropped = min(skip, len(chunk))
            chunk, skip = chunk[dropped:], skip - dropped
        held.append(chunk)
        size += len(chunk)
        while True:
            want = piece if target is None else min(piece, target - sent)
            if want == 0:
                return
            if size < want:
                break
            joined = np.concatenate(held) if len(held) > 1 else held[0]
            yield joined[:want]
            held, size, sent = [joined[want:]], size - want, sent + want
    if size:
        yield np.concatenate(held)
