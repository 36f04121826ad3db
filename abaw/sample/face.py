"""The drawn face over time: expression segments, head motion, and the EXPR, VA and AU labels
derived from the same parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from abaw.sample import render
from abaw.sample.plan import Person
from abaw.tasks import AU_NAMES, EXPR_CLASSES

# Expression class -> deviation of each face parameter from rest, in render.PARAMS order
# (eye, brow, tilt, curve, open, raise, press, cheek). Other (last) mixes two of the others.
TARGETS = np.array([
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # Neutral
    [-0.55, -0.6, 0.8, -0.15, 0.0, 0.0, 0.85, 0.0],  # Anger: brows low and in, lids and lips tight
    [-0.45, -0.35, 0.25, -0.35, 0.05, 0.9, 0.0, 0.0],  # Disgust: upper lip raised on one side
    [0.8, 0.6, -0.45, -0.2, 0.35, 0.0, 0.0, 0.0],  # Fear: eyes wide, brows up, mouth ajar
    [-0.2, 0.05, 0.0, 0.9, 0.2, 0.0, 0.0, 0.85],  # Happiness: corners up, cheeks raised
    [-0.3, -0.1, -0.8, -0.85, 0.0, 0.0, 0.1, 0.0],  # Sadness: corners down, inner brows up
    [0.9, 0.9, 0.0, 0.0, 0.85, 0.0, 0.0, 0.0],  # Surprise: eyes wide, brows up, jaw drop
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # Other
])
# Frame share of freely drawn segments and mean segment length: rare classes are short, so
# they stay rare even where a video is made to show every class.
SHARE = np.array([0.27, 0.03, 0.02, 0.03, 0.14, 0.12, 0.06, 0.33])
SEGMENT_SECONDS = np.array([1.2, 0.4, 0.35, 0.4, 0.9, 0.9, 0.6, 1.1])
AGITATION = np.array([0.2, 0.9, 0.4, 0.8, 0.6, 0.15, 0.9, 0.4])


@dataclass
class Labels:
    expr: np.ndarray  # (N,) int class, -1 where annotators disagreed
    va: np.ndarray  # (N, 2) float in [-1, 1]
    au: np.ndarray  # (N, 12) int 0/1


def smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0 of (N, ...) values, edges repeated."""
    if width <= 1:
        return values
    pad = [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (values.ndim - 1)
    padded = np.pad(values, pad, mode="edge")
    cumulative = np.cumsum(np.concatenate([np.zeros_like(padded[:1]), padded]), axis=0)
    return (cumulative[width:] - cumulative[:-width]) / width


def _segment_lengths(n: int, weights: np.ndarray) -> np.ndarray:
    """Split n frames in proportion to weights, at least one frame each."""
    lengths = np.maximum(1, np.floor(weights / weights.sum() * n).astype(int))
    while lengths.sum() > n:
        lengths[np.argmax(lengths)] -= 1
    lengths[np.argmax(weights)] += n - lengths.sum()
    return lengths


def _expression_plan(rng: np.random.Generator, n: int, fps: float,
                     person: Person) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (N,) EXPR label (-1 inside an invalid stretch), (N, P) target and (N,) agitation."""
    labels = sorted(person.required)
    extra = max(0, min(n - len(labels) - 1, round(n / fps) - len(labels)))
    labels += [int(c) for c in rng.choice(len(SHARE), size=extra, p=SHARE)]
    if "expr" in person.invalid:
        labels.append(-1)
    labels = [labels[i] for i in rng.permutation(len(labels))]
    shown = [c if c >= 0 else int(rng.integers(len(SHARE))) for c in labels]
    lengths = _segment_lengths(n, SEGMENT_SECONDS[shown] * rng.uniform(0.6, 1.4, len(shown)))
    targets = []
    for c in shown:
        if c == len(EXPR_CLASSES) - 1:  # Other: a weak blend of two basic expressions
            a, b = rng.choice(np.arange(1, 7), size=2, replace=False)
            w = rng.uniform(0.3, 0.7)
            targets.append((w * TARGETS[a] + (1 - w) * TARGETS[b]) * rng.uniform(0.5, 0.8))
        else:
            targets.append(TARGETS[c] * rng.uniform(0.75, 1.1))
    return np.repeat(labels, lengths), np.repeat(targets, lengths, axis=0), np.repeat(AGITATION[shown], lengths)


def head_motion(rng: np.random.Generator, agitation: np.ndarray, fps: float) -> np.ndarray:
    """(N, 3) damped random walk of head x, y and roll, livelier when agitated."""
    step = np.array([0.05, 0.03, 0.02]) * math.sqrt(30.0 / fps)
    motion = np.zeros((len(agitation), 3))
    position, velocity = np.zeros(3), np.zeros(3)
    for i, level in enumerate(agitation):
        velocity = 0.8 * velocity + rng.normal(0.0, 1.0, 3) * step * level
        position = 0.92 * position + velocity
        motion[i] = position
    return motion


def simulate_face(rng: np.random.Generator, n: int, fps: float, person: Person) -> tuple[render.Face, Labels]:
    """Latent face parameters for n frames and the labels derived from them."""
    labels, target, agitation = _expression_plan(rng, n, fps, person)
    ramp = max(1, round(0.12 * fps))  # expressions blend over ~0.12 s
    params = smooth(target, ramp) + smooth(rng.normal(0.0, 0.12, target.shape), max(2, ramp))
    motion = head_motion(rng, smooth(agitation, ramp), fps)
    speed = np.linalg.norm(np.diff(motion[:, :2], axis=0, prepend=motion[:1, :2]), axis=1) * fps
    x = {name: params[:, i] for name, i in render.P.items()}
    valence = (0.75 * x["curve"] + 0.2 * x["cheek"] - 0.35 * np.maximum(x["tilt"], 0) - 0.3 * x["raise"]
               - 0.15 * x["press"])
    arousal = (-0.5 + 0.5 * x["open"] + 0.3 * np.abs(x["eye"]) + 0.25 * np.abs(x["brow"]) + 0.2 * x["press"]
               + 0.6 * np.clip(speed / 1.5, 0.0, 1.0))
    au = np.stack([
        (x["brow"] > 0.35) | (x["tilt"] < -0.4), x["brow"] > 0.45, (x["brow"] < -0.3) | (x["tilt"] > 0.4),
        x["cheek"] > 0.4, x["eye"] < -0.35, x["raise"] > 0.4, x["curve"] > 0.35, x["curve"] < -0.4,
        x["press"] > 0.4, (x["press"] > 0.5) & (x["open"] < 0.2), x["open"] > 0.15, x["open"] > 0.5,
    ], axis=1).astype(int)
    assert au.shape[1] == len(AU_NAMES)
    hidden = np.zeros(n, bool)
    if person.occluded:
        length = max(2, round(rng.uniform(0.1, 0.2) * n))
        start = int(rng.integers(0, n - length))
        hidden[start:start + length] = True
    va = np.clip(np.stack([valence, arousal], axis=1), -1.0, 1.0)
    return render.Face(params, motion, hidden, va[:, 1], person.style, person.look), Labels(labels, va, au)


