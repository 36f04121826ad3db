"""The trivial baselines every model must beat: majority class (EXPR, VD, A/H), the training
mean (VA, EMI), all-zero (AU), predicted as a constant for every frame (every video). A
constant scores Pearson r 0 by definition, so EMI's baseline is 0."""

from __future__ import annotations

import numpy as np

from abaw.data.records import Track
from abaw.score import pooled_labels
from abaw.tasks import Task
from submissions.formats import TrackRows


def trivial_values(task: Task, train_tracks: list[Track]) -> np.ndarray:
    """(C,) constant prediction learnt from the training tracks' valid frames."""
    labels, valid = pooled_labels(train_tracks)
    if task.kind == "multilabel":
        return np.zeros(task.columns)
    if task.kind == "regression":
        return np.array([labels[valid[:, c], c].mean() for c in range(task.columns)])
    classes = labels[valid[:, 0], 0].astype(np.int64)
    return np.array([np.bincount(classes).argmax()], dtype=float)


def constant_rows(tracks: list[Track], values: np.ndarray) -> dict[str, TrackRows]:
    """Submission rows giving ``values`` to every frame of every track."""
    return {
        t.id: TrackRows(t.frames, np.tile(values, (t.num_frames, 1)), np.arange(t.num_frames), t.source)
        for t in tracks
    }
