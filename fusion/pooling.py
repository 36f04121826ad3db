"""Frames to one video: per-frame gated fusion, then pooling over the frames (EMI, A/H).

Both models fuse every frame as the frame-wise heads do (:class:`fusion.gated.GatedFusion`:
absent streams, a faceless frame or a silent one, get no gate weight), then pool the frames
that have any input, and respect the padding mask (videos of any length are padded to the
longest of a batch):

- ``attention_mil``: gated attention-MIL pooling (Ilse et al. 2018), the A/H top teams' choice:
  a_t = softmax_t(w · (tanh(V h_t) ⊙ σ(U h_t))), z = Σ_t a_t h_t. Which frames matter is
  learnt: A/H shows in segments, not throughout.
- ``stats_pool``: the mean, standard deviation, minimum and maximum of every fused dimension
  over the frames, HSEmotion's EMI recipe.

The pooled vector goes through a small MLP to the video embedding (``forward_features``,
(B, F)), and one linear layer (and the output activation) gives the prediction
(``forward_head``, (B, output_dim)): the shared model interface with the time axis pooled away.
"""

from __future__ import annotations

import torch
from torch import nn

from fusion.gated import GatedFusion, StreamNorm
from fusion.heads import ACTIVATIONS, TemporalContext
from fusion.models import FrameModel, register_model


def frames_kept(present: dict[str, torch.Tensor] | None, mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the frames a video is pooled over: not padding, and with at least one
    stream present; a video with no such frame keeps its unpadded frames (its fused rows then
    come from the streams as stored, zeros), so that pooling never divides by nothing."""
    keep = torch.ones(like.shape[:2], dtype=torch.bool, device=like.device) if mask is None else mask.bool()
    if present:
        keep = keep & torch.stack([p.bool() for p in present.values()], dim=-1).any(dim=-1)
    fallback = torch.ones_like(keep) if mask is None else mask.bool()
    return torch.where(keep.any(dim=1, keepdim=True), keep, fallback)


class VideoModel(FrameModel):
    """Base of the pooling models: gated fusion per frame, :meth:`pool`, MLP, linear head.

    Args:
        visual, audio: name -> dim of the streams (audio takes the other non-visual streams
            too, such as a transcript's text rows).
        output_size: outputs per video; ``activation``: ``none``, ``tanh`` or ``sigmoid``.
        hidden: width of the fused frames and of the video embedding.
        temporal: dilated convolutions over the fused frames before pooling.
    """

    level = "video"

    def __init__(self, visual: dict[str, int], audio: dict[str, int], output_size: int, hidden: int = 128,
                 dropout: float = 0.1, activation: str = "none", temporal: bool = False, l2: bool = True,
                 standardise: bool = True) -> None:
        super().__init__()
        self.fusion = GatedFusion(visual, audio, hidden=hidden, l2=l2, standardise=standardise, dropout=dropout)
        self.temporal = TemporalContext(hidden, dropout=dropout) if temporal else None
        self.body = nn.Sequential(nn.LayerNorm(self.pooled_dim(hidden)), nn.Linear(self.pooled_dim(hidden), hidden),
                                  nn.GELU(), nn.Dropout(dropout))
        self.last = nn.Linear(hidden, output_size)
        self.activation = ACTIVATIONS[activation]()
        self.output_dim, self.feature_dim = output_size, hidden

    def pooled_dim(self, hidden: int) -> int:
        """Width of the pooled vector for fused frames of width ``hidden``."""
        return hidden

    def pool(self, frames: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, T, H) fused frames and (B, T) kept frames -> (B, pooled_dim)."""
        raise NotImplementedError

    def fused_frames(self, streams: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, hidden) fused (and, with ``temporal``, time-mixed) frames. A stream's rows
        where it is absent, and every padded row, enter as zeros (as the feature store keeps
        them): the gates see all streams, so whatever stood there would otherwise leak into the
        weights of the streams that are present."""
        keep = {name: (present[name] if present and name in present else torch.ones_like(x[..., 0], dtype=torch.bool))
                for name, x in streams.items()}
        if mask is not None:
            keep = {name: k & mask.bool() for name, k in keep.items()}
        streams = {name: x * keep[name].unsqueeze(-1).to(x.dtype) for name, x in streams.items()}
        fused = self.fusion(streams, present)
        return self.temporal(fused) if self.temporal is not None else fused

    def forward_features(self, streams, present=None, mask=None) -> torch.Tensor:
        """(B, F) video embeddings: the input of the last linear layer."""
        frames = self.fused_frames(streams, present, mask)
        return self.body(self.pool(frames, frames_kept(present, mask, frames)))

    def forward_head(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F) -> (B, output_dim)."""
        return self.activation(self.last(features))

    def linear_view(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z = the video embedding, weight and bias = the last linear layer's."""
        if not isinstance(self.activation, nn.Identity):
            raise ValueError("linear_view needs activation='none': a tanh or sigmoid output is not a linear map")
        return features, self.last.weight, self.last.bias

    def stream_norms(self) -> dict[str, StreamNorm]:
        return dict(self.fusion.norms)


class AttentionMIL(VideoModel):
    """Gated attention-MIL pooling of the fused frames (see the module docstring)."""

    def __init__(self, visual: dict[str, int], audio: dict[str, int], output_size: int, hidden: int = 128,
                 attention: int = 64, **options) -> None:
        super().__init__(visual, audio, output_size, hidden=hidden, **options)
        self.value = nn.Linear(hidden, attention)  # V
        self.gate = nn.Linear(hidden, attention)  # U
        self.score = nn.Linear(attention, 1)  # w

    def attention(self, frames: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, T) attention weights, summing to 1 over each video's kept frames, 0 elsewhere."""
        logits = self.score(torch.tanh(self.value(frames)) * torch.sigmoid(self.gate(frames))).squeeze(-1)
        return logits.masked_fill(~keep, float("-inf")).softmax(dim=1)

    def pool(self, frames: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return (self.attention(frames, keep).unsqueeze(-1) * frames).sum(dim=1)

    def frame_weights(self, streams, present=None, mask=None) -> torch.Tensor:
        """(B, T) the weight each frame gets in its video's embedding (for inspection)."""
        frames = self.fused_frames(streams, present, mask)
        return self.attention(frames, frames_kept(present, mask, frames))


class StatsPooling(VideoModel):
    """Mean, standard deviation, minimum and maximum of the fused frames over the kept frames."""

    def pooled_dim(self, hidden: int) -> int:
        return 4 * hidden

    def pool(self, frames: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        weights = keep.unsqueeze(-1).to(frames.dtype)
        count = weights.sum(dim=1).clamp_min(1.0)
        mean = (frames * weights).sum(dim=1) / count
        std = ((((frames - mean.unsqueeze(1)) ** 2) * weights).sum(dim=1) / count).clamp_min(1e-8).sqrt()
        low = frames.masked_fill(~keep.unsqueeze(-1), float("inf")).amin(dim=1)
        high = frames.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(dim=1)
        return torch.cat([mean, std, low, high], dim=-1)


register_model("attention_mil", AttentionMIL)
register_model("stats_pool", StatsPooling)
