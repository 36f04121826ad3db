"""Test-time personalisation (abaw/personalise/): the linear views, T3A and CaP by hand and
against slow per-frame definitions, the whole track offline, ties, and no autograd anywhere."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from abaw.personalise import (METHODS, LinearView, build_source, cap, cap_trace, check_params, entropy, linear_view,
                              lowest, param_grid, personalise, t3a, two_class, view_of_rows, views_of_rows)
from fusion import create_model, registered_models

STREAMS = {"visual": {"face": 12}, "audio": {"voice": 5}}


def model_of(name: str, **overrides):
    torch.manual_seed(0)
    return create_model(name, **STREAMS, output_size=8, hidden=16, **overrides).eval()


def inputs(rows: int = 40, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return {"face": torch.randn(2, rows, 12, generator=g), "voice": torch.randn(2, rows, 5, generator=g)}


def random_view(rows: int = 120, dim: int = 6, classes: int = 4, seed: int = 0, scale: float = 3.0) -> LinearView:
    g = torch.Generator().manual_seed(seed)
    # Slowly drifting embeddings, so predictions come in runs and some frames are confident.
    z = torch.randn(rows, dim, generator=g).cumsum(dim=0) * 0.3 + torch.randn(rows, dim, generator=g)
    return LinearView(z=z, weight=torch.randn(classes, dim, generator=g) * scale / math.sqrt(dim),
                      bias=torch.randn(classes, generator=g) * 0.1)


def single(method: str, view: LinearView, params: dict | None = None, source=None, mask=None) -> torch.Tensor:
    """The door with one unit."""
    return personalise(method, [view], params, source=source, masks=[mask])[0]

# ------------------------------------------------------------------------------ linear views

@pytest.mark.parametrize("name", registered_models())
def test_linear_view_is_the_head_exactly(name):
    model = model_of(name)
    with torch.no_grad():
        features = model.forward_features(inputs())
        z, weight, bias = model.linear_view(features)
        expected = model.forward_head(features)
    assert z.shape[:-1] == features.shape[:-1] and weight.shape == (8, z.shape[-1]) and bias.shape == (8,)
    assert torch.allclose(z @ weight.T + bias, expected, atol=1e-5)
    with torch.no_grad():  # prediction that keeps z: the same z, and the head's output
        output, kept = model.head_through_view(features)
    assert torch.equal(kept, z) and torch.allclose(output, expected, atol=1e-5)
    if name in ("fusion_moe", "mlp"):  # their heads compute z on the way: forward_head's own output
        assert torch.equal(output, expected)


def test_moe_view_folds_the_expert_biases_into_the_router_weights():
    model = model_of("fusion_moe", experts=3, temporal=True)
    with torch.no_grad():
        for expert in model.head.experts:
            expert[-1].bias.uniform_(-2, 2)  # biases that matter, so the fold is exercised
        features = model.forward_features(inputs())
        z, weight, bias = model.linear_view(features)
        assert torch.allclose(z @ weight.T + bias, model.forward_head(features), atol=1e-5)
    assert z.shape[-1] == 3 * 16 + 3 and torch.equal(bias, torch.zeros(8))
    assert torch.allclose(z[..., -3:].sum(dim=-1), torch.ones(2, 40))  # the router weights ride along


@pytest.mark.parametrize("name", registered_models())
def test_linear_view_refuses_a_tanh_head_and_a_training_model(name):
    model = create_model(name, **STREAMS, output_size=2, hidden=8, activation="tanh").eval()
    with pytest.raises(ValueError, match="activation"):
        model.linear_view(torch.zeros(1, 3, 8))
    with pytest.raises(ValueError, match="eval"):
        linear_view(model_of(name).train(), torch.zeros(3, 16))


# ------------------------------------------------------------------------------------- T3A

def binary_entropy(d: float) -> float:
    """Entropy of softmax([d, 0])."""
    p = 1 / (1 + math.exp(-d))
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def unit(*v: float) -> torch.Tensor:
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


# W = I, b = 0: the logits are z. Logit gaps: z2 2.5 > z0 2 > the seeds 1 > z3 0.8 > z1 0.2, so
# by entropy (lowest first): z2, z0, seeds, z3, z1. z0, z1 are predicted 0; z2, z3 predicted 1.
HAND = LinearView(z=torch.tensor([[3.0, 1.0], [1.0, 0.8], [0.5, 3.0], [1.2, 2.0]]), weight=torch.eye(2),
                  bias=torch.zeros(2))


def test_hand_example_is_ordered_as_claimed():
    gaps = [2.0, 0.2, 2.5, 0.8]
    assert torch.allclose(entropy(HAND.logits()), torch.tensor([binary_entropy(d) for d in gaps]))
    assert binary_entropy(2.5) < binary_entropy(2.0) < binary_entropy(1.0) < binary_entropy(0.8) < binary_entropy(0.2)


@pytest.mark.parametrize("k, supports", [
    (1, ([unit(3, 1)], [unit(0.5, 3)])),                                  # the best frame beats the seed
    (2, ([unit(3, 1), unit(1, 0)], [unit(0.5, 3), unit(0, 1)])),          # the seed is second
    ("all", ([unit(3, 1), unit(1, 0), unit(1, 0.8)], [unit(0.5, 3), unit(0, 1), unit(1.2, 2)])),
])
def test_t3a_offline_by_hand(k, supports):
    weights = torch.stack([F.normalize(sum(s), dim=0) for s in supports])
    assert torch.allclose(t3a(HAND, k=k), HAND.z @ weights.T, atol=1e-6)


def test_t3a_keep_seeds_adds_the_seed_to_the_k_best():
    weights = torch.stack([F.normalize(unit(3, 1) + unit(1, 0), dim=0), F.normalize(unit(0.5, 3) + unit(0, 1), dim=0)])
    assert torch.allclose(t3a(HAND, k=1, keep_seeds=True), HAND.z @ weights.T, atol=1e-6)


def test_t3a_ties_in_entropy_keep_the_earlier_frame():
    # W = [e0, e1] in 3-d: frames 0 and 1 have the same logits (2, 0), so the same entropy, but
    # differ off the classifier's plane; with k=1 class 0 keeps frame 0 (the earlier), class 1
    # its seed.
    view = LinearView(z=torch.tensor([[2.0, 0.0, 1.0], [2.0, 0.0, -1.0]]), weight=torch.eye(3)[:2],
                      bias=torch.zeros(2))
    weights = torch.stack([unit(2, 0, 1), unit(0, 1, 0)])
    assert torch.allclose(t3a(view, k=1), view.z @ weights.T, atol=1e-6)


def lowest_by_definition(keys: list[float], classes: list[int], sizes: list[int]) -> list[list[list[int]]]:
    """Per time, per class, the items (ascending) of the ``sizes[c]`` lowest keys so far, ties
    to the earlier item: by sorting everything seen, one item at a time."""
    sets, out = [[] for _ in sizes], []
    for t, (c, key) in enumerate(zip(classes, keys)):
        if c >= 0:
            sets[c] = sorted(sets[c] + [(key, t)])[:sizes[c]]
        out.append([sorted(i for _, i in kept) for kept in sets])
    return out


@pytest.mark.parametrize("size", [1, 5, 40, (2, 9, 30)])
def test_lowest_k_sets_of_a_long_stream_with_ties(size):
    # 1500 items, keys on a coarse grid (many ties), negative ones, and -0.0 (equal to 0.0, so
    # ties with it): one sort gives the sets that keeping the best as items arrive ends with.
    g = torch.Generator().manual_seed(3)
    rows, classes = 1500, 3
    keys = (torch.rand(rows, generator=g) * 20).round() / 20 - 0.25
    keys[::97] = -0.0
    labels = torch.randint(-1, classes, (rows,), generator=g)
    sizes = list(size) if isinstance(size, tuple) else [size] * classes
    expected = lowest_by_definition(keys.tolist(), labels.tolist(), sizes)
    final = [lowest(keys, labels, sizes[c], classes)[c] for c in range(classes)]
    assert [sorted(kept.tolist()) for kept in final] == expected[-1]


def test_lowest_k_of_unusual_keys():
    nan, inf = math.nan, math.inf
    assert lowest(torch.tensor([nan, 0.5, 0.2, 0.7]), torch.tensor([0, 0, 0, 0]), 2, 1)[0].tolist() == [2, 1]
    keys = torch.full((300,), inf)  # a set not yet full takes even an infinite key
    labels = torch.tensor([0] * 2 + [1] * 296 + [0] * 2)
    assert [kept.tolist() for kept in lowest(keys, labels, 3, 2)] == [[0, 1, 298], [2, 3, 4]]


def test_identical_frames_tie_and_the_earlier_ones_are_kept():
    # 1003 copies of one frame: bit-identical logits, so equal entropies in every row (also in
    # the rows a vectorised kernel would leave to its scalar tail); the earliest copies win.
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(8, 64, generator=g)
    view = LinearView(z=torch.randn(1, 64, generator=g).expand(1003, 64).contiguous() * 0.3, weight=weight,
                      bias=torch.zeros(8))
    assert entropy(view.logits()).unique().numel() == 1
    trace = cap_trace(view, positive_entropy=1.0, negative_entropy=1.0, positive_size=2, window=1)
    assert [ids for ids in trace.positive if ids] == [[1, 2]]


def test_cap_predicts_with_the_model_own_logits_also_with_a_source_bank():
    # Two nearly tied classes: CaP's prediction (its gates, caches and refined class) must be
    # the arg-max of the view's own logits, frame by frame, not of a product computed otherwise.
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 512, generator=g)
    weight[1] = weight[0] + 1e-7 * torch.randn(512, generator=g)
    view = LinearView(z=torch.randn(4000, 512, generator=g), weight=weight, bias=torch.zeros(8))
    source = build_source([torch.randn(200, 512, generator=g)], [torch.randint(0, 8, (200,), generator=g)], ["s"], 8)
    assert torch.equal(cap_trace(view, source=source).predicted, view.logits().argmax(1))


def test_a_view_that_is_not_float32_is_refused():
    view = random_view()
    wide = LinearView(z=view.z.double(), weight=view.weight.double(), bias=view.bias.double())
    for run in (t3a, cap):
        with pytest.raises(ValueError, match="float32"):
            run(wide)


def test_t3a_masked_frames_never_become_supports():
    mask = torch.tensor([False, True, True, True])  # frame 0 may not join: class 0 keeps its seed (k=1)
    weights = torch.stack([unit(1, 0), unit(0.5, 3)])
    assert torch.allclose(t3a(HAND, k=1, mask=mask), HAND.z @ weights.T, atol=1e-6)


def t3a_by_definition(view: LinearView, k, keep_seeds: bool) -> torch.Tensor:
    """The paper's loop, one frame at a time, then every frame classified by the supports it
    ends with (offline)."""
    z, weight = view.z.double(), view.weight.double()
    classes = weight.shape[0]
    seeds = [(float(entropy(view.logits(view.weight)[c])), -1, F.normalize(weight[c], dim=0)) for c in range(classes)]
    sets = [[] if keep_seeds else [seeds[c]] for c in range(classes)]
    logits = view.logits()  # float32, as the method ranks them
    for t in range(z.shape[0]):
        c = int(logits[t].argmax())
        sets[c].append((float(entropy(logits[t])), t, F.normalize(z[t], dim=0)))
        sets[c] = sorted(sets[c], key=lambda s: (s[0], s[1]))[: (None if k == "all" else k)]
    rows = [sum(s[2] for s in sets[c]) + (seeds[c][2] if keep_seeds else 0) for c in range(classes)]
    return (z @ F.normalize(torch.stack(rows), dim=-1).T).float()


@pytest.mark.parametrize("k", [1, 3, 10, "all"])
@pytest.mark.parametrize("keep_seeds", [False, True])
def test_t3a_equals_the_per_frame_definition(k, keep_seeds):
    view = random_view(rows=150, seed=3)
    assert torch.allclose(t3a(view, k=k, keep_seeds=keep_seeds), t3a_by_definition(view, k, keep_seeds), atol=1e-4)


# ------------------------------------------------------------------------------------- CaP

A, A2, M, U, B = [4.0, 0.2, 0.0], [5.0, 0.2, 0.0], [2.0, 0.0, 0.3], [0.3, 0.2, 0.0], [0.0, 4.0, 0.2]
# W = I3: the logits are z. Normalised entropies: A 0.16, A2 0.07 (confident, < 0.5), M 0.65
# (ambiguous, least likely class 1), U 0.99 (neither); B confident, predicted 1.
SEQUENCE = [A, A, A, A, M, U, B, B, B, A, A, A2]
GATE_VIEW = LinearView(z=torch.tensor(SEQUENCE), weight=torch.eye(3), bias=torch.zeros(3))


def test_gate_example_has_the_claimed_entropies():
    spread = entropy(GATE_VIEW.logits()) / math.log(3)
    assert (spread[[0, 11, 6]] < 0.5).all() and 0.5 <= spread[4] < 0.8 and spread[5] >= 0.8
    assert GATE_VIEW.logits()[4].argmin() == 1


def test_cap_gates_by_hand():
    trace = cap_trace(GATE_VIEW)
    # Predictions 0 0 0 0 0 0 1 1 1 0 0 0; stable: strict majority of the 3 before agrees.
    assert trace.predicted.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert trace.stable.nonzero().flatten().tolist() == [3, 4, 5, 8, 11]
    assert trace.positive_gate.nonzero().flatten().tolist() == [3, 8, 11]   # stable and confident
    assert trace.negative_gate.nonzero().flatten().tolist() == [4]          # stable and ambiguous
    assert trace.positive == [[3, 11], [8], []]
    assert trace.negative == [[], [4], []]                                  # under its least likely class


def test_cap_positive_cache_keeps_the_lowest_entropy():
    trace = cap_trace(GATE_VIEW, positive_size=1)
    assert trace.positive == [[11], [8], []]  # A2 is more certain than A and pushes frame 3 out


def test_cap_cache_ties_keep_the_earlier_frame():
    view = LinearView(z=torch.tensor(SEQUENCE[:-1] + [A]), weight=torch.eye(3), bias=torch.zeros(3))
    assert cap_trace(view, positive_size=1).positive == [[3], [8], []]


def test_cap_source_cache_by_hand():
    # Caches off (no frame is confident or ambiguous enough): only e_src refines. Subject
    # "near" sits where the track is, "far" elsewhere; their class-0 prototypes differ.
    near, far = unit(1, -0.3, 0), unit(1, 0, 0.5)
    z = torch.tensor([[4.0, 0.2, 0.0]] * 30) + torch.linspace(0, 0.3, 30)[:, None]
    view = LinearView(z=z, weight=torch.eye(3), bias=torch.zeros(3))
    source = build_source([near[None].repeat(2, 1) * torch.tensor([[3.9], [4.1]]), -40 * far[None].repeat(2, 1),
                           40 * far[None]], [torch.tensor([0, 0]), torch.tensor([-1, -1]), torch.tensor([0])],
                          ["near", "far", "far"], num_classes=3)
    off = {"positive_entropy": 0.0, "negative_entropy": 0.0, "subjects": 1}
    units = F.normalize(z, dim=-1)

    def refined(protos):  # one prototype of class 0 each, all similar to the frames: weights ∝ similarity
        sims = (units @ protos.T).clamp_min(0)
        e = (sims @ protos) / sims.sum(dim=1, keepdim=True)
        return F.normalize(units + e, dim=-1) * z.norm(dim=-1, keepdim=True)

    assert torch.allclose(cap(view, source=source, **off), refined(near[None]), atol=1e-5)  # the nearest subject
    # Fewer than 2 frames to compare (here, one usable frame): the pooled prototypes, the mean
    # of the unit class-0 frames of both subjects.
    pooled = F.normalize(2 * near + far, dim=0)
    first = torch.arange(30) == 0
    assert torch.allclose(cap(view, source=source, mask=first, **off), refined(pooled[None]), atol=1e-5)


def test_cap_consistency_gate_by_hand():
    # One training subject whose class-1 prototype leans towards A's direction more than its
    # class-0 prototype does: A and A2 fail the consistency gate, B (class 1) passes it.
    source = build_source([torch.tensor([[1.0, -0.3, 0.0], [1.0, 0.3, 0.0], [0.0, 0.0, 1.0]])],
                          [torch.tensor([0, 1, 2])], ["s1"], num_classes=3)
    trace = cap_trace(GATE_VIEW, source=source)
    assert not trace.consistent[[0, 3, 11]].any() and trace.consistent[[6, 7, 8]].all()
    assert trace.positive == [[], [8], []]
    assert cap_trace(GATE_VIEW, source=source, mask=~torch.eye(12, dtype=torch.bool)[8]).positive \
        == [[], [], []]  # a masked frame never enters


def test_cap_with_empty_caches_is_the_model():
    view = random_view(seed=5)
    out = cap(view, positive_entropy=0.0, negative_entropy=0.0)
    assert torch.allclose(out, view.logits(), atol=1e-5)


def cap_by_definition(view: LinearView, pos_size=5, neg_size=4, pos_h=0.5, neg_h=0.8, window=3, top=5, source=None,
                      subjects=3, margin=0.05) -> tuple[torch.Tensor, list[list[int]], list[list[int]]]:
    """CaP one frame at a time, straight from the description (diagonal source bank or none):
    the logits, and the positive and negative caches per class (frame ids, ascending)."""
    logits = view.logits()
    classes = logits.shape[1]
    spread = entropy(logits) / math.log(classes)
    pred, least = logits.argmax(1).tolist(), logits.argmin(1).tolist()
    units = F.normalize(view.z, dim=-1)
    positive, negative = [[] for _ in range(classes)], [[] for _ in range(classes)]
    protos = present = None
    if source is not None:  # the source cache of the whole track: (m, C, D) and present (m, C)
        if len(view.z) < 2:
            protos, present = source.pooled[None], source.pooled_present[None]
        else:
            seen = view.z.double()
            frechet = (((seen.mean(0) - source.means) ** 2).sum(1)
                       + ((seen.std(0, unbiased=False) - source.scales) ** 2).sum(1))
            picked = frechet.argsort()[:subjects]
            protos, present = source.prototypes[picked], source.present[picked]

    def consistent(t):
        if source is None:
            return True
        best = [max((float(protos[i, c] @ units[t]) for i in range(len(protos)) if present[i, c]), default=-math.inf)
                for c in range(classes)]
        ranked = sorted(best, reverse=True)
        return best.index(ranked[0]) == pred[t] and ranked[0] - ranked[1] > margin

    def admit(cache, c, t, size):
        cache[c] = sorted(cache[c] + [(float(spread[t]), t)])[:size]

    def mean(entries, t):
        entries = sorted(entries, key=lambda e: -float(e @ units[t]))[:top]
        if not entries:
            return torch.zeros_like(units[t])
        entries = torch.stack(entries)
        w = (entries @ units[t]).clamp_min(0)
        return (w @ entries) / w.sum().clamp_min(1e-12)

    for t in range(len(pred)):
        past = pred[max(0, t - window):t]
        if t >= window and past.count(pred[t]) * 2 > window:
            if spread[t] < pos_h and consistent(t):
                admit(positive, pred[t], t, pos_size)
            elif pos_h <= spread[t] < neg_h:
                admit(negative, least[t], t, neg_size)
    out = []
    for t in range(len(pred)):
        e_pos = mean([units[i] for _, i in positive[pred[t]]], t)
        e_neg = mean([units[i] for _, i in negative[pred[t]]], t)
        e_src = torch.zeros_like(units[t])
        if source is not None:
            e_src = mean([protos[i, pred[t]] for i in range(len(protos)) if present[i, pred[t]]], t)
        r = F.normalize(units[t] + e_src + e_pos - e_neg, dim=0) * view.z[t].norm()
        out.append(view.logits(r[None])[0])
    caches = [[sorted(i for _, i in kept) for kept in cache] for cache in (positive, negative)]
    return torch.stack(out) if out else logits.clone(), *caches


@pytest.mark.parametrize("sizes", [{"positive_size": 2}, {"positive_size": 6, "negative_size": 3, "top": 2}])
def test_cap_equals_the_per_frame_definition(sizes):
    view = random_view(rows=200, seed=7, scale=6.0)
    trace = cap_trace(view, **sizes)
    assert sum(map(len, trace.positive)) >= 3 and sum(map(len, trace.negative)) >= 1  # the example exercises both
    expected, positive, negative = cap_by_definition(view, pos_size=sizes["positive_size"],
                                                     neg_size=sizes.get("negative_size", 4), top=sizes.get("top", 5))
    assert torch.allclose(trace.logits, expected, atol=1e-5)
    assert trace.positive == positive and trace.negative == negative


def test_cap_with_a_source_bank_equals_the_per_frame_definition():
    # Eight training subjects, each with its own offset, labelled by the classifier.
    view = random_view(rows=240, seed=7, scale=6.0)
    source = drifting_source(view)
    params = {"subjects": 2, "margin": 0.02, "positive_size": 6, "top": 3}
    trace = cap_trace(view, source=source, **params)
    assert 0 < int(trace.consistent.sum()) < len(trace.consistent)  # the consistency gate decides some frames
    expected, _, _ = cap_by_definition(view, pos_size=6, top=3, source=source, subjects=2, margin=0.02)
    assert torch.allclose(trace.logits, expected, atol=1e-5)
    # What predict runs (the door) is the same.
    assert torch.allclose(single("cap", view, params, source), expected, atol=1e-5)
    without, _, _ = cap_by_definition(view, pos_size=6, top=3)
    assert (trace.logits - without).abs().max() > 0.1  # the source cache moved the logits


def test_frechet_distances_by_hand():
    g = torch.Generator().manual_seed(0)
    tracks = [torch.randn(300, 3, generator=g) * s + m for s, m in ((1.0, 0.0), (2.0, 1.0), (0.5, -1.0))]
    labels = [torch.randint(0, 2, (300,), generator=g) for _ in tracks]
    diag = build_source(tracks, labels, ["a", "b", "c"], num_classes=2)
    full = build_source(tracks, labels, ["a", "b", "c"], num_classes=2, covariance="full")
    test = torch.randn(500, 3, generator=g) * 2.0 + 1.0
    mean, std = test.double().mean(0), test.double().std(0, unbiased=False)
    expected = [float(((mean - t.double().mean(0)) ** 2).sum() + ((std - t.double().std(0, unbiased=False)) ** 2).sum())
                for t in tracks]
    assert torch.allclose(diag.distances(mean, std), torch.tensor(expected, dtype=torch.float64))
    assert diag.distances(mean, std).argmin() == 1 and full.distances(mean, torch.cov(test.double().T,
                                                                                      correction=0)).argmin() == 1
    # For diagonal covariances the full formula is the diagonal one.
    one = build_source([torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])], [torch.zeros(4)], ["a"],
                       1, covariance="full")
    cov = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    # subject: mean 0, variances (0.5, 2); test: mean (1, 0), variances (4, 1)
    by_hand = 1.0 + (2.0 - math.sqrt(0.5)) ** 2 + (1.0 - math.sqrt(2.0)) ** 2
    assert math.isclose(float(one.distances(torch.tensor([1.0, 0.0], dtype=torch.float64), cov)[0]), by_hand,
                        rel_tol=1e-9)


def test_source_prototypes_follow_the_subjects_labels():
    z = [torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]]), torch.tensor([[1.0, 1.0]])]
    bank = build_source(z, [torch.tensor([0, 1, -1]), torch.tensor([1])], ["a", "b"], num_classes=2)
    assert bank.subjects == ("a", "b")
    # the unlabelled frame is in no prototype
    assert torch.allclose(bank.prototypes[0], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert bank.present.tolist() == [[True, True], [False, True]]
    assert torch.allclose(bank.pooled[1], F.normalize(unit(0, 1) + unit(1, 1), dim=0))  # mean of unit vectors


# ---------------------------------------------------------------- the whole track, no autograd

def test_offline_uses_the_whole_track():
    # Every frame is decided with the supports and caches of the whole track, so the first
    # frames come out otherwise alone than within it.
    view = random_view(rows=90, seed=4, scale=6.0)
    start = LinearView(z=view.z[:10], weight=view.weight, bias=view.bias)
    assert not torch.allclose(t3a(view, k=5)[:10], t3a(start, k=5))
    # CaP (no source bank): the first 3 frames cannot be stable, so never cached; they are
    # refined by the caches the rest of the track fills.
    trace = cap_trace(view)
    assert trace.positive_gate.any()
    assert not trace.positive_gate[:3].any() and not trace.negative_gate[:3].any()
    assert not torch.allclose(trace.logits[:3], view.logits()[:3])


@pytest.mark.parametrize("name", registered_models())
def test_no_gradient_anywhere_under_inference_mode(name):
    model = model_of(name)
    assert all(p.requires_grad for p in model.parameters())
    with torch.inference_mode():
        features = model.forward_features(inputs())
        # A frame-level model gives one track's rows (B, T, F); a video-level one (fusion.pooling)
        # one row per video (B, F), the rows personalisation then adapts over.
        features = features[0] if features.dim() == 3 else features
        view = linear_view(model, features)
        z, rows = view.z, features.shape[0]
        source = build_source([z, z + 0.1], [torch.randint(0, 8, (rows,)), torch.randint(0, 8, (rows,))], ["a", "b"], 8)
        for method in METHODS:
            out = single(method, view, source=source)
            assert out.shape == (rows, 8) and torch.isfinite(out).all() and not out.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_each_call_starts_afresh():
    view = random_view(seed=9, scale=6.0)
    first = [single(m, view) for m in METHODS]
    single("t3a", random_view(seed=10))
    assert all(torch.equal(a, single(m, view)) for a, m in zip(first, METHODS))


# ---------------------------------------------------------------------------- registry

def test_registry_grid_and_parameter_checks():
    assert set(METHODS) == {"none", "t3a", "cap"}
    assert [p["k"] for p in param_grid("t3a")] == [1, 5, 20, 50, 100, "all"]
    assert all(set(p) == set(METHODS["cap"].defaults) for p in param_grid("cap")) and len(param_grid("cap")) > 1
    assert check_params("cap", {"margin": 0.1})["margin"] == 0.1
    with pytest.raises(ValueError, match="valid: k, keep_seeds"):
        check_params("t3a", {"K": 5})
    with pytest.raises(ValueError, match="valid: none, t3a, cap"):
        single("tent", random_view())
    # An older cv.json names the online mode's refresh among cap's parameters: read, and dropped.
    assert check_params("cap", {"refresh": 150}) == check_params("cap")


# ------------------------------------------------------------------- one-logit heads (A/H)

def test_a_one_logit_head_is_viewed_as_its_exact_two_class_equivalent():
    g = torch.Generator().manual_seed(3)
    one_logit = LinearView(z=torch.randn(7, 5, generator=g), weight=torch.randn(1, 5, generator=g),
                           bias=torch.randn(1, generator=g))
    view = two_class(one_logit)
    assert view.weight.shape == (2, 5) and view.bias.shape == (2,)
    torch.testing.assert_close(view.logits().softmax(dim=-1)[:, 1], torch.sigmoid(one_logit.logits()[:, 0]))
    with pytest.raises(ValueError, match="one-logit"):
        two_class(view)


@pytest.mark.parametrize("name", registered_models("video"))
def test_video_models_with_one_logit_give_a_two_class_view(name):
    torch.manual_seed(0)
    model = create_model(name, **STREAMS, output_size=1, hidden=16).eval()
    streams = inputs(rows=9)
    with torch.no_grad():
        features = model.forward_features(streams)
        expected = torch.sigmoid(model.forward_head(features)[:, 0])
    view = linear_view(model, features)  # (B, F): one row per video
    assert view.weight.shape[0] == 2
    torch.testing.assert_close(view.logits().softmax(dim=-1)[:, 1], expected, rtol=1e-5, atol=1e-6)


def test_ah_units_are_participants_frame_wise_units_are_tracks():
    import numpy as np

    from abaw.cv import personalisation_units, person_of, personalised
    from abaw.data.records import Track
    from abaw.data.videolevel import video_track
    from abaw.tasks import AH, AU, EMI, EXPR, VA, VD

    videos = [video_track("ah", "train", f"{pid}/q{q}", f"q{q}", None, None, np.array([q % 2]), participant=pid)
              for pid, q in (("p2", 1), ("p1", 2), ("p2", 3), ("p3", 4))]
    units = personalisation_units(videos)
    assert [[t.id for t in unit] for unit in units] == [["p1/q2"], ["p2/q1", "p2/q3"], ["p3/q4"]]
    frames = [Track(name, "expr", "train", name, None, None, np.arange(1, 4))
              for name in ("28-30-1280x720-1", "28-30-1280x720-2")]
    assert personalisation_units(frames) == [(frames[0],), (frames[1],)]  # reset per track
    assert {person_of(t) for t in frames} == {"28-30-1280x720"} and person_of(videos[0]) == "p2"
    assert [t.name for t in (EXPR, VA, AU, VD, EMI, AH) if personalised(t)] == ["expr", "ah"]


# ---------------------------------------------------------------- several units in one call

def drifting_source(view: LinearView, subjects: int = 8, seed: int = 11):
    g = torch.Generator().manual_seed(seed)
    tracks = [view.z[:80] * 0.5 + torch.randn(view.z.shape[1], generator=g)
              + torch.randn(80, view.z.shape[1], generator=g) for _ in range(subjects)]
    return build_source(tracks, [view.logits(z).argmax(1) for z in tracks], [f"s{i}" for i in range(subjects)],
                        view.weight.shape[0])


@pytest.mark.parametrize("method, params", [("t3a", {"k": 3}), ("t3a", {"k": "all", "keep_seeds": True}),
                                            ("cap", {"subjects": 2, "margin": 0.02, "top": 3}),
                                            ("none", {})])
def test_units_personalised_together_are_each_personalised_alone(method, params):
    # Tracks of other lengths (one of a single row, one empty), some with masks, one source bank:
    # one call gives what a call per track gives; a leak between tracks would move the logits.
    base = random_view(rows=10, seed=7, scale=6.0)
    views = [LinearView(z=random_view(rows=rows, seed=seed, scale=6.0).z, weight=base.weight, bias=base.bias)
             for rows, seed in ((240, 7), (1, 3), (0, 4), (130, 5), (77, 6))]
    g = torch.Generator().manual_seed(2)
    masks = [None, None, None, torch.rand(130, generator=g) > 0.3, torch.rand(77, generator=g) > 0.5]
    source = drifting_source(views[0])
    alone = [single(method, v, params, source, m) for v, m in zip(views, masks)]
    together = personalise(method, views, params, source=source, masks=masks)
    assert [tuple(t.shape) for t in together] == [tuple(a.shape) for a in alone]
    for a, t in zip(alone, together):
        assert torch.allclose(a, t, atol=1e-5)
        assert torch.equal(a.argmax(1), t.argmax(1))


def test_units_of_other_models_are_refused():
    a, b = random_view(rows=20, seed=1), random_view(rows=20, seed=2)
    with pytest.raises(ValueError, match="one model's last linear map"):
        personalise("t3a", [a, b])
    with pytest.raises(ValueError, match="2 views but 1 masks"):
        personalise("cap", [a, a], masks=[None])


@pytest.mark.parametrize("margin", [0.0, 0.3, 0.6])
def test_the_consistency_gate_fills_the_positive_cache_as_the_per_frame_definition(margin):
    # A wide margin rejects most candidates, so the lowest-entropy ones of a class fail first
    # and the cache is filled from further down the ranking.
    base = random_view(rows=10, seed=7, scale=6.0)
    views = [LinearView(z=random_view(rows=rows, seed=seed, scale=6.0).z, weight=base.weight, bias=base.bias)
             for rows, seed in ((400, 7), (300, 8), (2, 9))]
    source = drifting_source(views[0])
    params = {"subjects": 3, "positive_size": 4, "margin": margin}
    traces = [cap_trace(view, source=source, **params) for view in views]
    for view, trace in zip(views, traces):
        expected, positive, negative = cap_by_definition(view, pos_size=4, source=source, subjects=3, margin=margin)
        assert trace.positive == positive and trace.negative == negative
        assert torch.allclose(trace.logits, expected, atol=1e-5)
    rejected = [t.confident & t.stable & ~t.consistent for t in traces]
    assert any(r.any() for r in rejected) if margin else True
    if margin == 0.6:  # some class's cache holds frames beyond its first candidates
        late = [(u, c) for u, t in enumerate(traces) for c, row in enumerate(t.positive)
                if row and int(rejected[u][(t.predicted == c) & t.confident & t.stable].sum()) >= 4]
        assert late


def test_a_view_with_the_predictions_own_logits_uses_them():
    view = random_view(rows=60, seed=3)
    shifted = view.logits() + torch.tensor([0.0, 0.0, 0.0, 50.0])  # the prediction said: class 3 everywhere
    own = LinearView(z=view.z, weight=view.weight, bias=view.bias, own=shifted)
    assert torch.equal(single("none", own), shifted)
    assert set(cap_trace(own).predicted.tolist()) == {3}
    assert not torch.equal(t3a(own), t3a(view))  # the supports follow the own predictions
    # With the logits the view computes itself, nothing changes.
    same = LinearView(z=view.z, weight=view.weight, bias=view.bias, own=view.logits())
    for method in ("t3a", "cap"):
        assert torch.equal(single(method, same), single(method, view))
    with pytest.raises(ValueError, match=r"own logits must be \(T, C\)"):
        single("t3a", LinearView(z=view.z, weight=view.weight, bias=view.bias, own=shifted[:5]))


def test_views_of_rows_share_one_linear_map_and_check_the_logits():
    model = model_of("fusion_moe")
    feats = model.forward_features(inputs(rows=6))
    z, weight, bias = model.linear_view(feats[0])
    views = views_of_rows(model, [z.detach(), z.detach()[:2]], [None, (z @ weight.T + bias).detach()[:2]])
    assert views[0].own is None and torch.equal(views[1].own, views[0].logits()[:2])
    assert torch.equal(view_of_rows(model, z.detach()).weight, views[1].weight)
    with pytest.raises(ValueError, match="logits must be"):
        views_of_rows(model, [z.detach()], [torch.zeros(6, 3)])


def test_an_empty_view_gives_empty_logits_alone_and_among_others():
    view = random_view(rows=90, seed=3)
    empty = LinearView(z=view.z[:0], weight=view.weight, bias=view.bias)
    source = drifting_source(view)
    for method, params in (("t3a", {"k": 3}), ("cap", {}), ("none", {})):
        alone = personalise(method, [empty], params, source=source)
        assert [tuple(x.shape) for x in alone] == [(0, 4)]
        both = personalise(method, [view, empty], params, source=source)
        assert tuple(both[1].shape) == (0, 4)
        assert torch.allclose(both[0], single(method, view, params, source), atol=1e-5)
    trace = cap_trace(empty, source=source)
    assert trace.positive == [[], [], [], []] and tuple(trace.logits.shape) == (0, 4)


def test_a_track_that_is_not_finite_does_not_reach_the_others():
    base = random_view(rows=10, seed=7, scale=6.0)
    views = [LinearView(z=random_view(rows=rows, seed=seed, scale=6.0).z, weight=base.weight, bias=base.bias)
             for rows, seed in ((120, 7), (90, 8), (60, 9))]
    broken = views[0].z.clone()
    broken[0] = math.nan
    views[0] = LinearView(z=broken, weight=base.weight, bias=base.bias)
    source = drifting_source(views[1])
    for method in ("t3a", "cap"):
        together = personalise(method, views, source=source)
        for view, logits in zip(views[1:], together[1:]):
            assert torch.isfinite(logits).all()
            assert torch.allclose(logits, single(method, view, None, source), atol=1e-5)


def test_views_with_one_weight_but_other_biases_are_refused():
    view = random_view(rows=20, seed=1)
    other = LinearView(z=view.z, weight=view.weight, bias=view.bias + 1.0)  # the same weight object
    with pytest.raises(ValueError, match="one model's last linear map"):
        personalise("cap", [view, other])
