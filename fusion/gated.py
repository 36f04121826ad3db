"""Gated audio-visual fusion of row-aligned feature streams.

For two streams this is z = g ⊙ W_v·v + (1 − g) ⊙ W_a·a with g = σ(MLP([v; a])). With more
streams the gate is a softmax over streams, per hidden unit, which for two streams is exactly
the sigmoid of the difference of their gate logits. Streams that are absent on a frame (no
audio, no face) get a gate of 0 there, so the prediction comes from the streams present.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StreamNorm(nn.Module):
    """Optional L2 normalisation, then standardisation with training-split statistics.

    The statistics are buffers, saved with the model's state dict; until
    :meth:`set_statistics` is called they are the identity (mean 0, std 1).
    """

    def __init__(self, dim: int, l2: bool = True, standardise: bool = True) -> None:
        super().__init__()
        self.l2, self.standardise = l2, standardise
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The L2 step alone (statistics are computed on its output)."""
        return F.normalize(x, dim=-1, eps=1e-6) if self.l2 else x

    @torch.no_grad()
    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        return (x - self.mean) / self.std if self.standardise else x


class GatedFusion(nn.Module):
    """Fuse visual streams and audio streams into one (B, T, hidden) representation.

    Args:
        visual: name -> dim of each visual stream (absent where the face is missing).
        audio: name -> dim of each audio stream (absent where the audio is missing).
        hidden: projection and output size.
        gate_hidden: hidden size of the gate MLP.
        l2, standardise: input normalisation (see :class:`StreamNorm`).
    """

    def __init__(self, visual: dict[str, int], audio: dict[str, int], hidden: int = 256, gate_hidden: int = 128,
                 l2: bool = True, standardise: bool = True, dropout: float = 0.1) -> None:
        super().__init__()
        if not visual and not audio:
            raise ValueError("GatedFusion needs at least one stream")
        self.visual, self.audio = list(visual), list(audio)
        dims = {**visual, **audio}
        self.names = self.visual + self.audio
        self.norms = nn.ModuleDict({n: StreamNorm(d, l2, standardise) for n, d in dims.items()})
        self.projections = nn.ModuleDict({n: nn.Linear(d, hidden) for n, d in dims.items()})
        self.gate = nn.Sequential(
            nn.Linear(sum(dims.values()), gate_hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(gate_hidden, hidden * len(self.names)),
        )
        self.hidden = hidden

    @property
    def output_dim(self) -> int:
        return self.hidden

    def gates(self, streams: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, T, S, hidden) gate weights, summing to 1 over the S streams of each frame."""
        normed = [self.norms[n](streams[n]) for n in self.names]
        logits = self.gate(torch.cat(normed, dim=-1))
        logits = logits.unflatten(-1, (len(self.names), self.hidden))
        if present:
            available = torch.stack(
                [present.get(n, torch.ones_like(logits[..., 0, 0], dtype=torch.bool)) for n in self.names], dim=-1
            )
            # A frame with no stream present keeps every stream rather than dividing by zero.
            available = available | ~available.any(dim=-1, keepdim=True)
            logits = logits.masked_fill(~available.unsqueeze(-1), float("-inf"))
        return logits.softmax(dim=-2)

    def forward(self, streams: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """streams: name -> (B, T, D_name); present: name -> (B, T) bool. Returns (B, T, hidden)."""
        projected = torch.stack([self.projections[n](self.norms[n](streams[n])) for n in self.names], dim=-2)
        return (self.gates(streams, present) * projected).sum(dim=-2)
