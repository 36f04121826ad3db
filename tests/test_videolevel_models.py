"""The video-level heads: pooling models on the shared interface with their masks, the EMI
and A/H losses against direct computations, and frames sampled across a video."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from abaw.tasks import AH, EMI
from abaw.training.losses import VideoLoss, output_activation, pearson_loss
from fusion import create_model, registered_models
from fusion.pooling import AttentionMIL, StatsPooling, frames_kept

STREAMS = {"visual": {"face": 8}, "audio": {"voice": 4, "text": 6}}


def batch(seed: int = 0, b: int = 3, t: int = 10):
    g = torch.Generator().manual_seed(seed)
    streams = {"face": torch.randn(b, t, 8, generator=g), "voice": torch.randn(b, t, 4, generator=g),
               "text": torch.randn(b, t, 6, generator=g)}
    present = {"face": torch.rand(b, t, generator=g) > 0.3, "voice": torch.ones(b, t, dtype=torch.bool),
               "text": torch.zeros(b, t, dtype=torch.bool)}
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 6:] = False  # a shorter video, padded
    present["voice"][2, :4] = False  # frames 0-3 of video 2: no stream at all
    present["face"][2, :4] = False
    return streams, present, mask


@pytest.mark.parametrize("name", ["attention_mil", "stats_pool"])
def test_pooling_models_are_registered_on_the_shared_interface(name):
    assert registered_models("video") == ["attention_mil", "stats_pool"]
    assert {"fusion_moe", "mlp"} <= set(registered_models("frame"))
    model = create_model(name, **STREAMS, output_size=6, activation="sigmoid", hidden=16).eval()
    streams, present, mask = batch()
    features = model.forward_features(streams, present, mask)
    assert features.shape == (3, 16) and model.feature_dim == 16 and model.output_dim == 6
    output = model(streams, present, mask)
    assert output.shape == (3, 6) and (output > 0).all() and (output < 1).all()
    assert torch.allclose(model.forward_head(features), output)
    logits = create_model(name, **STREAMS, output_size=1, hidden=16).eval()
    z, weight, bias = logits.linear_view(logits.forward_features(streams, present, mask))
    assert torch.allclose(z @ weight.T + bias, logits(streams, present, mask), atol=1e-6)


@pytest.mark.parametrize("name", ["attention_mil", "stats_pool"])
def test_padding_and_frames_without_input_change_nothing(name):
    model = create_model(name, **STREAMS, output_size=2, hidden=16).eval()
    streams, present, mask = batch()
    before = model(streams, present, mask)
    changed = {k: v.clone() for k, v in streams.items()}
    for k in changed:
        changed[k][1, 6:] = 100.0  # padding of video 1
        changed[k][2, :4] = -50.0  # frames of video 2 where no stream is present
    changed["face"][0, ~present["face"][0]] = 7.0  # video 0's faceless frames: only the face values
    changed["text"][:] = 3.0  # the text stream is absent everywhere
    after = model(changed, present, mask)
    assert torch.allclose(before, after, atol=1e-5)


def test_attention_weights_sum_to_one_over_the_kept_frames():
    model = AttentionMIL(**STREAMS, output_size=1, hidden=16).eval()
    streams, present, mask = batch()
    weights = model.frame_weights(streams, present, mask)
    kept = frames_kept(present, mask, streams["face"])
    assert torch.allclose(weights.sum(dim=1), torch.ones(3)) and (weights[~kept] == 0).all()
    assert not kept[1, 6:].any() and not kept[2, :4].any()


def test_a_video_without_any_input_pools_its_unpadded_frames():
    streams, present, mask = batch()
    present = {k: torch.zeros_like(v) for k, v in present.items()}
    kept = frames_kept(present, mask, streams["face"])
    assert torch.equal(kept, mask)
    output = AttentionMIL(**STREAMS, output_size=1, hidden=16).eval()(streams, present, mask)
    assert torch.isfinite(output).all()


def test_statistics_pooling_is_mean_std_min_max_of_the_kept_frames():
    model = StatsPooling(**STREAMS, output_size=1, hidden=4)
    frames = torch.randn(2, 7, 4)
    keep = torch.tensor([[1, 1, 0, 1, 1, 0, 1], [1, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    pooled = model.pool(frames, keep)
    for b in range(2):
        x = frames[b][keep[b]].numpy()
        expected = np.concatenate([x.mean(0), x.std(0), x.min(0), x.max(0)])
        assert np.allclose(pooled[b].numpy(), expected, atol=1e-3)


def test_emi_loss_is_03_mse_plus_07_one_minus_pearson():
    rng = np.random.default_rng(0)
    output, labels = rng.random((8, 6)), rng.random((8, 6))
    loss = VideoLoss(EMI)(torch.tensor(output), torch.tensor(labels), torch.ones(8, 6, dtype=torch.bool))
    r = np.array([np.corrcoef(output[:, c], labels[:, c])[0, 1] for c in range(6)])
    expected = 0.3 * np.mean((output - labels) ** 2) + 0.7 * np.mean(1 - r)
    assert float(loss) == pytest.approx(expected, abs=1e-9)
    assert float(VideoLoss(EMI, mse=1.0, pearson=0.0)(torch.tensor(output), torch.tensor(labels),
                                                        torch.ones(8, 6, dtype=torch.bool))) == \
        pytest.approx(np.mean((output - labels) ** 2))
    assert float(pearson_loss(torch.ones(1, 6), torch.zeros(1, 6))) == 0.0  # one video: no correlation
    assert output_activation(EMI) == "sigmoid" and output_activation(AH) == "none"


def test_ah_loss_is_class_weighted_cross_entropy():
    logits = torch.tensor([[1.5], [-0.5], [0.2], [2.0], [-1.0]])
    labels = torch.tensor([[1.0], [0.0], [0.0], [1.0], [0.0]])
    criterion = VideoLoss(AH)
    criterion.weights.copy_(torch.tensor([0.8, 1.2]))
    loss = criterion(logits, labels, torch.ones(5, 1, dtype=torch.bool))
    two_class = torch.cat([torch.zeros_like(logits), logits], dim=1)  # sigmoid(x) = softmax([0, x])[1]
    expected = F.cross_entropy(two_class, labels[:, 0].long(), weight=torch.tensor([0.8, 1.2]))
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)


def test_training_draws_spread_a_fixed_number_of_frames_over_the_whole_video():
    from abaw.training.video import VideoDataset

    dataset = VideoDataset.__new__(VideoDataset)
    dataset.frames = 10
    torch.manual_seed(0)
    draws = [dataset.sample(100) for _ in range(20)]
    assert all(len(d) == 10 and d.min() < 10 and d.max() >= 90 and (np.diff(d) > 0).all() for d in draws)
    assert len({tuple(d) for d in draws}) > 1  # random offsets
    assert dataset.sample(6).tolist() == list(range(6))  # a short video: every frame
    dataset.frames = None
    assert dataset.sample(250).tolist() == list(range(250))  # prediction: every frame
