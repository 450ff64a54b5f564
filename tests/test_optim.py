"""Optimizer updates against textbook formulas; learning-rate schedules."""
import math

import numpy as np
import pytest

from mpidml.learn.optim import Optimizer, schedule


def run(kind, grads, lr=0.1, **kw):
    opt = Optimizer(kind, 3, np.float64, lr, weight_mask=np.ones(3), **kw)
    opt.weights[...] = [1.0, -2.0, 0.5]
    for g in grads:
        opt.step(np.array(g, np.float64), lr)
    return opt.weights.copy(), opt


GRADS = [[0.1, -0.2, 0.3], [0.2, 0.1, -0.1], [-0.3, 0.0, 0.2]]


def test_sgd():
    w, _ = run("sgd", GRADS)
    np.testing.assert_allclose(w, np.array([1.0, -2.0, 0.5]) - 0.1 * np.sum(GRADS, axis=0))


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum(nesterov):
    w_ref, v = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for g in map(np.array, GRADS):
        v = 0.9 * v + g
        w_ref -= 0.1 * (g + 0.9 * v if nesterov else v)
    w, _ = run("momentum", GRADS, momentum=0.9, nesterov=nesterov)
    np.testing.assert_allclose(w, w_ref)


def test_adam():
    w_ref, m, v = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
    for t, g in enumerate(map(np.array, GRADS), 1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w_ref -= 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8 / math.sqrt(1 - 0.999 ** t))
    w, opt = run("adam", GRADS)
    np.testing.assert_allclose(w, w_ref, rtol=1e-12)
    assert opt.t == 3 and opt.state.size == 9


def test_l2_and_clipping():
    opt = Optimizer("sgd", 2, np.float64, 1.0, l2=0.5, weight_mask=np.array([1.0, 0.0]), clip_norm=1.0)
    opt.weights[...] = [2.0, 2.0]
    opt.step(np.array([0.0, 0.0]), 1.0)
    np.testing.assert_allclose(opt.weights, [1.0, 2.0])          # bias (mask 0) untouched
    opt.step(np.array([30.0, 40.0]), 1.0)                        # norm 50 clipped to 1
    norm = np.hypot(30 + 0.5, 40)                                # L2 adds 0.5 * w before clipping
    np.testing.assert_allclose(opt.weights, [1.0 - 30.5 / norm, 2.0 - 40 / norm])


def test_schedules():
    assert schedule("constant", 0.1, 100, 10)(99) == 0.1
    step = schedule("step", 1.0, 100, 10, step_epochs=2, gamma=0.5)
    assert [step(t) for t in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]
    cos = schedule("cosine", 1.0, 100, 10)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)
    warm = schedule("constant", 1.0, 100, 10, warmup_steps=4)
    assert [warm(t) for t in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize("kind", ["momentum", "adam"])
def test_absorb_adds_a_moment_delta_as_if_made_at_the_mark(kind):
    """An overlapped average changes the state as it was D steps ago; absorb() must give the
    moments exactly what they would hold had the change been made then (their recurrence is
    linear), and the weights their whole delta."""
    rng = np.random.default_rng(0)
    n, steps = 50, 7
    a = Optimizer(kind, n, np.float64, 0.01)
    a.state[...] = np.abs(rng.standard_normal(a.state.size))
    delta = rng.standard_normal(a.state.size) * 0.1
    delta[2 * n:] = np.abs(delta[2 * n:])          # Adam's second moment stays non-negative
    b = Optimizer(kind, n, np.float64, 0.01)
    b.state[...] = a.state + delta
    a.mark()
    grads = rng.standard_normal((steps, n))
    for g in grads:
        a.step(g.copy(), 0.01)
        b.step(g.copy(), 0.01)
    before = a.weights.copy()
    a.absorb(delta)
    np.testing.assert_allclose(a.state[n:], b.state[n:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.weights, before + delta[:n], rtol=1e-12)
