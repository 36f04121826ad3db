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
    if source is not None:
        prototypes, present = source.nearest(z, cacheable, subjects)  # (m, C, D), (m, C)
        if classes > 1:  # one class: nothing to be inconsistent with
            consistent = nearest_agrees(z, norms, prototypes, present, predicted, margin)
    positive_gate = cacheable & stable & confident & consistent
    negative_gate = cacheable & stable & ambiguous
    positive = lowest(spread, torch.where(positive_gate, predicted, -1), positive_size, classes)
    negative = lowest(spread, torch.where(negative_gate, least, -1), negative_size, classes)
    positive, negative = ([ids.sort().values for ids in cache] for cache in (positive, negative))  # time order

    # Per class, the unit entries of each cache with its weight (the negative mean is subtracted).
    caches = [([z[ids] / norms[ids] for ids in positive], positive_weight),
              ([z[ids] / norms[ids] for ids in negative], -negative_weight)]
    if source is not None:
        caches.insert(0, ([prototypes[present[:, c], c] for c in range(classes)], source_weight))
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


def nearest_agrees(z: torch.Tensor, norms: torch.Tensor, prototypes: torch.Tensor, present: torch.Tensor,
                   predicted: torch.Tensor, margin: float) -> torch.Tensor:
    """The consistency gate, (T,) bool, of the frames z (T, D) of norms (T, 1) predicted
    ``predicted`` (T,), against the source cache's ``prototypes`` (m, C, D) where ``present``
    (m, C): the class of the nearest prototype is the prediction, and beats the next class's
    nearest by more than ``margin``."""
    sims = cosine(z, norms, prototypes.flatten(0, 1)).unflatten(1, present.shape)  # (T, m, C)
    best = sims.masked_fill(~present, -math.inf).amax(dim=1)  # (T, C): per class its nearest prototype
    closest, nearest = best.max(dim=1)
    second = best.scatter(1, nearest[:, None], -math.inf).amax(dim=1)  # a tie for the top: margin 0
    return (nearest == predicted) & (closest - second > margin)


def refine(view: LinearView, logits: torch.Tensor, norms: torch.Tensor, predicted: torch.Tensor,
           caches: list[tuple[list[torch.Tensor], float]], top: int) -> torch.Tensor:
    """(T, C) logits of classifier(|z| · norm(ẑ + Σ a e)): per frame, e of each cache the
    similarity-weighted mean (:func:`mean_weights`) of the unit entries of its predicted class
    (``caches``: per cache its entries per class, (E_c, D) each, and its signed weight a)."""
    out = logits.clone()  # a frame with nothing to refine keeps the model's own logits
    for c in range(logits.shape[1]):  # class by class: a frame sees the entries of its predicted class
        frames = (predicted == c).nonzero().flatten()
        used = [(entries[c], weight) for entries, weight in caches if weight and len(entries[c])]
        if not len(frames) or not used:
            continue
        z, size = view.z[frames], norms[frames]
        entries = torch.cat([x for x, _ in used])  # (E, D)
        sims = cosine(z, size, entries).split([len(x) for x, _ in used], dim=1)
        coefficients = torch.cat([weight * mean_weights(s, top) for s, (_, weight) in zip(sims, used)], dim=1)
        correction = coefficients @ entries  # Σ a e, (n, D)
        length = (z / size + correction).norm(dim=-1, keepdim=True).clamp_min(1e-12)  # |v|
        # classifier(|z| v/|v|) = (|z| W ẑ + |z| W Σ a e) / |v| + b, and |z| W ẑ is the model's
        # own logits less the bias: the refinement moves them, not a recomputation of them.
        out[frames] = (logits[frames] - view.bias + size * (correction @ view.weight.T)) / length + view.bias
    return out


def mean_weights(sims: torch.Tensor, top: int) -> torch.Tensor:
    """(T, E) weights of the similarity-weighted mean of E entries for T frames, from their
    cosine similarities (T, E): ∝ the similarity clipped at 0 (an entry pointing away says
    nothing about the frame), only the ``top`` most similar entries counted (ties at the cut
    all count), summing to 1 (to 0 where no entry is similar)."""
    if sims.shape[1] > top:
        sims = sims.masked_fill(sims < sims.topk(top, dim=1).values[:, -1:], -1.0)
    weights = sims.clamp_min(0)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
