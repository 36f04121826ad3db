"""Plain ``nn.Module`` models that consume cached features (no Lightning here).

Shapes are (B, T, D): batch, time (rows of a track window), feature dim.
"""

from fusion.gated import GatedFusion, StreamNorm
from fusion.heads import MLP, MixtureOfExperts, TemporalContext
from fusion.models import FusionMoE, create_model

__all__ = ["GatedFusion", "StreamNorm", "MLP", "MixtureOfExperts", "TemporalContext", "FusionMoE", "create_model"]
