import zipfile

import numpy as np
import pytest
from sklearn.metrics import f1_score

from abaw.cli import main
from abaw.data import load_tracks
from abaw.data.records import DataError
from abaw.score import score_submission
from abaw.tasks import EXPR, VA, VD
from submissions.formats import TrackRows
from submissions.writer import write_dvd_folder, write_task_file


def expr_file(tmp_path, rows):
    path = tmp_path / "pred.txt"
    path.write_text(",".join(EXPR.submission_header) + "\n" + "\n".join(rows) + "\n")
    return path


def test_expr_file_scores_like_sklearn(affwild2_root, tmp_path):
    preds = {"10-30-640x360_left": [0, 4, 4, 4, 2], "10-30-640x360_right": [7, 7, 5, 5, 5],
             "video2": [1, 2, 6, 6, 6, 0]}
    rows = [f"{track}/{i + 1:05d}.jpg,{v}" for track, values in reversed(preds.items()) for i, v in enumerate(values)]
    result = score_submission(EXPR, expr_file(tmp_path, rows), affwild2_root, "Train_Set")
    tracks = load_tracks(affwild2_root, EXPR, splits=("train",))
    y_true = np.concatenate([t.labels[:, 0] for t in tracks])
    y_pred = np.concatenate([preds[t.id] for t in tracks])
    keep = y_true != -1
    expected = f1_score(y_true[keep], y_pred[keep], average="macro", labels=range(8), zero_division=0)
    assert abs(result.value - expected) < 1e-9


@pytest.mark.parametrize(
    "rows, match",
    [
        (["video3/00001.jpg,0", "video3/00002.jpg,4", "video3/00003.jpg,4"], "1 missing row"),
        (["video3/00001.jpg,0", "video3/00002.jpg,4", "video3/00003.jpg,4", "video3/00004.jpg,4",
          "video3/00002.jpg,4"], "line 6: duplicate row video3/00002 .first at line 3"),
        (["video3/00001.jpg,0", "video3/00002.jpg,4", "video3/00003.jpg,4", "video3/00004.jpg,4",
          "video3/00005.jpg,4"], "line 6: track video3 has no frame 5"),
        (["video3/00001.jpg,0", "video3/00002.jpg,4", "video3/00003.jpg,4", "video3/00004.jpg,4",
          "ghost/00001.jpg,4"], "line 6: unknown track ghost"),
        (["video3/00001.jpg,0", "video3/00002.jpg,9", "video3/00003.jpg,4", "video3/00004.jpg,4"],
         r"pred\.txt:3: 9 is not an integer in \[0, 7\]"),
        (["video3/00001.jpg,0,1", "video3/00002.jpg,4", "video3/00003.jpg,4", "video3/00004.jpg,4"],
         r"pred\.txt:2: expected 1 value"),
    ],
)
def test_bad_prediction_files_are_refused(affwild2_root, tmp_path, rows, match):
    with pytest.raises(DataError, match=match):
        score_submission(EXPR, expr_file(tmp_path, rows), affwild2_root, "validation")


def test_cli_prints_score_and_refuses_bad_file(affwild2_root, tmp_path, capsys):
    good = expr_file(tmp_path, [f"video3/{i:05d}.jpg,{v}" for i, v in zip(range(1, 5), [0, 4, 4, 4])])
    assert main(["score", "--task", "expr", str(good), str(affwild2_root)]) == 0
    out = capsys.readouterr().out
    assert "EXPR Validation_Set: 0.250000" in out and "Happiness" in out
    bad = expr_file(tmp_path, ["video3/00001.jpg,0"])
    assert main(["score", "--task", "expr", str(bad), str(affwild2_root)]) == 1
    assert "3 missing row(s)" in capsys.readouterr().err


def test_va_written_file_round_trips_through_score(affwild2_root, tmp_path):
    tracks = load_tracks(affwild2_root, VA, splits=("validation",))
    rows = {t.id: TrackRows(t.frames, t.labels.astype(float), t.frames, t.source) for t in tracks}
    target = tmp_path / "va.txt"
    write_task_file(target, VA, {t.id: t.frames for t in tracks}, rows)
    assert target.read_text().splitlines()[:2] == ["image_location,valence,arousal", "video3/00001.jpg,0.100000,0.200000"]
    assert score_submission(VA, target, affwild2_root).value == pytest.approx(1.0)


def test_writer_refuses_out_of_range_and_reordered_rows(affwild2_root, tmp_path):
    tracks = load_tracks(affwild2_root, VA, splits=("validation",))
    expected = {t.id: t.frames for t in tracks}
    values = np.array([[0.1, 0.2], [1.5, 0.0], [0.0, 0.0], [0.0, 0.0]])
    rows = {"video3": TrackRows(tracks[0].frames, values, tracks[0].frames, tracks[0].source)}
    with pytest.raises(DataError, match="frame 2: 1.5 is not a value in"):
        write_task_file(tmp_path / "va.txt", VA, expected, rows)
    rows = {"video3": TrackRows(tracks[0].frames[::-1], np.zeros((4, 2)), tracks[0].frames, tracks[0].source)}
    with pytest.raises(DataError, match="not in the template's order"):
        write_task_file(tmp_path / "va.txt", VA, expected, rows)
    assert not (tmp_path / "va.txt").exists()


def test_dvd_folder_and_flat_zip_score_the_same(dvd_root, tmp_path):
    tracks = load_tracks(dvd_root, VD, splits=("validation",))
    rows = {t.id: TrackRows(t.frames, 1 - t.labels, t.frames, t.source) for t in tracks}
    folder = tmp_path / "vd"
    written = write_dvd_folder(folder, {t.id: t.frames for t in tracks}, rows)
    assert written[0].read_text().splitlines()[0] == "Frame_Number,Label"
    archive = tmp_path / "vd.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in written:
            z.write(path, path.name)
    assert score_submission(VD, folder, dvd_root).value == score_submission(VD, archive, dvd_root).value == 0.0
    # The folder `abaw submit --out OUT` leaves: OUT/VD/<id>.csv and OUT/VD.zip.
    out = tmp_path / "out"
    right = {t.id: TrackRows(t.frames, t.labels, t.frames, t.source) for t in tracks}
    written = write_dvd_folder(out / "VD", {t.id: t.frames for t in tracks}, right)
    assert score_submission(VD, out, dvd_root).value == 1.0
    with zipfile.ZipFile(out / "VD.zip", "w") as z:
        z.write(written[0], written[0].name)  # the zip is taken first: one video only, so refused
    with pytest.raises(DataError, match="missing all"):
        score_submission(VD, out, dvd_root)
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as z:
        z.write(written[0], f"vd/{written[0].name}")
    with pytest.raises(DataError, match="must be flat"):
        score_submission(VD, nested, dvd_root)


@pytest.mark.parametrize("change, match", [
    (lambda f: f[1:], "1 missing row"),
    (lambda f: np.concatenate([f, f[-1:]]), "duplicate row video3/00004"),
])
def test_writer_refuses_missing_and_duplicated_rows(affwild2_root, tmp_path, change, match):
    track = load_tracks(affwild2_root, EXPR, splits=("validation",))[0]
    frames = change(track.frames)
    rows = {track.id: TrackRows(frames, np.zeros((len(frames), 1)), np.arange(len(frames)), track.source)}
    with pytest.raises(DataError, match=match):
        write_task_file(tmp_path / "e.txt", EXPR, {track.id: track.frames}, rows)
    assert not (tmp_path / "e.txt").exists()
