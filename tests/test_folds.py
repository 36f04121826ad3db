import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from abaw.cli import main
from abaw.data import dataset_key, load_tracks
from abaw.data.records import DataError, Track
from abaw.folds import Folds, build_folds, ensure_folds, fold_distributions, label_counts, load_folds, video_sources
from abaw.tasks import AU, EXPR, VA, VD
from tests.conftest import write_annotation


def synthetic_tracks(seed=0, sources=30, parts=False):
    """EXPR and VA tracks of ``sources`` recordings; every fourth is a left/right pair and, with
    ``parts``, every third is cut into 2-4 videos (``<n>-30-1280x720-<k>`` or ``video<n>_<k>``).
    Returns the tracks per task and the true ``{source: videos}``."""
    rng = np.random.default_rng(seed)
    expr, va, truth = [], [], {}
    for s in range(sources):
        cut = parts and s % 3 == 0
        source = f"video{s}" if cut and s % 2 else f"{s}-30-1280x720"
        count = 2 + (s // 3) % 3 if cut else 1
        videos = [f"{source}_{k}" if source.startswith("video") else f"{source}-{k}" for k in range(1, count + 1)]
        videos = videos if cut else [source]
        truth[source] = sorted(videos)
        dominant = rng.integers(0, 8)
        for video in videos:
            names = [f"{video}_left", f"{video}_right"] if s % 4 == 0 else [video]
            for name in names:
                n = int(rng.integers(50, 400))
                labels = np.where(rng.random(n) < 0.7, dominant, rng.integers(0, 8, n)).astype(np.float32)[:, None]
                expr.append(Track(name, "expr", "train", video, None, Path(name), np.arange(1, n + 1),
                                  labels, np.ones_like(labels, dtype=bool)))
            values = rng.uniform(-1, 1, (100, 2)).astype(np.float32)
            va.append(Track(names[0], "va", "validation", video, None, Path(names[0]), np.arange(1, 101),
                            values, np.ones_like(values, dtype=bool)))
    return {EXPR: expr, VA: va}, truth


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


@pytest.mark.parametrize("parts", [False, True])
def test_folds_are_seeded_and_better_balanced_than_random(parts):
    tracks, truth = synthetic_tracks(parts=parts)
    assert build_folds(tracks, seed=3) == build_folds(tracks, seed=3)
    folds = build_folds(tracks, k=5, seed=0)
    _, _, distance = fold_distributions(EXPR, tracks[EXPR], folds)
    rng = np.random.default_rng(0)
    random_worst = []
    for _ in range(20):  # random folds under the same constraint: whole sources
        shuffled = dict(zip(truth, rng.permutation(np.arange(len(truth)) % 5).tolist()))
        random = Folds(5, 0, "affwild2", {v: shuffled[s] for s, videos in truth.items() for v in videos})
        random_worst.append(fold_distributions(EXPR, tracks[EXPR], random)[2].max())
    assert distance.max() < np.median(random_worst)


def test_every_video_of_a_source_shares_a_fold():
    tracks, truth = synthetic_tracks(parts=True)
    folds = build_folds(tracks, k=5, seed=0)
    merged = {s: videos for s, videos in truth.items() if len(videos) > 1}
    assert len(merged) == 10 and {len(v) for v in merged.values()} == {2, 3, 4}
    assert folds.merged_sources == merged
    for videos in truth.values():
        assert len({folds.videos[v] for v in videos}) == 1, videos
    assert sorted(set(folds.videos.values())) == list(range(5))
    with pytest.raises(ValueError, match=r"4 sources \(7 videos\) cannot fill 5 folds"):
        build_folds(synthetic_tracks(sources=4, parts=True)[0], k=5)


def test_dvd_ids_are_their_own_sources():
    assert video_sources("dvd", ["video45_5", "video45_3", "0001"]) == {
        "0001": ["0001"], "video45_3": ["video45_3"], "video45_5": ["video45_5"]}
    assert video_sources("affwild2", ["video45_5", "video45_3", "0001"]) == {
        "0001": ["0001"], "video45": ["video45_3", "video45_5"]}


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


def test_saved_folds_that_split_a_source_are_refused(affwild2_root, tmp_path, capsys):
    """Folds saved before sources were grouped may hold a person on both sides: not reused."""
    train = affwild2_root / "annotations/EXPR_Recognition_Challenge/Train_Set"
    for part, rows in ((1, [0, 0, 4]), (2, [5, 5, 7, 7])):
        write_annotation(train / f"28-30-1280x720-{part}.txt", EXPR, rows)
    path = tmp_path / "folds.json"
    folds, _ = ensure_folds(affwild2_root, "affwild2", path, k=2, seed=0)
    assert folds.merged_sources == {"28-30-1280x720": ["28-30-1280x720-1", "28-30-1280x720-2"]}
    assert folds.videos["28-30-1280x720-1"] == folds.videos["28-30-1280x720-2"]
    data = json.loads(path.read_text())
    (entry,) = data["datasets"].values()
    entry["videos"]["28-30-1280x720-2"] = 1 - entry["videos"]["28-30-1280x720-1"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="videos of one source in different folds") as refused:
        ensure_folds(affwild2_root, "affwild2", path, k=2, seed=0)
    assert "28-30-1280x720 (28-30-1280x720-1: " in str(refused.value)
    command = str(refused.value).split("rebuild them with abaw ")[1].split(" (")[0].split()
    assert main(command) == 0, capsys.readouterr().err
    assert ensure_folds(affwild2_root, "affwild2", path, k=2, seed=0)[0] == folds


def test_sample_folds_keep_each_recording_in_one_fold(sample_root, tmp_path):
    """Checked against the generator's truth (the manifest's source of every video), on the
    tracks read from the raw file names: stripping _left/_right and joining parts and tasks is
    the code's work."""
    manifest = json.loads((sample_root / "sample_manifest.json").read_text())
    folds, tracks = ensure_folds(sample_root, "affwild2", tmp_path / "folds.json", k=5, seed=0)
    fold_of = {(task.name, t.id): folds.fold_of(t) for task, task_tracks in tracks.items() for t in task_tracks}
    labelled = {tuple(key.split("/")): track for key, track in manifest["tracks"].items()
                if not key.startswith("vd/") and track["split"] != "test"}
    assert sorted(fold_of) == sorted(labelled)
    by_source: dict[str, set] = {}
    for key, track in labelled.items():
        by_source.setdefault(manifest["videos"][track["video"]]["source"], set()).add(fold_of[key])
    assert all(len(f) == 1 for f in by_source.values()), by_source
    truth = {}
    for key, track in labelled.items():
        truth.setdefault(manifest["videos"][track["video"]]["source"], set()).add(track["video"])
    assert folds.merged_sources == {s: sorted(v) for s, v in truth.items() if len(v) > 1} != {}
    assert any(key[1].endswith("_left") for key in labelled) and any(key[1].endswith("_right") for key in labelled)
    assert set(folds.videos.values()) == set(range(5))
    dvd, _ = ensure_folds(sample_root, "dvd", tmp_path / "folds.json", k=5, seed=0)
    assert len(dvd.videos) == len(load_tracks(sample_root, VD, splits=("train", "validation")))
    assert dvd.merged_sources == {}


def test_folds_cli_prints_distances(dvd_root, tmp_path, capsys):
    out = tmp_path / "f.json"
    assert main(["folds", "--task", "vd", "--k", "3", "--out", str(out), str(dvd_root)]) == 0
    text = capsys.readouterr().out
    assert "largest L2 distance to the pooled distribution" in text and out.exists()
    assert "sources cut into several videos, each kept in one fold: 0" in text
    assert main(["folds", "--task", "vd", "--k", "7", "--out", str(tmp_path / "g.json"), str(dvd_root)]) == 1
    assert "6 sources (6 videos) cannot fill 7 folds" in capsys.readouterr().err
