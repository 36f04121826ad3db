"""CaP (after TTA-CaP): three caches over frozen embeddings refine each frame before the
model's own classifier.

- The source cache: per class the prototypes of the training subjects nearest the track
  (Fréchet distance of their Gaussian feature statistics, :class:`SourceBank`).
- The tri-gate, per frame, with the original prediction ĉ and the normalised entropy H/log C:
  stable (ĉ is the strict majority of the ``window`` predictions before it), confident
  (H < ``positive_entropy``) or ambiguous (``positive_entropy`` ≤ H < ``negative_entropy``),
  consistent (the class of the nearest source prototype is ĉ and beats the next class's
  nearest by more than ``margin``; without a source bank every frame is consistent).
- The positive cache: stable, confident and consistent frames under ĉ, per class the
  ``positive_size`` of lowest entropy; the negative cache: stable and ambiguous frames under
  their least likely class, ``negative_size`` per class. Consistency guards the positive cache
  against confident mistakes; a negative entry only claims that the frame is not its least
  likely class, which consistency does not test.
- The refined embedding r = norm(ẑ + a_s e_src + a_p e_pos − a_n e_neg), each e the
  similarity-weighted mean of the ``top`` entries of class ĉ in its cache, and logits =
  classifier(|z| · r): at z's own norm, so that the bias keeps its trained scale and empty
  caches give back the model's own logits.

Offline, as in the challenge: the whole track is known, so every frame is refined by the
caches the track ends with, which the gates and one sort per cache give. Every e belongs to the
predicted class, and the negative entries under ĉ are frames for which ĉ was least likely, so
all three terms pull towards ĉ: through a linear classifier CaP seldom changes a frame's
arg-max; it moves the probabilities that post-processing works on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from abaw.personalise.registry import register_method
from abaw.personalise.source import SourceBank
from abaw.personalise.view import LinearView, check_view, entropy, lowest, usable


@dataclass(frozen=True, kw_only=True)
class CaPTrace:
    """What ``cap`` did on one unit: its logits (T, C), the gates per frame (T,) bool, and the
    caches per class (frame ids, ascending)."""

    logits: torch.Tensor
    predicted: torch.Tensor
    stable: torch.Tensor
    confident: torch.Tensor
    ambiguous: torch.Tensor
    consistent: torch.Tensor
    positive_gate: torch.Tensor
    negative_gate: torch.Tensor
    positive: list[list[int]]
    negative: list[list[int]]


class Cache(NamedTuple):
    """One cache as the refinement reads it: its unit ``entries`` (E, D), the class each is
    filed under (E,; -1: none), the frames' cosine similarities with them (T, E), and its
    signed weight."""

    entries: torch.Tensor
    owner: torch.Tensor
    sims: torch.Tensor
    weight: float


@torch.no_grad()
def cap_trace(view: LinearView, *, source: SourceBank | None = None, mask: torch.Tensor | None = None,
              positive_size: int = 5, negative_size: int = 4, top: int = 5, subjects: int = 3, window: int = 3,
              positive_entropy: float = 0.5, negative_entropy: float = 0.8, margin: float = 0.05,
              source_weight: float = 1.0, positive_weight: float = 1.0, negative_weight: float = 1.0) -> CaPTrace:
    """CaP on one unit, with what it did (see the module). ``source``: the fold's training side
    (None: no source cache, every frame consistent); frames with ``mask`` False are refined
    but never cached, nor counted in the track's statistics; ``subjects``: how many nearest
    training subjects give the source cache; a = ``source_weight`` / ``positive_weight`` /
    ``negative_weight``."""
    check_view(view)
    for name, value in (("positive_size", positive_size), ("negative_size", negative_size), ("top", top),
                        ("subjects", subjects), ("window", window)):
        if int(value) != value or value < 1:
            raise ValueError(f"cap: {name}={value!r} must be a whole number >= 1")
    logits, z = view.logits(), view.z
    classes = logits.shape[1]
    norms = z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    predicted, least = logits.argmax(dim=-1), logits.argmin(dim=-1)
    spread = entropy(logits) / math.log(classes)
    cacheable = usable(view, mask)

    stable = stable_predictions(predicted, window)
    confident = spread < positive_entropy
    ambiguous = (spread >= positive_entropy) & (spread < negative_entropy)
    consistent = torch.ones_like(stable)
    caches: list[Cache] = []
    if source is not None:
        prototypes, present = source.nearest(z, cacheable, subjects)  # (m, C, D), (m, C)
        sims = cosine(z, norms, prototypes.flatten(0, 1))
        if classes > 1:  # one class: nothing to be inconsistent with
            consistent = nearest_agrees(sims.unflatten(1, present.shape), present, predicted, margin)
        owner = torch.where(present, torch.arange(classes), -1).flatten()  # a class a subject lacks: no entry
        caches.append(Cache(prototypes.flatten(0, 1), owner, sims, source_weight))
    positive_gate = cacheable & stable & confident & consistent
    negative_gate = cacheable & stable & ambiguous
    positive = lowest(spread, torch.where(positive_gate, predicted, -1), positive_size, classes)
    negative = lowest(spread, torch.where(negative_gate, least, -1), negative_size, classes)
    positive, negative = ([ids.sort().values for ids in cache] for cache in (positive, negative))  # time order
    for cache, weight in ((positive, positive_weight), (negative, -negative_weight)):  # the negative mean is subtracted
        ids = torch.cat(cache)
        entries = z[ids] / norms[ids]
        owner = torch.arange(classes).repeat_interleave(torch.tensor([len(i) for i in cache]))
        caches.append(Cache(entries, owner, cosine(z, norms, entries), weight))
    return CaPTrace(logits=refine(view, logits, norms, predicted, caches, top), predicted=predicted, stable=stable,
                    confident=confident, ambiguous=ambiguous, consistent=consistent, positive_gate=positive_gate,
                    negative_gate=negative_gate, positive=[ids.tolist() for ids in positive],
                    negative=[ids.tolist() for ids in negative])


@register_method("cap", grid={"positive_entropy": (0.3, 0.5), "margin": (0.0, 0.05), "negative_weight": (0.0, 1.0)},
                 retired=("refresh",), parameters=cap_trace)
def cap(view: LinearView, *, source: SourceBank | None = None, mask: torch.Tensor | None = None,
        **params) -> torch.Tensor:
    """CaP's (T, C) logits of one unit; the parameters are :func:`cap_trace`'s. (``refresh``,
    the online mode's source refresh, is retired: older ``cv.json`` files still name it.)"""
    return cap_trace(view, source=source, mask=mask, **params).logits


def stable_predictions(predicted: torch.Tensor, window: int) -> torch.Tensor:
    """(T,) bool: frame t's prediction is the strict majority of the ``window`` predictions
    before it (the first ``window`` frames have too few to tell; masked frames' predictions
    count too)."""
    agree = torch.zeros_like(predicted)
    for lag in range(1, window + 1):
        agree[lag:] += (predicted[lag:] == predicted[:-lag]).long()
    return (agree * 2 > window) & (torch.arange(len(predicted)) >= window)


def cosine(z: torch.Tensor, norms: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
    """(T, E) cosine similarities of the frames z (T, D), of norms (T, 1), with unit entries (E, D)."""
    return z @ entries.T / norms


def nearest_agrees(sims: torch.Tensor, present: torch.Tensor, predicted: torch.Tensor, margin: float) -> torch.Tensor:
    """The consistency gate, (T,) bool, of frames predicted ``predicted`` (T,) from their
    similarities (T, m, C) with the source cache's prototypes (``present`` (m, C): those the
    subjects have): the class of the nearest prototype is the prediction, and beats the next
    class's nearest by more than ``margin``."""
    best = sims.masked_fill(~present, -math.inf).amax(dim=1)  # (T, C): per class its nearest prototype
    closest, nearest = best.max(dim=1)
    second = best.scatter(1, nearest[:, None], -math.inf).amax(dim=1)  # a tie for the top: margin 0
    return (nearest == predicted) & (closest - second > margin)


def refine(view: LinearView, logits: torch.Tensor, norms: torch.Tensor, predicted: torch.Tensor,
           caches: list[Cache], top: int) -> torch.Tensor:
    """(T, C) logits of classifier(|z| · v/|v|), v = ẑ + Σ a e: per cache, e is the
    similarity-weighted mean (:func:`mean_weights`) of its entries of the frame's predicted
    class, and a its weight."""
    used = [cache for cache in caches if cache.weight and len(cache.entries)]
    if not used:
        return logits.clone()  # nothing to refine with: the model's own logits
    # v = ẑ + Σ_j coefficient_j x_j over every entry x_j, zero but for the predicted class's.
    coefficients = []
    for cache in used:
        elsewhere = cache.owner != predicted[:, None]  # (T, E): entries of another class than the frame's
        # The top-k cut cannot matter where no class holds more than ``top`` entries.
        most = int(torch.bincount(cache.owner[cache.owner >= 0], minlength=1).max())
        cut = top if most > top else None
        coefficients.append(cache.weight * mean_weights(cache.sims.masked_fill(elsewhere, -1.0), cut))
    coefficients = torch.cat(coefficients, dim=1)  # (T, E)
    entries = torch.cat([cache.entries for cache in used])
    sims = torch.cat([cache.sims for cache in used], dim=1)
    # Without forming v (a pass over a (T, D) array per step): W v = W ẑ + coefficients (X Wᵀ),
    # and as |ẑ| = 1 and ẑ · x_j is the similarity, |v|² = 1 + 2 coefficients · sims +
    # coefficients (X Xᵀ) coefficientsᵀ.
    moved = coefficients @ (entries @ view.weight.T)  # (T, C)
    squared = 1 + (coefficients * (2 * sims + coefficients @ (entries @ entries.T))).sum(dim=1, keepdim=True)
    # classifier(|z| v/|v|) = |z| (W ẑ + moved) / |v| + b, and |z| W ẑ is the model's own logits
    # less the bias: the refinement moves the prediction's logits, not a recomputation of them.
    return (logits - view.bias + norms * moved) / squared.clamp_min(1e-24).sqrt() + view.bias


def mean_weights(sims: torch.Tensor, top: int | None) -> torch.Tensor:
    """(T, E) weights of the similarity-weighted mean of E entries for T frames, from their
    cosine similarities (T, E): ∝ the similarity clipped at 0 (an entry pointing away says
    nothing about the frame), only the ``top`` most similar entries counted (None: all; ties at
    the cut all count), summing to 1 (to 0 where no entry is similar)."""
    if top is not None and sims.shape[1] > top:
        sims = sims.masked_fill(sims < sims.topk(top, dim=1).values[:, -1:], -1.0)
    weights = sims.clamp_min(0)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
