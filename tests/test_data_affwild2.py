import shutil

import numpy as np
import pytest

from abaw.data import affwild2, dvd, load_tracks, present_tasks, resolve_tasks
from abaw.data.records import DataError
from abaw.inspection import inspect_root
from abaw.tasks import AU, EXPR, VA, VD


def by_id(tracks):
    return {t.id: t for t in tracks}


def test_reads_tracks_with_split_video_and_crop_mask(affwild2_root):
    tracks = by_id(load_tracks(affwild2_root, EXPR))
    assert {t.split for t in tracks.values()} == {"train", "validation", "test"}
    left, right = tracks["10-30-640x360_left"], tracks["10-30-640x360_right"]
    assert left.video == right.video == "10-30-640x360"
    assert left.video_path == right.video_path == affwild2_root / "batch1" / "10-30-640x360.mp4"
    assert right.crop_present.tolist() == [True, True, False, False, True]
    assert left.valid[:, 0].tolist() == [True, True, True, True, False]
    assert tracks["video3"].video_path.parent.name == "batch2"


# The multi-part sources among the 317 EXPR train+val tracks of the real data, and names that
# stand alone.
REAL_PARTS = {
    "122-60-1920x1080": [f"122-60-1920x1080-{k}" for k in (1, 2, 3, 4)],
    "28-30-1280x720": [f"28-30-1280x720-{k}" for k in (1, 2, 3, 4)],
    "5-60-1920x1080": [f"5-60-1920x1080-{k}" for k in (1, 2, 3, 4)],
    "24-30-1920x1080": ["24-30-1920x1080-1", "24-30-1920x1080-2"],
    "video45": ["video45_3", "video45_5", "video45_6", "video45_7"],
}


def test_source_name_of_real_names():
    for source, videos in REAL_PARTS.items():
        assert [affwild2.source_name(v) for v in videos] == [source] * len(videos)
    assert affwild2.source_name("video10_1") == "video10"
    for side in ("_left", "_right"):
        assert affwild2.source_name(f"6-30-1920x1080{side}") == "6-30-1920x1080"
        assert affwild2.source_name(f"135-24-1920x1080{side}") == "135-24-1920x1080"
        assert affwild2.source_name(f"video45_3{side}") == "video45"  # the side goes first
    for alone in ("1-30-1280x720", "102", "video2", "10-30-640x360"):
        assert affwild2.source_name(alone) == alone
    videos = [v for vs in REAL_PARTS.values() for v in vs]
    assert len(videos) == 18
    assert affwild2.group_by_source(videos + ["102", "1-30-1280x720"]) == dict(
        sorted({**REAL_PARTS, "102": ["102"], "1-30-1280x720": ["1-30-1280x720"]}.items()))


def test_test_tracks_come_from_list_and_template(affwild2_root):
    test = by_id(load_tracks(affwild2_root, EXPR, splits=("test",)))
    assert list(test) == ["test1", "test2_right"]
    assert test["test2_right"].frames.tolist() == [1, 2]
    assert test["test2_right"].labels is None
    assert test["test2_right"].crop_present.tolist() == [False, True]
    assert test["test2_right"].video == "test2"


def test_older_edition_folder_names_are_accepted(affwild2_root):
    ann = affwild2_root / "annotations"
    ann.rename(affwild2_root / "ABAW Annotations")
    ann = affwild2_root / "ABAW Annotations"
    (ann / "EXPR_Recognition_Challenge").rename(ann / "EXPR_Set")
    (ann / "EXPR_Set" / "Train_Set").rename(ann / "EXPR_Set" / "Training_Set")
    (ann / "VA_Estimation_Challenge").rename(ann / "VA_Set")
    assert len(load_tracks(affwild2_root, EXPR, splits=("train",))) == 3
    assert len(load_tracks(affwild2_root, VA, splits=("validation",))) == 1


def test_root_one_level_up_is_found(affwild2_root):
    parent = affwild2_root.parent
    affwild2_root.rename(parent / "Aff-Wild2")
    assert len(load_tracks(parent, AU, splits=("train",))) == 1


def test_missing_root_and_task_folder(tmp_path, affwild2_root):
    with pytest.raises(DataError, match="dataset root not found"):
        load_tracks(tmp_path / "nowhere", EXPR)
    shutil.rmtree(affwild2_root / "annotations" / "AU_Detection_Challenge")
    # One task absent is a fact about the root, not an error: no AU tracks, the others stay.
    problems = []
    assert load_tracks(affwild2_root, AU, problems=problems) == [] and problems == []
    assert [t.name for t in present_tasks(affwild2_root)] == ["expr", "va"]
    assert [t.name for t in resolve_tasks(affwild2_root, [])] == ["expr", "va"]
    with pytest.raises(DataError, match=r"task\(s\) au requested but absent .*present: expr, va"):
        resolve_tasks(affwild2_root, ["expr", "au"])


