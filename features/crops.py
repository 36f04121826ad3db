"""Multi-scale square face crops, the input side of every visual extractor.

The DINOv2 + Wav2Vec2 ABAW entry re-crops each face at 0.9, 1.2 and 1.5 times its box and
averages the embeddings of the crops: tighter crops see the expression, looser ones the
head pose and context. Aff-Wild2's ``cropped_aligned`` images are already face boxes, so the
default box is the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

Box = tuple[float, float, float, float]


def square_window(box: Box, scale: float) -> tuple[int, int, int, int]:
    """Integer pixel window ``(left, top, right, bottom)`` of the square of side
    ``scale * max(box width, box height)`` centred on ``box``; it may extend past the image."""
    x0, y0, x1, y1 = box
    side = scale * max(x1 - x0, y1 - y0)
    # Round the side once, then the corner, so every crop of one scale has the same size.
    length = max(1, int(round(side)))
    left = int(round((x0 + x1) / 2 - length / 2))
    top = int(round((y0 + y1) / 2 - length / 2))
    return left, top, left + length, top + length


def multiscale_crops(
    image: np.ndarray,
    scales: Sequence[float],
    size: int,
    box: Box | None = None,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Square crops of ``image`` around ``box`` at several scales, each resized to ``size``.

    Args:
        image: uint8 RGB array ``(H, W, 3)``.
        scales: one crop per scale; the crop side is ``scale * max(box width, box height)``,
            so 1.0 is the box itself and 2.0 adds half a box of context on every side.
        size: side of the output crops in pixels.
        box: ``(x0, y0, x1, y1)`` in pixels, x1/y1 exclusive; default the whole image. A
            non-square box (or image) is widened to a square rather than stretched, so faces
            keep their aspect ratio; for the square Aff-Wild2 crops scale 1.0 is the image
            resized.
        interpolation: ``"bilinear"`` or ``"bicubic"`` (PIL, antialiased when shrinking).

    Returns:
        uint8 array ``(S, size, size, 3)``, S = ``len(scales)``; where a crop reaches past the
        image it is padded with black.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image of shape (H, W, 3), got {image.dtype} {image.shape}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {list(scales)}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
    height, width = image.shape[:2]
    if box is None:
        box = (0.0, 0.0, float(width), float(height))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"empty box {box}: need x1 > x0 and y1 > y0")
    pil = Image.fromarray(np.ascontiguousarray(image))
    resample = INTERPOLATIONS[interpolation]
    out = np.empty((len(scales), size, size, 3), dtype=np.uint8)
    for i, scale in enumerate(scales):
        # PIL's crop fills whatever lies outside the image with zeros: the black padding.
        crop = pil.crop(square_window(box, scale))
        out[i] = np.asarray(crop if crop.size == (size, size) else crop.resize((size, size), resample))
    return out
