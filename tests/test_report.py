"""report.md and its plots say which predictions they show."""

from pathlib import Path

import numpy as np
import pytest

import abaw.report as report
from abaw.data.records import Track
from abaw.tasks import EXPR, VD


def summary_and_pooled(task, secondary):
    """A two-fold summary as abaw.cv.summarise writes it, and the pooled arrays of its plots."""
    labels = np.array([[0], [1], [1], [0]], dtype=np.float32) if task is VD else np.array([[0], [3], [3], [6]])
    valid = np.ones_like(labels, dtype=bool)
    fold = {"raw": 0.5, "post": 0.6}
    parts = {name: 0.5 for name in (["F1"] if task is VD else task.labels)}
    summary = {"task": task.name, "folds": {0: fold, 1: fold}, "raw": {"mean": 0.5, "std": 0.0},
               "post": {"mean": 0.6, "std": 0.0}, "pooled_raw": {"value": 0.5, "parts": parts},
               "pooled_post": {"value": 0.6, "parts": parts}, "primary": "fusion", "secondary": secondary,
               "sources": {}, "postprocess": {"task": task.name}}
    pooled = {"labels": [labels[:2], labels[2:]], "valid": [valid[:2], valid[2:]],
              "post": [labels[:2], labels[2:][::-1]], "raw": [labels[:2], labels[2:]]}
    track = Track("t", task.name, "train", "t", None, Path("x"), np.arange(1, 5), labels.astype(np.float32), valid)
    return summary, pooled, {0: ([track], [])}


@pytest.mark.parametrize("task, secondary, source", [
    (EXPR, "fallback", "trained head, fallback MLP where it is unsure"),
    (EXPR, None, "trained head"),
    (VD, "fallback", "trained head"),  # a binary task decides on its primary source alone
])
def test_the_confusion_matrix_names_the_source_of_its_decisions(tmp_path, monkeypatch, task, secondary, source):
    titles = {}
    save = report.save_figure

    def keep_title(figure, path):
        titles[path.name] = figure.axes[0].get_title()
        return save(figure, path)

    monkeypatch.setattr(report, "save_figure", keep_title)
    summary, pooled, per_fold = summary_and_pooled(task, secondary)
    text = report.write_report(task, tmp_path, summary, pooled, per_fold).read_text()
    assert titles["confusion.png"] == f"Post-processed decisions: {source}\nheld-out frames of every fold"
    image = text.splitlines().index("![confusion](confusion.png)")
    assert text.splitlines()[image + 1].startswith(f"Confusion matrix of the post-processed decisions ({source}) "
                                                   "on the held-out frames of every fold")
