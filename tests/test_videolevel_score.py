"""EMI and A/H scores through files in the submission format, and the files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from abaw.cli import main
from abaw.data import load_tracks
from abaw.data.records import DataError
from abaw.metrics import pearson, score
from abaw.score import score_submission
from abaw.tasks import AH, EMI
from submissions.videolevel import read_video_submission, write_ah, write_emi
from tests.videolevel_trees import EMI_HEADER, write_bah_root, write_emi_root


@pytest.fixture
def emi_root(tmp_path: Path) -> Path:
    return write_emi_root(tmp_path / "EMI", train=4, valid=20, test=3, seed=4)


@pytest.fixture
def bah_root(tmp_path: Path) -> Path:
    return write_bah_root(tmp_path / "BAH", {f"{200 + i}": "val" if i < 8 else "train" for i in range(10)}, seed=5)


def numpy_mean_pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(y_true[:, c], y_pred[:, c])[0, 1] for c in range(y_true.shape[1])]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_emi_score_of_a_submission_file_is_numpys_mean_pearson(emi_root, tmp_path, capsys, seed):
    tracks = load_tracks(emi_root, EMI, splits=("validation",))
    rng = np.random.default_rng(seed)
    truth = np.concatenate([t.labels for t in tracks]).astype(np.float64)
    predicted = np.clip(0.5 * truth + 0.5 * rng.random(truth.shape), 0.0, 1.0)
    order = rng.permutation(len(tracks))  # the file's row order does not matter
    path = write_emi(tmp_path / "emi.csv", [tracks[i].listed_as for i in order], predicted[order])
    assert path.read_text().splitlines()[0] == EMI_HEADER
    # The file holds 6 decimals: the reference is computed on what it holds.
    written = np.round(predicted, 6)
    result = score_submission(EMI, path, emi_root, "Validation_Set")
    assert abs(result.value - numpy_mean_pearson(truth, written)) < 1e-9
    assert set(result.parts) == set(EMI.labels)
    assert main(["score", "--task", "emi", str(path), str(emi_root)]) == 0
    assert f"EMI Validation_Set: {result.value:.6f}" in capsys.readouterr().out
    path.rename(tmp_path / "EMI.csv")  # as `abaw submit --out DIR` names it: DIR scores too
    assert main(["score", "--task", "emi", str(tmp_path), str(emi_root)]) == 0
    assert f"EMI Validation_Set: {result.value:.6f}" in capsys.readouterr().out


def test_pearson_matches_numpy_and_is_0_for_a_constant():
    rng = np.random.default_rng(7)
    x, y = rng.random(50), rng.random(50)
    assert abs(pearson(x, y) - np.corrcoef(x, y)[0, 1]) < 1e-12
    assert pearson(np.full(5, 0.3), rng.random(5)) == 0.0
    truth = rng.random((9, 6))
    perfect = score(EMI, truth, truth)
    assert perfect.value == pytest.approx(1.0) and list(perfect.parts) == list(EMI.labels)
    assert score(EMI, truth, 1.0 - truth).value == pytest.approx(-1.0)


@pytest.mark.parametrize("probabilities", [False, True])
def test_ah_score_of_a_submission_file_is_sklearns_macro_f1(bah_root, tmp_path, capsys, probabilities):
    tracks = load_tracks(bah_root, AH, splits=("validation",))
    rng = np.random.default_rng(3)
    truth = np.array([int(t.labels[0, 0]) for t in tracks])
    p1 = np.clip(0.6 * truth + 0.4 * rng.random(len(truth)), 0, 1)
    decisions = (p1 > 0.5).astype(int)
    path = write_ah(tmp_path / "ah.txt", [t.listed_as for t in tracks], decisions,
                    np.stack([1 - p1, p1], axis=1) if probabilities else None)
    header = path.read_text().splitlines()[0]
    assert header == ("video_path,p0,p1,pred" if probabilities else "video_path,pred")
    expected = f1_score(truth, decisions, average="macro", labels=[0, 1], zero_division=0)
    result = score_submission(AH, path, bah_root, "val")
    assert abs(result.value - expected) < 1e-12
    assert main(["score", "--task", "ah", "--split", "val", str(path), str(bah_root)]) == 0
    assert f"AH val: {expected:.6f}" in capsys.readouterr().out


def test_ah_rows_match_by_file_stem_whatever_path_the_file_gives(bah_root, tmp_path):
    tracks = load_tracks(bah_root, AH, splits=("validation",))
    rows = [f"/data/BAH/Videos/{t.listed_as},{int(t.labels[0, 0])}" for t in tracks]
    path = tmp_path / "absolute.txt"
    path.write_text("video_path,pred\n" + "\n".join(rows) + "\n")
    assert score_submission(AH, path, bah_root, "validation").value == 1.0


# ----------------------------------------------------------------------------- refused files


def emi_file(tmp_path: Path, rows: list[str], header: str = EMI_HEADER) -> Path:
    path = tmp_path / "pred.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def emi_rows(tracks, values="0.5,0.5,0.5,0.5,0.5,0.5") -> list[str]:
    return [f"{t.listed_as},{values}" for t in tracks]


@pytest.mark.parametrize("edit, match", [
    (lambda rows: rows[:-1], r"rows do not match the expected videos:\n  missing video 24"),
    (lambda rows: rows + [rows[0]], r"pred\.csv:22: video 5 listed twice \(first at line 2\)"),
    (lambda rows: rows + ["999,0.1,0.1,0.1,0.1,0.1,0.1"], r"line 22: unknown video 999"),
    (lambda rows: [rows[0].replace(",0.5", ",1.5", 1)] + rows[1:], r"pred\.csv:2: Admiration: 1\.5 is not a value "
                                                                      r"in \[0, 1\]"),
    (lambda rows: [rows[0].replace(",0.5", ",nan", 1)] + rows[1:], r"pred\.csv:2: Admiration: nan is not a finite"),
    (lambda rows: [rows[0] + ",0.5"] + rows[1:], r"pred\.csv:2: expected 7 comma-separated fields, got 8"),
])
def test_bad_emi_files_are_refused(emi_root, tmp_path, edit, match):
    tracks = load_tracks(emi_root, EMI, splits=("validation",))
    with pytest.raises(DataError, match=match):
        score_submission(EMI, emi_file(tmp_path, edit(emi_rows(tracks))), emi_root, "validation")


def test_emi_file_with_the_wrong_header_is_refused(emi_root, tmp_path, capsys):
    tracks = load_tracks(emi_root, EMI, splits=("validation",))
    path = emi_file(tmp_path, emi_rows(tracks), EMI_HEADER.replace("Joy", "Happiness"))
    assert main(["score", "--task", "emi", str(path), str(emi_root)]) == 1
    assert f"{path}:1: header" in capsys.readouterr().err


@pytest.mark.parametrize("rows, match", [
    (["x.mp4,2"], r"pred\.txt:2: pred: 2 is not an integer in \[0, 1\]"),
    (["x.mp4,0.5"], r"pred\.txt:2: pred: 0\.5 is not an integer"),
    (["x.mp4,1", "y/x.mp4,0"], r"pred\.txt:3: video y/x\.mp4 listed twice"),
])
def test_bad_ah_rows_are_refused(tmp_path, rows, match):
    path = tmp_path / "pred.txt"
    path.write_text("video_path,pred\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=match):
        read_video_submission(path, AH)


def test_bad_ah_probabilities_and_header_are_refused(tmp_path):
    path = tmp_path / "pred.txt"
    path.write_text("video_path,p0,p1,pred\nx.mp4,1.3,-0.3,0\n")
    with pytest.raises(DataError, match=r"pred\.txt:2: p0: 1\.3 is not a value in \[0, 1\]"):
        read_video_submission(path, AH)
    path.write_text("video,label\nx.mp4,1\n")
    with pytest.raises(DataError, match=r"pred\.txt:1: header 'video,label' is neither video_path,pred nor"):
        read_video_submission(path, AH)


def test_ah_file_missing_and_unknown_videos_are_refused(bah_root, tmp_path):
    tracks = load_tracks(bah_root, AH, splits=("validation",))
    rows = [f"{t.listed_as},0" for t in tracks[1:]] + ["999/Visite_1/999_Question_1_Video.mp4,1"]
    path = tmp_path / "pred.txt"
    path.write_text("video_path,pred\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=rf"unknown video 999/.*\n  missing video {tracks[0].listed_as}|"
                                        rf"missing video {tracks[0].listed_as}\n  line \d+: unknown video 999"):
        score_submission(AH, path, bah_root, "validation")


def test_writers_refuse_bad_values_and_write_nothing(tmp_path):
    with pytest.raises(DataError, match=r"emi\.csv:2: Joy: 1\.01 is not a value in \[0, 1\]"):
        write_emi(tmp_path / "emi.csv", ["1"], np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 1.01]]))
    with pytest.raises(DataError, match=r"emi\.csv:3: video 01 listed twice"):
        write_emi(tmp_path / "emi.csv", ["1", "01"], np.full((2, 6), 0.5))
    with pytest.raises(DataError, match=r"ah\.txt:2: pred: 3 is not an integer"):
        write_ah(tmp_path / "ah.txt", ["a.mp4"], np.array([3]))
    with pytest.raises(DataError, match=r"ah\.txt: \(1,\) decisions / \(1, 3\) probabilities for 1 videos"):
        write_ah(tmp_path / "ah.txt", ["a.mp4"], np.array([1]), np.array([[0.2, 0.3, 0.5]]))
    assert list(tmp_path.iterdir()) == []


def test_emi_writer_copies_the_split_files_column_order(tmp_path):
    header = ("Filename", "Joy", "Excitement", "Empathic Pain", "Determination", "Amusement", "Admiration")
    values = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])  # in EMI.labels order
    path = write_emi(tmp_path / "emi.csv", ["7"], values, header)
    assert path.read_text().splitlines() == [",".join(header), "7,0.600000,0.500000,0.400000,0.300000,0.200000,0.100000"]
    assert np.allclose(read_video_submission(path, EMI)["7"].values, values[0])
