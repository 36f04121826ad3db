import numpy as np
import pytest

from abaw.postprocess import PostParams, TrackOutput, apply, expr_classes, fill_missing, smooth, tune
from abaw.tasks import AU, EXPR, VA, VD


def test_fill_missing_interpolates_inside_and_repeats_at_the_edges():
    values = np.array([[9.0], [0.0], [9.0], [2.0], [9.0], [9.0], [8.0], [9.0]])
    present = np.array([False, True, False, True, False, False, True, False])
    # rows 0 and 7 copy rows 1 and 6; row 2 is halfway 0..2; rows 4, 5 are 1/3 and 2/3 of 2..8
    assert fill_missing(values, present)[:, 0].tolist() == pytest.approx([0, 0, 1, 2, 4, 6, 8, 8])
    assert fill_missing(values, np.zeros(8, bool)).tolist() == values.tolist()


def test_smooth_mean_and_median_with_repeated_edges():
    x = np.array([[0.0], [3.0], [0.0], [0.0], [30.0]])
    # window 3, edges repeat: [0,0,3]/3=1, [0,3,0]/3=1, [3,0,0]/3=1, [0,0,30]/3=10, [0,30,30]/3=20
    assert smooth(x, 3, "mean")[:, 0].tolist() == pytest.approx([1, 1, 1, 10, 20])
    assert smooth(x, 3, "median")[:, 0].tolist() == pytest.approx([0, 0, 0, 0, 30])
    assert smooth(x, 1).tolist() == x.tolist()
    with pytest.raises(ValueError, match="valid: mean, median"):
        smooth(x, 3, "gauss")


def test_expr_fallback_takes_the_confident_primary_else_the_secondary():
    primary = np.array([[0.9, 0.1, 0, 0, 0, 0, 0, 0], [0.4, 0.3, 0.3, 0, 0, 0, 0, 0],
                        [0.05, 0, 0, 0, 0, 0, 0, 0.95]])
    secondary = np.array([[0, 0, 0, 0, 1.0, 0, 0, 0]] * 3)
    # row 0: primary confident (0.9 > 0.8) -> 0; row 1: not -> secondary's 4; row 2: Other is not
    # a basic class, so the primary's basic top (0.05) is not confident -> 4
    assert expr_classes(primary, secondary, 0.8, np.zeros(8)).tolist() == [0, 4, 4]
    assert expr_classes(primary, None, 0.8, np.zeros(8)).tolist() == [0, 0, 7]


def test_expr_bias_shifts_the_decision():
    p = np.array([[0.6, 0.4, 0, 0, 0, 0, 0, 0]])
    bias = np.zeros(8)
    bias[1] = np.log(0.6 / 0.4) + 0.01
    assert expr_classes(p, None, None, np.zeros(8)).tolist() == [0]
    assert expr_classes(p, None, None, bias).tolist() == [1]


def test_apply_per_task_decisions():
    present = np.ones(2, bool)
    va = TrackOutput(np.array([[1.4, -0.2], [-3.0, 0.5]]), present)
    assert apply(VA, PostParams("va"), va).tolist() == [[1.0, -0.2], [-1.0, 0.5]]
    au = TrackOutput(np.tile([0.3, 0.7] + [0.5] * 10, (2, 1)), present)
    thresholds = [0.25, 0.8] + [0.5] * 10
    assert apply(AU, PostParams("au", thresholds=thresholds), au)[0, :2].tolist() == [1.0, 0.0]
    vd = TrackOutput(np.array([[0.3], [0.6]]), present)
    assert apply(VD, PostParams("vd", thresholds=[0.4]), vd)[:, 0].tolist() == [0.0, 1.0]


def test_faceless_frames_keep_the_model_or_interpolate():
    out = TrackOutput(np.array([[0.2], [0.9], [0.4]]), np.array([True, False, True]))
    assert apply(VD, PostParams("vd", thresholds=[0.5]), out)[:, 0].tolist() == [0, 1, 0]
    assert apply(VD, PostParams("vd", fill="interpolate", thresholds=[0.5]), out)[:, 0].tolist() == [0, 0, 0]


