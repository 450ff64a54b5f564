"""Gradients of every model against central finite differences (float64)."""
import numpy as np
import pytest

from mpidml.learn.models import Net, build


def numeric_grad(net, w, X, y, eps=1e-6):
    g = np.empty_like(w)
    scratch = np.empty_like(w)
    for i in range(len(w)):
        old = w[i]
        w[i] = old + eps
        up = net.loss_grad(w, X, y, scratch)
        w[i] = old - eps
        down = net.loss_grad(w, X, y, scratch)
        w[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


CASES = [
    ("softmax", [5, 4], "relu"),
    ("softmax", [5, 7, 6, 4], "relu"),
    ("softmax", [5, 7, 4], "tanh"),
    ("sigmoid", [5, 1], "relu"),
    ("sigmoid", [5, 6, 1], "tanh"),
    ("identity", [5, 1], "relu"),
    ("identity", [5, 8, 3, 1], "relu"),
]


@pytest.mark.parametrize("head,sizes,act", CASES)
def test_gradient_matches_finite_differences(head, sizes, act):
    rng = np.random.default_rng(0)
    net = Net(sizes, head, act, np.float64)
    w = net.init(np.empty(net.size), rng)
    w += 0.1 * rng.standard_normal(net.size)   # biases away from zero, ReLU kinks away from samples
    X = rng.standard_normal((9, sizes[0]))
    if head == "softmax":
        y = rng.integers(0, sizes[-1], 9)
    elif head == "sigmoid":
        y = rng.integers(0, 2, 9)
    else:
        y = rng.standard_normal(9)
    g = np.empty(net.size)
    loss = net.loss_grad(w, X, y, g)
    assert np.isfinite(loss)
    np.testing.assert_allclose(g, numeric_grad(net, w, X, y), rtol=1e-5, atol=1e-7)


def test_loss_from_predictions_matches_training_loss():
    rng = np.random.default_rng(3)
    for head, sizes in (("softmax", [4, 6, 3]), ("sigmoid", [4, 1]), ("identity", [4, 5, 1])):
        net = Net(sizes, head, "relu", np.float64)
        w = net.init(np.empty(net.size), rng)
        X = rng.standard_normal((20, 4))
        y = rng.integers(0, sizes[-1] if head == "softmax" else 2, 20) if head != "identity" \
            else rng.standard_normal(20)
        g = np.empty(net.size)
        assert net.loss(net.predict_raw(w, X), y) == pytest.approx(net.loss_grad(w, X, y, g), rel=1e-9)


def test_flat_buffer_views_share_memory_and_cover_it():
    net = build("mlp", 10, 3, hidden=(8, 4))
    flat = np.zeros(net.size, np.float32)
    layers = net.views(flat)
    assert [W.shape for W, _ in layers] == [(10, 8), (8, 4), (4, 3)]
    for W, b in layers:
        assert np.shares_memory(W, flat) and np.shares_memory(b, flat)
        W[...] = 1
        b[...] = 2
    assert (flat > 0).all()
    assert net.weight_mask().sum() == 10 * 8 + 8 * 4 + 4 * 3


def test_build_picks_heads():
    assert build("linear", 3, 1).head == "identity"
    assert build("logistic", 3, 1).head == "sigmoid"
    assert build("softmax", 3, 4).head == "softmax"
    assert build("mlp", 3, 1, hidden=(4,), task="regression").head == "identity"
    assert build("mlp", 3, 1, hidden=(4,)).head == "sigmoid"


def test_float32_training_step_allocates_work_once():
    net = build("mlp", 6, 3, hidden=(5,))
    rng = np.random.default_rng(0)
    w = net.init(np.empty(net.size, np.float32), rng)
    X = rng.standard_normal((16, 6)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    g = np.empty(net.size, np.float32)
    net.loss_grad(w, X, y, g)
    bufs = net._work[16]
    net.loss_grad(w, X, y, g)
    assert net._work[16] is bufs and g.dtype == np.float32


def test_softmax_is_stable_for_widely_spread_logits():
    net = Net([2, 3], "softmax", dtype=np.float32)
    w = np.zeros(net.size, np.float32)
    W, b = net.views(w)[0]
    b[...] = [0.0, 1.0, 2.0]
    W[0] = [0.0, 500.0, 0.0]          # the first row's logits sit hundreds below the second's
    X = np.array([[-1.0, 0.0], [1.0, 0.0]], np.float32)
    g = np.empty(net.size, np.float32)
    loss = net.loss_grad(w, X, np.array([2, 1]), g)
    assert np.isfinite(loss) and np.isfinite(g).all() and loss < 1.0
