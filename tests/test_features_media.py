import numpy as np
import pytest

from features.media import frame_timestamps, probe


def test_avi_timestamps_fall_back_to_packet_times(sample_root):
    """decord reports nonsense times for every frame of some AVI files; the packets' are used."""
    avi = next(sample_root.rglob("*.avi"))
    stamps = frame_timestamps(avi)
    info = probe(avi)
    assert stamps[0, 0] == 0.0 and np.all(np.diff(stamps[:, 0]) > 0)
    assert np.allclose(np.diff(stamps[:, 0]), 1 / info.fps, atol=1e-3)
    assert np.allclose(stamps[:-1, 1], stamps[1:, 0])


def test_mp4_timestamps_come_from_decord_and_match_probe(sample_root):
    for video in sample_root.rglob("*.mp4"):
        stamps = frame_timestamps(video)
        assert stamps.shape[1] == 2 and np.all(np.diff(stamps[:, 0]) > 0), video
        assert stamps[-1, 1] == pytest.approx(probe(video).duration, abs=0.15), video
