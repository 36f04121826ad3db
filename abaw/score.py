"""Score a prediction file in the submission format against a split's annotations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from abaw.data import load_tracks
from abaw.data.records import DataError, Track
from abaw.metrics import Score, score
from abaw.tasks import Task
from submissions.formats import check_rows, read_submission
from submissions.videolevel import check_videos, read_video_submission, video_key

SPLIT_NAMES = {
    "train": "train", "train_set": "train", "training_set": "train", "training": "train",
    "validation": "validation", "validation_set": "validation", "val": "validation",
}


def normalise_split(name: str) -> str:
    """``Validation_Set``/``validation``/``val`` -> ``validation``; likewise for train."""
    try:
        return SPLIT_NAMES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown split {name!r}; valid: Train_Set, Validation_Set (or train, validation)") from None


def pooled_labels(tracks: list[Track]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the (T, C) labels and valid masks of ``tracks`` in order."""
    return np.concatenate([t.labels for t in tracks]), np.concatenate([t.valid for t in tracks])


def submission_in(path: Path, task: Task) -> Path:
    """The submission of ``task`` that ``path`` names: ``path`` itself, or, for a folder as
    ``abaw submit --out`` writes it, the task's entry inside it (``EXPR.txt``, ``EMI.csv``,
    ``VD.zip``, or the per-track folder ``EXPR/``). A folder holding none of these is taken as
    a folder of per-track files."""
    if not path.is_dir():
        return path
    name = task.name.upper()
    for entry in (f"{name}.txt", f"{name}.csv", f"{name}.zip", name):
        if (path / entry).exists():
            return path / entry
    return path


def score_submission(task: Task, predictions: str | Path, root: str | Path, split: str = "validation") -> Score:
    """Official score of a submission-format prediction file (or folder/zip) on ``split``.

    Raises:
        DataError: the predictions miss, duplicate or add rows, or hold out-of-range or non-finite
            (nan, inf) values; an annotation or prediction file is unreadable.
    """
    split = normalise_split(split)
    tracks = load_tracks(root, task, splits=(split,))
    if not tracks:
        raise DataError(Path(root), f"no {split} tracks for {task.name.upper()}")
    predictions = submission_in(Path(predictions), task)
    if task.level == "video":
        return score_videos(task, predictions, tracks)
    rows = read_submission(predictions, task)
    check_rows({t.id: t.frames for t in tracks}, rows, predictions)
    y_pred = np.concatenate([rows[t.id].values[np.argsort(rows[t.id].frames)] for t in tracks])
    y_true, valid = pooled_labels(tracks)
    return score(task, y_true, y_pred, valid)


def score_videos(task: Task, predictions: Path, tracks: list[Track]) -> Score:
    """Official score of an EMI or A/H submission file over the videos of ``tracks`` (their
    one label row each): EMI mean Pearson r of the six intensities, A/H macro-F1.

    Raises:
        DataError: see :func:`score_submission`; the videos are matched by the split file's names.
    """
    rows = read_video_submission(predictions, task)
    check_videos(task, [t.listed_as for t in tracks], rows, predictions)
    y_pred = np.stack([rows[video_key(task, t.listed_as)].values for t in tracks])
    y_true, valid = pooled_labels(tracks)
    return score(task, y_true, y_pred, valid)
