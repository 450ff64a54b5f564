"""Optimizers over the flat buffer, learning-rate schedules and gradient clipping.

Each optimizer keeps its state next to the weights in one contiguous buffer
`state = [w | m | v]` (only as many slots as it needs). Model averaging reduces that
whole buffer in one Allreduce, so the momentum and Adam moments are averaged with
the weights: after every averaging all ranks hold identical state, a checkpoint needs
one copy, and resuming on another rank count is well defined.
"""
import math

import numpy as np

SLOTS = {"sgd": 1, "momentum": 2, "adam": 3}


class Optimizer:
    """Update rule for `kind` over `n` parameters; `state[:n]` are the weights."""

    def __init__(self, kind, n, dtype, lr, l2=0.0, weight_mask=None, momentum=0.9,
                 nesterov=False, betas=(0.9, 0.999), eps=1e-8, clip_norm=0.0):
        if kind not in SLOTS:
            raise ValueError(f"unknown optimizer {kind!r}")
        self.kind, self.n, self.lr, self.l2 = kind, n, lr, l2
        self.mu, self.nesterov, self.betas, self.eps = momentum, nesterov, betas, eps
        self.clip_norm = clip_norm
        self.state = np.zeros(SLOTS[kind] * n, dtype)
        self.weights = self.state[:n]
        self.weight_mask = weight_mask
        self.t = 0                      # steps taken (Adam's bias correction, schedules)
        self._tmp = np.empty(n, dtype)
        self.mark()

    def mark(self):
        """Start tracking how much of the moments' present value the steps keep (`absorb`)."""
        self._decay = [1.0, 1.0]        # d m_now / d m_mark, d v_now / d v_mark

    def absorb(self, delta):
        """Add `delta`, a change of the state as it was at `mark()`, as if it had been made
        then: the weights take their whole delta, each moment its delta decayed by the
        steps taken since (mu^D for momentum, beta1^D and beta2^D for Adam), exactly as
        those steps decayed the moment itself. A moment is mostly forgotten within a few
        steps; adding its whole delta would add back what the steps had already decayed."""
        n, tmp = self.n, self._tmp
        self.weights += delta[:n]
        for slot, decay in zip(range(1, SLOTS[self.kind]), self._decay):
            np.multiply(delta[slot * n:(slot + 1) * n], decay, out=tmp)
            self.state[slot * n:(slot + 1) * n] += tmp

    def step(self, grad, lr):
        """Apply one update with learning rate `lr` from `grad` (modified in place)."""
        w, tmp = self.weights, self._tmp
        if self.l2:
            np.multiply(w, self.weight_mask, out=tmp)
            tmp *= self.l2
            grad += tmp
        if self.clip_norm:
            norm = float(np.sqrt(np.dot(grad, grad)))
            if norm > self.clip_norm:
                grad *= self.clip_norm / norm
        self.t += 1
        if self.kind == "sgd":
            np.multiply(grad, lr, out=tmp)
            w -= tmp
        elif self.kind == "momentum":
            v = self.state[self.n:]
            v *= self.mu
            v += grad
            if self.nesterov:
                np.multiply(v, self.mu, out=tmp)
                tmp += grad
                tmp *= lr
            else:
                np.multiply(v, lr, out=tmp)
            w -= tmp
            self._decay[0] *= self.mu
        else:
            b1, b2 = self.betas
            m, v = self.state[self.n:2 * self.n], self.state[2 * self.n:]
            m *= b1
            np.multiply(grad, 1 - b1, out=tmp)
            m += tmp
            v *= b2
            np.multiply(grad, grad, out=tmp)
            tmp *= 1 - b2
            v += tmp
            step = lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
            np.sqrt(v, out=tmp)
            tmp += self.eps
            np.divide(m, tmp, out=tmp)
            tmp *= step
            w -= tmp
            self._decay[0] *= b1
            self._decay[1] *= b2


def schedule(kind, base_lr, total_steps, steps_per_epoch, warmup_steps=0,
             step_epochs=10, gamma=0.1):
    """Learning rate as a function of the global step index t (0-based)."""
    if kind not in ("constant", "step", "cosine"):
        raise ValueError(f"unknown schedule {kind!r}")

    if kind == "constant" and not warmup_steps:
        return lambda t: base_lr

    def lr(t):
        if warmup_steps and t < warmup_steps:
            return base_lr * (t + 1) / warmup_steps
        if kind == "constant":
            return base_lr
        if kind == "step":
            return base_lr * gamma ** ((t // max(1, steps_per_epoch)) // step_epochs)
        span = max(1, total_steps - warmup_steps)
        frac = min(1.0, (t - warmup_steps) / span)
        return base_lr * 0.5 * (1 + math.cos(math.pi * frac))
    return lr
