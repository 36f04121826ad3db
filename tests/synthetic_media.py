"""Tiny clips written with PyAV for the container and clock tests: any container FFmpeg muxes,
streams starting where a test wants them, a click in the audio at a known instant."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 64, 48


def grey(i: int) -> int:
    """Grey level of frame ``i``: frames far enough apart to tell them apart after decoding."""
    return 10 + 5 * (i % 48)


def write_clip(path: Path, *, container: str | None = None, video_codec: str | None = "mpeg4",
               fps: Fraction | int = 20, frames: int = 40, video_start: float = 0.0,
               audio_codec: str | None = None, sample_rate: int = 16000, audio_start: float = 0.0,
               audio_seconds: float = 2.0, click: float | None = None, audio_first: bool = False) -> Path:
    """Write a WIDTH x HEIGHT clip of ``frames`` flat grey frames (:func:`grey`) at ``fps``, the
    first presented at ``video_start`` seconds of the container's clock; with ``audio_codec``
    also ``audio_seconds`` of mono audio at ``sample_rate`` from ``audio_start`` seconds,
    silent but for one click at container time ``click`` (none when None). ``audio_first``
    adds the audio stream before the video one, ``video_codec=None`` leaves the video out;
    ``container`` names the muxer when the suffix does not (``mpegts`` for ``.ts``)."""
    import av

    fps = Fraction(fps)
    with av.open(str(path), "w", format=container) as out:
        audio = _audio_stream(out, audio_codec, sample_rate) if audio_codec and audio_first else None
        if video_codec is not None:
            video = out.add_stream(video_codec, rate=fps)
            video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            video.codec_context.time_base = 1 / fps
        if audio_codec and not audio_first:
            audio = _audio_stream(out, audio_codec, sample_rate)
        first = round(video_start * fps)
        for i in range(frames if video_codec is not None else 0):
            frame = av.VideoFrame.from_ndarray(np.full((HEIGHT, WIDTH, 3), grey(i), np.uint8), format="rgb24")
            frame.pts = first + i
            out.mux(video.encode(frame))
        if video_codec is not None:
            out.mux(video.encode())
        if audio is None:
            return path
        wave = np.zeros((1, round(audio_seconds * sample_rate)), np.float32)
        if click is not None:
            wave[0, round((click - audio_start) * sample_rate)] = 0.9
        size = audio.codec_context.frame_size or 1024
        start = round(audio_start * sample_rate)
        for k in range(0, wave.shape[1], size):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, k:k + size]), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start + k
            out.mux(audio.encode(frame))
        out.mux(audio.encode())
    return path


def _audio_stream(out, codec: str, sample_rate: int):
    stream = out.add_stream(codec, rate=sample_rate)
    stream.layout = "mono"
    return stream
