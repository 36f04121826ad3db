"""One clock for video and audio: time 0 is the first displayed frame, whichever stream of the
container starts first; and a constant frame rate rounded to the time base is not variable."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from abaw.faces import run_faces
from features.extract import Job, timing
from features.media import audio_samples, decode_audio, frame_index, is_variable_frame_rate, video_duration
from tests.synthetic_media import write_clip

RATE = 16000  # audio sample rate decoded to
FPS = 20  # frames 50 ms apart: a start of 0.5 s is a whole frame count
ONE_MS = RATE // 1000

# (file name, muxer, audio codec, its sample rate, audio stream first): Matroska with PCM (timestamps in ms), MP4
# with AAC (encoder priming hidden by an edit list), MPEG-TS (90 kHz clock, audio first).
CONTAINERS = [("clip.mkv", None, "pcm_s16le", 16000, False), ("clip.mp4", None, "aac", 16000, False),
              ("clip.ts", "mpegts", "mp2", 48000, True)]


def clip_with(tmp_path, case, video_start: float, audio_start: float, click: float):
    name, container, codec, rate, audio_first = case
    return write_clip(tmp_path / name, container=container, fps=FPS, frames=40, video_start=video_start,
                      audio_codec=codec, sample_rate=rate, audio_start=audio_start, click=click,
                      audio_first=audio_first)


@pytest.mark.parametrize("case", CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_audio_that_starts_after_the_video_waits_for_its_start(tmp_path, case):
    """Video from 0 s, audio from 0.5 s, a click at 1.0 s of the container's clock."""
    path = clip_with(tmp_path, case, video_start=0.0, audio_start=0.5, click=1.0)
    duration = video_duration(path)
    wave = decode_audio(path, RATE, duration=duration)
    assert len(wave) == audio_samples(duration, RATE) == 2 * RATE
    assert abs(int(np.argmax(np.abs(wave))) - RATE) <= ONE_MS  # 1.0 s after the first frame
    assert not wave[:int(0.45 * RATE)].any()  # before the audio starts: zeros


@pytest.mark.parametrize("case", CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_audio_that_starts_before_the_video_loses_its_head(tmp_path, case):
    """Audio from 0 s, video from 0.5 s, a click at 1.0 s: 0.5 s after the first frame."""
    path = clip_with(tmp_path, case, video_start=0.5, audio_start=0.0, click=1.0)
    index = frame_index(path)
    assert index.start == pytest.approx(0.5, abs=0.02)  # MPEG-TS moves its streams by a few ms
    np.testing.assert_allclose(index.stamps[:, 0], np.arange(40) / FPS, atol=1e-9)
    wave = decode_audio(path, RATE, duration=video_duration(path))
    assert len(wave) == 2 * RATE
    assert abs(int(np.argmax(np.abs(wave))) - RATE // 2) <= ONE_MS


def test_face_csv_times_count_from_the_first_displayed_frame(tmp_path):
    """``abaw faces``' ``time`` column: seconds from the first displayed frame (a fixed box
    override, so that no detector runs)."""
    path = write_clip(tmp_path / "late.mkv", fps=FPS, frames=10, video_start=0.5)
    assert frame_index(path).start == 0.5
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text('"late": {box: [1, 2, 30, 40]}\n')
    assert run_faces([str(path)], tmp_path / "out", overrides=str(overrides), device="cpu") == 0
    table = pd.read_csv(tmp_path / "out" / "late.csv")
    np.testing.assert_allclose(table.time, np.arange(10) / FPS)
    assert table.frame.tolist() == list(range(1, 11))


def test_time_base_rounding_is_not_a_variable_frame_rate():
    ms = 1 / 1000
    ntsc_in_ms = np.round(np.arange(300) * 1001 / 30000, 3)  # FLV/Matroska at 29.97 fps: 33, 33, 34 ms steps
    assert set(np.round(np.diff(ntsc_in_ms) / ms).astype(int)) == {33, 34}
    assert not is_variable_frame_rate(ntsc_in_ms, ms)
    assert not is_variable_frame_rate(np.arange(100) / 25, 1 / 25)
    alternating = np.cumsum(np.tile([1 / 30, 1 / 20], 50))  # 30 and 20 fps in turn
    assert is_variable_frame_rate(alternating, ms)
    assert is_variable_frame_rate(np.round(alternating, 3), ms)
    # A fine time base forgives no more than its tick: 1 ms of jitter in 90 kHz ticks is variable.
    assert is_variable_frame_rate(ntsc_in_ms, 1 / 90000)
    assert not is_variable_frame_rate(np.zeros(1), ms)


def test_an_flv_at_29_97_fps_is_not_flagged_variable(tmp_path):
    path = write_clip(tmp_path / "ntsc.flv", container="flv", video_codec="flv", fps=Fraction(30000, 1001),
                      frames=60)
    index = frame_index(path)
    assert index.time_base == 1 / 1000 and set(np.round(np.diff(index.pts))) == {33, 34}
    _, accounting = timing(Job(id="ntsc", frames=60, video=path, faces="frame"))
    assert accounting["variable_frame_rate"] is False and accounting["fps"] == pytest.approx(29.97, abs=0.02)


def test_an_avi_keeps_its_audio_where_its_writer_put_it(tmp_path):
    """AVI stores no presentation times: its demuxer shows H.264 frames one tick after their
    decoding times (the first at 1/FPS s), while the writer put the first frame and the first
    audio sample both at 0. A click written at 1.0 s is 1.0 s after the first frame, as the
    stream's start time (0) says, not 1.0 - 1/FPS s, as the first frame's shifted time would."""
    path = write_clip(tmp_path / "clip.avi", video_codec="libx264", fps=FPS, frames=40, audio_codec="pcm_s16le",
                      sample_rate=RATE, click=1.0)
    assert frame_index(path).start == pytest.approx(1 / FPS)  # the demuxer's one-tick shift
    wave = decode_audio(path, RATE, duration=video_duration(path))
    assert abs(int(np.argmax(np.abs(wave))) - RATE) <= ONE_MS
