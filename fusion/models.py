"""Whole models and the registry: ``fusion.create_model(name, **overrides)``.

Every registered model has one interface, which the training module, prediction, test-time
personalisation and video-level pooling use without reaching inside:

- ``forward_features(streams, present, mask)``: streams name -> (B, T, D_name), present name ->
  (B, T) bool, mask (B, T) bool (False on padding) -> (B, T, F) per-frame embedding, the
  input of the model's last linear layer (``feature_dim`` = F);
- ``forward_head(features, mask)``: (B, T, F) -> (B, T, ``output_dim``);
- ``forward(...)`` = ``forward_head(forward_features(...))``;
- ``linear_view(features)`` -> ``(z, weight, bias)`` with ``forward_head == z @ weight.T + bias`` (classification
  heads, activation ``none``): the last linear map that test-time personalisation adapts;
  ``weight`` and ``bias`` are the same whatever the input; ``head_through_view(features)`` ->
  ``(output, z)``: the head's output with the view's z, for prediction that keeps z;
- ``aux_loss()``: a scalar added to the task loss (zero unless the model has one);
- ``set_stream_statistics({name: (mean, std)})``: the training split's statistics of the input
  streams it normalises (see :class:`fusion.gated.StreamNorm`);
- ``context_rows``: how many rows to each side of a frame its prediction can depend on (0 for
  per-frame models), so that prediction windows can give every frame that much context.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from fusion.gated import GatedFusion, StreamNorm
from fusion.heads import ACTIVATIONS, MixtureOfExperts, TemporalContext


class FrameModel(nn.Module):
    """Base of the registered models: the shared interface (see the module docstring)."""

    output_dim: int
    feature_dim: int
    context_rows: int = 0
    level: str = "frame"  # "video" for the models that pool a video's frames (fusion.pooling)

    def forward_features(self, streams: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def linear_view(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z, weight, bias)`` with ``forward_head(features) == z @ weight.T + bias`` exactly:
        features (..., F) -> z (..., D), weight (C, D), bias (C,). Test-time personalisation
        (:mod:`abaw.personalise`) adapts this last linear map without reaching inside the model.
        Defined only for an identity output activation (``activation="none"``, the
        classification tasks); a tanh output is not linear in anything, so it raises."""
        raise NotImplementedError

    def forward(self, streams: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(streams, present, mask), mask)

    def head_through_view(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output, z)``: the head's output and the z of :meth:`linear_view` that
        personalisation adapts. Here through the view, ``z @ weight.T + bias`` (``forward_head``
        up to float rounding); a model whose head computes z on its way returns its own
        ``forward_head`` output, computed once with z."""
        z, weight, bias = self.linear_view(features)
        return z @ weight.T + bias, z

    def aux_loss(self) -> torch.Tensor:
        """A loss term of the model's own, from its last forward; zero by default."""
        return torch.zeros((), device=next(self.parameters()).device)

    def stream_norms(self) -> dict[str, StreamNorm]:
        """The normalisation of each input stream, by name."""
        raise NotImplementedError

    def set_stream_statistics(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Training-split mean and std of the streams this model reads (others are ignored)."""
        for name, norm in self.stream_norms().items():
            if name in stats:
                norm.set_statistics(*stats[name])


class FusionMoE(FrameModel):
    """Gated fusion -> optional temporal context -> mixture-of-experts head.

    Features are the fused (and, with ``temporal``, time-mixed) (B, T, hidden) representation:
    the input of every expert's layers. The auxiliary loss is the router's load balance.
    """

    def __init__(self, visual: dict[str, int], audio: dict[str, int], output_size: int, hidden: int = 256,
                 experts: int = 4, depth: int = 1, dropout: float = 0.1, activation: str = "none",
                 temporal: bool = False, l2: bool = True, standardise: bool = True) -> None:
        super().__init__()
        self.fusion = GatedFusion(visual, audio, hidden=hidden, l2=l2, standardise=standardise, dropout=dropout)
        self.temporal = TemporalContext(hidden, dropout=dropout) if temporal else None
        self.head = MixtureOfExperts(hidden, output_size, experts=experts, depth=depth, dropout=dropout,
                                     activation=activation)
        self.output_dim, self.feature_dim = output_size, hidden
        self.context_rows = self.temporal.radius if self.temporal is not None else 0

    def forward_features(self, streams, present=None, mask=None) -> torch.Tensor:
        fused = self.fusion(streams, present)
        return self.temporal(fused) if self.temporal is not None else fused

    def forward_head(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(features, mask)

    def linear_view(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mixture as one linear map with a constant (zero) bias.

        The head computes Σ_k w_k (W_k h_k + b_k), h_k the input of expert k's last
        ``nn.Linear`` (its final LayerNorm's output) and w_k the router weight. Written as
        z = [w_1 h_1, …, w_K h_K, w_1, …, w_K] (D = K·hidden + K) and weight =
        [W_1, …, W_K, b_1 … b_K] (C, D), the bias terms ride on the router weights, so the
        bias of the view is 0 and constant over frames, and a frame's embedding z is exactly
        what the classifier rows see (which T3A's supports and CaP's caches need). The view
        is of the model as it is: call it in eval mode, where dropout is off.
        """
        z = self._z(self.head.routing(features), self.head.hidden(features))
        lasts = [expert[-1] for expert in self.head.experts]
        weight = torch.cat([last.weight for last in lasts] + [torch.stack([last.bias for last in lasts], dim=1)], dim=1)
        return z, weight, torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)

    def head_through_view(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward_head``'s output itself (the same operations) and the view's z, from one
        evaluation of the router and the experts."""
        weights, hidden = self.head.routing(features), self.head.hidden(features)
        return self.head.mix(weights, hidden), self._z(weights, hidden)

    def _z(self, weights: torch.Tensor, hidden: list[torch.Tensor]) -> torch.Tensor:
        """The view's z = [w_1 h_1, …, w_K h_K, w_1, …, w_K], filled in place (no parts to join)."""
        if not isinstance(self.head.activation, nn.Identity):
            raise ValueError("linear_view needs activation='none': a tanh output is not a linear map")
        experts, width = len(hidden), hidden[0].shape[-1]
        z = hidden[0].new_empty(*hidden[0].shape[:-1], experts * width + experts)
        for k, h in enumerate(hidden):
            z[..., k * width:(k + 1) * width] = weights[..., k:k + 1] * h
        z[..., experts * width:] = weights
        return z

    def aux_loss(self) -> torch.Tensor:
        return self.head.balance_loss

    def stream_norms(self) -> dict[str, StreamNorm]:
        return dict(self.fusion.norms)


class StreamMLP(FrameModel):
    """The per-frame MLP of the HSEmotion recipe on the concatenated, normalised streams:
    D -> hidden -> C. Features are the (B, T, hidden) hidden activations, the input of its last
    linear layer. Absent rows of a stream enter as they are stored (zeros)."""

    def __init__(self, visual: dict[str, int], audio: dict[str, int], output_size: int, hidden: int = 128,
                 dropout: float = 0.2, activation: str = "none", l2: bool = True, standardise: bool = True) -> None:
        super().__init__()
        dims = {**visual, **audio}
        if not dims:
            raise ValueError("StreamMLP needs at least one stream")
        self.norms = nn.ModuleDict({name: StreamNorm(dim, l2, standardise) for name, dim in dims.items()})
        self.body = nn.Sequential(nn.Linear(sum(dims.values()), hidden), nn.ReLU(), nn.Dropout(dropout))
        self.last = nn.Linear(hidden, output_size)
        self.activation = ACTIVATIONS[activation]()
        self.output_dim, self.feature_dim = output_size, hidden

    def forward_features(self, streams, present=None, mask=None) -> torch.Tensor:
        return self.body(torch.cat([self.norms[name](streams[name]) for name in self.norms], dim=-1))

    def forward_head(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.activation(self.last(features))

    def linear_view(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z = the features themselves (the hidden activations, the input of the last
        ``nn.Linear``), weight and bias = that layer's."""
        if not isinstance(self.activation, nn.Identity):
            raise ValueError("linear_view needs activation='none': a tanh output is not a linear map")
        return features, self.last.weight, self.last.bias

    def head_through_view(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward_head``'s output itself and the view's z (the features)."""
        return self.forward_head(features), self.linear_view(features)[0]

    def stream_norms(self) -> dict[str, StreamNorm]:
        return dict(self.norms)


_MODELS: dict[str, Callable[..., FrameModel]] = {"fusion_moe": FusionMoE, "mlp": StreamMLP}


def register_model(name: str, factory: Callable[..., FrameModel]) -> None:
    """Make ``factory`` available as ``create_model(name)`` (the video-level pooling models of
    :mod:`fusion.pooling` register themselves this way)."""
    _MODELS[name] = factory


def registered_models(level: str | None = None) -> list[str]:
    """Names of every registered model, or of those of one ``level``: ``frame`` (a row per
    frame out) or ``video`` (a row per video out)."""
    return sorted(name for name, factory in _MODELS.items() if level in (None, getattr(factory, "level", "frame")))


# What the head building a model passes it (the streams, the task's output), never a configuration.
SUPPLIED_ARGUMENTS = frozenset({"visual", "audio", "output_size", "activation"})


def model_options(name: str) -> list[str] | None:
    """The options a configuration may give registered model ``name``: its constructor's
    keyword parameters, and those of the base constructors its ``**options`` go on to, but the
    :data:`SUPPLIED_ARGUMENTS`; None when a factory takes any keyword at all (nothing to check)."""
    factory = _MODELS[name]
    constructors = ([vars(cls)["__init__"] for cls in factory.__mro__ if "__init__" in vars(cls)]
                    if isinstance(factory, type) else [factory])
    found: set[str] = set()
    for constructor in constructors:
        parameters = inspect.signature(constructor).parameters.values()
        found |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return sorted(found - SUPPLIED_ARGUMENTS - {"self"})
    return None


def create_model(name: str, **overrides) -> FrameModel:
    """Build a registered model; unknown names list the valid ones.

    Every model takes ``visual`` and ``audio`` (name -> dim), ``output_size`` and ``activation``
    (``none`` or ``tanh``), plus its own options.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name](**overrides)
