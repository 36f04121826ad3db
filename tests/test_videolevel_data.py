"""The EMI and BAH readers: records, lenient layouts named by `abaw inspect`, one error per
bad input (path and line), folds grouped by participant, and frame-wise paths left alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from abaw.cli import main
from abaw.data import bah, frame_level, load_tracks, present_tasks, resolve_tasks
from abaw.data.records import DataError, VideoTrack
from abaw.data.transcripts import read_transcript
from abaw.folds import ensure_folds
from abaw.inspection import inspect_root
from abaw.tasks import AH, EMI, FRAME_TASKS, TASKS, VIDEO_TASKS
from tests.videolevel_trees import EMI_HEADER, write_bah_root, write_emi_root


@pytest.fixture
def emi_root(tmp_path: Path) -> Path:
    return write_emi_root(tmp_path / "EMI")


@pytest.fixture
def bah_root(tmp_path: Path) -> Path:
    return write_bah_root(tmp_path / "BAH")


def inspect_output(root: Path, capsys, status: int) -> str:
    assert main(["inspect", str(root), "--skip-videos"]) == status
    return capsys.readouterr().out


# ----------------------------------------------------------------------------- tasks


def test_video_tasks_are_defined_once_with_their_level():
    assert [t.name for t in VIDEO_TASKS] == ["emi", "ah"] and set(FRAME_TASKS) | set(VIDEO_TASKS) == set(TASKS.values())
    assert EMI.submission_header == ("Filename", "Admiration", "Amusement", "Determination", "Empathic Pain",
                                     "Excitement", "Joy")
    assert (EMI.output_size, EMI.columns, EMI.metric, EMI.dataset) == (6, 6, "pearson", "emi")
    assert (AH.output_size, AH.columns, AH.metric, AH.dataset) == (1, 1, "macro_f1", "bah")
    assert AH.submission_header == ("video_path", "pred")


# ----------------------------------------------------------------------------- readers


def test_emi_reads_one_label_row_per_video(emi_root):
    tracks = load_tracks(emi_root.parent, EMI)
    assert all(isinstance(t, VideoTrack) for t in tracks)
    by_split = {s: [t for t in tracks if t.split == s] for s in ("train", "validation", "test")}
    assert [len(v) for v in by_split.values()] == [8, 4, 3]
    first = by_split["train"][0]
    expected = [float(v) for v in (emi_root / "train_split.csv").read_text().splitlines()[1].split(",")[1:]]
    assert first.labels.shape == (1, 6) and np.allclose(first.labels[0], expected, atol=1e-6)
    assert first.video_path == emi_root / "raw" / "1.mp4" and first.listed_as == "1" and first.participant is None
    assert all(t.labels is None for t in by_split["test"])


def test_emi_columns_in_another_order_and_padded_ids_are_read(emi_root):
    names = EMI_HEADER.split(",")
    lines = (emi_root / "train_split.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines]
    swapped = [[r[0], *reversed(r[1:])] for r in rows]
    swapped[1][0] = "0001"  # zero-padded in the list, 1.mp4 on disk
    (emi_root / "train_split.csv").write_text("\n".join(",".join(r) for r in swapped) + "\n")
    tracks = {t.id: t for t in load_tracks(emi_root, EMI, splits=("train",))}
    assert swapped[0][1:] == list(reversed(names[1:]))
    assert np.allclose(tracks["1"].labels[0], [float(v) for v in rows[1][1:]], atol=1e-6)
    assert tracks["1"].listed_as == "0001"


def test_bah_reads_participants_labels_segments_and_transcripts(bah_root):
    tracks = load_tracks(bah_root, AH)
    assert len(tracks) == 30 and {t.split for t in tracks} == {"train", "validation", "test"}
    track = next(t for t in tracks if t.split == "train" and t.labels[0, 0] == 1)
    assert track.participant == track.id.split("_")[0] and track.video == f"{track.participant}/{track.id}"
    assert track.listed_as == f"{track.participant}/Visite_1/{track.id}.mp4"
    assert track.segments.tolist() == [[0.5, 1.5]] and track.transcript.suffix == ".json"
    assert track.transcript_text == "well I want to but maybe not"
    assert [s.text for s in read_transcript(track.transcript)] == ["well I w", "ant to but maybe not"]
    assert all(t.labels is None for t in tracks if t.split == "test")


def test_bah_labels_come_from_the_yaml_when_the_split_file_has_none(bah_root):
    path = bah_root / "split" / "train.txt"
    lines = path.read_text().splitlines()
    path.write_text("video_path,label\n" + "\n".join(line.split(",")[0] for line in lines) + "\n")
    tracks = load_tracks(bah_root, AH, splits=("train",))
    annotations = yaml.safe_load((bah_root / bah.ANNOTATION_FILE).read_text())
    assert len(tracks) == len(lines)
    assert all(t.labels[0, 0] == annotations[t.listed_as]["global_ah"] for t in tracks)
    assert all(t.transcript_text == "" for t in tracks)


@pytest.mark.parametrize("suffix, text, expected", [
    (".srt", "1\n00:00:00,000 --> 00:00:01,500\nI am not\nsure\n\n2\n00:00:01,500 --> 00:00:03,000\nmaybe\n",
     [(0.0, 1.5, "I am not sure"), (1.5, 3.0, "maybe")]),
    (".vtt", "WEBVTT\n\n00:01.000 --> 00:02.000\nyes\n", [(1.0, 2.0, "yes")]),
    (".tsv", "start\tend\ttext\n0\t1200\tyes I will\n", [(0.0, 1.2, "yes I will")]),
])
def test_every_whisper_output_format_is_read(tmp_path, suffix, text, expected):
    path = tmp_path / f"q{suffix}"
    path.write_text(text)
    assert [(s.start, s.end, s.text) for s in read_transcript(path)] == expected


# ----------------------------------------------------------------------------- bad input: EMI


def test_emi_missing_split_file_means_no_emi_root(tmp_path, emi_root):
    for name in ("train_split.csv", "valid_split.csv", "test_split.csv"):
        (emi_root / name).unlink()
    with pytest.raises(DataError, match="no EMI root"):
        load_tracks(emi_root, EMI)


def test_emi_unreadable_split_file_is_named(emi_root):
    (emi_root / "valid_split.csv").unlink()
    (emi_root / "valid_split.csv").mkdir()
    with pytest.raises(DataError, match=r"valid_split\.csv: a folder where a file should be"):
        load_tracks(emi_root, EMI)


def test_emi_wrong_header_names_line_1_and_the_missing_column(emi_root, capsys):
    path = emi_root / "train_split.csv"
    path.write_text(path.read_text().replace("Empathic Pain", "Pain", 1))
    with pytest.raises(DataError, match=r"train_split\.csv:1: header .* \(missing Empathic Pain; unexpected Pain\)"):
        load_tracks(emi_root, EMI)
    out = inspect_output(emi_root, capsys, 1)
    assert f"{path}:1: header" in out


@pytest.mark.parametrize("value, message", [("1.2", r"Joy: 1\.2 is outside \[0, 1\]"),
                                            ("-0.1", r"Joy: -0\.1 is outside \[0, 1\]"),
                                            ("nan", r"Joy: nan is outside \[0, 1\]"),
                                            ("high", "Joy: 'high' is not a number")])
def test_emi_value_outside_0_1_names_file_line_and_column(emi_root, value, message):
    path = emi_root / "valid_split.csv"
    lines = path.read_text().splitlines()
    lines[3] = ",".join(lines[3].split(",")[:-1] + [value])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"valid_split\.csv:4: {message}"):
        load_tracks(emi_root, EMI)
    problems = []
    tracks = load_tracks(emi_root, EMI, problems=problems)
    assert len(tracks) == 14 and len(problems) == 1  # the other rows are still read


def test_emi_listed_video_without_file(emi_root, capsys):
    (emi_root / "raw" / "3.mp4").unlink()
    with pytest.raises(DataError, match=r"train_split\.csv:4: listed video 3 has no file"):
        load_tracks(emi_root, EMI)
    assert "train_split.csv:4: listed video 3 has no file" in inspect_output(emi_root, capsys, 1)


def test_emi_video_listed_twice(emi_root):
    path = emi_root / "valid_split.csv"
    path.write_text(path.read_text() + "1,0.1,0.2,0.3,0.4,0.5,0.6\n")
    with pytest.raises(DataError, match=r"valid_split\.csv:6: video 1 listed twice \(first at .*train_split\.csv:2\)"):
        load_tracks(emi_root, EMI)


def test_emi_layout_differences_are_named_as_warnings(emi_root, capsys):
    (emi_root / "valid_split.csv").rename(emi_root / "val_split.csv")
    (emi_root / "raw").rename(emi_root / "videos")
    (emi_root / "videos" / "99.mp4").write_bytes(b"")
    out = inspect_output(emi_root, capsys, 0)
    assert f"{emi_root / 'val_split.csv'}: warning: read as the validation split (expected the name " \
           "valid_split.csv)" in out
    assert f"{emi_root / 'raw'}: warning: no raw/ folder" in out
    assert "warning: 1 video(s) in no split file: 99" in out
    assert "EMI   validation       4" in out


# ----------------------------------------------------------------------------- bad input: BAH


def test_bah_missing_split_folder_means_no_bah_root(bah_root):
    shutil.rmtree(bah_root / "split")
    with pytest.raises(DataError, match="no BAH root"):
        load_tracks(bah_root, AH)


def test_bah_missing_yaml_and_transcripts_are_warnings_labels_still_read(bah_root, capsys):
    (bah_root / bah.ANNOTATION_FILE).unlink()
    shutil.rmtree(bah_root / "transcription")
    tracks = load_tracks(bah_root, AH, splits=("train",))
    assert len(tracks) == 18 and all(t.segments is None and t.transcript is None for t in tracks)
    out = inspect_output(bah_root, capsys, 0)
    assert f"{bah_root / bah.ANNOTATION_FILE}: warning: not found: no A/H segments" in out
    assert f"{bah_root / 'transcription'}: warning: no transcription/ folder" in out


def test_bah_label_not_0_1(bah_root):
    path = bah_root / "split" / "val.txt"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace(",0,", ",2,").replace(",1,", ",2,")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"val\.txt:2: label '2' of video .* is not 0 or 1"):
        load_tracks(bah_root, AH)


def test_bah_global_ah_not_0_1_names_the_yaml_line(bah_root):
    path = bah_root / bah.ANNOTATION_FILE
    annotations = yaml.safe_load(path.read_text())
    first = sorted(annotations)[0]
    annotations[first]["global_ah"] = "yes"
    path.write_text(yaml.safe_dump(annotations, sort_keys=True))
    with pytest.raises(DataError, match=rf"{bah.ANNOTATION_FILE}:2: global_ah 'yes' is not 0 or 1"):
        load_tracks(bah_root, AH)


def test_bah_split_label_disagreeing_with_global_ah(bah_root):
    path = bah_root / bah.ANNOTATION_FILE
    annotations = yaml.safe_load(path.read_text())
    listed = (bah_root / "split" / "train.txt").read_text().splitlines()[0].split(",")
    annotations[listed[0]]["global_ah"] = 1 - int(listed[1])
    path.write_text(yaml.safe_dump(annotations, sort_keys=True))
    with pytest.raises(DataError, match=rf"train\.txt:1: label {listed[1]} of video .* disagrees with global_ah "
                                        rf"{1 - int(listed[1])} at .*{bah.ANNOTATION_FILE}:\d+"):
        load_tracks(bah_root, AH)


def test_bah_malformed_segment_names_the_yaml_line(bah_root):
    path = bah_root / bah.ANNOTATION_FILE
    text = path.read_text().replace("end: 1.5", "end: soon", 1)
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "end: soon" in t)
    with pytest.raises(DataError, match=rf"{bah.ANNOTATION_FILE}:{line}: 'soon' is not a time"):
        load_tracks(bah_root, AH)


def test_bah_listed_video_without_file(bah_root, capsys):
    listed = (bah_root / "split" / "train.txt").read_text().splitlines()[4].split(",")[0]
    (bah_root / "Videos" / listed).unlink()
    with pytest.raises(DataError, match=rf"train\.txt:5: listed video {listed} has no file"):
        load_tracks(bah_root, AH)
    assert f"train.txt:5: listed video {listed} has no file" in inspect_output(bah_root, capsys, 1)


def test_bah_bad_transcript_is_named(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"segments": [{"start": 2.0, "end": 1.0, "text": "no"}]}))
    with pytest.raises(DataError, match=r"t\.json: segment ends at 1 s before it starts at 2 s"):
        read_transcript(path)
    with pytest.raises(DataError, match=r"missing\.srt: file not found"):
        read_transcript(tmp_path / "missing.srt")


def test_bah_layout_differences_are_named_as_warnings(bah_root, capsys):
    (bah_root / "split" / "val.txt").rename(bah_root / "split" / "valid.txt")
    moved = (bah_root / "split" / "test.txt").read_text().splitlines()[0]
    with open(bah_root / "split" / "train.txt", "a") as f:  # a test participant's other video in train
        f.write(moved.replace(",,", ",0,") + "\n")
    (bah_root / "split" / "test.txt").write_text("\n".join((bah_root / "split" / "test.txt").read_text()
                                                          .splitlines()[1:]) + "\n")
    out = inspect_output(bah_root, capsys, 0)
    assert f"{bah_root / 'split' / 'valid.txt'}: warning: read as the validation split (expected split/val.txt)" in out
    pid = moved.split("/")[0]
    assert f"warning: participant {pid} has videos in several splits (test, train)" in out
    assert "AH    train           19" in out and "participants=" in out


# ----------------------------------------------------------------------------- folds, task lists


def test_bah_folds_never_put_one_participant_in_two_folds(bah_root, tmp_path, capsys):
    folds, tracks = ensure_folds(bah_root, "bah", tmp_path / "folds.json", k=4, seed=3)
    fold_of = {}
    for track in tracks[AH]:
        fold_of.setdefault(track.participant, set()).add(folds.fold_of(track))
    assert len(fold_of) == 8 and all(len(f) == 1 for f in fold_of.values())
    assert len(set().union(*fold_of.values())) == 4
    assert main(["folds", "--task", "ah", "--k", "4", "--seed", "3", "--out", str(tmp_path / "folds.json"),
                 str(bah_root)]) == 0
    assert "participants with several videos, each kept in one fold: 8" in capsys.readouterr().out


def test_emi_folds_are_per_video_and_balanced(emi_root, tmp_path):
    folds, tracks = ensure_folds(emi_root, "emi", tmp_path / "folds.json", k=4)
    sizes = np.bincount([folds.fold_of(t) for t in tracks[EMI]], minlength=4)
    assert sizes.sum() == 12 and sizes.min() >= 2


def test_frame_wise_paths_skip_the_video_tasks(affwild2_root, tmp_path):
    root = tmp_path / "both"
    shutil.move(affwild2_root, root / "Aff-Wild2")
    write_emi_root(root / "EMI")
    write_bah_root(root / "BAH")
    assert [t.name for t in present_tasks(root)] == ["expr", "va", "au", "emi", "ah"]
    assert [t.name for t in frame_level(resolve_tasks(root, []))] == ["expr", "va", "au"]
    assert [t.name for t in resolve_tasks(root, ["ah"])] == ["ah"]
    stats, problems = inspect_root(root, probe_videos=False)
    assert stats["emi"]["emi"]["train"]["tracks"] == 8 and stats["bah"]["ah"]["train"]["participants"] == 6
    assert stats["affwild2"]["expr"]["train"]["tracks"] == 3
