"""Gradient-free test-time personalisation of a frozen classifier, one track at a time.

Every test video shows a person the model never saw, and people differ more than their
expressions do. The two methods here adapt the model's last linear map to the track in front
of it from its own unlabelled frames, with a few vector operations per frame: no optimiser, no
autograd, nothing in the model changes, and every state is reset per track (one call = one
track = one domain).

- ``t3a`` (T3A, Iwasawa & Matsuo 2021): per class a set of supports seeded with the classifier's
  row; each frame's embedding joins the class the original classifier predicts, with its
  prediction entropy; the ``k`` lowest-entropy supports per class are kept; the new classifier's
  rows are the normalised sums of the L2-normalised supports and logits = z · W (no bias).
- ``cap`` (after TTA-CaP): a source cache of class prototypes from the training subjects nearest
  the track (Fréchet distance of Gaussian feature statistics), positive and negative caches of
  the track's own frames admitted by a tri-gate, and the refined embedding
  norm(ẑ + e_src + e_pos − e_neg) fed to the original classifier.
- ``none``: the model's own logits (the baseline a grid search compares against).

Both work on the model's linear view (``FrameModel.linear_view``: z, weight, bias with
logits = z @ weight.T + bias exactly), so they apply to every registered model. Modes:
``online`` (frame t uses only frames ≤ t, as a live system) and ``offline`` (the whole track
is known, as in the challenge: the supports and caches are filled from every frame first, then
every frame is classified). Classification only (EXPR, A/H): a regression or multi-label head
has no class to put a support under. A one-logit binary head is seen as its exact two-class
equivalent (:func:`two_class`). For A/H, a "track" is a participant's videos, one row each
(the video embedding): one video alone gives a single row, nothing to adapt from.

Entry points: :func:`personalise` (model + features of one track), :func:`personalise_view`
(an already computed view), :func:`view_of_rows` (a view from the z rows prediction kept),
:func:`build_source` (the training side of ``cap``), :data:`METHODS`, :func:`param_grid` and
:func:`check_params` for out-of-fold selection.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

MODES = ("online", "offline")


@dataclass(frozen=True)
class LinearView:
    """One track through the model's last linear map: z (T, D), weight (C, D), bias (C,)."""

    z: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """(T, C) logits of the original classifier on ``z`` (default: the track's own)."""
        return (self.z if z is None else z) @ self.weight.T + self.bias


@torch.no_grad()
def linear_view(model, features: torch.Tensor) -> LinearView:
    """The view of one track's ``forward_features`` output, (T, F) or (1, T, F), as float32 on
    the CPU (where the methods run: their state is a few small tensors and Python heaps). The
    model must be in eval mode: with dropout on, the view (like the model) is random."""
    if model.training:
        raise ValueError("linear_view: call model.eval() first (dropout would make the view random)")
    if features.dim() == 3:
        if features.shape[0] != 1:
            raise ValueError(f"linear_view takes one track, (T, F) or (1, T, F); got {tuple(features.shape)}")
        features = features[0]
    return _as_view(*model.linear_view(features.float()))


@torch.no_grad()
def view_of_rows(model, z: torch.Tensor) -> LinearView:
    """The view of z rows a prediction already computed (``predict_frames(..., features=True)``
    keeps them as ``view``) with the model's last linear map, which is the same for every input."""
    if model.training:
        raise ValueError("view_of_rows: call model.eval() first")
    device = next(model.parameters()).device
    _, weight, bias = model.linear_view(torch.zeros(1, model.feature_dim, device=device))
    if z.dim() != 2 or z.shape[1] != weight.shape[1]:
        raise ValueError(f"view_of_rows: z must be (T, {weight.shape[1]}), got {tuple(z.shape)}")
    return _as_view(z, weight, bias)


