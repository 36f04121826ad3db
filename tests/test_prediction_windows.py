"""Prediction windows: every row predicted once, with its context, wherever the windows start."""

import pytest

from abaw.training.data import prediction_windows


def test_windows_tile_the_track_and_give_each_kept_row_its_context():
    # 20 rows, windows of 8 with 2 rows of context: blocks of 4 kept rows; the first and last
    # windows sit on the track edges and keep 6.
    assert prediction_windows(20, 8, 2) == [(0, 0, 6), (4, 6, 10), (8, 10, 14), (12, 14, 20)]
    for rows, window, context, offset in ((20, 8, 2, 0), (20, 8, 2, 3), (97, 16, 7, 5), (33, 32, 8, 1)):
        windows = prediction_windows(rows, window, context, offset)
        kept = [r for _, a, b in windows for r in range(a, b)]
        assert kept == list(range(rows))
        for start, a, b in windows:
            assert 0 <= start and start + window <= rows
            for row in range(a, b):
                assert row - start >= context or start == 0
                assert start + window - 1 - row >= context or start + window == rows


def test_short_tracks_are_one_window_and_bad_sizes_are_refused():
    assert prediction_windows(5, 8, 3) == [(0, 0, 5)]
    with pytest.raises(ValueError, match="exceed twice the context"):
        prediction_windows(50, 8, 4)


def test_a_temporal_model_predicts_the_same_wherever_the_windows_start(sample_root, tmp_path):
    import dataclasses

    import numpy as np

    from abaw.config import make_run_dir
    from abaw.data import load_tracks
    from abaw.tasks import VD
    from abaw.training.train import predict_frames, train
    from tests.test_training import config_for, write_synthetic_features

    cache = tmp_path / "cache"
    write_synthetic_features(sample_root, cache)
    config = config_for(sample_root, cache, tmp_path, "vd", "train.epochs=1", "train.model.temporal=true")
    result = train(config, make_run_dir(config, "temporal"), log=lambda m: None)
    tracks = load_tracks(sample_root, VD, splits=("validation",))
    assert max(t.num_frames for t in tracks) > 2 * config.train.window  # several windows per track
    plain = predict_frames(result.best_checkpoint, config, tracks)
    shifted = predict_frames(result.best_checkpoint, config, tracks, offset=3, batch_size=2)
    whole = predict_frames(result.best_checkpoint, dataclasses.replace(
        config, train=dataclasses.replace(config.train, window=10_000)), tracks)
    for track in tracks:
        for other in (shifted, whole):
            np.testing.assert_allclose(plain[track.id]["probabilities"], other[track.id]["probabilities"],
                                       rtol=1e-5, atol=1e-6)
        assert plain[track.id]["probabilities"].shape == (track.num_frames, 1)
