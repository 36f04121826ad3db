"""Gradient-free test-time personalisation of a frozen classifier, each track on its own.

Every test video shows a person the model never saw, and people differ more than their
expressions do. The two methods here adapt the model's last linear map to the track in front
of it from its own unlabelled frames, with a few vector operations per frame: no optimiser, no
autograd, nothing in the model changes, and every state is reset per track (a track is one
domain; several tracks in one call are each adapted on their own).

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
(an already computed view), :func:`personalise_views` (many tracks' views of one model, each
on its own, computed together: what ``predict`` and ``abaw cv`` call, as the fixed cost of a
call is then paid once per batch of tracks), :func:`view_of_rows` / :func:`views_of_rows`
(views from the z rows and logits prediction kept), :func:`build_source` (the training side
of ``cap``), :data:`METHODS`, :func:`param_grid` and :func:`check_params` for out-of-fold
selection.
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
    """One track through the model's last linear map: z (T, D), weight (C, D), bias (C,);
    ``own`` (T, C), if given, the logits the prediction itself computed from these z rows
    (z @ weight.T + bias up to float rounding), which the methods then take as the model's
    own instead of computing them again."""

    z: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    own: torch.Tensor | None = None

    def logits(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """(T, C) logits of the original classifier on ``z`` (default: the track's own)."""
        if z is None and self.own is not None:
            return self.own
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


def view_of_rows(model, z: torch.Tensor, logits: torch.Tensor | None = None) -> LinearView:
    """The view of z rows a prediction already computed (``predict_frames(..., features=True)``
    keeps them as ``view``, and the logits it computed from them as ``logits``)."""
    return views_of_rows(model, [z], None if logits is None else [logits])[0]


@torch.no_grad()
def views_of_rows(model, rows: Sequence[torch.Tensor],
                  logits: Sequence[torch.Tensor | None] | None = None) -> list[LinearView]:
    """:func:`view_of_rows` of several tracks' rows, with the model's last linear map (the same
    for every input, so computed once)."""
    if model.training:
        raise ValueError("view_of_rows: call model.eval() first")
    device = next(model.parameters()).device
    _, weight, bias = model.linear_view(torch.zeros(1, model.feature_dim, device=device))
    logits = [None] * len(rows) if logits is None else list(logits)
    for z, own in zip(rows, logits):
        if z.dim() != 2 or z.shape[1] != weight.shape[1]:
            raise ValueError(f"view_of_rows: z must be (T, {weight.shape[1]}), got {tuple(z.shape)}")
        if own is not None and tuple(own.shape) != (z.shape[0], weight.shape[0]):
            raise ValueError(f"view_of_rows: logits must be ({z.shape[0]}, {weight.shape[0]}), got {tuple(own.shape)}")
    return [_as_view(z, weight, bias, own) for z, own in zip(rows, logits)]


def _as_view(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, own: torch.Tensor | None = None) -> LinearView:
    view = LinearView(z.float().cpu(), weight.detach().float().cpu(), bias.detach().float().cpu(),
                      None if own is None else own.float().cpu())
    return two_class(view) if view.weight.shape[0] == 1 else view


def two_class(view: LinearView) -> LinearView:
    """The exact two-class view of a one-logit binary head (A/H): rows ``-w/2`` and ``w/2``, so
    that softmax of the two logits is ``[1 - sigmoid(l), sigmoid(l)]`` with ``l = z · w + b``. The
    methods need a row per class to put supports and prototypes under."""
    if view.weight.shape[0] != 1:
        raise ValueError(f"two_class takes a one-logit view, got {view.weight.shape[0]} logits")
    own = None if view.own is None else torch.cat([-view.own, view.own], dim=1) / 2
    return LinearView(view.z, torch.cat([-view.weight, view.weight]) / 2, torch.cat([-view.bias, view.bias]) / 2, own)


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
    if view.own is not None and tuple(view.own.shape) != (view.z.shape[0], view.weight.shape[0]):
        raise ValueError(f"a view's own logits must be (T, C) = {(view.z.shape[0], view.weight.shape[0])}, got "
                         f"{tuple(view.own.shape)}")


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


# ------------------------------------------------------------------------------------- units

@dataclass(frozen=True)
class _Units:
    """The views of several units (tracks, or a participant's videos) of one model, each
    personalised on its own but computed together. A personalisation costs a few hundred small
    tensor operations whatever a unit's length, so one call for many units pays that once:
    per-row quantities (logits, entropies, gates) are concatenated in unit order, rows
    [starts[u], starts[u + 1]) being unit u's, while the z rows stay in their views (no
    concatenated copy of the largest array). Class c of unit u is the group u·C + c: supports,
    caches and dictionaries are per group, so no unit sees another's frames."""

    views: tuple[LinearView, ...]
    starts: tuple[int, ...]  # B + 1 row offsets
    unit: torch.Tensor  # (N,) each row's unit
    position: torch.Tensor  # (N,) each row's index within its unit

    @property
    def weight(self) -> torch.Tensor:
        return self.views[0].weight

    @property
    def bias(self) -> torch.Tensor:
        return self.views[0].bias

    @property
    def classes(self) -> int:
        return self.weight.shape[0]

    @property
    def groups(self) -> int:
        return len(self.views) * self.classes

    def rows(self, u: int) -> slice:
        return slice(self.starts[u], self.starts[u + 1])

    def cat(self, per_view: Callable[[LinearView], torch.Tensor]) -> torch.Tensor:
        return torch.cat([per_view(view) for view in self.views])


def _units(views: Sequence[LinearView], masks: Sequence[torch.Tensor | None] | None) -> tuple[_Units, torch.Tensor]:
    """The units of ``views`` and the (N,) mask of the frames that may enter supports and caches."""
    if not views:
        raise ValueError("personalisation needs at least one view")
    masks = [None] * len(views) if masks is None else list(masks)
    if len(masks) != len(views):
        raise ValueError(f"{len(views)} views but {len(masks)} masks: one mask (or None) per view")
    for view in views:
        _check_view(view)
    weight, bias = views[0].weight, views[0].bias
    for view in views[1:]:
        same = view.weight is weight or (view.weight.shape == weight.shape and torch.equal(view.weight, weight))
        if not same or not (view.bias is bias or (view.bias.shape == bias.shape and torch.equal(view.bias, bias))):
            raise ValueError("views personalised together must share one model's last linear map (weight, bias)")
    sizes = [view.z.shape[0] for view in views]
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    unit = torch.repeat_interleave(torch.arange(len(views)), torch.tensor(sizes))
    position = torch.arange(starts[-1]) - torch.tensor(starts[:-1])[unit]
    frames = torch.cat([_frames_mask(mask, size) for mask, size in zip(masks, sizes)])
    return _Units(tuple(views), tuple(starts), unit, position), frames


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
    return _t3a_units([view], mode, source, [mask], k=k, keep_seeds=keep_seeds, block=block)[0]


@torch.no_grad()
def _t3a_units(views: Sequence[LinearView], mode: str = "offline", source: SourceBank | None = None,
               masks: Sequence[torch.Tensor | None] | None = None, k: int | str | None = 20,
               keep_seeds: bool = False, block: int = 32) -> list[torch.Tensor]:
    """:func:`t3a` of each view on its own (offline, all of them in one pass)."""
    _check_mode(mode)
    k = None if k in (None, "all") else int(k)
    if k is not None and k < 1:
        raise ValueError(f"t3a: k={k} must be >= 1 or 'all'")
    units, frames = _units(views, masks)
    compete = k is not None and not keep_seeds
    if mode == "offline":
        return _t3a_offline(units, frames, k, compete)
    return [_t3a_online(view, frames[units.rows(u)], k, compete, block) for u, view in enumerate(units.views)]


def _t3a_offline(units: _Units, frames: torch.Tensor, k: int | None, compete: bool) -> list[torch.Tensor]:
    """Offline T3A of every unit: the supports each class of each unit ends with (the sets
    :func:`_lowest_stream` ends with: per group the ``k`` lowest entropies, ties to the earlier
    item, the seeds first) from one sort over all units, then z · normalise(Σ unit supports).
    ``compete``: the seeds are items like the frames; otherwise every seed is kept besides."""
    weight, classes, count = units.weight, units.classes, len(units.views)
    logits = units.cat(LinearView.logits)
    predicted = logits.max(dim=-1).indices  # the first on ties, as argmax, and faster on the CPU
    group = torch.where(frames, units.unit * classes + predicted, -1)
    items = (group >= 0).nonzero().flatten()
    seeds = F.normalize(weight, dim=-1)
    keys = entropy(logits)[items]
    if compete:  # items: every unit's seeds (time -1, so first), then the frames in time order
        item_group = torch.cat([torch.arange(units.groups), group[items]])
        item_key = torch.cat([entropy(units.views[0].logits(weight)).repeat(count), keys])
    else:
        item_group, item_key = group[items], keys
    kept = _lowest_final(item_group, item_key, k)
    first = units.groups if compete else 0  # item index of the first frame
    sums = torch.zeros(units.groups, weight.shape[1]) if compete else seeds.repeat(count, 1)
    sums[kept[kept < first]] += seeds[kept[kept < first] % classes]
    chosen = items[kept[kept >= first] - first]  # grouped by group, so unit by unit
    bounds = torch.searchsorted(units.unit[chosen], torch.arange(count + 1)).tolist()
    out = []
    for u, view in enumerate(units.views):
        rows = chosen[bounds[u]:bounds[u + 1]] - units.starts[u]
        mine = sums[u * classes:(u + 1) * classes]
        mine.index_add_(0, predicted[rows + units.starts[u]], F.normalize(view.z[rows], dim=-1))
        out.append(view.z @ F.normalize(mine, dim=-1).T)
    return out


def _t3a_online(view: LinearView, frames: torch.Tensor, k: int | None, compete: bool, block: int) -> torch.Tensor:
    """Online T3A of one track: the supports' changes from one pass (:func:`_lowest_stream`),
    then every frame's prototype logits (:func:`_prototype_logits_online`)."""
    z, weight = view.z, view.weight
    rows, classes = z.shape[0], weight.shape[0]
    logits = view.logits()
    if rows == 0:  # nothing to adapt, nor to classify
        return logits
    predicted = torch.where(frames, logits.max(dim=-1).indices, -1)
    norms = z.norm(dim=-1).clamp_min(1e-12)  # supports by id: frames 0..T-1, seed c at T + c
    seeds = F.normalize(weight, dim=-1)  # each class's sum before frame 0: its seed (kept, or competing)
    if k is None:  # every frame joins, none leaves: no heap needed
        changes = [(t, c, -1) for t, c in enumerate(predicted.tolist()) if c >= 0]
    else:
        seed_entropy = entropy(view.logits(weight))
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


def _stable(predicted: torch.Tensor, window: int, position: torch.Tensor) -> torch.Tensor:
    """Frame t's prediction is the strict majority of the ``window`` predictions before it in
    its unit (``position``: the row's index there; frames with fewer predecessors are not yet
    stable; masked frames' predictions count too). Only the past: the same online and offline."""
    agree = torch.zeros_like(predicted)
    for lag in range(1, window + 1):
        agree[lag:] += (predicted[lag:] == predicted[:-lag]).long()
    return (agree * 2 > window) & (position >= window)  # so no comparison crosses into another unit


class _Run(NamedTuple):
    """Rows [start, end) of one unit that use the same source cache: prototypes (m, C, D) and
    present (m, C) of the subjects chosen for them (the pooled ones padded to m, absent)."""

    unit: int
    start: int
    end: int
    prototypes: torch.Tensor
    present: torch.Tensor


def _stretches(units: _Units, mode: str, refresh: int) -> list[tuple[int, int, int]]:
    """(unit, start, end) rows of the concatenation whose statistics choose a source cache:
    offline every unit whole, online its stretches of ``refresh`` frames."""
    out = []
    for u in range(len(units.views)):
        start, end = units.starts[u], units.starts[u + 1]
        step = max(end - start, 1) if mode == "offline" else refresh  # an empty unit has no stretch
        out += [(u, j, min(j + step, end)) for j in range(start, end, step)]
    return out


def _sums(units: _Units, frames: torch.Tensor, stretches: list[tuple[int, int, int]] | None,
          full: bool = False) -> tuple[torch.Tensor, list[float], list[torch.Tensor], list[torch.Tensor]]:
    """|z| (N, 1) of every row and, per stretch (None: no statistics), the count, Σz and Σz²
    (``full``: Σzzᵀ) of its unmasked rows: one pass over z, a piece of about 1 MB at a time (so
    that it is still in the cache for the products; the squares serve the norms and the second
    moments, in one reused buffer), the mask applied through the products, in float32."""
    weight = frames.float()  # 0 for masked frames: they add nothing to the sums
    width = units.weight.shape[1]
    piece = max(512, (1 << 18) // width)
    squared, power = torch.empty(units.position.shape[0]), torch.empty(piece, width)
    count, first, second = [], [], []
    for u, a, b in stretches if stretches is not None else _stretches(units, "offline", 0):
        z, offset, moments = units.views[u].z, units.starts[u], [0, 0]
        for i in range(a, b, piece):
            end = min(i + piece, b)
            x, m = z[i - offset:end - offset], weight[i:end]
            torch.sum(torch.mul(x, x, out=power[:end - i]), dim=1, out=squared[i:end])
            if stretches is not None:
                moments = [moments[0] + m @ x, moments[1] + ((x.T * m) @ x if full else m @ power[:end - i])]
        count.append(float(weight[a:b].sum()))
        first.append(moments[0])
        second.append(moments[1])
    return squared.sqrt_().clamp_min_(1e-12)[:, None], count, first, second


def _source_plan(units: _Units, source: SourceBank | None, mode: str, stretches: list[tuple[int, int, int]],
                 count: list[float], first: list[torch.Tensor], second: list[torch.Tensor],
                 subjects: int) -> list[_Run]:
    """The source cache of every run of rows, units in order, each unit's rows covered in order.

    Offline: the ``subjects`` nearest the whole unit's statistics. Online: a unit's frames in
    [j·refresh, (j+1)·refresh) use the subjects nearest the statistics of its frames before
    j·refresh (the pooled prototypes while fewer than 2 usable frames are behind): causal. The
    statistics come from the sums over the stretches (:func:`_sums`), turned into moments in
    float64, the distances of every stretch of every unit from one batched evaluation, and
    adjacent stretches of a unit that chose the same subjects form one run.
    """
    if source is None or not stretches:  # no source, or no rows to compare
        return []
    count = torch.tensor(count, dtype=torch.float64)
    first, second = torch.stack(first).double(), torch.stack(second).double()
    owner = torch.tensor([u for u, _, _ in stretches])
    if mode == "online":  # each stretch sees the stretches of its unit before it only
        for u in range(len(units.views)):
            mine = (owner == u).nonzero().flatten()
            for x in (count, first, second):
                x[mine] = torch.cat([torch.zeros_like(x[:1]), x[mine].cumsum(dim=0)[:-1]])
    usable = count >= 2
    choice = [None] * len(count)  # None: the pooled prototypes
    if usable.any():
        chosen = source.nearest(*_gaussian(count[usable], first[usable], second[usable], source.covariance), subjects)
        for j, row in zip(usable.nonzero().flatten().tolist(), chosen.tolist()):
            choice[j] = tuple(row)
    runs: list[list] = []
    for (u, a, b), picked in zip(stretches, choice):
        if runs and runs[-1][0] == u and runs[-1][3] == picked:
            runs[-1][2] = b
        else:
            runs.append([u, a, b, picked])
    m = min(subjects, len(source.subjects))
    pooled = F.pad(source.pooled[None], (0, 0, 0, 0, 0, m - 1))  # the pooled prototypes, then absent ones
    pooled_present = F.pad(source.pooled_present[None], (0, 0, 0, m - 1))
    return [_Run(u, a, b, pooled, pooled_present) if picked is None else
            _Run(u, a, b, source.prototypes[torch.tensor(picked)], source.present[torch.tensor(picked)])
            for u, a, b, picked in runs]


@dataclass(frozen=True)
class _Cache:
    """One cache's entries per group (class c of unit u: row u·C + c), padded to the fullest:
    ``ids`` (G, M) rows of the concatenation (an entry enters at its own frame), ``leave``
    (G, M) the row at which it left (inf: never), ``ok`` (G, M) False on padding."""

    ids: torch.Tensor
    leave: torch.Tensor
    ok: torch.Tensor

    def split(self, classes: int) -> tuple[_Cache, _Cache]:
        """Two caches from one of 2·C groups per unit, the first C of each unit's the first cache's."""
        def part(x: torch.Tensor, which: slice) -> torch.Tensor:
            return x.unflatten(0, (-1, 2 * classes))[:, which].flatten(0, 1)

        first, second = (_Cache(part(self.ids, which), part(self.leave, which), part(self.ok, which))
                         for which in (slice(0, classes), slice(classes, None)))
        return first, second

    def final(self, groups: slice, offset: int) -> list[list[int]]:
        """Per group of ``groups``, the frames (rows minus ``offset``) in the cache at the end, ascending."""
        kept = self.ok[groups] & (self.leave[groups] == math.inf)
        return [(row[keep] - offset).tolist() for row, keep in zip(self.ids[groups], kept)]


def _padded(ids: torch.Tensor, groups: torch.Tensor, count: int, leave: torch.Tensor | None = None) -> _Cache:
    """A :class:`_Cache` of ``count`` groups from entries ``ids`` of ``groups`` (sorted by group,
    each group's in time order) and when each left (None: never)."""
    sizes = torch.bincount(groups, minlength=count)
    rank = torch.arange(len(ids)) - torch.searchsorted(groups, groups)
    width = int(sizes.max()) if len(ids) else 0
    out = _Cache(torch.zeros(count, width, dtype=torch.long), torch.full((count, width), math.inf, dtype=torch.float64),
                 torch.zeros(count, width, dtype=torch.bool))
    out.ids[groups, rank] = ids
    out.ok[groups, rank] = True
    if leave is not None:
        out.leave[groups, rank] = leave
    return out


def _stream_cache(units: _Units, keys: torch.Tensor, classes: torch.Tensor, size: int) -> _Cache:
    """Online: every frame that was ever in the cache of its group, and when each left."""
    entered, group, left, left_at = [], [], [], []
    for u in range(len(units.views)):
        rows, offset = units.rows(u), units.starts[u]
        changes = _lowest_stream(keys[rows], classes[rows], size, units.classes)
        if changes:
            times, owners, gone = (torch.tensor(column) for column in zip(*changes))
            entered.append(times + offset)
            group.append(owners + u * units.classes)
            left.append(gone[gone >= 0] + offset)
            left_at.append(times[gone >= 0] + offset)
    if not entered:
        return _padded(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), units.groups)
    entered, group = torch.cat(entered), torch.cat(group)
    leave = torch.full((units.position.shape[0],), math.inf, dtype=torch.float64)
    leave[torch.cat(left)] = torch.cat(left_at).double()
    order = group.argsort(stable=True)  # by group, each group's entries in time order
    return _padded(entered[order], group[order], units.groups, leave[entered[order]])


def _final_cache(kept: torch.Tensor, groups: torch.Tensor, count: int) -> _Cache:
    """Offline: the caches at the end of every unit only (what every frame then uses), from the
    rows ``kept`` of ``groups`` (:func:`_lowest_final`'s order)."""
    kept = kept[(groups[kept] * groups.shape[0] + kept).argsort()]  # by group, then time
    return _padded(kept, groups[kept], count)


def _run_of(plan: list[_Run], rows: torch.Tensor) -> torch.Tensor:
    """The index in ``plan`` of the run of each of ``rows`` (runs cover the rows in order)."""
    return torch.searchsorted(torch.tensor([run.end for run in plan]), rows, right=True)


def _consistent(plan: list[_Run], runs: torch.Tensor, sims: torch.Tensor, predicted: torch.Tensor,
                margin: float) -> torch.Tensor:
    """The consistency gate of n rows of runs ``runs`` (indices in ``plan``) from their
    similarities (n, m, C) with the prototypes of their runs and their predictions (n,): the
    class of the nearest present prototype is the prediction, and beats the next class's
    nearest by more than ``margin``."""
    present = torch.stack([run.present for run in plan])[runs]  # (n, m, C)
    best = torch.full(sims.shape[::2], -math.inf)  # per class, the nearest of the m prototypes
    for i in range(sims.shape[1]):  # m element-wise maxima: far faster than a max over the middle dim
        best = torch.maximum(best, sims[:, i].masked_fill(~present[:, i], -math.inf))
    closest, nearest = best.max(dim=1)
    second = best.scatter(1, nearest[:, None], -math.inf).max(dim=1).values  # a tie for the top: margin 0
    return (nearest == predicted) & (closest - second > margin)


def _lowest_consistent(units: _Units, plan: list[_Run], norms: torch.Tensor, predicted: torch.Tensor, margin: float,
                       keys: torch.Tensor, groups: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """:func:`_lowest_final` of the items of ``groups`` once the positive groups (the first C of
    each unit's 2·C) keep only the rows that pass the consistency gate, without evaluating
    the gate everywhere: rows are taken in the caches' order (ascending key, ties to the earlier
    row), the gate evaluated on each positive group's first ``size`` not yet known, and again on
    twice as many in the groups still short, until every group is full or exhausted."""
    classes = units.classes
    ranked = _lowest_final(groups, keys, None)  # every item, grouped, ascending key
    owner = groups[ranked]
    positive = owner % (2 * classes) < classes
    rank = torch.arange(len(ranked)) - torch.searchsorted(owner, owner)
    admitted, checked = ~positive, ~positive  # a negative item needs no gate
    limit = sizes.clone()
    while True:
        todo = ~checked & (rank < limit[owner])
        if not todo.any():
            break
        rows = ranked[todo]
        sims = torch.empty(len(rows), *plan[0].prototypes.shape[:2])
        run_of = _run_of(plan, rows)
        for r in run_of.unique().tolist():
            run, mine = plan[r], (run_of == r).nonzero().flatten()
            z = units.views[run.unit].z[rows[mine] - units.starts[run.unit]]
            sims[mine] = (z @ run.prototypes.flatten(0, 1).T / norms[rows[mine]]).unflatten(1, sims.shape[1:])
        admitted[todo] = _consistent(plan, run_of, sims, predicted[rows], margin)
        checked = checked | todo
        full = torch.bincount(owner[admitted], minlength=len(sizes)) >= sizes
        limit = torch.where(full, limit, limit * 2)
    kept = ranked[admitted]
    owner = owner[admitted]
    rank = torch.arange(len(kept)) - torch.searchsorted(owner, owner)
    return kept[rank < sizes[owner]]


class _Group(NamedTuple):
    """One group of dictionary columns in :func:`_refine`: the source, or one cache."""

    entries: torch.Tensor  # (G, E_g, D) unit vectors, zero rows as padding
    ok: torch.Tensor  # (G, E_g) False on padding (or a class a source subject lacks)
    cache: _Cache | None  # online caches: when each entry entered and left
    runs: torch.Tensor | None  # the source, when a unit has several runs: each column's run (G, E_g), -1 padding
    weight: float  # signed: the negative cache's mean is subtracted
    big: bool  # may hold more than ``top`` entries for a frame: the top-k cut applies


def _source_columns(units: _Units, plan: list[_Run]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                              torch.Tensor]:
    """The source's dictionary columns per group: every run of the unit, m prototypes each:
    entries (G, R·m, D), present (G, R·m), each column's run (G, R·m) or None where every
    unit has one run (offline), and each row's column of its run's first prototype (N,)."""
    m, classes = plan[0].prototypes.shape[:2]
    runs_of: list[list[int]] = [[] for _ in units.views]
    for r, run in enumerate(plan):
        runs_of[run.unit].append(r)
    most = max(map(len, runs_of))
    if all(len(mine) == 1 for mine in runs_of):  # offline: one run per unit, m columns per group
        protos = torch.stack([run.prototypes for run in plan]).transpose(1, 2).flatten(0, 1)  # (G, m, D)
        present = torch.stack([run.present for run in plan]).transpose(1, 2).flatten(0, 1)
        return protos, present, None, torch.zeros(units.position.shape[0], dtype=torch.long)
    protos = torch.zeros(len(units.views), classes, most * m, units.weight.shape[1])
    present = torch.zeros(len(units.views), classes, most * m, dtype=torch.bool)
    column_run = torch.full((len(units.views), most * m), -1)
    first_column = torch.empty(units.position.shape[0], dtype=torch.long)
    for u, mine in enumerate(runs_of):
        for j, r in enumerate(mine):
            run, columns = plan[r], slice(j * m, (j + 1) * m)
            protos[u, :, columns] = run.prototypes.transpose(0, 1)
            present[u, :, columns] = run.present.T
            column_run[u, columns] = r
            first_column[run.start:run.end] = j * m
    return (protos.flatten(0, 1), present.flatten(0, 1), column_run.repeat_interleave(classes, dim=0), first_column)


def _refine(units: _Units, norms: torch.Tensor, logits0: torch.Tensor, predicted: torch.Tensor, mode: str,
            plan: list[_Run], proto_sims: torch.Tensor | None, caches: list, source_weight: float,
            top: int) -> torch.Tensor:
    """classifier(|z| · norm(v)), v = ẑ + a_s e_src + a_p e_pos − a_n e_neg, for every frame.

    One dictionary X (G, E, D) holds, per group (a unit's class), the entries any of its frames
    may use: its unit's prototypes of that class in every source run, then every frame that was
    ever in its positive, then its negative cache (offline: the final caches only); padding
    rows are zero. Frame t of group g has similarities s = X_g ẑ_t (one product per group,
    over that group's frames; the prototypes' are the consistency gate's, ``proto_sims``,
    where it computed them for every frame), and whether each entry counts for it (its run,
    the entry's entry and exit frames online, padding) decides the coefficients a (N, E), all
    groups at once, with v = ẑ + a X_g. Then, without forming v: W v = W ẑ + a (X_g Wᵀ) and
    |v|² = 1 + 2 a·s + a (X_g X_gᵀ) aᵀ, from one more product per group with the (E, C + E)
    table [X_g Wᵀ | X_g X_gᵀ]. ``norms`` (N, 1) = |z|; ``caches``: (:class:`_Cache`, weight,
    whether it can hold more than ``top``) each.
    """
    weight, classes = units.weight, units.classes
    groups: list[_Group] = []
    first = 0
    if plan and source_weight:  # every run's prototypes, valid for the frames of that run
        protos, present, column_run, first_column = _source_columns(units, plan)
        m = plan[0].prototypes.shape[0]
        groups.append(_Group(protos, present, None, column_run, source_weight, m > top))
        first = protos.shape[1]  # the source's columns come first
    for cache, cache_weight, big in caches:
        if cache_weight and cache.ids.shape[1]:
            real = cache.ids[cache.ok]  # the entries, group by group, so unit by unit; padding stays 0
            mine = real.split(torch.bincount(units.unit[real], minlength=len(units.views)).tolist())
            entries = torch.zeros(*cache.ids.shape, weight.shape[1])
            rows = torch.cat([units.views[u].z[ids - units.starts[u]] for u, ids in enumerate(mine)])
            entries[cache.ok] = rows / norms[real]
            groups.append(_Group(entries, cache.ok, cache if mode == "online" else None, None, cache_weight, big))
    if not groups:
        return logits0.clone()
    entries = torch.cat([g.entries for g in groups], dim=1)  # (G, E, D)
    table = torch.cat([entries @ weight.T, entries @ entries.transpose(1, 2)], dim=2)  # (G, E, C + E)
    group_of = units.unit * classes + predicted
    order = group_of.argsort(stable=True)  # frames grouped by unit and predicted class, in time order
    counts = torch.bincount(group_of, minlength=units.groups).tolist()
    bounds = [0] + torch.tensor(counts).cumsum(dim=0).tolist()
    busy = [(g, bounds[g], bounds[g + 1]) for g in range(units.groups) if counts[g]]
    sims = torch.empty(len(order), entries.shape[1])
    known = first if proto_sims is not None else 0  # the columns whose similarities are already known
    if known:  # frame t's similarity with the prototypes of class ĉ_t in its own run (the others do not count)
        own = proto_sims.gather(2, predicted[:, None, None].expand(-1, m, 1))[..., 0]  # (N, m)
        if first > m:
            own = torch.zeros(len(order), first).scatter_(1, first_column[:, None] + torch.arange(m), own)
        sims[:, :first] = own[order]
    if known < entries.shape[1]:
        rest = torch.empty(len(order), entries.shape[1] - known)
        rows_of = torch.empty(max(counts), weight.shape[1])  # one reused buffer: no (N, D) copy
        for g, a, b in busy:
            u = g // classes
            torch.mm(torch.index_select(units.views[u].z, 0, order[a:b] - units.starts[u], out=rows_of[:b - a]),
                     entries[g, known:].T, out=rest[a:b])
        sims[:, known:] = rest / norms[order]
    owner = group_of[order]
    valid = torch.cat([g.ok for g in groups], dim=1)[owner]  # (N, E): entry e exists for frame t's group
    column, spans, when = 0, [], order[:, None].double()  # each sorted row's frame
    for group in groups:
        span = slice(column, column + group.entries.shape[1])
        spans.append(span)
        column = span.stop
        if group.cache is not None:  # online: in the cache at frame t
            valid[:, span] &= (group.cache.ids[owner] <= when) & (when < group.cache.leave[owner])
        if group.runs is not None:  # online: the prototypes of frame t's own run
            valid[:, span] &= group.runs[owner] == _run_of(plan, order)[:, None]
    coef = _group_weights(sims, valid, spans, [g.weight for g in groups], [top if g.big else None for g in groups])
    mixed = torch.empty(len(order), table.shape[2])
    for g, a, b in busy:
        torch.mm(coef[a:b], table[g], out=mixed[a:b])
    squared = 1 + (coef * mixed[:, classes:].add_(sims, alpha=2)).sum(dim=1)  # 1 + a·(2 s + X Xᵀ a)
    out = ((logits0 - units.bias) / norms)[order] + mixed[:, :classes]  # W ẑ + a X Wᵀ
    out /= squared.clamp_min(1e-12).sqrt()[:, None]
    # At z's own norm, so that the bias keeps its trained scale and empty caches give back the
    # model's own logits.
    return torch.empty_like(out).index_copy_(0, order, out) * norms + units.bias


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


def _prototype_sims(units: _Units, plan: list[_Run], norms: torch.Tensor) -> torch.Tensor | None:
    """(N, m, C) cosine similarities of every frame with the prototypes of its run (one product
    per run; the logits stay ``view.logits()``, the model's own); None without a source."""
    if not plan:
        return None
    m, classes = plan[0].prototypes.shape[:2]
    out = torch.empty(units.position.shape[0], m * classes)
    for run in plan:
        z, offset = units.views[run.unit].z, units.starts[run.unit]
        torch.mm(z[run.start - offset:run.end - offset], run.prototypes.flatten(0, 1).T, out=out[run.start:run.end])
    return (out / norms).unflatten(1, (m, classes))


class _CaPResult(NamedTuple):
    """:func:`_cap` over several units: ``rows``, the per-row arrays of :class:`CaPTrace` over
    all units (N, ...; ``consistent`` and ``positive_gate`` None where the consistency gate was
    evaluated only where it decides: offline, not traced), and the caches of every group."""

    units: _Units
    rows: dict[str, torch.Tensor | None]
    positive: _Cache
    negative: _Cache

    @property
    def logits(self) -> torch.Tensor:
        return self.rows["logits"]

    def trace(self, u: int) -> CaPTrace:
        rows, classes = self.units.rows(u), self.units.classes
        mine = slice(u * classes, (u + 1) * classes)
        return CaPTrace(**{name: values[rows] for name, values in self.rows.items()},
                        positive=self.positive.final(mine, rows.start), negative=self.negative.final(mine, rows.start))


@torch.no_grad()
def _cap(views: Sequence[LinearView], mode: str = "offline", source: SourceBank | None = None,
         masks: Sequence[torch.Tensor | None] | None = None, positive_size: int = 5, negative_size: int = 4,
         top: int = 5, subjects: int = 3, window: int = 3, positive_entropy: float = 0.5,
         negative_entropy: float = 0.8, margin: float = 0.05, refresh: int = 150, source_weight: float = 1.0,
         positive_weight: float = 1.0, negative_weight: float = 1.0, trace: bool = False) -> _CaPResult:
    """Three-cache personalisation (see :func:`cap`) of each view on its own, all in one pass.

    Offline, the consistency gate is evaluated only where it decides something: on the
    lowest-entropy candidates of each positive cache, until it holds ``positive_size`` of them
    (:func:`_lowest_consistent`), and the source similarities the refinement needs come with
    its cache similarities. The same caches as the gate of every frame (``trace``, and the
    online mode, where every frame's gate is needed), without a pass over every frame's
    similarities with every prototype."""
    _check_mode(mode)
    for name, value in (("positive_size", positive_size), ("negative_size", negative_size), ("top", top),
                        ("subjects", subjects), ("window", window), ("refresh", refresh)):
        if int(value) != value or value < 1:
            raise ValueError(f"cap: {name}={value!r} must be a whole number >= 1")
    units, frames = _units(views, masks)
    classes = units.classes
    stretches = _stretches(units, mode, refresh) if source is not None else None
    norms, *sums = _sums(units, frames, stretches, source is not None and source.covariance == "full")
    plan = _source_plan(units, source, mode, stretches, *sums, subjects)
    logits0 = units.cat(LinearView.logits)
    predicted = logits0.max(dim=-1).indices  # the first on ties, as argmax, and faster on the CPU
    least = logits0.min(dim=-1).indices
    spread = entropy(logits0) / math.log(classes)
    stable = _stable(predicted, window, units.position)
    confident = spread < positive_entropy
    ambiguous = (spread >= positive_entropy) & (spread < negative_entropy)
    # The consistency gate guards the positive cache against confident mistakes; a negative
    # entry only claims that the frame is not its least likely class, which it does not test.
    candidate = frames & stable & confident  # the positive gate but for consistency
    negative_gate = frames & stable & ambiguous
    gated = bool(plan) and classes > 1  # without a source (or with one class) every frame is consistent
    proto_sims = consistent = positive_gate = None
    if mode == "online" or trace or not gated:  # the consistency gate of every frame
        proto_sims = _prototype_sims(units, plan, norms)
        consistent = (_consistent(plan, _run_of(plan, torch.arange(len(predicted))), proto_sims, predicted, margin)
                      if gated else torch.ones_like(candidate))
        positive_gate = candidate & consistent
    if mode == "online":
        positive = _stream_cache(units, spread, torch.where(positive_gate, predicted, -1), positive_size)
        negative = _stream_cache(units, spread, torch.where(negative_gate, least, -1), negative_size)
    else:  # the gates are disjoint (confident / ambiguous): one sort finds both caches, the negative as C + c
        both = torch.where(candidate if positive_gate is None else positive_gate, predicted,
                           torch.where(negative_gate, least + classes, -1))
        both = torch.where(both >= 0, units.unit * 2 * classes + both, -1)
        sizes = torch.tensor(([positive_size] * classes + [negative_size] * classes) * len(units.views))
        if positive_gate is None:  # the gate only where it decides: the lowest-entropy candidates
            kept = _lowest_consistent(units, plan, norms, predicted, margin, spread, both, sizes)
        else:
            kept = _lowest_final(both, spread, sizes)
        positive, negative = _final_cache(kept, both, 2 * units.groups).split(classes)
    # The negative cache's mean is subtracted: its weight enters with a minus sign.
    caches = [(positive, positive_weight, positive_size > top), (negative, -negative_weight, negative_size > top)]
    logits = _refine(units, norms, logits0, predicted, mode, plan, proto_sims, caches, source_weight, top)
    rows = {"logits": logits, "predicted": predicted, "stable": stable, "confident": confident, "ambiguous": ambiguous,
            "consistent": consistent, "positive_gate": positive_gate, "negative_gate": negative_gate}
    return _CaPResult(units, rows, positive, negative)


def cap_trace(view: LinearView, mode: str = "offline", source: SourceBank | None = None,
              mask: torch.Tensor | None = None, **params: Any) -> CaPTrace:
    """Three-cache personalisation of one track (see :func:`cap`), with what it did."""
    return _cap([view], mode, source, [mask], **params, trace=True).trace(0)


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
    return _cap([view], mode, source, [mask], **params).logits


def _cap_units(views: Sequence[LinearView], mode: str = "offline", source: SourceBank | None = None,
               masks: Sequence[torch.Tensor | None] | None = None, **params: Any) -> list[torch.Tensor]:
    """:func:`cap` of each view on its own, all in one pass."""
    result = _cap(views, mode, source, masks, **params)
    return [result.logits[result.units.rows(u)] for u in range(len(views))]


def plain(view: LinearView, mode: str = "offline", source: SourceBank | None = None,
          mask: torch.Tensor | None = None) -> torch.Tensor:
    """No personalisation: the model's own logits."""
    return _plain_units([view], mode, source, [mask])[0]


def _plain_units(views: Sequence[LinearView], mode: str = "offline", source: SourceBank | None = None,
                 masks: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    _check_mode(mode)
    return [view.logits() for view in views]


# ------------------------------------------------------------------------------ the registry

@dataclass(frozen=True)
class Method:
    """A personalisation method: ``run(views, mode, source, masks, **params) -> [(T, C) logits]``,
    each view personalised on its own (see :func:`personalise_views`), its default parameters,
    the grid that out-of-fold selection tries, and whether it uses a :class:`SourceBank`
    (``cap`` runs without one, with no source cache and no consistency gate)."""

    name: str
    run: Callable[..., list[torch.Tensor]]
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
    "none": Method("none", _plain_units, {}, ({},)),
    "t3a": Method("t3a", _t3a_units, {"k": 20, "keep_seeds": False}, _product(k=(1, 5, 20, 50, 100, "all"))),
    "cap": Method("cap", _cap_units, _CAP_DEFAULTS,
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


def personalise_views(method: str, views: Sequence[LinearView], params: Mapping[str, Any] | None = None,
                      mode: str = "offline", source: SourceBank | None = None,
                      masks: Sequence[torch.Tensor | None] | None = None, rows: int = 1 << 17) -> list[torch.Tensor]:
    """(T, C) personalised logits of each view, each on its own (its state starts empty: a view
    is a unit, reset before the next), the same as :func:`personalise_view` of each in turn up
    to float rounding. The views must come from one model (one last linear map); they are
    computed together, about ``rows`` rows at a time, which pays the fixed cost of a
    personalisation (a few hundred small tensor operations) once per batch instead of once per
    track. ``masks``: one per view (or None), as ``mask`` of :func:`personalise`."""
    spec, params = _method(method), check_params(method, params)
    _check_mode(mode)
    masks = [None] * len(views) if masks is None else list(masks)
    if len(masks) != len(views):
        raise ValueError(f"personalise_views: {len(views)} views but {len(masks)} masks")
    out: list[torch.Tensor | None] = [view.logits() if view.z.shape[0] == 0 else None for view in views]
    todo = [i for i, view in enumerate(views) if view.z.shape[0]]
    batch, held = [], 0
    for n, i in enumerate(todo):
        batch, held = batch + [i], held + views[i].z.shape[0]
        if n + 1 == len(todo) or held + views[todo[n + 1]].z.shape[0] > rows:
            logits = spec.run([views[j] for j in batch], mode=mode, source=source, masks=[masks[j] for j in batch],
                              **params)
            for j, values in zip(batch, logits):
                out[j] = values
            batch, held = [], 0
    return out


def personalise_view(method: str, view: LinearView, params: Mapping[str, Any] | None = None,
                     mode: str = "offline", source: SourceBank | None = None,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """(T, C) personalised logits of one track's view; state starts empty (reset per track)."""
    return personalise_views(method, [view], params, mode, source, [mask])[0]


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
