"""Bad input is refused with its path (DataError, or a problem `abaw inspect` lists), never a
traceback and never accepted: one defect at a time in the tiny trees of conftest."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from abaw.cli import main
from abaw.data import affwild2, dvd, load_tracks
from abaw.data.annotations import parse_annotation, parse_frame_csv, parse_template
from abaw.data.records import DataError
from abaw.inspection import inspect_root
from abaw.score import score_submission
from abaw.tasks import EXPR, VA, VD
from submissions.formats import TrackRows, read_submission
from submissions.writer import write_dvd_folder, write_per_track, write_task_file
from tests.conftest import write_annotation

EXPR_TRAIN = "annotations/EXPR_Recognition_Challenge/Train_Set"


def inspect_fails_naming(root: Path, capsys, text: str) -> str:
    """Run `abaw inspect` the way a user does; it must exit 1 and print ``text`` (a path and why)."""
    assert main(["inspect", str(root), "--skip-videos"]) == 1
    out = capsys.readouterr().out
    assert text in out, out
    return out


def deny_reading(monkeypatch, method: str, target: Path) -> None:
    """Make ``Path.<method>`` raise PermissionError on ``target`` (tests run as root, where chmod
    does not deny anything)."""
    real = getattr(Path, method)

    def denied(self, *args, **kwargs):
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, denied)


# ----------------------------------------------------------------------------- OS-level failures


def test_inspect_reports_a_folder_where_an_annotation_file_should_be(affwild2_root, capsys):
    folder = affwild2_root / EXPR_TRAIN / "foo.txt"
    folder.mkdir()
    inspect_fails_naming(affwild2_root, capsys, f"{folder}: a folder where a file should be")
    stats, _ = inspect_root(affwild2_root, probe_videos=False)
    assert stats["affwild2"]["expr"]["train"]["tracks"] == 3  # the good files are still read


def test_unreadable_annotation_is_a_data_error_naming_it(tmp_path, monkeypatch):
    path = write_annotation(tmp_path / "a.txt", EXPR, [0, 1])
    deny_reading(monkeypatch, "read_bytes", path)
    with pytest.raises(DataError, match=r"a\.txt: cannot read this file: Permission denied"):
        parse_annotation(path, EXPR)


def test_unreadable_split_folder_is_a_problem_not_an_empty_split(affwild2_root, monkeypatch):
    folder = affwild2_root / EXPR_TRAIN
    deny_reading(monkeypatch, "iterdir", folder)
    problems = []
    tracks = load_tracks(affwild2_root, EXPR, problems=problems)
    assert {t.split for t in tracks} == {"validation", "test"}
    assert [str(p) for p in problems] == [f"{folder}: cannot read this folder: Permission denied"]


def test_inspect_reports_a_file_where_a_crop_folder_should_be(affwild2_root, capsys):
    for track in ("video2", "test1"):  # an annotated track and a test track
        crops = affwild2_root / "cropped_aligned" / track
        shutil.rmtree(crops)
        crops.write_bytes(b"")
    out = inspect_fails_naming(affwild2_root, capsys, f"{affwild2_root / 'cropped_aligned' / 'video2'}: "
                                                      "a file where a crop folder should be")
    assert f"{affwild2_root / 'cropped_aligned' / 'test1'}: a file where a crop folder should be" in out
    problems = []
    tracks = {t.id for t in load_tracks(affwild2_root, EXPR, problems=problems)}
    assert "video2" not in tracks and "test1" not in tracks and "video3" in tracks  # the others go on
    with pytest.raises(DataError, match="a file where a crop folder should be"):
        affwild2.crop_mask(affwild2_root / "cropped_aligned" / "video2", np.arange(1, 4))


def test_a_folder_where_the_test_list_or_a_template_should_be(affwild2_root, capsys):
    test_list = affwild2_root / "names_of_videos_in_each_test_set" / EXPR.test_list
    test_list.unlink()
    test_list.mkdir()
    template = affwild2_root / "test_set_examples" / "CVPR_6th_ABAW_VA_test_set_example.txt"
    template.mkdir()
    out = inspect_fails_naming(affwild2_root, capsys, f"{test_list}: a folder where a file should be")
    assert f"{template}: a folder where a file should be" in out


def test_a_folder_named_like_a_video_is_a_problem(affwild2_root):
    folder = affwild2_root / "batch1" / "ghost.mp4"
    folder.mkdir()
    layout = affwild2.find_layout(affwild2_root)
    assert "ghost" not in layout.videos
    assert [str(p) for p in layout.problems] == [f"{folder}: a folder where a video file should be"]


def test_a_folder_in_a_submission_is_refused_naming_it(dvd_root, tmp_path):
    folder = tmp_path / "vd"
    (folder / "0005.csv").mkdir(parents=True)
    with pytest.raises(DataError, match=r"0005\.csv: a folder where a file should be"):
        read_submission(folder, VD)


# ----------------------------------------------------------------------------- non-finite values


@pytest.mark.parametrize("value, shown", [("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("1e999", "inf")])
def test_non_finite_va_values_are_refused_naming_the_line(tmp_path, value, shown):
    path = write_annotation(tmp_path / "a.txt", VA, [[0.5, 0.5], [value, 0.5]])
    with pytest.raises(DataError, match=rf"a\.txt:3: value {shown},0\.5 is not finite"):
        parse_annotation(path, VA)


def test_nan_is_refused_in_class_annotations_too(tmp_path):
    path = write_annotation(tmp_path / "a.txt", EXPR, [0, "nan", 1])
    with pytest.raises(DataError, match=r"a\.txt:3: value nan is not finite"):
        parse_annotation(path, EXPR)


def test_inspect_reports_nan_in_a_va_annotation(affwild2_root, capsys):
    path = affwild2_root / "annotations/VA_Estimation_Challenge/Validation_Set/video3.txt"
    write_annotation(path, VA, [[0.1, 0.2], [0.3, "nan"]])
    inspect_fails_naming(affwild2_root, capsys, f"{path}:3: value 0.3,nan is not finite")


def test_non_finite_values_in_templates_are_refused(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("image_location,valence,arousal\na/00001.jpg,0.5,-0.1\na/00002.jpg,,\na/00003.jpg,nan,0\n")
    with pytest.raises(DataError, match=r"t\.txt:4: value 'nan' is not a finite number"):
        parse_template(path)
    path.write_text("image_location,valence,arousal\na/00001.jpg,0.5,-0.1\na/00002.jpg,,\n")
    assert parse_template(path)["a"].tolist() == [1, 2]  # example values and empty fields are fine
    csv = tmp_path / "t.csv"
    csv.write_text("Frame_Number,Label\n1,\n2,inf\n")
    with pytest.raises(DataError, match=r"t\.csv:3: value 'inf' is not a finite number"):
        parse_frame_csv(csv, require_labels=False)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_predictions_are_refused_when_scoring(affwild2_root, tmp_path, value):
    path = tmp_path / "pred.txt"
    rows = [f"video3/{i:05d}.jpg,0.1,0.2" for i in range(1, 5)]
    rows[1] = f"video3/00002.jpg,{value},0.2"
    path.write_text("image_location,valence,arousal\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=rf"pred\.txt:3: {value} is not a finite number"):
        score_submission(VA, path, affwild2_root)


def test_nan_in_a_dvd_submission_is_refused_when_scoring(dvd_root, tmp_path):
    folder = tmp_path / "vd"
    folder.mkdir()
    for video in ("0005", "0006"):
        (folder / f"{video}.csv").write_text("Frame_Number,Label\n" + "".join(f"{i},0\n" for i in range(1, 21)))
    (folder / "0006.csv").write_text((folder / "0006.csv").read_text().replace("\n3,0\n", "\n3,nan\n"))
    with pytest.raises(DataError, match=r"0006\.csv:4: nan is not a finite number"):
        score_submission(VD, folder, dvd_root)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_writers_refuse_non_finite_predictions(tmp_path, bad):
    frames = np.arange(1, 4)
    expected = {"a": frames}
    va = {"a": TrackRows(frames, np.array([[0.1, 0.2], [bad, 0.0], [0.0, 0.0]]), frames, tmp_path)}
    with pytest.raises(DataError, match=r"track a frame 2: (nan|inf) is not a finite number"):
        write_task_file(tmp_path / "va.txt", VA, expected, va)
    with pytest.raises(DataError, match=r"track a frame 2: (nan|inf) is not a finite number"):
        write_per_track(tmp_path / "per_track", VA, expected, va)
    vd = {"a": TrackRows(frames, np.array([[0.0], [bad], [1.0]]), frames, tmp_path)}
    with pytest.raises(DataError, match=r"track a frame 2: (nan|inf) is not a finite number"):
        write_dvd_folder(tmp_path / "vd", expected, vd)
    assert not any(tmp_path.iterdir())  # nothing written


# ----------------------------------------------------------------------------- DVD headers and rows


@pytest.mark.parametrize("header", ["Label,Frame_Number", "Frame_Number,Label,Extra", "Frame_Number",
                                    "Frame,Label", "Frame_Number,Score"])
def test_dvd_header_must_name_frame_then_label(tmp_path, header):
    path = tmp_path / "v.csv"
    path.write_text(f"{header}\n1,0\n2,1\n")
    with pytest.raises(DataError, match=r"v\.csv:1: header .* is not 'Frame_Number,Label'"):
        parse_frame_csv(path, require_labels=True)


def test_dvd_header_is_read_case_and_space_insensitively(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text(" frame_num , LABEL \n1,0\n2,1\n")
    assert parse_frame_csv(path, require_labels=True)[1].tolist() == [0, 1]


@pytest.mark.parametrize("rows, require_labels", [("1,0\n2,1,0\n", True), ("1,\n2,,\n", False), ("1,\n2\n", False)])
def test_dvd_rows_need_exactly_two_values(tmp_path, rows, require_labels):
    path = tmp_path / "v.csv"
    path.write_text(f"Frame_Number,Label\n{rows}")
    with pytest.raises(DataError, match=r"v\.csv:3: expected 2 comma-separated values"):
        parse_frame_csv(path, require_labels=require_labels)


def test_inspect_reports_swapped_and_extra_dvd_columns(dvd_root, capsys):
    swapped = dvd_root / "Training" / "annotations" / "0001.csv"
    swapped.write_text("Label,Frame_Number\n" + "".join(f"0,{i}\n" for i in range(1, 21)))
    extra = dvd_root / "Validation" / "annotations" / "0005.csv"
    extra.write_text(extra.read_text().replace("\n1,", "\n1,0,"))
    out = inspect_fails_naming(dvd_root, capsys, f"{swapped}:1: header 'Label,Frame_Number' is not")
    assert f"{extra}:2: expected 2 comma-separated values" in out
    assert len(dvd.load_tracks(dvd_root, problems=[])) == 5


def test_dvd_submission_header_is_checked_like_the_annotations(dvd_root, tmp_path):
    folder = tmp_path / "vd"
    folder.mkdir()
    for video in ("0005", "0006"):
        (folder / f"{video}.csv").write_text("Label,Frame_Number\n" + "".join(f"{i},0\n" for i in range(1, 21)))
    with pytest.raises(DataError, match=r"0005\.csv:1: header 'Label,Frame_Number' is not"):
        score_submission(VD, folder, dvd_root)
