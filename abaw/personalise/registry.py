"""The personalisation methods by name, their parameters and the grids CV selects them from.

A method is a function of one unit's view, ``run(view, *, mask, [source], **params) -> (T, C)
logits``, registered with :func:`register_method`; its keyword parameters and their defaults
are the method's parameters, and it uses ``cap``'s source bank if it takes ``source``.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from abaw.personalise.view import LinearView

# Not parameters: what the door hands every method (the unit's frame mask, the source bank).
INPUTS = ("mask", "source")


@dataclass(frozen=True, kw_only=True)
class Method:
    """A registered method: ``run``, its ``defaults``, the parameter sets out-of-fold selection
    tries (``grid``, complete: defaults filled in), whether it uses a source bank, and
    ``retired`` parameter names that older ``cv.json`` files hold and that no longer change
    anything (accepted and dropped)."""

    name: str
    run: Callable[..., torch.Tensor]
    defaults: Mapping[str, Any]
    grid: tuple[Mapping[str, Any], ...]
    uses_source: bool
    retired: tuple[str, ...] = ()


METHODS: dict[str, Method] = {}


def register_method(name: str, *, grid: Mapping[str, Sequence[Any]] | None = None, retired: Sequence[str] = (),
                    parameters: Callable | None = None) -> Callable[[Callable], Callable]:
    """Register the decorated function as method ``name``. ``grid``: the values out-of-fold
    selection tries per parameter (every combination, the first axis outermost: grid order
    decides ties); ``parameters``: the function whose keyword defaults are the method's
    parameters, when not the decorated one itself."""

    def add(run: Callable) -> Callable:
        signature = inspect.signature(parameters or run).parameters
        defaults = {key: p.default for key, p in signature.items()
                    if p.kind is p.KEYWORD_ONLY and key not in INPUTS}
        axes = dict(grid or {})
        combos = tuple({**defaults, **dict(zip(axes, values))} for values in itertools.product(*axes.values()))
        METHODS[name] = Method(name=name, run=run, defaults=defaults, grid=combos,
                               uses_source="source" in inspect.signature(run).parameters, retired=tuple(retired))
        return run

    return add


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown personalisation method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def check_params(method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's defaults overridden by ``params``; unknown names raise, listing the valid ones."""
    spec = get_method(method)
    params = {key: value for key, value in (params or {}).items() if key not in spec.retired}
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise ValueError(f"{method}: unknown parameter(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(spec.defaults) or 'none'}")
    return {**spec.defaults, **params}


def param_grid(method: str) -> list[dict[str, Any]]:
    """Complete parameter sets (defaults filled in) that out-of-fold selection tries."""
    return [dict(combo) for combo in get_method(method).grid]


@register_method("none")
def plain(view: LinearView, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """No personalisation: the model's own logits, the baseline a grid search compares against."""
    return view.logits()
