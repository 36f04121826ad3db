"""A face thumbnail: the crop, grey and small, as a vector (no model, no weights).

Pooled embeddings of ImageNet backbones are built to ignore where things are; an expression
is mostly where things are (how open the eyes, how high the mouth corners). A few hundred grey
pixels of the aligned crop keep exactly that, cost nothing to compute, and are the classic
appearance baseline of facial-expression work: on the sample's video-level EMI part a ridge
regression on video-mean thumbnails reads the six intensities (mean r ≈ 0.5 out of fold) where
the video-mean EfficientNet-Lite0 embedding reads almost nothing (≈ 0.1). It follows the visual
extractors' protocol (:mod:`features.visual`): ``preprocess`` crops (and, for detected faces,
cuts around the box at ``scales``), ``embed`` returns ``{"features": (B, size²)}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from features.specs import ExtractorSpec, register
from features.visual import validate_choices, VisualExtractor

# ITU-R BT.601 luma weights: grey as video codecs compute it.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ThumbnailSpec(ExtractorSpec):
    """``input_size``² grey pixels of the face crop at each of ``scales`` × the box (averaged),
    each standardised as ``(x / 255 - 0.5) / 0.25``."""

    modality: str = "visual"
    batch_size: int = 256
    input_size: int = 24
    scales: tuple[float, ...] = (1.0,)
    interpolation: str = "bilinear"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        validate_choices(self)

    def resolved_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class _Grey(nn.Module):
    """(N, 3, s, s) normalised RGB -> (N, s²) grey."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("luma", torch.tensor(_LUMA).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.luma).sum(dim=1).flatten(1)


@register("thumbnail", ThumbnailSpec)
class ThumbnailExtractor(VisualExtractor):
    """Grey face thumbnails; ``output_dims == {"features": input_size²}``."""

    def __init__(self, spec: ThumbnailSpec) -> None:
        super().__init__(spec, _Grey())
        self.output_dims = {"features": spec.input_size ** 2}

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": self._model(x)}
