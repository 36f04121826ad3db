"""Whole models and the registry: ``fusion.create_model(name, **overrides)``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fusion.gated import GatedFusion
from fusion.heads import MLP, MixtureOfExperts, TemporalContext


class FusionMoE(nn.Module):
    """Gated fusion -> optional temporal context -> mixture-of-experts head.

    forward(streams, present): streams name -> (B, T, D), present name -> (B, T) bool;
    returns (B, T, output_size).
    """

    def __init__(self, visual: dict[str, int], audio: dict[str, int], output_size: int, hidden: int = 256,
                 experts: int = 4, depth: int = 1, dropout: float = 0.1, activation: str = "none",
                 temporal: bool = False, l2: bool = True, standardise: bool = True) -> None:
        super().__init__()
        self.fusion = GatedFusion(visual, audio, hidden=hidden, l2=l2, standardise=standardise, dropout=dropout)
        self.temporal = TemporalContext(hidden, dropout=dropout) if temporal else nn.Identity()
        self.head = MixtureOfExperts(hidden, output_size, experts=experts, depth=depth, dropout=dropout,
                                     activation=activation)
        self.output_dim = output_size

    def forward(self, streams: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.temporal(self.fusion(streams, present)), mask)


_MODELS: dict[str, Callable[..., nn.Module]] = {"fusion_moe": FusionMoE, "mlp": MLP}


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; unknown names list the valid ones."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name](**overrides)
