from pathlib import Path

import numpy as np
import pytest

from abaw.data.annotations import parse_annotation, parse_frame_csv, parse_template
from abaw.data.records import DataError
from abaw.tasks import AU, EXPR, VA
from tests.conftest import write_annotation


def test_expr_invalid_rows_are_masked(tmp_path):
    path = write_annotation(tmp_path / "a.txt", EXPR, [0, 7, -1, 4])
    labels, valid = parse_annotation(path, EXPR)
    assert labels.shape == (4, 1) and labels.dtype == np.float32
    assert labels[:, 0].tolist() == [0, 7, -1, 4]
    assert valid[:, 0].tolist() == [True, True, False, True]


def test_va_is_masked_per_dimension(tmp_path):
    path = write_annotation(tmp_path / "a.txt", VA, [[0.5, -5], [-5, 0.25], [-1, 1]])
    labels, valid = parse_annotation(path, VA)
    assert valid.tolist() == [[True, False], [False, True], [True, True]]
    assert labels[2].tolist() == [-1.0, 1.0]


def test_au_row_of_minus_one_is_invalid(tmp_path):
    path = write_annotation(tmp_path / "a.txt", AU, [[1] * 12, [-1] * 12])
    _, valid = parse_annotation(path, AU)
    assert valid.all(axis=1).tolist() == [True, False]


def test_header_is_read_leniently(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfNeutral, Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other \r\n3\r\n5\r\n\r\n")
    labels, _ = parse_annotation(path, EXPR)
    assert labels[:, 0].tolist() == [3, 5]


@pytest.mark.parametrize(
    "content, match",
    [
        ("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Contempt\n1\n", r"a\.txt:1: header"),
        ("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n1\nx\n", r"a\.txt:3: non-numeric"),
        ("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n1\n2\n8\n", r"a\.txt:4: value 8 out of range"),
        ("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n1.5\n", r"a\.txt:2: value 1.5"),
        ("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n1\n2,3\n", r"a\.txt:3: expected 1"),
        ("", r"a\.txt: empty annotation file"),
        ("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n", r"a\.txt: annotation file has a header but no"),
    ],
)
def test_bad_expr_files_name_file_and_line(tmp_path, content, match):
    path = tmp_path / "a.txt"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        parse_annotation(path, EXPR)


def test_va_out_of_range_names_the_line(tmp_path):
    path = write_annotation(tmp_path / "a.txt", VA, [[0.5, 0.5], [1.5, 0.0]])
    with pytest.raises(DataError, match=r"a\.txt:3: value 1.5,0 out of range for VA"):
        parse_annotation(path, VA)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        parse_annotation(tmp_path / "nope.txt", EXPR)


def test_dvd_csv_reads_either_frame_column_name(tmp_path):
    for header in ("Frame_Number,Label", "Frame_Num,Label"):
        path = tmp_path / "v.csv"
        path.write_text(f"{header}\n1,0\n2,1\n3,1\n")
        frames, labels = parse_frame_csv(path, require_labels=True)
        assert frames.tolist() == [1, 2, 3] and labels.tolist() == [0, 1, 1]


def test_dvd_csv_with_missing_frame_names_the_line(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("Frame_Number,Label\n1,0\n2,1\n4,1\n")
    with pytest.raises(DataError, match=r"v\.csv:4: expected frame 3, found 4"):
        parse_frame_csv(path, require_labels=True)


def test_dvd_template_needs_no_labels(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("Frame_Number,Label\n1,\n2,\n")
    frames, labels = parse_frame_csv(path, require_labels=False)
    assert frames.tolist() == [1, 2] and labels is None


def test_template_rows_keep_track_and_file_order(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("image_location,valence,arousal\nb_left/00002.jpg,,\nb_left/00001.jpg,,\na/00001.jpg,,\n")
    rows = parse_template(path)
    assert list(rows) == ["b_left", "a"]
    assert rows["b_left"].tolist() == [2, 1]


def test_template_with_a_bad_location_names_the_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("image_location,valence,arousal\na/00001.jpg,,\na-00002.jpg,,\n")
    with pytest.raises(DataError, match=r"t\.txt:3: image location"):
        parse_template(Path(path))
