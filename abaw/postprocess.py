"""Post-processing of per-frame model outputs: pure numpy, no I/O, written once and used
identically by cross-validation scoring and by submission.

Per track, in this order: fill the frames without a face (keep the model's audio-driven
output, interpolate the neighbours, or smooth over the face frames alone and interpolate
between them: ``skip``), smooth over a centred window (mean or median), then
decide: EXPR per-class logit bias and the confidence fallback between two sources, AU
per-label thresholds, VA clamp to [-1, 1] (EMI: to [0, 1]), VD and A/H threshold. A video of a
video-level task (EMI, A/H) is a track of one row: filling and smoothing leave it as it is, and
the clamp or the tuned threshold decide it. The parameters are data
(:class:`PostParams`, saved as ``postprocess.json``), chosen by :func:`tune` on out-of-fold
predictions.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy.ndimage import median_filter, uniform_filter1d

from abaw.metrics import score
from abaw.tasks import Task, get_task

BASIC = 7  # the first seven EXPR classes are the basic expressions; the fallback ignores Other
FILLS = ("model", "interpolate", "skip")
FILTERS = ("mean", "median")
WINDOWS = (1, 5, 11, 21, 51, 101)
TAUS = (0.5, 0.6, 0.7, 0.8, 0.9)
BIASES = np.round(np.linspace(-1.5, 1.5, 13), 3)
THRESHOLDS = np.round(np.linspace(0.1, 0.9, 17), 3)


@dataclass(frozen=True)
class TrackOutput:
    """What post-processing needs of one track: ``primary`` (T, K) probabilities (or values),
    optional ``secondary`` (T, K) probabilities of the fallback model, and ``present`` (T,)
    whether the face (the visual input) was there."""

    primary: np.ndarray
    present: np.ndarray
    secondary: np.ndarray | None = None


@dataclass(frozen=True)
class PostParams:
    """Post-processing parameters of one task (JSON-serialisable through ``asdict``)."""

    task: str
    fill: str = "model"  # "model", "interpolate" or "skip" (smooth the face frames only)
    window: int = 1
    filter: str = "mean"  # "mean" or "median"
    tau: float | None = None  # EXPR: primary wins where its top basic-class probability > tau
    bias: list[float] = field(default_factory=list)  # EXPR: added to the log-probabilities
    thresholds: list[float] = field(default_factory=list)  # AU per label, VD one value

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PostParams:
        return cls(**data)


def fill_missing(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Linear interpolation of the rows where ``present`` is False from the nearest present
    rows on each side; rows before the first (after the last) present row copy it. (T, K)."""
    values = np.asarray(values, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    if present.all() or not present.any():
        return values.copy()
    rows = np.arange(len(values))
    known = np.flatnonzero(present)
    return np.stack([np.interp(rows, known, values[known, k]) for k in range(values.shape[1])], axis=1)


def smooth(values: np.ndarray, window: int, kind: str = "mean") -> np.ndarray:
    """Centred sliding-window mean or median over time, (T, K) -> (T, K); the edges repeat the
    first and last rows. ``window`` 1 returns the input."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) < 2:
        return values.copy()
    if kind == "mean":
        return uniform_filter1d(values, size=window, axis=0, mode="nearest")
    if kind == "median":
        return median_filter(values, size=(window, 1), mode="nearest")
    raise ValueError(f"unknown smoothing {kind!r}; valid: mean, median")


def _prepare(values: np.ndarray | None, present: np.ndarray, params: PostParams) -> np.ndarray | None:
    if values is None:
        return None
    if params.fill == "skip" and present.any():
        # The window runs over the face frames as one sequence, so a faceless stretch neither
        # enters a window nor shortens one; faceless rows then take their smoothed neighbours.
        smoothed = np.zeros_like(values, dtype=np.float64)
        smoothed[present] = smooth(values[present], params.window, params.filter)
        return fill_missing(smoothed, present)
    filled = fill_missing(values, present) if params.fill == "interpolate" else values
    return smooth(filled, params.window, params.filter)


def expr_classes(primary: np.ndarray, secondary: np.ndarray | None, tau: float | None, bias: np.ndarray) -> np.ndarray:
    """(T,) classes: argmax of log(p) + bias of the secondary (or of the primary without
    one), except where the primary's top probability over the basic classes exceeds ``tau``,
    where the primary's top basic class wins."""
    base = secondary if secondary is not None else primary
    biased = np.log(np.clip(base, 1e-8, None)) + (bias if len(bias) else 0.0)
    classes = biased.argmax(axis=1)
    if tau is not None and secondary is not None:
        confident = primary[:, :BASIC].max(axis=1) > tau
        classes = np.where(confident, primary[:, :BASIC].argmax(axis=1), classes)
    return classes


def apply(task: Task, params: PostParams, output: TrackOutput) -> np.ndarray:
    """(T, C) submission values of one track: classes, 0/1 labels or clamped values."""
    primary = _prepare(output.primary, output.present, params)
    secondary = _prepare(output.secondary, output.present, params)
    if task.kind == "multiclass":
        return expr_classes(primary, secondary, params.tau, np.asarray(params.bias))[:, None].astype(np.float64)
    if task.kind == "regression":  # VA to [-1, 1], EMI to [0, 1]
        return np.clip(primary, *task.value_range)
    thresholds = np.asarray(params.thresholds) if params.thresholds else 0.5
    return (primary >= thresholds).astype(np.float64)


def evaluate(task: Task, params: PostParams, outputs: list[TrackOutput], labels: list[np.ndarray],
             valid: list[np.ndarray]) -> float:
    """Official score of ``params`` applied to every track, pooled over valid frames."""
    decided = np.concatenate([apply(task, params, o) for o in outputs])
    return score(task, np.concatenate(labels), decided, np.concatenate(valid)).value


def search_space(search: dict | None = None) -> dict[str, tuple]:
    """The candidates :func:`tune` tries for ``fill``, ``window``, ``filter`` and ``tau``: the
    defaults, each replaceable by a list in ``search`` (a recipe fixing, say, a median filter of
    101 frames that skips faceless frames: ``{fill: [skip], filter: [median], window: [101]}``).

    Raises:
        ValueError: an unknown key or value, naming the valid ones.
    """
    space = {"fill": FILLS, "window": WINDOWS, "filter": FILTERS, "tau": TAUS}
    for key, values in (search or {}).items():
        if key not in space:
            raise ValueError(f"cv.search.{key}: unknown; valid keys: {', '.join(space)}")
        values = tuple(values)
        if not values:
            raise ValueError(f"cv.search.{key}: give at least one value")
        if key in ("fill", "filter") and not set(values) <= set(space[key]):
            raise ValueError(f"cv.search.{key}={list(values)}: valid values are {', '.join(space[key])}")
        space[key] = values
    return space


def tune(task_name: str, outputs: list[TrackOutput], labels: list[np.ndarray], valid: list[np.ndarray],
         search: dict | None = None) -> PostParams:
    """Choose fill, window, filter, then (EXPR) tau and per-class biases, (AU) per-label
    thresholds or (VD) the threshold, greedily, by the official score on the given tracks,
    among the candidates of :func:`search_space`."""
    task = get_task(task_name)
    space = search_space(search)
    longest = max(len(o.present) for o in outputs)
    best = PostParams(task=task.name, bias=[0.0] * task.output_size if task.kind == "multiclass" else [],
                      thresholds=[0.5] * task.output_size if task.kind in ("multilabel", "binary") else [])
    # The starting point is inside the space too, so a fixed choice holds even if it scores lower.
    best = replace(best, fill=space["fill"][0], window=space["window"][0], filter=space["filter"][0])
    if task.kind == "multiclass" and "tau" in (search or {}) and any(o.secondary is not None for o in outputs):
        # tau None decides by the secondary alone, which no given tau space contains: a recipe's
        # {tau: [0.8]} keeps its fallback even where the secondary alone would score higher.
        best = replace(best, tau=space["tau"][0])
    best_score = evaluate(task, best, outputs, labels, valid)

    # Two rounds of coordinate ascent: the best window depends on the thresholds and back.
    for _ in range(2):
        best, best_score = _tune_round(task, best, best_score, outputs, labels, valid, longest, space)
    return best


def _tune_round(task: Task, best: PostParams, best_score: float, outputs: list[TrackOutput],
                labels: list[np.ndarray], valid: list[np.ndarray], longest: int,
                space: dict[str, tuple]) -> tuple[PostParams, float]:
    def consider(candidate: PostParams, tracks: list[TrackOutput]) -> None:
        nonlocal best, best_score
        value = evaluate(task, candidate, tracks, labels, valid)
        if value > best_score + 1e-12:
            best, best_score = candidate, value

    for fill, window, kind in itertools.product(space["fill"], space["window"], space["filter"]):
        if window <= max(longest, 1) or len(space["window"]) == 1:
            consider(replace(best, fill=fill, window=window, filter=kind), outputs)
    # The decision parameters below do not change filling and smoothing: do those once.
    chosen = best
    prepared = [TrackOutput(_prepare(o.primary, o.present, chosen), o.present,
                            _prepare(o.secondary, o.present, chosen)) for o in outputs]
    best = replace(best, fill="model", window=1)
    if task.kind == "multiclass":
        if any(o.secondary is not None for o in prepared):
            for tau in space["tau"]:
                consider(replace(best, tau=tau), prepared)
        for k in range(task.output_size):
            for value in BIASES:
                bias = list(best.bias)
                bias[k] = float(value)
                consider(replace(best, bias=bias), prepared)
    elif task.kind in ("multilabel", "binary"):
        for k in range(task.output_size):
            for value in THRESHOLDS:
                thresholds = list(best.thresholds)
                thresholds[k] = float(value)
                consider(replace(best, thresholds=thresholds), prepared)
    return replace(best, fill=chosen.fill, window=chosen.window, filter=chosen.filter), best_score
