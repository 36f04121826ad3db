import numpy as np
import pytest
from sklearn.metrics import f1_score

from abaw.metrics import binary_f1, ccc, f1_per_class, score
from abaw.tasks import AU, EXPR, VA, VD


def direct_ccc(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    cov = ((x - x.mean()) * (y - y.mean())).sum() / len(x)
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


@pytest.mark.parametrize("seed", range(5))
def test_expr_matches_sklearn_macro_f1_with_a_class_absent_from_both(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 8, 500)
    y_pred = np.where(rng.random(500) < 0.4, y_true, rng.integers(0, 8, 500))
    y_true[y_true == 3] = 0  # class 3 absent from both truth and prediction
    y_pred[y_pred == 3] = 1
    expected = f1_score(y_true, y_pred, average="macro", labels=range(8), zero_division=0)
    result = score(EXPR, y_true[:, None], y_pred[:, None])
    assert abs(result.value - expected) < 1e-9
    assert result.parts["Fear"] == 0.0
    per_class = f1_score(y_true, y_pred, average=None, labels=range(8), zero_division=0)
    assert np.allclose(list(result.parts.values()), per_class, atol=1e-12)


def test_expr_excludes_invalid_frames():
    y_true = np.array([[0], [1], [-1], [-1]])
    y_pred = np.array([[0], [1], [5], [6]])
    valid = y_true != -1
    assert score(EXPR, y_true, y_pred, valid).parts["Neutral"] == 1.0
    assert score(EXPR, y_true, y_pred, valid).value == pytest.approx(2 / 8, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_va_matches_direct_ccc_with_per_dimension_masks(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.uniform(-1, 1, (400, 2))
    y_pred = np.clip(0.6 * y_true + rng.normal(0, 0.3, (400, 2)) + 0.1, -1, 1)
    y_true[rng.random(400) < 0.1, 0] = -5
    y_true[rng.random(400) < 0.2, 1] = -5
    valid = y_true != -5
    result = score(VA, y_true, y_pred, valid)
    expected = [direct_ccc(y_true[valid[:, c], c], y_pred[valid[:, c], c]) for c in range(2)]
    assert abs(result.parts["valence"] - expected[0]) < 1e-9
    assert abs(result.parts["arousal"] - expected[1]) < 1e-9
    assert abs(result.value - np.mean(expected)) < 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_au_matches_sklearn_binary_f1_per_au(seed):
    rng = np.random.default_rng(seed)
    y_true = (rng.random((300, 12)) < 0.3).astype(int)
    y_pred = np.where(rng.random((300, 12)) < 0.7, y_true, 1 - y_true)
    y_true[:, 5] = 0
    y_pred[:, 5] = 0  # an AU with no positive anywhere scores 0
    expected = f1_score(y_true, y_pred, average=None, zero_division=0)
    result = score(AU, y_true, y_pred)
    assert np.allclose(list(result.parts.values()), expected, atol=1e-12)
    assert abs(result.value - expected.mean()) < 1e-9


def test_vd_is_macro_f1_over_both_classes():
    rng = np.random.default_rng(1)
    y_true = (rng.random(200) < 0.3).astype(int)
    y_pred = (rng.random(200) < 0.5).astype(int)
    expected = f1_score(y_true, y_pred, average="macro", labels=[0, 1], zero_division=0)
    assert abs(score(VD, y_true[:, None], y_pred[:, None]).value - expected) < 1e-9


def test_hand_computed_values():
    assert ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # x = [0, 2], y = [1, 1]: cov 0 -> CCC 0; x = [0, 2], y = [2, 0]: cov -1, var 1 + 1 -> -1
    assert ccc([0, 2], [1, 1]) == 0.0
    assert ccc([0, 2], [2, 0]) == pytest.approx(-1.0)
    # tp=1, fp=1, fn=1 -> F1 = 2/(2+1+1) = 0.5
    assert binary_f1(np.array([1, 1, 0]), np.array([1, 0, 1])) == pytest.approx(0.5)
    assert f1_per_class(np.array([0, 0]), np.array([0, 0]), 3).tolist() == [1.0, 0.0, 0.0]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        score(VA, np.zeros((3, 2)), np.zeros((2, 2)))
