"""Metrics against hand-computed values (and scikit-learn where installed)."""
import numpy as np
import pytest

from mpidml import metrics


def test_confusion_and_f1_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    cm = metrics.confusion_matrix(y, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # F1 per class: 0: 2*1/(2+1+1)=0.5; 1: 2*2/(4+1+0)=0.8; 2: 2*1/(2+0+1)=2/3
    assert metrics.macro_f1(cm) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    proba = np.eye(3)[pred]
    res = metrics.classification(y, proba, 3)
    assert res["accuracy"] == pytest.approx(4 / 6)


def test_binary_probability_column():
    res = metrics.classification(np.array([0, 1, 1]), np.array([[0.2], [0.7], [0.4]]), 2)
    assert res["accuracy"] == pytest.approx(2 / 3) and res["confusion_matrix"] == [[1, 0], [1, 1]]


def test_regression_by_hand():
    res = metrics.regression([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    # ss_res = 4, ss_tot = 2 -> r2 = -1; rmse = sqrt(4/3); mae = 2/3
    assert res == pytest.approx({"r2": -1.0, "rmse": np.sqrt(4 / 3), "mae": 2 / 3})


def test_agrees_with_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    assert metrics.macro_f1(metrics.confusion_matrix(y, p, 4)) == pytest.approx(sk.f1_score(y, p, average="macro"))
    a, b = rng.standard_normal(50), rng.standard_normal(50)
    assert metrics.regression(a, b)["r2"] == pytest.approx(sk.r2_score(a, b))
