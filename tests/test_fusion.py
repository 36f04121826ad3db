import math

import pytest
import torch

from fusion import (GatedFusion, MixtureOfExperts, StreamMLP, StreamNorm, TemporalContext, create_model,
                    registered_models)


def hand_set_fusion():
    """1-d visual and audio streams, hidden 1: W_v = 2, W_a = 3, gate logits (ln 3, 0)."""
    fusion = GatedFusion({"v": 1}, {"a": 1}, hidden=1, gate_hidden=4, l2=False, standardise=False, dropout=0.0)
    with torch.no_grad():
        fusion.projections["v"].weight.fill_(2.0)
        fusion.projections["v"].bias.zero_()
        fusion.projections["a"].weight.fill_(3.0)
        fusion.projections["a"].bias.zero_()
        fusion.gate[-1].weight.zero_()
        fusion.gate[-1].bias.copy_(torch.tensor([math.log(3.0), 0.0]))
    return fusion.eval()


def test_gate_by_hand():
    fusion = hand_set_fusion()
    streams = {"v": torch.ones(1, 4, 1), "a": torch.full((1, 4, 1), 2.0)}
    present = {"v": torch.tensor([[True, True, False, False]]), "a": torch.tensor([[True, False, True, False]])}
    z = fusion(streams, present)[0, :, 0]
    # both: 0.75·2·1 + 0.25·3·2 = 3; audio missing: 2·1; face missing: 3·2; neither: as both
    assert torch.allclose(z, torch.tensor([3.0, 2.0, 6.0, 3.0]))
    gates = fusion.gates(streams, present)[0, :, :, 0]
    assert torch.allclose(gates[1], torch.tensor([1.0, 0.0])) and torch.allclose(gates[2], torch.tensor([0.0, 1.0]))


def test_two_stream_softmax_gate_is_the_sigmoid_gate():
    torch.manual_seed(0)
    fusion = GatedFusion({"v": 6}, {"a": 5}, hidden=7, dropout=0.0).eval()
    streams = {"v": torch.randn(2, 3, 6), "a": torch.randn(2, 3, 5)}
    logits = fusion.gate(torch.cat([fusion.norms[n](streams[n]) for n in ("v", "a")], -1)).unflatten(-1, (2, 7))
    g = torch.sigmoid(logits[..., 0, :] - logits[..., 1, :])
    expected = g * fusion.projections["v"](fusion.norms["v"](streams["v"])) + (1 - g) * fusion.projections["a"](
        fusion.norms["a"](streams["a"]))
    assert torch.allclose(fusion(streams), expected, atol=1e-6)
    assert fusion.output_dim == 7


def test_stream_norm_statistics_travel_with_the_state_dict():
    norm = StreamNorm(3, l2=True, standardise=True)
    x = torch.tensor([[3.0, 4.0, 0.0]])
    norm.set_statistics(torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.1, 0.3, 1.0]))
    # L2: (0.6, 0.8, 0) -> standardised: (1.0, 1.0, 0.0)
    assert torch.allclose(norm(x), torch.tensor([[1.0, 1.0, 0.0]]), atol=1e-5)
    clone = StreamNorm(3)
    clone.load_state_dict(norm.state_dict())
    assert torch.allclose(clone(x), norm(x))


def test_router_weights_sum_to_one_and_balance_loss():
    torch.manual_seed(0)
    head = MixtureOfExperts(8, 3, experts=4, dropout=0.0)
    x = torch.randn(2, 5, 8)
    assert torch.allclose(head.routing(x).sum(-1), torch.ones(2, 5))
    with torch.no_grad():
        head.router.weight.zero_()
        head.router.bias.zero_()
    head(x)
    assert abs(head.balance_loss.item()) < 1e-6  # uniform routing: balanced
    with torch.no_grad():
        head.router.bias.copy_(torch.tensor([100.0, 0.0, 0.0, 0.0]))
    head(x)
    assert head.balance_loss.item() == pytest.approx(3.0, abs=1e-4)  # one expert takes all: K - 1