def test_tune_finds_a_planted_threshold_and_smoothing():
    rng = np.random.default_rng(0)
    outputs, labels, valid = [], [], []
    for _ in range(4):
        y = np.repeat(rng.integers(0, 2, 10), 30)  # segments of 30 frames
        p = np.clip(0.2 + 0.3 * y + rng.normal(0, 0.15, len(y)), 0, 1)  # positives sit near 0.5
        outputs.append(TrackOutput(p[:, None], np.ones(len(y), bool)))
        labels.append(y[:, None].astype(float))
        valid.append(np.ones((len(y), 1), bool))
    params = tune("vd", outputs, labels, valid)
    assert 0.25 <= params.thresholds[0] <= 0.45  # midway between 0.2 and 0.5
    assert params.window >= 5  # the noise is frame-wise, the labels are segments


def test_skip_smooths_over_the_face_frames_alone():
    # Face frames 0.0, 0.0, 1.0 around a faceless stretch whose model output (0.9) must not count.
    values = np.array([[0.0], [0.0], [0.9], [0.9], [1.0], [1.0]])
    present = np.array([True, True, False, False, True, True])
    out = TrackOutput(values, present)
    # Median of 3 over the face frames [0, 0, 1, 1] -> [0, 0, 1, 1]; the faceless rows are
    # interpolated between the smoothed 0 (row 1) and 1 (row 4): 1/3 and 2/3.
    params = PostParams("va", fill="skip", window=3, filter="median")
    np.testing.assert_allclose(apply(VA, params, out)[:, 0], [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0])
    # Smoothing the filled track instead lets the faceless 0.9 into the windows.
    assert apply(VA, PostParams("va", fill="model", window=3, filter="median"), out)[2, 0] == 0.9


def test_a_recipe_can_fix_the_smoothing_it_uses():
    rng = np.random.default_rng(1)
    y = np.repeat(rng.integers(0, 2, 6), 20)
    out = TrackOutput(np.clip(0.3 + 0.4 * y + rng.normal(0, 0.1, len(y)), 0, 1)[:, None], np.ones(len(y), bool))
    labels, valid = [y[:, None].astype(float)], [np.ones((len(y), 1), bool)]
    params = tune("vd", [out], labels, valid, {"fill": ["skip"], "filter": ["median"], "window": [101]})
    assert (params.fill, params.filter, params.window) == ("skip", "median", 101)
    with pytest.raises(ValueError, match="valid keys: fill, window, filter, tau"):
        tune("vd", [out], labels, valid, {"smoothing": [3]})
    with pytest.raises(ValueError, match="valid values are mean, median"):
        tune("vd", [out], labels, valid, {"filter": ["gaussian"]})


def test_logit_ensemble_is_the_mean_log_odds_and_leaves_values_alone():
    from abaw.predict import ENSEMBLES

    into, back = ENSEMBLES["logits"]
    folds = [np.array([[0.9, 0.1]]), np.array([[0.5, 0.5]])]
    mean = back(EXPR, sum(into(EXPR, p) for p in folds) / 2)
    # Geometric mean of the class probabilities, renormalised: sqrt(.45) : sqrt(.05) = 3 : 1.
    np.testing.assert_allclose(mean, [[0.75, 0.25]])
    np.testing.assert_allclose(back(VD, (into(VD, np.array([[0.8]])) + into(VD, np.array([[0.2]]))) / 2), [[0.5]])
    values = np.array([[-0.7, 0.4]])
    np.testing.assert_array_equal(back(VA, into(VA, values)), values)


def test_a_single_tau_of_a_recipe_is_kept_even_where_the_secondary_alone_scores_higher():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 7, 200)
    secondary = np.full((200, 8), 0.01)
    secondary[np.arange(200), y] = 0.93  # right everywhere
    primary = np.full((200, 8), 0.01)
    primary[np.arange(200), (y + 1) % 7] = 0.93  # confidently wrong everywhere
    out = TrackOutput(primary, np.ones(200, bool), secondary)
    labels, valid = [y[:, None].astype(float)], [np.ones((200, 1), bool)]
    # The secondary alone (tau None) is perfect, so a free search may drop the fallback ...
    assert tune("expr", [out], labels, valid, {"window": [1]}).tau is None
    # ... but a recipe that fixes tau gets its fallback at that tau, not tau None.
    assert tune("expr", [out], labels, valid, {"window": [1], "tau": [0.8]}).tau == 0.8
