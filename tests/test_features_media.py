import fractions
from pathlib import Path

import numpy as np
import pytest

from features.extract import VideoFrames
from features.media import decode_audio, frame_index, frame_timestamps, probe
from tests.conftest import clip

PREROLL, SHOWN, FPS = 3, 30, 25  # hidden pre-roll frames, displayed frames, frame rate of the clip below


def grey(i: int) -> int:
    """Grey level of encoded frame ``i`` (pre-roll included): far enough apart to tell frames apart."""
    return 10 + 6 * i


def write_preroll_clip(path: Path, click: float = 1.0) -> Path:
    """An mp4 like a real file with encoder pre-roll: H.264 64x48 at 25 fps whose first
    PREROLL frames have negative timestamps, which the mp4 muxer hides behind an edit list
    (PyAV shows SHOWN frames, decord indexes SHOWN + PREROLL), a keyframe every 10 frames; and
    mono AAC at 16 kHz, silent but for a click ``click`` seconds after the first shown frame."""
    import av

    if "libx264" not in av.codecs_available:
        pytest.skip("PyAV is built without libx264")
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.codec_context.time_base = fractions.Fraction(1, FPS)
        video.options = {"preset": "ultrafast", "threads": "1", "x264-params": "keyint=10:min-keyint=10:scenecut=0"}
        sound = out.add_stream("aac", rate=16000)
        sound.layout = "mono"
        for i in range(PREROLL + SHOWN):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), grey(i), np.uint8), format="rgb24")
            frame.pts = i - PREROLL
            out.mux(video.encode(frame))
        out.mux(video.encode())
        wave = np.zeros((1, int(SHOWN / FPS * 16000)), np.float32)
        wave[0, int(click * 16000)] = 0.9
        for k in range(0, wave.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, k:k + 1024]), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k
            out.mux(sound.encode(frame))
        out.mux(sound.encode())
    return path


@pytest.fixture(scope="module")
def preroll_clip(tmp_path_factory) -> Path:
    return write_preroll_clip(tmp_path_factory.mktemp("preroll") / "preroll.mp4")


def displayed_by_pyav(path: Path) -> np.ndarray:
    """Every frame PyAV's decoder yields, the reference for what a player shows."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def test_avi_timestamps_count_from_the_first_frame(sample_root):
    """decord reports nonsense times for every frame of some AVI files; the packets' are right."""
    avi = next(sample_root.rglob("*.avi"))
    stamps = frame_timestamps(avi)
    info = probe(avi)
    assert stamps[0, 0] == 0.0 and np.all(np.diff(stamps[:, 0]) > 0)
    assert np.allclose(np.diff(stamps[:, 0]), 1 / info.fps, atol=1e-3)
    assert np.allclose(stamps[:-1, 1], stamps[1:, 0])


def test_mp4_timestamps_match_decord_and_probe(sample_root):
    import decord

    for video in sample_root.rglob("*.mp4"):
        stamps = frame_timestamps(video)
        assert stamps.shape[1] == 2 and np.all(np.diff(stamps[:, 0]) > 0), video
        assert stamps[-1, 1] == pytest.approx(probe(video).duration, abs=0.15), video
        reader = decord.VideoReader(str(video), ctx=decord.cpu(0), num_threads=1)
        assert np.allclose(stamps, reader.get_frame_timestamp(np.arange(len(reader))), atol=1e-5), video


@pytest.mark.parametrize("name, frames", [("single_face.mp4", 72), ("WolfgangLanger_Pexels.mp4", 472)])
def test_real_clips_have_no_preroll(name, frames):
    index = frame_index(clip(name))
    assert index.hidden == 0 and len(index.stamps) == frames and index.stamps[0, 0] == 0.0


def test_preroll_is_counted_and_timed_as_a_player_shows_it(preroll_clip):
    import decord

    assert len(decord.VideoReader(str(preroll_clip), ctx=decord.cpu(0))) == SHOWN + PREROLL
    assert len(displayed_by_pyav(preroll_clip)) == SHOWN
    index = frame_index(preroll_clip)
    assert index.hidden == PREROLL
    assert index.stamps.shape == (SHOWN, 2) and index.stamps[0, 0] == 0.0
    np.testing.assert_allclose(index.stamps[:, 0], np.arange(SHOWN) / FPS, atol=1e-9)
    np.testing.assert_allclose(index.stamps[:, 1], np.arange(1, SHOWN + 1) / FPS, atol=1e-9)


def test_preroll_never_becomes_row_one(preroll_clip):
    """Row i is displayed frame i however it is read: decord gives index i in the first GOP read
    on from the start, but displayed frame i - PREROLL after seeking to a later keyframe."""
    import decord

    shown = displayed_by_pyav(preroll_clip)
    assert abs(int(shown[0].mean()) - grey(PREROLL)) <= 2  # the first shown frame is not pre-roll
    frames = VideoFrames()
    batches = np.concatenate([frames(preroll_clip, np.arange(i, min(i + 8, SHOWN))) for i in range(0, SHOWN, 8)])
    np.testing.assert_array_equal(batches, shown)
    np.testing.assert_array_equal(frames(preroll_clip, np.array([17, 3, 29])), shown[[17, 3, 29]])
    # decord's pixels are exact too, just at positions that depend on how it got there.
    reader = decord.VideoReader(str(preroll_clip), ctx=decord.cpu(0), num_threads=1)
    np.testing.assert_array_equal(reader.get_batch(list(range(SHOWN))).asnumpy(), shown)
    reader.seek(0)
    np.testing.assert_array_equal(reader.get_batch([20 + PREROLL]).asnumpy()[0], shown[20])


def test_preroll_clip_audio_starts_at_the_first_shown_frame(preroll_clip):
    wave = decode_audio(preroll_clip, 16000)
    click = int(np.argmax(np.abs(wave)))
    assert abs(click - 16000) <= 1
    # The click, 1 s after the first shown frame, falls at the start of shown frame 25.
    assert frame_timestamps(preroll_clip)[round(1.0 * FPS), 0] == pytest.approx(click / 16000, abs=2 / 16000)
