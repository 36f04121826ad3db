"""Folds whose held-out classes never occur in their training part: named, by class name, by
``abaw folds`` and by the CV report, instead of scores of 0 that nobody explains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from abaw.cli import main
from abaw.data.records import Track
from abaw.folds import Folds, absent_from_training, absent_lines, distribution_names, ensure_folds
from abaw.report import absent_section
from abaw.tasks import AU, EMI, EXPR, VA, VD
from tests.conftest import write_annotation


def _track(video: str, task, labels, valid=None, split: str = "train") -> Track:
    labels = np.asarray(labels, np.float32).reshape(len(labels), -1)
    valid = np.ones_like(labels, bool) if valid is None else np.asarray(valid, bool).reshape(labels.shape)
    return Track(video, task.name, split, video, None, Path(video), np.arange(1, len(labels) + 1), labels, valid)


def _folds(assignment: dict[str, int]) -> Folds:
    return Folds(k=max(assignment.values()) + 1, seed=0, dataset="affwild2", videos=assignment)


def test_classes_held_out_but_never_trained_on_are_named_per_fold():
    # One class per clip, as in a hand-made root of six acted clips.
    classes = {"v0": 0, "v1": 1, "v2": 0, "v3": 4, "v4": 1, "v5": 5}
    tracks = [_track(video, EXPR, [c] * 5) for video, c in classes.items()]
    folds = _folds({"v0": 0, "v1": 0, "v2": 1, "v3": 1, "v4": 2, "v5": 2})
    assert absent_from_training(EXPR, folds, tracks) == {1: ["Happiness"], 2: ["Sadness"]}


def test_invalid_frames_and_test_tracks_teach_nothing():
    tracks = [_track("v0", EXPR, [0, 3], valid=[True, False]), _track("v1", EXPR, [3, 0]),
              _track("v2", EXPR, [3], split="test")]
    folds = _folds({"v0": 0, "v1": 1, "v2": 0})
    # Fear (3) is labelled in v0 only where invalid: fold 1's Fear was never trained on.
    assert absent_from_training(EXPR, folds, tracks) == {1: ["Fear"]}


def test_labels_without_a_training_positive_and_regression():
    au = [_track("v0", AU, [[1] + [0] * 11]), _track("v1", AU, [[0, 1] + [0] * 10])]
    folds = _folds({"v0": 0, "v1": 1})
    assert absent_from_training(AU, folds, au) == {0: ["AU1"], 1: ["AU2"]}
    vd = [_track("v0", VD, [0, 0]), _track("v1", VD, [0, 1])]
    assert absent_from_training(VD, folds, vd) == {1: ["Label=1"]}
    va = [_track("v0", VA, [[0.9, 0.9]]), _track("v1", VA, [[-0.9, -0.9]])]
    assert absent_from_training(VA, folds, va) == {}


def test_distribution_names():
    assert distribution_names(EXPR) == list(EXPR.labels)
    assert distribution_names(VD) == ["Label=0", "Label=1"]
    assert distribution_names(VA)[:4] == ["valence[-1,-0.5)", "valence[-0.5,0)", "valence[0,0.5)", "valence[0.5,1]"]
    assert distribution_names(EMI)[12] == "Empathic_Pain[0,0.25)"


def _one_class_root(root: Path) -> Path:
    """Aff-Wild2, EXPR: five clips of five sources; Fear only in clip e."""
    for name, classes in {"a": [0, 0, 4], "b": [1, 4, 4], "c": [0, 1, 1], "d": [4, 0, 1], "e": [3, 3, 3]}.items():
        write_annotation(root / "annotations/EXPR_Recognition_Challenge/Train_Set" / f"{name}.txt", EXPR,
                         np.repeat(classes, 8).tolist())
    return root


def test_folds_cli_prints_class_names_and_the_absent_classes(tmp_path, capsys):
    root = _one_class_root(tmp_path / "Aff-Wild2")
    out = tmp_path / "folds.json"
    assert main(["folds", "--task", "expr", "--k", "2", "--out", str(out), str(root)]) == 0
    text = capsys.readouterr().out.splitlines()
    header = next(line for line in text if line.startswith("fold  tracks"))
    assert header.split()[3:] == list(EXPR.labels)
    folds, tracks = ensure_folds(root, "affwild2", out, k=2)
    absent = absent_from_training(EXPR, folds, tracks[EXPR])
    assert "Fear" in absent[folds.videos["e"]]
    assert [line for line in text if line.startswith("warning:")] == absent_lines(EXPR, absent)
    assert absent_lines(EXPR, {1: ["Fear"]}) == [
        "warning: EXPR fold 1: Fear occur(s) in its held-out frames but never in its training part (the other "
        "folds): its model cannot learn them, and its score for them is 0 (a class needs tracks of at least two "
        "sources, one to train on and one to hold out)"]


def test_report_section_names_the_classes_by_fold():
    assert absent_section(EXPR, {}) == []
    assert absent_section(EXPR, {"1": ["Fear"], "0": ["Anger", "Sadness"]})[-2:] == [
        "- fold 0: Anger, Sadness", "- fold 1: Fear"]


def test_cv_logs_and_reports_the_absent_classes(tmp_path, capsys):
    from abaw.extraction import feature_store, jobs_for
    from tests.conftest import config_of
    from tests.test_training import FEATURES

    root = _one_class_root(tmp_path / "Aff-Wild2")
    cache = tmp_path / "cache"
    config = config_of(root, cache, FEATURES)
    rng = np.random.default_rng(0)
    for job in jobs_for(config, "affwild2"):  # features that carry nothing: only the folds matter here
        for label, dim in (("face", 16), ("voice", 8)):
            feature_store(config, "affwild2", label, create=True).write(
                job.id, rng.normal(0, 1, (job.frames, dim)), np.ones(job.frames, bool), inputs=job.inputs_for("audio"))
    path = tmp_path / "expr.yaml"
    path.write_text(yaml.safe_dump({
        "name": "absent", "data": {"root": str(root)}, "runs_dir": str(tmp_path / "runs"), "folds": {"k": 2},
        "extract": {"cache": str(cache), "features": FEATURES}, "cv": {"personalise": []},
        "train": {"task": "expr", "features": ["face", "voice"], "epochs": 1, "window": 8, "batch_size": 8,
                  "model": {"name": "fusion_moe", "hidden": 8, "experts": 2}}}))
    assert main(["cv", "--config", str(path)]) == 0
    err = capsys.readouterr().err
    cv_dir = tmp_path / "runs" / "absent-cv-expr"
    absent = json.loads((cv_dir / "cv.json").read_text())["absent_from_training"]
    fold = next(k for k, names in absent.items() if "Fear" in names)
    assert f"warning: EXPR fold {fold}: " in err
    assert f"- fold {fold}: {', '.join(absent[fold])}" in (cv_dir / "report.md").read_text()
