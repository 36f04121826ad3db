"""The view both methods adapt (one unit of rows through the model's last linear map), and
what both read off it: which frames may be kept, their entropy, the lowest-k choice.

Every registered ``fusion`` model ends in a map that is linear in an embedding z
(``FrameModel.linear_view``: logits = z @ weight.T + bias exactly), so a method written for
(z, weight, bias) applies to every model without reaching inside it. Views are float32 on the
CPU, where the methods run: their state is a few small tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True, kw_only=True)
class LinearView:
    """One unit through the last linear map: ``z`` (T, D), ``weight`` (C, D), ``bias`` (C,), and
    ``own`` (T, C), if given, the logits the prediction itself computed from these z rows
    (z @ weight.T + bias up to float rounding): the model's own, which the methods then take
    instead of computing them again, so that their decisions start from the prediction's."""

    z: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    own: torch.Tensor | None = None

    def logits(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """(T, C) logits of the original classifier on ``z`` (default: the unit's own)."""
        if z is None and self.own is not None:
            return self.own
        return (self.z if z is None else z) @ self.weight.T + self.bias


@torch.no_grad()
def linear_view(model, features: torch.Tensor) -> LinearView:
    """The view of one unit's ``forward_features`` output, (T, F) or (1, T, F). The model must
    be in eval mode: with dropout on, the view (like the model) is random."""
    if model.training:
        raise ValueError("linear_view: call model.eval() first (dropout would make the view random)")
    if features.dim() == 3:
        if features.shape[0] != 1:
            raise ValueError(f"linear_view takes one track, (T, F) or (1, T, F); got {tuple(features.shape)}")
        features = features[0]
    z, weight, bias = model.linear_view(features.float())
    return _as_view(z, weight, bias)


def view_of_rows(model, z: torch.Tensor, logits: torch.Tensor | None = None) -> LinearView:
    """The view of z rows (T, D) a prediction already computed (``predict_frames(...,
    features=True)`` keeps them as ``view``, and the logits (T, C) it computed from them as
    ``logits``)."""
    return views_of_rows(model, [z], None if logits is None else [logits])[0]


@torch.no_grad()
def views_of_rows(model, rows: Sequence[torch.Tensor],
                  logits: Sequence[torch.Tensor | None] | None = None) -> list[LinearView]:
    """:func:`view_of_rows` of several units' rows, with the model's last linear map (the same
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


def _as_view(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
             own: torch.Tensor | None = None) -> LinearView:
    view = LinearView(z=z.float().cpu(), weight=weight.detach().float().cpu(), bias=bias.detach().float().cpu(),
                      own=None if own is None else own.float().cpu())
    return two_class(view) if view.weight.shape[0] == 1 else view


def two_class(view: LinearView) -> LinearView:
    """The exact two-class view of a one-logit binary head (A/H): rows ``-w/2`` and ``w/2``, so
    that softmax of the two logits is ``[1 - sigmoid(l), sigmoid(l)]`` with ``l = z · w + b``.
    The methods need a row per class to put supports and prototypes under."""
    if view.weight.shape[0] != 1:
        raise ValueError(f"two_class takes a one-logit view, got {view.weight.shape[0]} logits")
    own = None if view.own is None else torch.cat([-view.own, view.own], dim=1) / 2
    return LinearView(z=view.z, weight=torch.cat([-view.weight, view.weight]) / 2,
                      bias=torch.cat([-view.bias, view.bias]) / 2, own=own)


def check_view(view: LinearView) -> None:
    """Refuse a view the methods cannot take as it is: not float32 (which ``linear_view`` and
    ``view_of_rows`` give), or own logits of another shape than (T, C)."""
    if view.z.dtype != torch.float32 or view.weight.dtype != torch.float32:
        raise ValueError(f"personalisation runs on a float32 view (linear_view, view_of_rows give one); got z "
                         f"{view.z.dtype}, weight {view.weight.dtype}")
    if view.own is not None and tuple(view.own.shape) != (view.z.shape[0], view.weight.shape[0]):
        raise ValueError(f"a view's own logits must be (T, C) = {(view.z.shape[0], view.weight.shape[0])}, got "
                         f"{tuple(view.own.shape)}")


def usable(view: LinearView, mask: torch.Tensor | None) -> torch.Tensor:
    """(T,) bool: the frames that may enter supports and caches (``mask``, e.g. face present;
    None: every frame). The others are still classified."""
    rows = view.z.shape[0]
    return torch.ones(rows, dtype=torch.bool) if mask is None else mask.to(torch.bool).reshape(rows).cpu()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits) over the last dim, (..., C) -> (...). Row by
    row on purpose: a faster column-wise form rounds a few rows differently from the rest, so
    that identical frames would no longer tie (and ties keep the earlier frame)."""
    log_p = logits.log_softmax(dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def lowest(keys: torch.Tensor, owners: torch.Tensor, size: int | None, classes: int) -> list[torch.Tensor]:
    """Per class c < ``classes``, the indices of the ``size`` items owned by c with the lowest
    ``keys`` (None: all of them), in ascending key; items owned by a negative class enter none.
    Ties keep the earlier item (a stable sort), -0.0 ties with 0.0, and NaN sorts last. What a
    set that keeps its ``size`` best as items arrive one by one ends with, from one sort."""
    order = torch.sort(keys, stable=True).indices
    ranked = owners[order]
    return [order[ranked == c][:size] for c in range(classes)]
