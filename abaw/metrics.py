"""The official ABAW metrics, pooled over all valid rows of all tracks (pure numpy, no I/O).

A row is a frame for the frame-wise tasks and a whole video for EMI and A/H.

- EXPR: mean of the 8 per-class F1 scores; a class absent from prediction and truth scores 0.
- VA: mean of the concordance correlation coefficients of valence and arousal (population
  statistics, ddof = 0).
- AU: mean over the 12 AUs of the binary F1 of the positive class.
- VD: macro F1 over the classes {0, 1}.
- EMI: mean over the 6 intensities of Pearson's r between prediction and truth across videos.
- A/H: macro F1 over the classes {0, 1} of the video labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from abaw.tasks import Task


@dataclass(frozen=True)
class Score:
    """An official score and its parts (per class, per AU or per dimension), by label name."""

    value: float
    parts: dict[str, float]


def f1_per_class(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) F1 of each class for integer labels; 0 where precision+recall is 0/0."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    true_counts = np.bincount(y_true, minlength=num_classes)[:num_classes]
    pred_counts = np.bincount(y_pred, minlength=num_classes)[:num_classes]
    hits = np.bincount(y_true[y_true == y_pred], minlength=num_classes)[:num_classes]
    denominator = true_counts + pred_counts
    return np.divide(2.0 * hits, denominator, out=np.zeros(num_classes), where=denominator > 0)


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class for 0/1 arrays; 0 when neither has a positive."""
    return float(f1_per_class(y_true, y_pred, 2)[1])


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Concordance correlation coefficient of two 1-D arrays (population statistics)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("CCC of empty arrays")
    mean_x, mean_y = x.mean(), y.mean()
    covariance = np.mean((x - mean_x) * (y - mean_y))
    denominator = x.var() + y.var() + (mean_x - mean_y) ** 2
    return float(2.0 * covariance / denominator) if denominator > 0 else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation of two 1-D arrays; 0 where either is constant (no correlation is
    defined there, and a constant prediction carries no information about the order of videos)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("Pearson r of empty arrays")
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if denominator > 0 else 0.0


_COLUMN_METRICS = {"ccc": ccc, "f1": binary_f1, "pearson": pearson}


def score(task: Task, y_true: np.ndarray, y_pred: np.ndarray, valid: np.ndarray | None = None) -> Score:
    """Official score of ``task``.

    Args:
        y_true: (N, C) labels as in the annotation files (C = task.columns); N frames, or N
            videos for the video-level tasks.
        y_pred: (N, C) predictions: class index (EXPR), 0/1 (AU, VD, A/H) or values (VA, EMI).
        valid: (N, C) bool mask; rows (or VA dimensions, AUs) with False are excluded.
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"labels {y_true.shape} and predictions {y_pred.shape} differ in shape")
    valid = np.ones_like(y_true, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(y_true.shape)
    if task.metric == "macro_f1":
        keep = valid[:, 0]
        num_classes = len(task.labels) if task.kind == "multiclass" else 2
        names = task.labels if task.kind == "multiclass" else ("0", "1")
        per_class = f1_per_class(y_true[keep, 0], y_pred[keep, 0], num_classes)
        return Score(float(per_class.mean()), dict(zip(names, map(float, per_class))))
    column_metric = _COLUMN_METRICS[task.metric]
    parts = {
        name: column_metric(y_true[valid[:, c], c], y_pred[valid[:, c], c]) for c, name in enumerate(task.labels)
    }
    return Score(float(np.mean(list(parts.values()))), parts)