def test_bad_file_raises_or_is_collected(affwild2_root):
    bad = affwild2_root / "annotations/EXPR_Recognition_Challenge/Train_Set/video2.txt"
    bad.write_text(bad.read_text().replace("\n3\n", "\nthree\n"))
    with pytest.raises(DataError, match=r"video2\.txt:4: non-numeric"):
        load_tracks(affwild2_root, EXPR)
    problems = []
    tracks = load_tracks(affwild2_root, EXPR, problems=problems)
    assert "video2" not in by_id(tracks) and len(tracks) == 5
    assert [(p.path.name, p.line) for p in problems] == [("video2.txt", 4)]


def test_template_row_for_a_track_with_no_video(affwild2_root):
    (affwild2_root / "batch2" / "test2.mp4").unlink()
    with pytest.raises(DataError, match="no raw video test2"):
        load_tracks(affwild2_root, EXPR, splits=("test",))


def test_template_track_missing_from_test_list(affwild2_root):
    lists = affwild2_root / "names_of_videos_in_each_test_set" / EXPR.test_list
    lists.write_text("test1\n")
    with pytest.raises(DataError, match="test2_right, which is not in the test list"):
        load_tracks(affwild2_root, EXPR, splits=("test",))


def test_inspect_flags_crop_folder_of_unknown_track(affwild2_root):
    (affwild2_root / "cropped_aligned" / "stranger").mkdir()
    stats, problems = inspect_root(affwild2_root, probe_videos=False)
    assert [p.path.name for p in problems if p.severity == "error"] == ["stranger"]
    expr = stats["affwild2"]["expr"]
    assert expr["train"]["tracks"] == 3 and expr["train"]["lines"] == 16
    assert expr["train"]["valid"] == 15
    assert expr["train"]["missing_crops"] == 2
    assert expr["test"]["lines"] == 5
    assert stats["affwild2"]["va"]["train"]["valid"] == [4, 4]


def test_inspect_warns_of_a_source_on_both_sides_of_the_official_split(affwild2_root):
    expr = affwild2_root / "annotations/EXPR_Recognition_Challenge"
    (expr / "Train_Set/10-30-640x360_right.txt").rename(expr / "Validation_Set/10-30-640x360_right.txt")
    for split, part in (("Train_Set", 1), ("Validation_Set", 2), ("Validation_Set", 3)):
        shutil.copy(expr / "Validation_Set/video3.txt", expr / split / f"28-30-1280x720-{part}.txt")
    shutil.copy(expr / "Validation_Set/video3.txt", expr / "Validation_Set/5-60-1920x1080-1.txt")
    shutil.copy(expr / "Validation_Set/video3.txt", expr / "Validation_Set/5-60-1920x1080-2.txt")
    _, problems = inspect_root(affwild2_root, probe_videos=False)
    warned = [p for p in problems if "both splits" in p.message]
    assert all(p.severity == "warning" and p.path == expr for p in warned)
    assert [p.message.split(" (")[0] for p in warned] == [
        "EXPR: source 10-30-640x360 has tracks in both splits", "EXPR: source 28-30-1280x720 has tracks in both splits"]
    assert "(train: 28-30-1280x720-1; validation: 28-30-1280x720-2, 28-30-1280x720-3)" in warned[1].message
    assert "(train: 10-30-640x360_left; validation: 10-30-640x360_right)" in warned[0].message


def test_dvd_tracks_and_test_templates(dvd_root):
    tracks = by_id(dvd.load_tracks(dvd_root))
    assert len(tracks) == 7
    assert tracks["0005"].split == "validation" and tracks["0005"].labels.shape == (20, 1)
    assert tracks["0100"].split == "test" and tracks["0100"].frames.tolist() == [1, 2, 3]
    assert tracks["0001"].video_path.name == "0001.mp4"
    assert len(load_tracks(dvd_root.parent, VD, splits=("train",))) == 4


def test_dvd_csv_with_missing_frames_is_an_error(dvd_root):
    path = dvd_root / "Training" / "annotations" / "0002.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    with pytest.raises(DataError, match=r"0002\.csv:6: expected frame 5, found 6"):
        dvd.load_tracks(dvd_root)


def test_crop_mask_of_absent_folder_is_all_false(tmp_path):
    assert affwild2.crop_mask(tmp_path / "none", np.arange(1, 4)).tolist() == [False, False, False]


def test_inspect_reports_videos_that_do_not_open(affwild2_root):
    # EXPR alone: its tracks use every video, and VA and AU have no template here (warned of).
    _, problems = inspect_root(affwild2_root, probe_videos=True, tasks=[EXPR])
    assert sorted(p.path.name for p in problems) == ["10-30-640x360.mp4", "test1.mp4", "test2.mp4",
                                                     "video2.mp4", "video3.mp4"]
    assert all("cannot open video" in p.message for p in problems)