def _as_view(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> LinearView:
    view = LinearView(z.float().cpu(), weight.detach().float().cpu(), bias.detach().float().cpu())
    return two_class(view) if view.weight.shape[0] == 1 else view


def two_class(view: LinearView) -> LinearView:
    """The exact two-class view of a one-logit binary head (A/H): rows ``-w/2`` and ``w/2``, so
    that softmax of the two logits is ``[1 - sigmoid(l), sigmoid(l)]`` with ``l = z · w + b``. The
    methods need a row per class to put supports and prototypes under."""
    if view.weight.shape[0] != 1:
        raise ValueError(f"two_class takes a one-logit view, got {view.weight.shape[0]} logits")
    return LinearView(view.z, torch.cat([-view.weight, view.weight]) / 2, torch.cat([-view.bias, view.bias]) / 2)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits) over the last dim. Row by row on purpose: a
    faster column-wise form rounds a few rows differently from the rest, so that identical
    frames would no longer tie (and ties keep the earlier frame)."""
    log_p = logits.log_softmax(dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def _check_view(view: LinearView) -> None:
    if view.z.dtype != torch.float32 or view.weight.dtype != torch.float32:
        raise ValueError(f"personalisation runs on a float32 view (linear_view, view_of_rows give one); got z "
                         f"{view.z.dtype}, weight {view.weight.dtype}")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {', '.join(MODES)}")


def _frames_mask(mask: torch.Tensor | None, rows: int) -> torch.Tensor:
    return torch.ones(rows, dtype=torch.bool) if mask is None else mask.to(torch.bool).reshape(rows).cpu()


# --------------------------------------------------------------------------- lowest-k stream

def _lowest_stream(keys: torch.Tensor, classes: torch.Tensor, size: int | None, num_classes: int,
                   initial: Sequence[tuple[int, float, int]] = ()) -> list[tuple[int, int, int]]:
    """Keep per class the ``size`` items of lowest key among those seen so far (``None``: all).

    Item t arrives at time t under class ``classes[t]`` (< 0: it never enters); ``keys`` and
    ``classes`` are (T,) tensors; ``initial`` holds (class, key, id) items present before time
    0 (T3A's seeds). Returns, in time order, each change as (t, class, id that left or -1):
    item t entered its class's set at time t. An item that falls out can never come back
    (later sets hold only lower keys), so one pass with a max-heap per class gives the sets at
    every time. Ties keep the earlier item. The pass visits only the items that may enter
    (:func:`_may_enter`), in Python scalars: the vector arithmetic runs on the changes afterwards.
    """
    heaps: list[list[tuple[float, int, int]]] = [[] for _ in range(num_classes)]
    for c, key, ident in initial:  # heap entries (-key, -time, id): the root is the worst
        heapq.heappush(heaps[c], (-key, 1, ident))
    changes: list[tuple[int, int, int]] = []
    visit = _may_enter(keys, classes, size, num_classes)
    for t, c, key in zip(visit.tolist(), classes[visit].tolist(), keys[visit].tolist()):
        heap = heaps[c]
        if size is None or len(heap) < size:
            heapq.heappush(heap, (-key, -t, t))
            changes.append((t, c, -1))
        elif key < -heap[0][0]:
            changes.append((t, c, heapq.heapreplace(heap, (-key, -t, t))[2]))
    return changes


def _may_enter(keys: torch.Tensor, classes: torch.Tensor, size: int | None, num_classes: int) -> torch.Tensor:
    """Ids, ascending, of a superset of the items that enter a lowest-``size`` stream.

    Cut time into spans of ``max(128, 4·size)`` items. If an earlier span holds ``size`` items
    of class c, the set of c is full and its worst key is at most the ``size``-th lowest key of
    that span, so an item of c with a key at least the smallest such bound cannot enter (it
    needs a key strictly below the worst). Seeds only lower the worst key: the bound holds
    with them too. After the first spans, most items fail it, and the Python pass skips them.
    """
    rows, entering = keys.shape[0], classes >= 0
    if size is None or rows <= max(128, 4 * size):  # no bound, or one span with none before it
        return entering.nonzero().flatten()
    span = max(128, 4 * size)
    spans = -(-rows // span)
    grid = torch.full((spans * span, num_classes), math.inf, dtype=keys.dtype)
    ids = entering.nonzero().flatten()
    grid[ids, classes[ids]] = keys[ids]
    kth = grid.view(spans, span, num_classes).topk(size, dim=1, largest=False).values[:, -1]  # (spans, C)
    bound = torch.cat([torch.full((1, num_classes), math.inf, dtype=keys.dtype), kth.cummin(dim=0).values[:-1]])
    bound = bound[ids // span, classes[ids]]
    return ids[(keys[ids] < bound) | (bound == math.inf)]  # a set not yet full takes any key (inf, NaN too)


@dataclass(frozen=True)
class _Moves:
    """The changes of the sets as arrays. At frame t the set of class ``hot[t]`` (one-hot
    (T, C), zeros: no change) gained z_t / |z_t| (``scale[t]`` = 1/|z_t| there, else 0) and,
    at ``left_at`` (L,), lost item ``left`` (L,): frame i < T, or seed c as T + c. So
    δ_t = scale_t z_t − (unit vector that left at t). Kept apart rather than as one (T, D) δ:
    on these machines a fresh buffer of that size costs more in page faults than the arithmetic
    on it. ``inverse`` (T,): 1/|z_t| for every frame."""

    hot: torch.Tensor
    scale: torch.Tensor
    left_at: torch.Tensor
    left: torch.Tensor
    inverse: torch.Tensor

    def unit(self, ids: torch.Tensor, z: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """(n, D) unit vectors of items ``ids`` (frames, or seeds as T + c)."""
        rows = z.shape[0]
        frames = ids.clamp_max(rows - 1)
        out = z[frames] * self.inverse[frames, None]
        seed = ids >= rows
        if seed.any():
            out[seed] = seeds[ids[seed] - rows]
        return out

    def delta(self, z: torch.Tensor, seeds: torch.Tensor, start: int, end: int, out: torch.Tensor) -> torch.Tensor:
        """δ of frames [start, end) written into ``out[:end - start]`` (a reused buffer)."""
        out = torch.mul(z[start:end], self.scale[start:end, None], out=out[:end - start])
        inside = (self.left_at >= start) & (self.left_at < end)
        if inside.any():
            out.index_add_(0, self.left_at[inside] - start, self.unit(self.left[inside], z, seeds), alpha=-1)
        return out


def _moves(changes: list[tuple[int, int, int]], rows: int, norms: torch.Tensor, classes: int) -> _Moves:
    """:class:`_Moves` from :func:`_lowest_stream`'s changes; ids ≥ T are seeds (T + c)."""
    changed = torch.full((rows,), -1)
    times = left = torch.zeros(0, dtype=torch.long)
    if changes:
        times, owners, left = (torch.tensor(column) for column in zip(*changes))
        changed[times] = owners
    hot = F.one_hot(changed.clamp_min(0), classes).float() * (changed >= 0)[:, None]
    inverse = 1 / norms
    return _Moves(hot, (changed >= 0) * inverse, times[left >= 0], left[left >= 0], inverse)


# --------------------------------------------------------------------------------------- T3A

@torch.no_grad()
def t3a(view: LinearView, k: int | str | None = 20, mode: str = "offline", keep_seeds: bool = False,
        mask: torch.Tensor | None = None, source: SourceBank | None = None, block: int = 32) -> torch.Tensor:
    """T3A's prototype classifier on one track: (T, C) logits.

    Seeds: row c of ``weight`` is class c's first support (the paper's warm start), with the
    entropy of the original classifier on it. The public code labels each seed by the
    classifier's own argmax on it; row c is used under class c here, so that no class can lose
    its template to a row of unusual norm. As in the public code the seeds then compete with
    the frames on entropy (they usually win, their self-logit being large); ``keep_seeds=True``
    keeps each seed in addition to the ``k`` best frames. ``k`` None or "all": no filter.
    Frames with ``mask`` False are classified but never become supports.

    Online, frame t joins the supports before it is classified (the paper's order), so its
    logits use frames ≤ t; offline every frame uses the supports of the whole track. The bias
    is dropped, as in the paper: the prototypes replace the whole last layer. ``source`` is
    ignored (T3A uses the test track alone); it is there so every method takes the same call.
    """
    _check_mode(mode)
    _check_view(view)
    k = None if k in (None, "all") else int(k)
    if k is not None and k < 1:
        raise ValueError(f"t3a: k={k} must be >= 1 or 'all'")
    z, weight = view.z, view.weight
    rows, classes = z.shape[0], weight.shape[0]
    logits = view.logits()
    predicted = torch.where(_frames_mask(mask, rows), logits.max(dim=-1).indices.cpu(), -1)  # faster than argmax
    norms = z.norm(dim=-1).clamp_min(1e-12)  # supports by id: frames 0..T-1, seed c at T + c
    seeds = F.normalize(weight, dim=-1)  # each class's sum before frame 0: its seed (kept, or competing)
    compete = k is not None and not keep_seeds
    seed_entropy = entropy(view.logits(weight))
    if mode == "offline":
        return z @ F.normalize(_final_sums(z, norms, seeds, predicted, entropy(logits), seed_entropy, k, compete),
                               dim=-1).T
    if k is None:  # every frame joins, none leaves: no heap needed
        changes = [(t, c, -1) for t, c in enumerate(predicted.tolist()) if c >= 0]
    else:
        initial = [(c, key, rows + c) for c, key in enumerate(seed_entropy.tolist())] if compete else []
        changes = _lowest_stream(entropy(logits), predicted, k, classes, initial)
    return _prototype_logits_online(z, seeds, _moves(changes, rows, norms, classes), changes, block)


def _lowest_final(classes: torch.Tensor, keys: torch.Tensor, size: int | torch.Tensor | None) -> torch.Tensor:
    """Indices of the items :func:`_lowest_stream` ends with (items indexed in arrival order):
    per class (< 0: never enters) the ``size`` lowest keys (None: all; a (classes,) tensor: per
    class), ties to the earlier item; returned grouped by class, ascending key. One sort
    instead of a pass, where only the end matters (offline)."""
    items = (classes >= 0).nonzero().flatten()
    order = items[(classes[items] << 32 | _ordered_bits(keys[items])).argsort(stable=True)]  # ties: arrival order
    if size is None:
        return order
    grouped = classes[order]
    rank = torch.arange(len(order)) - torch.searchsorted(grouped, grouped)
    return order[rank < (size[grouped] if isinstance(size, torch.Tensor) else size)]


def _ordered_bits(keys: torch.Tensor) -> torch.Tensor:
    """(n,) int64 in [0, 2³²) ordered as the float32 ``keys`` are (equal keys, equal values;
    NaN after +inf, as a float sort puts it): the IEEE bits, with the sign bit set for positive
    numbers and every bit flipped for negative ones. So class and key sort in one integer sort,
    not two stable float sorts."""
    if keys.dtype != torch.float32:  # another width would need other bits (and rounding could make ties)
        raise TypeError(f"_ordered_bits takes float32 keys, got {keys.dtype}")
    keys = torch.where(keys.isnan(), keys.abs(), keys + 0.0)  # -0.0 becomes 0.0; NaN positive: last
    bits = keys.view(torch.int32).long()
    return torch.where(bits < 0, ~bits, bits | (1 << 31)) & 0xFFFFFFFF


def _final_sums(z: torch.Tensor, norms: torch.Tensor, seeds: torch.Tensor, predicted: torch.Tensor,
                keys: torch.Tensor, seed_keys: torch.Tensor, k: int | None, compete: bool) -> torch.Tensor:
    """(C, D) sum of each class's unit supports at the end of the track: the sets
    :func:`_lowest_stream` ends with (per class the ``k`` lowest keys, ties to the earlier item,
    the seeds first), found by one sort instead of a pass. ``compete``: the seeds are items like
    the frames; otherwise every seed is kept besides the frames."""
    classes = seeds.shape[0]
    frames = (predicted >= 0).nonzero().flatten()
    if compete:  # items: the seeds (time -1, so first), then the frames in time order
        item_class = torch.cat([torch.arange(classes), predicted[frames]])
        item_key = torch.cat([seed_keys, keys[frames]])
    else:
        item_class, item_key = predicted[frames], keys[frames]
    kept = _lowest_final(item_class, item_key, k)
    first = classes if compete else 0  # item index of the first frame
    sums = torch.zeros_like(seeds) if compete else seeds.clone()
    sums[kept[kept < first]] += seeds[kept[kept < first]]
    chosen = frames[kept[kept >= first] - first]
    weights = torch.zeros(z.shape[0], classes)  # (T, C): 1/|z_t| where frame t is kept under its class
    weights[chosen, predicted[chosen]] = 1 / norms[chosen]
    return sums.addmm_(weights.T, z)  # one product: no (T, D) temporary of unit vectors


def _prototype_logits_online(z: torch.Tensor, seeds: torch.Tensor, moves: _Moves,
                             changes: list[tuple[int, int, int]], block: int, chunk: int = 16) -> torch.Tensor:
    """logits[t, c] = z_t · S_c(t) / |S_c(t)|, S_c(t) = seeds_c + Σ_{τ ≤ t} hot[τ, c] δ_τ.

    The sums after each change of a class's set (a small table: changes × D, one cumulative
    sum per class) give |S_c(t)| for every frame and S_c at the start of every block of
    ``block`` frames. Within a block, z_t · S_c(t) = z_t · S_c(start) + Σ_{τ ≤ t} hot[τ, c]
    z_t · δ_τ, a lower-triangular product: batched matrix products, ``chunk`` blocks at a time
    (δ built piece by piece in one reused buffer), instead of gathering each frame's (C, D)
    classifier, which would cost T·C·D memory traffic, more than the model itself.
    """
    rows, width = z.shape
    classes = seeds.shape[0]
    blocks = -(-rows // block)
    # The table, every class at once: per class its seed, then its changes in time order, keyed
    # c·(T + 2) + t + 1 (the seed at t = -1), so that one sorted search finds any class's state.
    events = sorted([(c, -1, -1, rows + c) for c in range(classes)] + [(c, t, left, t) for t, c, left in changes])
    owner, times, left, entered = (torch.tensor(column) for column in zip(*events))
    keys = owner * (rows + 2) + times + 1
    states = moves.unit(entered, z, seeds)
    if (left >= 0).any():
        states[left >= 0] -= moves.unit(left[left >= 0], z, seeds)
    heads = torch.searchsorted(keys, torch.arange(classes + 1) * (rows + 2)).tolist()  # each class's seed row
    for a, b in zip(heads[:-1], heads[1:]):
        states[a:b].cumsum_(dim=0)  # S_c after each of its changes (in place, class by class)
    offsets = torch.arange(classes)[:, None] * (rows + 2) + 1
    before = torch.searchsorted(keys, offsets + torch.arange(blocks) * block) - 1  # (C, blocks): state at each start
    at_start = states[before.T]  # (blocks, C, D)
    after = torch.searchsorted(keys, offsets + torch.arange(rows), right=True) - 1  # (C, T): state after frame t
    squared = (torch.linalg.vector_norm(states, dim=-1) ** 2)[after.T]  # (T, C): |S_c(t)|²
    out = torch.empty(rows, classes)
    buffer = torch.zeros(min(blocks, chunk) * block, width)
    lower = torch.ones(block, block).tril()  # [t, τ]: τ ≤ t
    for first in range(0, rows, block * chunk):
        last = min(first + block * chunk, rows)
        size = -(-(last - first) // block) * block
        delta = moves.delta(z, seeds, first, last, buffer)
        zc, hc = z[first:last], moves.hot[first:last]
        if size > last - first:  # the track's last block, partly filled: zero rows change nothing
            buffer[last - first:size] = 0
            delta = buffer[:size]
            zc = torch.cat([zc, zc.new_zeros(size - (last - first), width)])
            hc = torch.cat([hc, hc.new_zeros(size - (last - first), classes)])
        zb, db, hb = zc.view(-1, block, width), delta.view(-1, block, width), hc.view(-1, block, classes)
        s0 = at_start[first // block:first // block + zb.shape[0]]
        raw = torch.bmm(zb, s0.transpose(1, 2)) + torch.bmm(torch.bmm(zb, db.transpose(1, 2)) * lower, hb)
        out[first:last] = raw.flatten(0, 1)[:last - first]
    return out / squared.clamp_min(1e-12).sqrt()


# ---------------------------------------------------------------------------- CaP: the source

@dataclass(frozen=True)
class SourceBank:
    """Per training subject: Gaussian statistics of its embeddings and unit class prototypes.

    ``means`` (S, D); ``scales`` (S, D) standard deviations (``covariance="diag"``) or (S, D, D)
    square roots of the covariance matrices (``"full"``), with ``traces`` (S,) of the
    covariances; ``prototypes`` (S, C, D) unit vectors (mean of the subject's L2-normalised
    frames of class c, renormalised), ``present`` (S, C) whether the subject has class c;
    ``pooled`` (C, D) / ``pooled_present`` (C,) the same over all subjects, the source cache
    used until a track has frames to compare.
    """

    subjects: tuple[str, ...]
    covariance: str
    means: torch.Tensor
    scales: torch.Tensor
    traces: torch.Tensor
    prototypes: torch.Tensor
    present: torch.Tensor
    pooled: torch.Tensor
    pooled_present: torch.Tensor

    def distances(self, mean: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        """Fréchet distance between N(mean, Σ) and each subject's Gaussian: (S,) for mean (D,),
        (J, S) for a batch (J, D). ``spread`` is the standard deviation (D,) for a diagonal
        bank, the covariance (D, D) for a full one (with the same leading batch dim).

        Diagonal: ||μ − μ_s||² + ||σ − σ_s||² (two matrix products for a whole batch: cheap
        enough to refresh often); full: ||μ − μ_s||² + tr Σ + tr Σ_s − 2 tr (Σ_s^½ Σ Σ_s^½)^½,
        a batched eigvalsh over the subjects per Gaussian (costly at large D: an option)."""
        single = mean.dim() == 1
        mean, spread = (mean[None], spread[None]) if single else (mean, spread)
        mean, spread = mean.double(), spread.double()
        gap = _squared_distances(mean, self.means)
        if self.covariance == "diag":
            out = gap + _squared_distances(spread, self.scales)
        else:
            cross = torch.stack([torch.linalg.eigvalsh(self.scales @ cov @ self.scales).clamp_min(0).sqrt().sum(dim=-1)
                                 for cov in spread])
            out = gap + spread.diagonal(dim1=-2, dim2=-1).sum(dim=-1)[:, None] + self.traces - 2 * cross
        return out[0] if single else out

    def nearest(self, mean: torch.Tensor, spread: torch.Tensor, count: int) -> torch.Tensor:
        """(J, m) indices, ascending, of the m = min(count, S) subjects nearest each Gaussian."""
        distances = self.distances(mean, spread)
        return distances.topk(min(count, len(self.subjects)), dim=-1, largest=False).indices.sort(dim=-1).values


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(J, S) ||a_j − b_s||² of a (J, D) and b (S, D), without a (J, S, D) temporary."""
    return ((a ** 2).sum(dim=-1)[:, None] + (b ** 2).sum(dim=-1)[None] - 2 * a @ b.T).clamp_min(0)


def _gaussian(count: torch.Tensor, first: torch.Tensor, second: torch.Tensor, covariance: str):
    """Means (J, D) and spreads (std (J, D), or covariance (J, D, D)) from counts (J,), Σz (J, D)
    and Σz² (J, D) (diag) or Σzzᵀ (J, D, D) (full)."""
    mean = first / count[:, None]
    if covariance == "diag":
        return mean, (second / count[:, None] - mean ** 2).clamp_min(0).sqrt()
    return mean, second / count[:, None, None] - mean[:, :, None] * mean[:, None, :]


def _unit_mean(rows: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.normalize(rows, dim=-1).mean(dim=0), dim=-1)


@torch.no_grad()
def build_source(embeddings: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], subjects: Sequence[str],
                 num_classes: int, covariance: str = "diag") -> SourceBank:
    """The training side of ``cap`` from training tracks, grouped by subject.

    ``embeddings``: per track the z (T, D) of the same linear view the test tracks get
    (``linear_view(model, features).z`` with the fold's own model); ``labels``: per track (T,)
    class indices, -1 (or any negative) where a frame has no label (it still counts in the
    statistics); ``subjects``: per track the person (``Track.source`` in this toolkit).
    """
    if covariance not in ("diag", "full"):
        raise ValueError(f"covariance={covariance!r}: choose diag or full")
    if not (len(embeddings) == len(labels) == len(subjects)) or not embeddings:
        raise ValueError("build_source: one label array and one subject per embedding array, at least one")
    names = tuple(sorted(set(subjects)))
    means, scales, traces, protos, present = [], [], [], [], []
    all_z = torch.cat([e.float() for e in embeddings])
    all_y = torch.cat([torch.as_tensor(y).reshape(-1).long() for y in labels])
    for name in names:
        picks = [i for i, s in enumerate(subjects) if s == name]
        z = torch.cat([embeddings[i].float() for i in picks]).double()
        y = torch.cat([torch.as_tensor(labels[i]).reshape(-1).long() for i in picks])
        means.append(z.mean(dim=0))
        if covariance == "diag":
            scales.append(z.std(dim=0, unbiased=False))
            traces.append(torch.zeros((), dtype=z.dtype))
        else:  # Σ_s^½ once per subject, so that each distance needs one eigvalsh
            cov = torch.cov(z.T, correction=0)
            values, vectors = torch.linalg.eigh(cov)
            scales.append(vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T)
            traces.append(cov.trace())
        protos.append(torch.stack([_unit_mean(z[y == c].float()) if (y == c).any() else torch.zeros(z.shape[1])
                                   for c in range(num_classes)]))
        present.append(torch.stack([(y == c).any() for c in range(num_classes)]))
    pooled_present = torch.stack([(all_y == c).any() for c in range(num_classes)])
    pooled = torch.stack([_unit_mean(all_z[all_y == c]) if pooled_present[c] else torch.zeros(all_z.shape[1])
                          for c in range(num_classes)])
    return SourceBank(names, covariance, torch.stack(means), torch.stack(scales), torch.stack(traces),
                      torch.stack(protos), torch.stack(present), pooled, pooled_present)


# ------------------------------------------------------------------------- CaP: gates, caches

@dataclass(frozen=True)
class CaPTrace:
    """What ``cap`` did on one track: its logits (T, C), the gates per frame (T,) bool,
    and the final caches per class (frame ids, ascending)."""

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


def _stable(predicted: torch.Tensor, window: int) -> torch.Tensor:
    """Frame t's prediction is the strict majority of the ``window`` predictions before it
    (frames with fewer predecessors are not yet stable; masked frames' predictions count too).
    Only the past: the same online and offline."""
    agree = torch.zeros_like(predicted)
    for lag in range(1, window + 1):
        agree[lag:] += (predicted[lag:] == predicted[:-lag]).long()
    stable = agree * 2 > window
    stable[:window] = False
    return stable


def _source_plan(view: LinearView, source: SourceBank | None, mode: str, frames: torch.Tensor, refresh: int,
                 subjects: int) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """The source cache per run of frames: [(start, end, prototypes (m, C, D), present (m, C))].

    Offline: the ``subjects`` nearest the whole track's statistics. Online: frames in
    [j·refresh, (j+1)·refresh) use the subjects nearest the statistics of frames < j·refresh
    (the pooled prototypes while fewer than 2 usable frames are behind): causal. The statistics
    come from running sums over the stretches, the distances of all stretches from one batched
    evaluation, and adjacent stretches that chose the same subjects form one run.
    """
    if source is None:
        return []
    rows, full = view.z.shape[0], source.covariance == "full"
    step = rows if mode == "offline" else refresh
    weight = frames.to(view.z.dtype)  # 0 for masked frames: they add nothing to the sums
    # Per-stretch sums in float32, 1024 rows at a time, the mask applied through the products
    # (no (T, D) temporary), accumulated over stretches and turned into moments in float64.
    count, first, second = [], [], []
    for j in range(0, rows, step):
        spans = [(i, min(i + 1024, j + step, rows)) for i in range(j, min(j + step, rows), 1024)]
        pieces = [(view.z[a:b], weight[a:b]) for a, b in spans]
        count.append(float(weight[j:j + step].sum()))
        first.append(sum(m @ x for x, m in pieces))
        second.append(sum((x.T * m) @ x if full else m @ x.square() for x, m in pieces))
    count = torch.tensor(count, dtype=torch.float64)
    first, second = torch.stack(first).double(), torch.stack(second).double()
    if mode == "online":  # each stretch sees the stretches before it only
        count, first, second = (torch.cat([torch.zeros_like(x[:1]), x.cumsum(dim=0)[:-1]])
                                for x in (count, first, second))
    usable = count >= 2
    choice = [None] * len(count)  # None: the pooled prototypes
    if usable.any():
        chosen = source.nearest(*_gaussian(count[usable], first[usable], second[usable], source.covariance), subjects)
        for j, row in zip(usable.nonzero().flatten().tolist(), chosen.tolist()):
            choice[j] = tuple(row)
    plan: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
    runs: list[tuple[int, int, tuple[int, ...] | None]] = []
    for j, picked in enumerate(choice):
        if runs and runs[-1][2] == picked:
            runs[-1] = (runs[-1][0], min((j + 1) * step, rows), picked)
        else:
            runs.append((j * step, min((j + 1) * step, rows), picked))
    for start, end, picked in runs:
        if picked is None:
            plan.append((start, end, source.pooled[None], source.pooled_present[None]))
        else:
            index = torch.tensor(picked)
            plan.append((start, end, source.prototypes[index], source.present[index]))
    return plan


@dataclass(frozen=True)
class _Cache:
    """One cache's entries per class, padded to the fullest class: ``ids`` (C, M) frame ids
    (an entry enters at its own frame), ``leave`` (C, M) the frame at which it left (inf:
    never), ``ok`` (C, M) False on padding."""

    ids: torch.Tensor
    leave: torch.Tensor
    ok: torch.Tensor

    def split(self, classes: int) -> tuple[_Cache, _Cache]:
        """Two caches from one whose first ``classes`` rows are the first cache's classes."""
        first, second = (_Cache(self.ids[part], self.leave[part], self.ok[part])
                         for part in (slice(0, classes), slice(classes, None)))
        return first, second

    def final(self) -> list[list[int]]:
        """Per class, the frames in the cache at the end of the track, ascending."""
        kept = self.ok & (self.leave == math.inf)
        return [row[keep].tolist() for row, keep in zip(self.ids, kept)]


def _padded(ids: list[list[int]], leaves: list[list[float]]) -> _Cache:
    width = max(map(len, ids))
    rows = [row + [0] * (width - len(row)) for row in ids]
    gone = [row + [math.inf] * (width - len(row)) for row in leaves]
    return _Cache(torch.tensor(rows, dtype=torch.long).reshape(len(ids), width),
                  torch.tensor(gone, dtype=torch.float64).reshape(len(ids), width),
                  torch.tensor([[i < len(row) for i in range(width)] for row in ids],
                               dtype=torch.bool).reshape(len(ids), width))


def _stream_cache(keys: torch.Tensor, classes: torch.Tensor, size: int, num_classes: int) -> _Cache:
    """Online: every frame that was ever in the cache of its class, and when each left."""
    leave: dict[int, float] = {}
    ids: list[list[int]] = [[] for _ in range(num_classes)]
    for t, c, left in _lowest_stream(keys, classes, size, num_classes):
        ids[c].append(t)
        leave[t] = math.inf
        if left >= 0:
            leave[left] = t
    return _padded(ids, [[leave[t] for t in row] for row in ids])


def _final_cache(keys: torch.Tensor, classes: torch.Tensor, size: int | torch.Tensor, num_classes: int) -> _Cache:
    """Offline: the caches at the end of the track only (what every frame then uses)."""
    kept = _lowest_final(classes, keys, size)
    kept = kept[(classes[kept] * keys.shape[0] + kept).argsort()]  # by class, then time
    ids = [row.tolist() for row in kept.split(torch.bincount(classes[kept], minlength=num_classes).tolist())]
    return _padded(ids, [[math.inf] * len(row) for row in ids])


class _Group(NamedTuple):
    """One group of dictionary columns in :func:`_refine`: the source, or one cache."""

    entries: torch.Tensor  # (C, E_g, D) unit vectors, zero rows as padding
    ok: torch.Tensor  # (C, E_g) False on padding (or a class a source subject lacks)
    cache: _Cache | None  # online caches: when each entry entered and left
    runs: torch.Tensor | None  # the source: the run (E_g,) each column's prototype belongs to
    weight: float  # signed: the negative cache's mean is subtracted
    big: bool  # may hold more than ``top`` entries for a frame: the top-k cut applies


def _refine(view: LinearView, norms: torch.Tensor, logits0: torch.Tensor, predicted: torch.Tensor, mode: str,
            plan: list, proto_sims: list, caches: list, source_weight: float, top: int) -> torch.Tensor:
    """classifier(|z| · norm(v)), v = ẑ + a_s e_src + a_p e_pos − a_n e_neg, for every frame.

    One dictionary X (C, E, D) holds, per class, the entries any of its frames may use: its
    prototype in every source run, then every frame that was ever in its positive, then its
    negative cache (offline: the final caches only); padding rows are zero. Frame t of
    predicted class c has similarities s = X_c ẑ_t (one product per class, over that class's
    frames; the prototypes' are the consistency gate's, ``proto_sims``), and whether
    each entry counts for it (its run, the entry's entry and exit frames online, padding)
    decides the coefficients a (T, E), all classes at once, with
    v = ẑ + a X_c. Then, without forming v: W v = W ẑ + a (X_c Wᵀ) and
    |v|² = 1 + 2 a·s + a (X_c X_cᵀ) aᵀ, from one more product per class with the
    (E, C + E) table [X_c Wᵀ | X_c X_cᵀ]. ``norms`` (T, 1) = |z|; ``caches``: (:class:`_Cache`,
    weight, whether it can hold more than ``top``) each.
    """
    z, weight, classes = view.z, view.weight, view.weight.shape[0]
    groups: list[_Group] = []
    if plan and source_weight:  # every run's prototypes, valid for the frames of that run
        protos = torch.cat([p for _, _, p, _ in plan]).transpose(0, 1)  # (C, E, D)
        present = torch.cat([q for _, _, _, q in plan]).T
        runs = torch.cat([torch.full((p.shape[0],), r) for r, (_, _, p, _) in enumerate(plan)])
        groups.append(_Group(protos, present, None, runs, source_weight, max(p.shape[0] for _, _, p, _ in plan) > top))
    for cache, cache_weight, big in caches:
        if cache_weight and cache.ids.shape[1]:
            units = z[cache.ids] / norms[cache.ids] * cache.ok[..., None]
            groups.append(_Group(units, cache.ok, cache if mode == "online" else None, None, cache_weight, big))
    if not groups:
        return logits0.clone()
    entries = torch.cat([g.entries for g in groups], dim=1)  # (C, E, D)
    table = torch.cat([entries @ weight.T, entries @ entries.transpose(1, 2)], dim=2)  # (C, E, C + E)
    order = predicted.argsort(stable=True)  # frames grouped by predicted class, in time order
    counts = torch.bincount(predicted, minlength=classes).tolist()
    bounds = [0] + torch.tensor(counts).cumsum(dim=0).tolist()
    busy = [(c, bounds[c], bounds[c + 1]) for c in range(classes) if counts[c]]
    first = groups[0].entries.shape[1] if groups[0].runs is not None else 0  # the source's columns come first
    sims = torch.empty(len(order), entries.shape[1])
    if first:  # frame t's similarity with the prototypes of class ĉ_t in its own run (the others do not count)
        source_sims, column = torch.zeros(len(order), first), 0
        for (start, end, protos, _), run_sims in zip(plan, proto_sims):
            m = protos.shape[0]
            own = predicted[start:end, None, None].expand(-1, m, 1)
            source_sims[start:end, column:column + m] = run_sims.gather(2, own)[..., 0]
            column += m
        sims[:, :first] = source_sims[order]
    if first < entries.shape[1]:
        cached = torch.empty(len(order), entries.shape[1] - first)
        rows_of = torch.empty(max(counts), z.shape[1])  # one reused buffer: no (T, D) copy
        for c, a, b in busy:
            torch.mm(torch.index_select(z, 0, order[a:b], out=rows_of[:b - a]), entries[c, first:].T, out=cached[a:b])
        sims[:, first:] = cached / norms[order]
    owner = predicted[order]
    valid = torch.cat([g.ok for g in groups], dim=1)[owner]  # (T, E): entry e exists for frame t's class
    column, spans, when = 0, [], order[:, None].double()  # each sorted row's frame
    for group in groups:
        span = slice(column, column + group.entries.shape[1])
        spans.append(span)
        column = span.stop
        if group.cache is not None:  # online: in the cache at frame t
            valid[:, span] &= (group.cache.ids[owner] <= when) & (when < group.cache.leave[owner])
        if group.runs is not None and len(plan) > 1:  # online: the prototypes of frame t's own run
            run_of = torch.repeat_interleave(torch.arange(len(plan)), torch.tensor([b - a for a, b, _, _ in plan]))
            valid[:, span] &= group.runs[None] == run_of[order][:, None]
    coef = _group_weights(sims, valid, spans, [g.weight for g in groups], [top if g.big else None for g in groups])
    mixed = torch.empty(len(order), table.shape[2])
    for c, a, b in busy:
        torch.mm(coef[a:b], table[c], out=mixed[a:b])
    squared = 1 + 2 * (coef * sims).sum(dim=1) + (mixed[:, classes:] * coef).sum(dim=1)
    out = ((logits0 - view.bias) / norms)[order] + mixed[:, :classes]  # W ẑ + a X Wᵀ
    out /= squared.clamp_min(1e-12).sqrt()[:, None]
    # At z's own norm, so that the bias keeps its trained scale and empty caches give back the
    # model's own logits.
    return torch.empty_like(out).index_copy_(0, order, out) * norms + view.bias


def _group_weights(sims: torch.Tensor, valid: torch.Tensor, spans: list[slice], weights: list[float],
                   tops: list[int | None]) -> torch.Tensor:
    """Coefficients (n, E) of a weighted sum of similarity-weighted means, one mean per group
    of columns (``spans``), times its weight: within a group ∝ the cosine similarity clipped at
    0 (an entry pointing away says nothing about the frame), over the valid entries, only the
    ``top`` most similar of them where ``tops`` gives one, summing to 1 (to 0 where none is
    similar). Every group at once: per-group sums through one (E, groups) indicator product."""
    sims = sims.masked_fill(~valid, -1.0)
    for span, top in zip(spans, tops):
        if top is not None and span.stop - span.start > top:
            part = sims[:, span]
            kth = part.topk(top, dim=1).values[:, -1:]
            part.masked_fill_(part < kth, -1.0)  # ties at the cut may keep one more
    w = sims.clamp_min_(0)
    member = torch.zeros(sims.shape[1], len(spans))
    for g, span in enumerate(spans):
        member[span, g] = 1.0
    scale = torch.tensor(weights, dtype=w.dtype) / (w @ member).clamp_min(1e-12)  # (n, groups)
    return w * (scale @ member.T)


def _prototype_sims(view: LinearView, plan: list, norms: torch.Tensor) -> list[torch.Tensor]:
    """Per run of the source plan, the cosine similarities (n, m, C) of its frames with its
    prototypes (one product per run; the logits stay ``view.logits()``, the model's own)."""
    return [(view.z[start:end] @ protos.flatten(0, 1).T / norms[start:end]).unflatten(1, protos.shape[:2])
            for start, end, protos, _ in plan]


@torch.no_grad()
def cap_trace(view: LinearView, mode: str = "offline", source: SourceBank | None = None,
              mask: torch.Tensor | None = None, positive_size: int = 5, negative_size: int = 4, top: int = 5,
              subjects: int = 3, window: int = 3, positive_entropy: float = 0.5, negative_entropy: float = 0.8,
              margin: float = 0.05, refresh: int = 150, source_weight: float = 1.0, positive_weight: float = 1.0,
              negative_weight: float = 1.0) -> CaPTrace:
    """Three-cache personalisation of one track (see :func:`cap`), with what it did."""
    _check_mode(mode)
    _check_view(view)
    for name, value in (("positive_size", positive_size), ("negative_size", negative_size), ("top", top),
                        ("subjects", subjects), ("window", window), ("refresh", refresh)):
        if int(value) != value or value < 1:
            raise ValueError(f"cap: {name}={value!r} must be a whole number >= 1")
    z, rows, classes = view.z, view.z.shape[0], view.weight.shape[0]
    frames = _frames_mask(mask, rows)
    norms = z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    plan = _source_plan(view, source, mode, frames, refresh, subjects)
    logits0, proto_sims = view.logits(), _prototype_sims(view, plan, norms)
    predicted = logits0.max(dim=-1).indices  # the first on ties, as argmax, and faster on the CPU
    least = logits0.min(dim=-1).indices
    spread = entropy(logits0) / math.log(classes)

    # The consistency gate: each class's nearest prototype in the run's source cache.
    consistent = torch.ones(rows, dtype=torch.bool)
    for (start, end, _, present), sims in zip(plan, proto_sims) if classes > 1 else ():
        best = torch.full((end - start, classes), -math.inf)  # per class, the nearest of the m prototypes
        for i in range(sims.shape[1]):  # m element-wise maxima: far faster than a max over the middle dim
            best = torch.maximum(best, sims[:, i].masked_fill(~present[i], -math.inf))
        closest, nearest = best.max(dim=1)
        second = best.scatter(1, nearest[:, None], -math.inf).max(dim=1).values  # a tie for the top: margin 0
        consistent[start:end] = (nearest == predicted[start:end]) & (closest - second > margin)

    stable = _stable(predicted, window)
    confident = spread < positive_entropy
    ambiguous = (spread >= positive_entropy) & (spread < negative_entropy)
    positive_gate = frames & stable & confident & consistent
    # The consistency gate guards the positive cache against confident mistakes; a negative
    # entry only claims that the frame is not its least likely class, which it does not test.
    negative_gate = frames & stable & ambiguous
    if mode == "online":
        positive = _stream_cache(spread, torch.where(positive_gate, predicted, -1), positive_size, classes)
        negative = _stream_cache(spread, torch.where(negative_gate, least, -1), negative_size, classes)
    else:  # the gates are disjoint (confident / ambiguous): one sort finds both caches, the negative as C + c
        both = torch.where(positive_gate, predicted, torch.where(negative_gate, least + classes, -1))
        sizes = torch.tensor([positive_size] * classes + [negative_size] * classes)
        positive, negative = _final_cache(spread, both, sizes, 2 * classes).split(classes)
    # The negative cache's mean is subtracted: its weight enters with a minus sign.
    caches = [(positive, positive_weight, positive_size > top), (negative, -negative_weight, negative_size > top)]
    logits = _refine(view, norms, logits0, predicted, mode, plan, proto_sims, caches, source_weight, top)
    return CaPTrace(logits, predicted, stable, confident, ambiguous, consistent, positive_gate, negative_gate,
                    positive.final(), negative.final())


def cap(view: LinearView, mode: str = "offline", source: SourceBank | None = None,
        mask: torch.Tensor | None = None, **params: Any) -> torch.Tensor:
    """Three-cache personalisation (after TTA-CaP) of one track: (T, C) logits.

    Per frame, with the original classifier's prediction ĉ and normalised entropy H/log C:

    - source cache: unit class prototypes of the ``subjects`` training subjects nearest the
      track (:class:`SourceBank`; online: by the frames seen so far, refreshed every
      ``refresh`` frames, the pooled prototypes before the first refresh);
    - tri-gate: stable (ĉ is the strict majority of the ``window`` previous predictions),
      confident (H < ``positive_entropy``) or ambiguous (``positive_entropy`` ≤ H <
      ``negative_entropy``), consistent (the class of the nearest source prototype is ĉ and
      beats the next class's nearest by more than ``margin``; without a source bank every
      frame is consistent and e_src = 0);
    - positive cache: stable ∧ confident ∧ consistent frames under ĉ, the ``positive_size``
      lowest-entropy per class; negative cache: stable ∧ ambiguous frames under their least
      likely class, ``negative_size`` per class, lowest entropy kept;
    - refined embedding r = norm(ẑ + a_s e_src + a_p e_pos − a_n e_neg), each e the
      similarity-weighted mean (:func:`_group_weights`) of the ``top`` entries of class ĉ in
      that cache, a = ``source_weight``/``positive_weight``/``negative_weight``; logits =
      classifier(|z| · r).

    Online a frame enters the caches before it is refined (as in T3A), so frame t sees frames
    ≤ t; offline the caches of the whole track refine every frame. The gates depend on the
    original predictions only, so both modes admit the same frames (but for the consistency
    gate, whose source cache differs). Frames with ``mask`` False are refined but never cached
    nor counted in the track's statistics.

    Every e belongs to the predicted class, and the negative entries under ĉ are frames for
    which ĉ was least likely, so all three terms pull towards ĉ: through a linear classifier
    CaP seldom changes a frame's arg-max; it moves the probabilities that post-processing
    (smoothing, the confidence fallback) works on.
    """
    return cap_trace(view, mode, source, mask, **params).logits


def plain(view: LinearView, mode: str = "offline", source: SourceBank | None = None,
          mask: torch.Tensor | None = None) -> torch.Tensor:
    """No personalisation: the model's own logits."""
    _check_mode(mode)
    return view.logits()


# ------------------------------------------------------------------------------ the registry

@dataclass(frozen=True)
class Method:
    """A personalisation method: ``run(view, mode, source, mask, **params) -> (T, C) logits``,
    its default parameters, the grid that out-of-fold selection tries, and whether it uses a
    :class:`SourceBank` (``cap`` runs without one, with no source cache and no consistency gate)."""

    name: str
    run: Callable[..., torch.Tensor]
    defaults: Mapping[str, Any]
    grid: tuple[Mapping[str, Any], ...]
    uses_source: bool = False


def _product(**axes: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    combos: list[dict[str, Any]] = [{}]
    for name, values in axes.items():
        combos = [{**combo, name: value} for combo in combos for value in values]
    return tuple(combos)


_CAP_DEFAULTS = {"positive_size": 5, "negative_size": 4, "top": 5, "subjects": 3, "window": 3,
                 "positive_entropy": 0.5, "negative_entropy": 0.8, "margin": 0.05, "refresh": 150,
                 "source_weight": 1.0, "positive_weight": 1.0, "negative_weight": 1.0}

METHODS: dict[str, Method] = {
    "none": Method("none", plain, {}, ({},)),
    "t3a": Method("t3a", t3a, {"k": 20, "keep_seeds": False}, _product(k=(1, 5, 20, 50, 100, "all"))),
    "cap": Method("cap", cap, _CAP_DEFAULTS,
                  _product(positive_entropy=(0.3, 0.5), margin=(0.0, 0.05), negative_weight=(0.0, 1.0)),
                  uses_source=True),
}


def _method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown personalisation method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def check_params(method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's defaults overridden by ``params``; unknown names raise, listing the valid ones."""
    spec = _method(method)
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise ValueError(f"{method}: unknown parameter(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(spec.defaults) or 'none'}")
    return {**spec.defaults, **params}


def param_grid(method: str) -> list[dict[str, Any]]:
    """Complete parameter sets (defaults filled in) that out-of-fold selection tries."""
    return [check_params(method, combo) for combo in _method(method).grid]


def personalise_view(method: str, view: LinearView, params: Mapping[str, Any] | None = None,
                     mode: str = "offline", source: SourceBank | None = None,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """(T, C) personalised logits of one track's view; state starts empty (reset per track)."""
    spec, params = _method(method), check_params(method, params)
    _check_mode(mode)
    if view.z.shape[0] == 0:
        return view.logits()
    return spec.run(view, mode=mode, source=source, mask=mask, **params)


def personalise(method: str, model, features: torch.Tensor, params: Mapping[str, Any] | None = None,
                mode: str = "offline", source: SourceBank | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """(T, C) personalised logits of one track.

    ``model``: a registered ``fusion`` model in eval mode with an identity output activation;
    ``features``: its ``forward_features`` output for the track, (T, F) or (1, T, F);
    ``params``: overrides of the method's defaults (see :data:`METHODS`, :func:`param_grid`);
    ``source``: ``cap``'s :class:`SourceBank` from the training tracks of the same model;
    ``mask`` (T,) bool: frames that may enter supports and caches (e.g. face present).
    """
    return personalise_view(method, linear_view(model, features), params, mode, source, mask)
