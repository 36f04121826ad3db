"""Prediction heads on a fused (B, T, D) representation: mixture of experts and temporal context."""

from __future__ import annotations

import torch
from torch import nn

# Output activations: none (logits), tanh (values in [-1, 1]: VA), sigmoid (values in [0, 1]: EMI).
ACTIVATIONS = {"none": nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class ResidualBlock(nn.Module):
    """x + MLP(LayerNorm(x)): (..., D) -> (..., D)."""

    def __init__(self, dim: int, expansion: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim * expansion), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(dim * expansion, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MixtureOfExperts(nn.Module):
    """K residual-MLP experts mixed by a softmax router: (B, T, D) -> (B, T, C).

    After each forward, :attr:`balance_loss` holds K · Σ_k p̄_k² − 1 (p̄_k the router's mean
    weight of expert k over the batch), which is 0 when the experts share the load evenly and
    K − 1 when one expert takes everything.
    """

    def __init__(self, dim: int, output_size: int, experts: int = 4, depth: int = 1, dropout: float = 0.1,
                 activation: str = "none") -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            nn.Sequential(*[ResidualBlock(dim, dropout=dropout) for _ in range(depth)], nn.LayerNorm(dim),
                          nn.Linear(dim, output_size))
            for _ in range(experts)
        )
        self.router = nn.Linear(dim, experts)
        self.activation = ACTIVATIONS[activation]()
        self.balance_loss = torch.zeros(())
        self.output_dim = output_size

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, K) router weights, summing to 1 over the experts."""
        return self.router(x).softmax(dim=-1)

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each expert's input to its last linear layer (its final LayerNorm's output)."""
        return [expert[:-1](x) for expert in self.experts]

    def mix(self, weights: torch.Tensor, hidden: list[torch.Tensor]) -> torch.Tensor:
        """The output from the router weights and :meth:`hidden` (the forward, but its balance loss)."""
        outputs = torch.stack([expert[-1](h) for expert, h in zip(self.experts, hidden)], dim=-2)  # (B, T, K, C)
        return self.activation((weights.unsqueeze(-1) * outputs).sum(dim=-2))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        weights = self.routing(x)
        used = weights if mask is None else weights[mask]
        mean = used.reshape(-1, weights.shape[-1]).mean(dim=0)
        self.balance_loss = len(self.experts) * (mean**2).sum() - 1
        return self.mix(weights, self.hidden(x))


class TemporalContext(nn.Module):
    """Residual dilated 1-D convolutions over time: (B, T, D) -> (B, T, D), same length."""

    def __init__(self, dim: int, kernel: int = 3, dilations: tuple[int, ...] = (1, 2, 4), dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Conv1d(dim, dim, kernel, dilation=d, padding=d * (kernel - 1) // 2) for d in dilations
        )
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        # Rows to each side an output row depends on: the stacked convolutions' half-widths.
        self.radius = sum(d * (kernel - 1) // 2 for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.transpose(1, 2)
        for layer in self.layers:
            y = y + self.dropout(torch.relu(layer(y)))
        return self.norm(y.transpose(1, 2))
