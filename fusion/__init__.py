"""Plain ``nn.Module`` models that consume cached features (no Lightning here).

Shapes are (B, T, D): batch, time (rows of a track window), feature dim.
"""

from fusion.gated import GatedFusion, StreamNorm
from fusion.heads import MixtureOfExperts, TemporalContext
from fusion.models import FrameModel, FusionMoE, StreamMLP, create_model, registered_models

__all__ = ["GatedFusion", "StreamNorm", "MixtureOfExperts", "TemporalContext", "FrameModel", "FusionMoE",
           "StreamMLP", "create_model", "registered_models"]