def test_moe_output_is_the_router_weighted_sum_of_experts():
    torch.manual_seed(1)
    head = MixtureOfExperts(6, 2, experts=3, dropout=0.0, activation="tanh").eval()
    x = torch.randn(1, 4, 6)
    w = head.routing(x)
    expected = torch.tanh(sum(w[..., k:k + 1] * head.experts[k](x) for k in range(3)))
    assert torch.allclose(head(x), expected, atol=1e-6)
    assert head(x).abs().max() <= 1.0


def test_temporal_context_keeps_length_and_mixes_neighbours():
    torch.manual_seed(0)
    context = TemporalContext(4, dropout=0.0).eval()
    x = torch.zeros(1, 11, 4)
    x[0, 5] = 1.0
    y = context(x)
    assert y.shape == (1, 11, 4)
    changed = (y - context(torch.zeros(1, 11, 4))).abs().sum(-1)[0]
    assert changed[4] > 0 and changed[6] > 0  # the impulse reaches its neighbours


@pytest.mark.parametrize("name", registered_models("frame"))  # the video-level ones: test_videolevel_models.py
def test_every_registered_model_has_the_interface_and_trains(name):
    """As timm tests every model it registers: each one builds, exposes the shared interface
    and, inside the one training module, learns a signal the streams carry."""
    from abaw.training.module import TaskModule

    torch.manual_seed(0)
    streams = {"face": ("visual", 6), "voice": ("audio", 4)}
    module = TaskModule("vd", streams, {"name": name, "hidden": 16}, fallback={"stream": "face", "hidden": 8})
    model = module.model.eval()  # no dropout: the two paths must agree exactly
    x = {"face": torch.randn(4, 10, 6), "voice": torch.randn(4, 10, 4)}
    present = {"face": torch.rand(4, 10) > 0.2, "voice": torch.ones(4, 10, dtype=torch.bool)}
    mask = torch.ones(4, 10, dtype=torch.bool)
    features = model.forward_features(x, present, mask)
    assert features.shape == (4, 10, model.feature_dim) and model.output_dim == 1
    assert torch.equal(model.forward_head(features, mask), model(x, present, mask))
    assert model.aux_loss().shape == () and model.context_rows >= 0
    model.set_stream_statistics({"face": (torch.full((6,), 0.1), torch.full((6,), 2.0))})
    assert torch.allclose(model.stream_norms()["face"].std, torch.full((6,), 2.0))

    labels = (x["face"][..., :1] > 0).float()  # the label is in the face stream
    batch = {"streams": x, "present": present, "rows": torch.arange(10).expand(4, 10), "labels": labels,
             "valid": torch.ones_like(labels, dtype=torch.bool)}
    optimiser = torch.optim.Adam(module.parameters(), lr=0.01)
    module.train()
    losses = []
    for _ in range(60):
        optimiser.zero_grad()
        loss = module._loss(batch)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.7 * losses[0], (name, losses[0], losses[-1])


def test_temporal_models_say_how_much_context_they_need():
    plain = create_model("fusion_moe", visual={"v": 8}, audio={"a": 4}, output_size=2)
    temporal = create_model("fusion_moe", visual={"v": 8}, audio={"a": 4}, output_size=2, temporal=True).eval()
    assert plain.context_rows == 0 and temporal.context_rows == 1 + 2 + 4
    x = {"v": torch.randn(1, 40, 8), "a": torch.randn(1, 40, 4)}
    changed = {"v": x["v"].clone(), "a": x["a"]}
    changed["v"][0, 30] += 5.0  # rows more than context_rows away cannot see it
    difference = (temporal(changed) - temporal(x)).abs().sum(-1)[0]
    assert difference[30 - 7:30 + 8].gt(0).all() and difference[:30 - 7].eq(0).all() and difference[38:].eq(0).all()


def test_registry_lists_the_valid_names():
    model = create_model("mlp", visual={"v": 1280}, audio={}, output_size=8)
    assert isinstance(model, StreamMLP) and model({"v": torch.randn(3, 5, 1280)}).shape == (3, 5, 8)
    model = create_model("fusion_moe", visual={"v": 8}, audio={"a": 4}, output_size=2, activation="tanh")
    assert model({"v": torch.randn(2, 3, 8), "a": torch.randn(2, 3, 4)}).shape == (2, 3, 2)
    with pytest.raises(ValueError, match="valid models: attention_mil, fusion_moe, mlp, stats_pool"):
        create_model("transformer")
