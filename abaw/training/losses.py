"""Task losses over masked frames. Invalid frames (or VA dimensions, AUs) contribute nothing."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from abaw.tasks import Task


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of 1 − CCC, each over its valid frames. pred/target/valid (N, C)."""
    losses = []
    for c in range(pred.shape[1]):
        keep = valid[:, c]
        if keep.sum() < 2:
            continue
        x, y = pred[keep, c], target[keep, c]
        mx, my = x.mean(), y.mean()
        covariance = ((x - mx) * (y - my)).mean()
        ccc = 2 * covariance / (x.var(unbiased=False) + y.var(unbiased=False) + (mx - my) ** 2 + 1e-8)
        losses.append(1 - ccc)
    return torch.stack(losses).mean() if losses else pred.sum() * 0.0


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 over the classes present; absent: 0."""
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes).astype(np.float64)
    weights = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    weights *= (counts > 0).sum() / max(weights.sum(), 1e-12)
    return torch.tensor(weights, dtype=torch.float32)


def positive_weights(labels: np.ndarray, valid: np.ndarray, clip: float) -> torch.Tensor:
    """Per-label BCE pos_weight = negatives / positives, clipped to [1, clip]."""
    positives = np.where(valid, labels, 0).sum(axis=0)
    negatives = valid.sum(axis=0) - positives
    ratio = np.divide(negatives, positives, out=np.full(len(positives), clip, dtype=np.float64), where=positives > 0)
    return torch.tensor(np.clip(ratio, 1.0, clip), dtype=torch.float32)


class TaskLoss(torch.nn.Module):
    """The loss of one task on (N, output) model outputs and (N, C) labels with (N, C) masks.

    EXPR: class-weighted cross-entropy with optional label smoothing; VA: 1 − CCC per dimension
    plus ``mse`` × MSE; AU: BCE with per-AU pos_weight; VD: BCE on one logit.
    """

    def __init__(self, task: Task, weights: torch.Tensor | None = None, label_smoothing: float = 0.0,
                 mse: float = 0.0) -> None:
        super().__init__()
        self.task, self.label_smoothing, self.mse = task, label_smoothing, mse
        self.register_buffer("weights", weights if weights is not None else torch.ones(task.output_size))

    def forward(self, output: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        kind = self.task.kind
        if kind == "regression":
            loss = ccc_loss(output, labels, valid)
            if self.mse:
                loss = loss + self.mse * ((output - labels) ** 2)[valid].mean()
            return loss
        if kind == "multiclass":
            keep = valid[:, 0]
            if not keep.any():
                return output.sum() * 0.0
            return F.cross_entropy(output[keep], labels[keep, 0].long(), weight=self.weights,
                                   label_smoothing=self.label_smoothing)
        pos_weight = self.weights if kind == "multilabel" else self.weights[:1]
        per_value = F.binary_cross_entropy_with_logits(output, labels, pos_weight=pos_weight, reduction="none")
        return per_value[valid].mean() if valid.any() else output.sum() * 0.0


def pearson_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of 1 − Pearson r across the N rows (videos of a batch): (N, C)
    each. A dimension with fewer than 2 rows, or constant in the batch, adds nothing."""
    if pred.shape[0] < 2:
        return pred.sum() * 0.0
    dx, dy = pred - pred.mean(dim=0), target - target.mean(dim=0)
    denominator = (dx.square().sum(dim=0) * dy.square().sum(dim=0)).sqrt()
    usable = denominator > 1e-8
    if not usable.any():
        return pred.sum() * 0.0
    r = (dx * dy).sum(dim=0)[usable] / denominator[usable]
    return (1 - r).mean()


class VideoLoss(torch.nn.Module):
    """The loss of a video-level task on (N, output) outputs and (N, C) labels of N videos.

    EMI: ``mse`` x MSE + ``pearson`` x (1 − Pearson r) per intensity across the batch (the EMI
    top teams' 0.3 / 0.7: the metric is Pearson's r, and the MSE anchors the scale the
    correlation ignores). A/H: class-weighted cross-entropy on the one logit: each video's
    binary cross-entropy weighted by its class's ``weights`` (set from the training split's
    class frequencies, :func:`class_weights`), normalised by the summed weights as
    ``F.cross_entropy(weight=...)`` does, so a rare A/H class counts as much as the other.
    """

    def __init__(self, task: Task, mse: float = 0.3, pearson: float = 0.7) -> None:
        super().__init__()
        self.task, self.mse, self.pearson = task, mse, pearson
        self.register_buffer("weights", torch.ones(2))

    def forward(self, output: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        keep = valid.all(dim=1)
        if not keep.any():
            return output.sum() * 0.0
        output, labels = output[keep], labels[keep]
        if self.task.kind == "regression":
            return self.mse * F.mse_loss(output, labels) + self.pearson * pearson_loss(output, labels)
        weights = self.weights[labels[:, 0].long()]
        per_video = F.binary_cross_entropy_with_logits(output[:, 0], labels[:, 0], reduction="none")
        return (weights * per_video).sum() / weights.sum().clamp_min(1e-12)


def output_activation(task: Task) -> str:
    """The output activation of a task's model: logits for classes and labels, tanh for values
    in [-1, 1] (VA), sigmoid for values in [0, 1] (EMI's intensities)."""
    if task.kind != "regression":
        return "none"
    return "sigmoid" if tuple(task.value_range) == (0.0, 1.0) else "tanh"


def to_probabilities(task: Task, output: torch.Tensor) -> torch.Tensor:
    """Model outputs -> what post-processing works on: class probabilities (EXPR), values
    (VA), per-label probabilities (AU), violence probability (VD)."""
    if task.kind == "multiclass":
        return output.softmax(dim=-1)
    if task.kind == "regression":
        return output
    return torch.sigmoid(output)


def decide(task: Task, probabilities: np.ndarray) -> np.ndarray:
    """(N, output) probabilities -> (N, C) submission values with the default decisions
    (argmax, clamp to the task's range, 0.5 thresholds); tuned decisions are post-processing's
    business."""
    if task.kind == "multiclass":
        return probabilities.argmax(axis=-1)[:, None].astype(np.float64)
    if task.kind == "regression":
        return np.clip(probabilities, *task.value_range)
    return (probabilities >= 0.5).astype(np.float64)
