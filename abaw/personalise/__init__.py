"""Gradient-free test-time personalisation of a frozen classifier, each unit on its own.

Every test video shows a person the model never saw, and people differ more than their
expressions do. The methods adapt the model's last linear map (:class:`LinearView`) to the unit
in front of it from its own unlabelled frames, with a few vector operations: no optimiser, no
autograd, nothing in the model changes, and nothing carries over from one unit to the next (a
unit is one domain: a frame-wise track, or an A/H participant's videos, one row each).

- ``t3a`` (:mod:`.prototypes`, Iwasawa & Matsuo 2021): the last layer replaced by per-class prototypes
  of the unit's own lowest-entropy frames.
- ``cap`` (:mod:`.caches`, after TTA-CaP): a source cache of the training subjects nearest the
  unit (:mod:`.source`) and positive and negative caches of its own frames, behind a tri-gate,
  refine each embedding before the model's classifier.
- ``none``: the model's own logits (the baseline a grid search compares against).

Offline, as in the challenge: the whole unit is known before any frame is decided.
Classification only (EXPR, A/H): a regression or multi-label head has no class to put a
support under; a one-logit binary head is seen as its exact two-class equivalent.

The door is :func:`personalise`; :data:`METHODS`, :func:`param_grid` and :func:`check_params`
serve out-of-fold selection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from abaw.personalise.registry import METHODS, Method, check_params, get_method, param_grid, register_method
from abaw.personalise.source import SourceBank, build_source
from abaw.personalise.view import (LinearView, check_view, entropy, linear_view, lowest, two_class, usable,
                                   view_of_rows, views_of_rows)

# Imported to register, in the order METHODS lists them (after "none"): the order grid searches,
# cv.json and the report follow.
from abaw.personalise.prototypes import t3a
from abaw.personalise.caches import CaPTrace, cap, cap_trace


def personalise(method: str, views: Sequence[LinearView], params: Mapping[str, Any] | None = None, *,
                source: SourceBank | None = None,
                masks: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """(T, C) personalised logits of each view, each unit on its own.

    ``method``: a name of :data:`METHODS`; ``params``: overrides of its defaults
    (:func:`check_params`); ``source``: ``cap``'s :class:`SourceBank`, built from the training
    tracks of the model the views come from (the other methods ignore it); ``masks``: per
    view (T,) bool or None, the frames that may enter supports and caches (e.g. face present).
    The views must come from one model: one last linear map, which the source bank also saw.
    """
    spec, params = get_method(method), check_params(method, params)
    masks = [None] * len(views) if masks is None else list(masks)
    if len(masks) != len(views):
        raise ValueError(f"personalise: {len(views)} views but {len(masks)} masks: one mask (or None) per view")
    for view in views[1:]:
        if not (_same(view.weight, views[0].weight) and _same(view.bias, views[0].bias)):
            raise ValueError("views personalised together must share one model's last linear map (weight, bias)")
    given = {"source": source} if spec.uses_source else {}
    return [spec.run(view, mask=mask, **given, **params) for view, mask in zip(views, masks)]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and torch.equal(a, b))


__all__ = ["METHODS", "Method", "CaPTrace", "LinearView", "SourceBank", "build_source", "cap", "cap_trace",
           "check_params", "check_view", "entropy", "get_method", "linear_view", "lowest", "param_grid",
           "personalise", "register_method", "t3a", "two_class", "usable", "view_of_rows", "views_of_rows"]
