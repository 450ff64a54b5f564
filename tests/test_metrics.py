"""Metrics against hand-computed values and scikit-learn; sums that combine across ranks."""
import numpy as np
import pytest

from mpidml.learn import metrics


def test_confusion_and_f1_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    cm = metrics.confusion_matrix(y, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # F1 per class: 0: 2*1/(2+1+1)=0.5; 1: 2*2/(4+1+0)=0.8; 2: 2*1/(2+0+1)=2/3
    assert metrics.macro_f1(cm) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert metrics.classification(cm)["accuracy"] == pytest.approx(4 / 6)


def test_binary_probability_column():
    pred = metrics.predicted_classes(np.array([[0.2], [0.7], [0.4]]))
    assert pred.tolist() == [0, 1, 0]
    assert metrics.predicted_classes(np.array([[0.1, 0.9], [0.8, 0.2]])).tolist() == [1, 0]


def test_regression_by_hand():
    res = metrics.regression(metrics.regression_sums([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]))
    # ss_res = 4, ss_tot = 2 -> r2 = -1; rmse = sqrt(4/3); mae = 2/3
    assert res == pytest.approx({"r2": -1.0, "rmse": np.sqrt(4 / 3), "mae": 2 / 3})


def test_sums_from_parts_equal_sums_of_the_whole():
    rng = np.random.default_rng(1)
    y, p = 1000 + rng.standard_normal(300), 1000 + rng.standard_normal(300)
    whole = metrics.regression(metrics.regression_sums(y, p, c=1000.0))
    parts = sum(metrics.regression_sums(y[a:b], p[a:b], c=1000.0) for a, b in ((0, 100), (100, 250), (250, 300)))
    assert metrics.regression(parts) == pytest.approx(whole)
    yc, pc = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    cm = sum(metrics.confusion_matrix(yc[a:b], pc[a:b], 4) for a, b in ((0, 120), (120, 300)))
    assert metrics.classification(cm) == metrics.classification(metrics.confusion_matrix(yc, pc, 4))


def test_agrees_with_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    assert metrics.macro_f1(metrics.confusion_matrix(y, p, 4)) == pytest.approx(sk.f1_score(y, p, average="macro"))
    a, b = rng.standard_normal(50), rng.standard_normal(50)
    res = metrics.regression(metrics.regression_sums(a, b, c=0.3))
    assert res["r2"] == pytest.approx(sk.r2_score(a, b))
    assert res["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(a, b)))
    assert res["mae"] == pytest.approx(sk.mean_absolute_error(a, b))
