import shutil
from pathlib import Path

import numpy as np
import pytest

from abaw.cli import main
from abaw.data import dataset_key
from abaw.data.records import DataError, Track
from abaw.folds import build_folds, ensure_folds, fold_distributions, label_counts, load_folds
from abaw.tasks import AU, EXPR, VA


def synthetic_tracks(seed=0, videos=30):
    """EXPR and VA tracks over ``videos`` videos; every fourth video has a left/right pair."""
    rng = np.random.default_rng(seed)
    expr, va = [], []
    for v in range(videos):
        names = [f"vid{v}_left", f"vid{v}_right"] if v % 4 == 0 else [f"vid{v}"]
        dominant = rng.integers(0, 8)
        for name in names:
            n = int(rng.integers(50, 400))
            labels = np.where(rng.random(n) < 0.7, dominant, rng.integers(0, 8, n)).astype(np.float32)[:, None]
            expr.append(Track(name, "expr", "train", f"vid{v}", None, Path(name), np.arange(1, n + 1),
                              labels, np.ones_like(labels, dtype=bool)))
        values = rng.uniform(-1, 1, (100, 2)).astype(np.float32)
        va.append(Track(names[0], "va", "validation", f"vid{v}", None, Path(names[0]), np.arange(1, 101),
                        values, np.ones_like(values, dtype=bool)))
    return {EXPR: expr, VA: va}


def test_left_right_tracks_and_every_task_of_a_video_share_a_fold(affwild2_root, tmp_path):
    """Built from the raw annotation file names: the grouping below is written out by hand,
    the code has to find it (strip _left/_right, join the tasks)."""
    folds, tracks = ensure_folds(affwild2_root, "affwild2", tmp_path / "folds.json", k=2, seed=0)
    fold = {(task.name, t.id): folds.fold_of(t) for task, task_tracks in tracks.items() for t in task_tracks}
    groups = [[("expr", "10-30-640x360_left"), ("expr", "10-30-640x360_right")],
              [("expr", "video2"), ("va", "video2"), ("au", "video2")],
              [("expr", "video3"), ("va", "video3"), ("au", "video3")]]
    assert sorted(fold) == sorted(member for group in groups for member in group)
    for group in groups:
        assert len({fold[member] for member in group}) == 1, group
    assert sorted(folds.videos) == ["10-30-640x360", "video2", "video3"]
    assert sorted(set(folds.videos.values())) == [0, 1]


def test_folds_are_seeded_and_better_balanced_than_random():
    tracks = synthetic_tracks()
    assert build_folds(tracks, seed=3) == build_folds(tracks, seed=3)
    folds = build_folds(tracks, k=5, seed=0)
    _, _, distance = fold_distributions(EXPR, tracks[EXPR], folds)
    rng = np.random.default_rng(0)
    random_worst = []
    for _ in range(20):
        videos = sorted(folds.videos)
        shuffled = dict(zip(videos, rng.permutation(np.arange(len(videos)) % 5).tolist()))
        random = type(folds)(5, 0, "affwild2", shuffled)
        random_worst.append(fold_distributions(EXPR, tracks[EXPR], random)[2].max())
    assert distance.max() < np.median(random_worst)


def test_label_counts_by_task():
    labels = np.array([[1, 0] + [0] * 10, [1, 1] + [0] * 10, [-1] * 12], dtype=np.float32)
    track = Track("t", "au", "train", "t", None, Path("t"), np.arange(1, 4), labels, labels != -1)
    counts, totals = label_counts(AU, track)
    assert counts[:2].tolist() == [2, 1] and totals[0] == 2


def test_persisted_folds_are_reused_and_a_mismatch_is_refused(affwild2_root, tmp_path, capsys):
    path = tmp_path / "folds.json"
    key = dataset_key(affwild2_root, "affwild2")
    folds, _ = ensure_folds(affwild2_root, "affwild2", path, k=2, seed=0)
    assert load_folds(path, "affwild2", key) == folds
    again, _ = ensure_folds(affwild2_root, "affwild2", path, k=2, seed=0)
    assert again == folds
    with pytest.raises(DataError, match="rebuild them with abaw folds") as refused:
        ensure_folds(affwild2_root, "affwild2", path, k=3, seed=0)
    # The command the message names exists and does what it says.
    command = str(refused.value).split("rebuild them with abaw ")[1].split(" (")[0].split()
    assert main(command) == 0, capsys.readouterr().err
    assert load_folds(path, "affwild2", key).k == 3
    assert ensure_folds(affwild2_root, "affwild2", path, k=3, seed=0)[0].k == 3


def test_two_roots_never_share_folds(affwild2_root, tmp_path):
    path = tmp_path / "folds.json"
    other = tmp_path / "other" / "affwild2"
    shutil.copytree(affwild2_root, other)
    for split in (other / "annotations").glob("*/Validation_Set"):
        shutil.rmtree(split)
    first, _ = ensure_folds(affwild2_root, "affwild2", path, k=2, seed=0)
    second, _ = ensure_folds(other, "affwild2", path, k=2, seed=0)  # other videos: no mismatch error
    assert "video3" in first.videos and "video3" not in second.videos
    assert dataset_key(affwild2_root, "affwild2") != dataset_key(other, "affwild2")
    assert load_folds(path, "affwild2", dataset_key(other, "affwild2")) == second


def test_dvd_and_affwild2_folds_live_side_by_side(affwild2_root, dvd_root, tmp_path):
    path = tmp_path / "folds.json"
    ensure_folds(affwild2_root, "affwild2", path, k=2, seed=0)
    ensure_folds(dvd_root, "dvd", path, k=3, seed=1)
    assert load_folds(path, "dvd", dataset_key(dvd_root, "dvd")).k == 3
    assert load_folds(path, "affwild2", dataset_key(affwild2_root, "affwild2")).k == 2


def test_folds_cli_prints_distances(dvd_root, tmp_path, capsys):
    out = tmp_path / "f.json"
    assert main(["folds", "--task", "vd", "--k", "3", "--out", str(out), str(dvd_root)]) == 0
    text = capsys.readouterr().out
    assert "largest L2 distance to the pooled distribution" in text and out.exists()
    assert main(["folds", "--task", "vd", "--k", "7", "--out", str(tmp_path / "g.json"), str(dvd_root)]) == 1
    assert "6 videos cannot fill 7 folds" in capsys.readouterr().err
