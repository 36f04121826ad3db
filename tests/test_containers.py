"""Videos in any container the decoder reads: one list of known containers for the dataset
readers and ``abaw faces``, anything else opened and taken or named, never dropped quietly."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from abaw.data import affwild2, dvd
from abaw.data.videolevel import video_stem
from abaw.faces import find_videos
from abaw.inspection import inspect_root
from abaw.tasks import EXPR
from features.containers import VIDEO_CONTAINERS
from features.extract import VideoFrames
from features.media import decode_audio, frame_index
from tests.conftest import write_annotation
from tests.synthetic_media import grey, write_clip

NTSC = Fraction(30000, 1001)


def write_flv(path: Path, frames: int = 30) -> Path:
    """FLV1 video at 29.97 fps (FLV stores milliseconds, so frames step 33 or 34 ms), with its
    audio stream first, as FLVs from the web have it."""
    return write_clip(path, container="flv", video_codec="flv", fps=NTSC, frames=frames, audio_codec="aac",
                      audio_seconds=1.0, audio_first=True)


def expr_root(root: Path, clips: dict[str, int]) -> Path:
    """An Aff-Wild2 root with EXPR train annotations of ``clips`` (track -> rows), no crops."""
    for track, rows in clips.items():
        write_annotation(root / "annotations" / "EXPR_Recognition_Challenge" / "Train_Set" / f"{track}.txt",
                         EXPR, [i % 7 for i in range(rows)])
    (root / "videos").mkdir(parents=True)
    return root


def test_the_known_containers_include_those_teams_meet():
    for suffix in (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                   ".ts", ".mts", ".m2ts", ".ogv", ".vob", ".mxf", ".asf", ".f4v", ".divx"):
        assert suffix in VIDEO_CONTAINERS
    assert video_stem("raw/00042.flv", numeric=True) == "42" and video_stem("clip.M2TS") == "clip"


def test_an_flv_in_videos_gives_its_track_a_video(tmp_path):
    root = expr_root(tmp_path / "affwild2", {"speaker_happy": 30})
    flv = write_flv(root / "videos" / "speaker_happy.flv")
    layout = affwild2.find_layout(root)
    [track] = affwild2.load_tracks(layout, EXPR)
    assert track.video_path == flv and layout.problems == []
    stats, problems = inspect_root(root)
    summary = stats["affwild2"]["expr"]["train"]
    assert not [p for p in problems if p.severity == "error" or p.path == flv]
    assert summary["face_sources"] == {"detected": 1}
    assert summary["fps"][0] == pytest.approx(29.97, abs=0.05)


def test_files_of_other_suffixes_are_opened_and_taken_or_named(tmp_path):
    root = expr_root(tmp_path / "affwild2", {"clip": 30, "still": 1})
    videos = root / "videos"
    taken = write_flv(videos / "clip.vid")  # a video under a suffix no list knows
    (videos / "still.dat").write_bytes(_jpeg())  # opens as a one-frame "video"
    write_clip(videos / "voice.xyz", container="matroska", video_codec=None, audio_codec="pcm_s16le")
    (videos / "notes").write_bytes(b"\x00\x01 not media at all " * 50)
    (videos / "notes.txt").write_text("a text file is plainly no video\n")
    (videos / ".DS_Store").write_bytes(b"\x00" * 64)
    # JPEG crops kept beside the videos are never opened (a JPEG opens as a one-frame video).
    crops = videos / "cropped_aligned" / "clip"
    crops.mkdir(parents=True)
    write_flv(crops / "00001.dat")

    layout = affwild2.find_layout(root)
    by_name = {p.path.name: p for p in layout.problems}
    assert layout.videos == {"clip": taken}
    assert sorted(by_name) == ["clip.vid", "notes", "still.dat", "voice.xyz"]
    assert all(p.severity == "warning" for p in layout.problems)
    assert by_name["clip.vid"].message.startswith("read as a video: '.vid' is not a known video container")
    assert by_name["still.dat"].message.endswith("one frame only (a still image)")
    assert by_name["voice.xyz"].message.endswith("no video stream")
    assert "cannot be opened" in by_name["notes"].message and "no suffix" in by_name["notes"].message
    tracks = {t.id: t for t in affwild2.load_tracks(layout, EXPR)}
    assert tracks["clip"].video_path == taken and tracks["still"].video_path is None
    _, problems = inspect_root(root)
    assert {p.path.name for p in problems} >= {"clip.vid", "still.dat", "voice.xyz", "notes"}


def test_dvd_reads_videos_in_other_containers(dvd_root):
    (dvd_root / "Training" / "videos" / "0001.mp4").unlink()
    flv = write_flv(dvd_root / "Training" / "videos" / "0001.flv")
    tracks = {t.id: t for t in dvd.load_tracks(dvd_root)}
    assert tracks["0001"].video_path == flv


def test_abaw_faces_searches_a_folder_as_the_readers_do(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    flv, odd = write_flv(folder / "a.flv"), write_flv(folder / "b.vid")
    (folder / "c.dat").write_bytes(_jpeg())
    said: list[str] = []
    assert find_videos([str(folder)], log=said.append) == [flv, odd]
    assert len(said) == 2 and "b.vid: warning: read as a video" in said[0] and "c.dat: warning: not read" in said[1]


@pytest.mark.parametrize("name, container, video, audio, rate", [("clip.flv", None, "flv", "aac", 44100),
                                                                  ("clip.ts", "mpegts", "mpeg4", "mp2", 48000),
                                                                  ("clip.mkv", None, "mpeg4", "pcm_s16le", 16000)])
def test_a_container_whose_first_stream_is_audio_decodes_as_any_other(tmp_path, name, container, video, audio, rate):
    import av

    path = write_clip(tmp_path / name, container=container, video_codec=video, fps=NTSC, frames=36, audio_codec=audio,
                      sample_rate=rate, audio_first=True, click=0.5)
    with av.open(str(path)) as opened:
        assert opened.streams[0].type == "audio"
        shown = np.stack([f.to_ndarray(format="rgb24") for f in opened.decode(opened.streams.video[0])])
    index = frame_index(path)
    assert len(index.pts) == 36 and index.hidden == 0 and index.stamps[0, 0] == 0.0
    np.testing.assert_allclose(np.diff(index.stamps[:, 0]), 1001 / 30000, atol=1e-3)  # ms-rounded in FLV/MKV
    rows = np.array([0, 17, 35])
    np.testing.assert_array_equal(VideoFrames()(path, rows), shown[rows])
    levels = shown.mean(axis=(1, 2, 3))  # the clip's own frames in order (lossy: near their grey level)
    assert np.all(np.diff(levels) >= 0) and abs(levels[17] - grey(17)) <= 8
    wave = decode_audio(path, 16000)
    assert abs(int(np.argmax(np.abs(wave))) - 8000) <= 16  # the click, 0.5 s after the first frame: within 1 ms


def _jpeg() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_an_mpeg_ts_with_b_frames_reads_its_frames_where_seeking_and_decord_fail(tmp_path):
    """H.264 in MPEG-TS decodes before it presents (dts < pts): PyAV's seek there lands on no
    frame, and decord cannot read the file at all. The frames still come out, each by its time."""
    import av

    path = write_clip(tmp_path / "clip.ts", container="mpegts", video_codec="libx264", fps=30, frames=40)
    with av.open(str(path)) as container:
        every = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert len(every) == 40 == len(frame_index(path).pts)
    frames = VideoFrames()
    for rows in (np.array([0, 1, 2]), np.array([20, 39]), np.arange(40)):
        assert np.array_equal(frames(path, rows), every[rows])
