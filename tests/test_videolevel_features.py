"""The face thumbnail stream (the video-level sample's expression-preserving visual feature)
and the video-level extraction jobs: rows from the decoded frames, the transcript as an input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from features.crops import multiscale_crops
from features.specs import create_extractor, registered


def test_thumbnail_is_the_grey_crop_standardised():
    assert "thumbnail" in registered()
    extractor = create_extractor("thumbnail", input_size=8, scales=[1.0, 1.5])
    assert extractor.output_dims == {"features": 64}
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    box = (10.0, 5.0, 30.0, 25.0)
    crops = extractor._preprocess(image, box=box)
    out = extractor.embed(crops[None])["features"][0].numpy()
    expected = []
    for crop in multiscale_crops(image, (1.0, 1.5), 8, box):
        grey = (crop.astype(np.float64) / 255 - 0.5) / 0.25 @ np.array([0.299, 0.587, 0.114])
        expected.append(grey.ravel())
    assert np.allclose(out, np.mean(expected, axis=0), atol=1e-5)
    assert create_extractor("thumbnail").spec.fingerprint() != create_extractor("thumbnail", input_size=8).spec.fingerprint()


def test_thumbnail_batches_like_the_other_visual_extractors():
    extractor = create_extractor("thumbnail", input_size=4)
    batch = torch.zeros((5, 1, 3, 4, 4), dtype=torch.uint8)
    out = extractor.embed(batch)["features"]
    assert out.shape == (5, 16) and torch.allclose(out, torch.full((5, 16), -2.0))


def test_a_feature_entry_can_be_limited_to_some_datasets(tmp_path):
    from abaw.config import load_config
    from abaw.training.data import open_streams

    config = load_config(None, [f"extract.cache={tmp_path}"])
    import dataclasses

    features = {"face": {"extractor": "efficientnet", "datasets": ["affwild2", "dvd"]}, "thumb": {"extractor": "thumbnail"}}
    config = dataclasses.replace(config, extract=dataclasses.replace(config.extract, features=features))
    assert config.extract.extracts("face", "affwild2") and not config.extract.extracts("face", "emi")
    assert config.extract.extracts("thumb", "emi")
    assert config.extract.extractors()["face"] == ("efficientnet", {})  # not a setting of the extractor
    with pytest.raises(ValueError, match="feature 'face' is extracted for affwild2, dvd only, not emi"):
        open_streams(config, "emi", ["face"])
