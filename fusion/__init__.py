"""Plain ``nn.Module`` models that consume cached features (no Lightning here).

Shapes are (B, T, D): batch, time (rows of a track window), feature dim. The video-level
models of :mod:`fusion.pooling` pool the time axis away: (B, T, D) -> (B, C).
"""

from fusion.gated import GatedFusion, StreamNorm
from fusion.heads import MixtureOfExperts, TemporalContext
from fusion.models import (FrameModel, FusionMoE, StreamMLP, create_model, model_options, register_model,
                           registered_models)
from fusion.pooling import AttentionMIL, StatsPooling, VideoModel  # registers attention_mil, stats_pool

__all__ = ["GatedFusion", "StreamNorm", "MixtureOfExperts", "TemporalContext", "FrameModel", "FusionMoE",
           "StreamMLP", "AttentionMIL", "StatsPooling", "VideoModel", "create_model", "model_options",
           "register_model", "registered_models"]
