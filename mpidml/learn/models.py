"""Models over one flat parameter buffer: linear, logistic, softmax and MLPs.

Every model is a stack of dense layers (no hidden layer for the linear models) whose
weights and biases are views into one contiguous float buffer, so one Allreduce moves
the whole model. Forward and backward passes write into preallocated work arrays
(one set per batch size), so the hot loop allocates only a few length-B vectors.
"""
import numpy as np

HEADS = {"linear": "identity", "logistic": "sigmoid", "softmax": "softmax"}


class Net:
    """Dense network: `sizes[0]` inputs, hidden layers, `sizes[-1]` outputs, one head.

    head: 'softmax' (cross-entropy over K classes), 'sigmoid' (binary cross-entropy,
    one output) or 'identity' (mean squared error). activation: 'relu' or 'tanh'.
    """

    def __init__(self, sizes, head, activation="relu", dtype=np.float32):
        if head not in ("softmax", "sigmoid", "identity"):
            raise ValueError(f"unknown head {head!r}")
        if activation not in ("relu", "tanh"):
            raise ValueError(f"unknown activation {activation!r}")
        self.sizes = [int(s) for s in sizes]
        self.head, self.activation, self.dtype = head, activation, np.dtype(dtype)
        self.shapes = list(zip(self.sizes[:-1], self.sizes[1:]))
        self.size = sum(a * b + b for a, b in self.shapes)
        self._work = {}
        self._view_cache = {}
        self._zeros = [np.zeros(s, self.dtype) for s in self.sizes[1:-1]]     # ReLU's floor, see _forward

    # -- parameters -------------------------------------------------------------
    def views(self, flat):
        """Per-layer (W, b) views into a flat buffer of length `self.size`."""
        out, off = [], 0
        for a, b in self.shapes:
            W = flat[off:off + a * b].reshape(a, b)
            off += a * b
            out.append((W, flat[off:off + b]))
            off += b
        return out

    def weight_mask(self):
        """1.0 where the flat buffer holds a weight, 0.0 for biases (for L2)."""
        mask = np.zeros(self.size, self.dtype)
        for W, _ in self.views(mask):
            W[...] = 1.0
        return mask

    def init(self, flat, rng):
        """He initialisation for ReLU layers, Glorot for tanh and the output layer."""
        layers = self.views(flat)
        for i, (W, b) in enumerate(layers):
            fan_in, fan_out = W.shape
            last = i == len(layers) - 1
            if self.activation == "relu" and not last:
                std = np.sqrt(2.0 / fan_in)
            else:
                std = np.sqrt(2.0 / (fan_in + fan_out))
            W[...] = rng.standard_normal(W.shape) * std
            b[...] = 0.0
        return flat

    # -- work arrays ------------------------------------------------------------
    def _buffers(self, batch):
        w = self._work.get(batch)
        if w is None:
            acts = [np.empty((batch, s), self.dtype) for s in self.sizes[1:]]
            grads = [np.empty((batch, s), self.dtype) for s in self.sizes[1:-1]]
            masks = [np.empty((batch, s), self.dtype) for s in self.sizes[1:-1]]
            head = {"ones": np.ones(batch, self.dtype),           # bias gradients as a GEMV
                    "rows": np.arange(batch) * self.sizes[-1],    # flat offset of each row's logits
                    "ones_k": np.ones(self.sizes[-1], self.dtype),
                    "sums": np.empty((batch, 1), self.dtype)}
            w = self._work[batch] = (acts, grads, masks, head)
        return w

    def _bound(self, flat):
        """views(flat), remembered for the few buffers a run keeps passing (the weights,
        the gradient), since building views costs more than a small layer's GEMM."""
        key = id(flat)
        hit = self._view_cache.get(key)
        if hit is None or hit[0] is not flat:
            if len(self._view_cache) > 8:
                self._view_cache.clear()
            hit = self._view_cache[key] = (flat, self.views(flat))
        return hit[1]

    def _forward(self, layers, X, acts, poll=None):
        a = X
        for i, (W, b) in enumerate(layers):
            if poll is not None:
                poll()
            z = acts[i]
            np.matmul(a, W, out=z)
            z += b
            if i < len(layers) - 1:
                if self.activation == "relu":
                    np.maximum(z, self._zeros[i], out=z)    # 3x faster than against the scalar 0
                else:
                    np.tanh(z, out=z)
            a = z
        return a  # pre-head output (logits or values)

    # -- training ---------------------------------------------------------------
    def loss_grad(self, flat, X, y, grad, poll=None):
        """Mean loss on (X, y); writes the gradient of that mean into `grad`.

        y holds class indices (int) for softmax, 0/1 for sigmoid, targets for identity.
        `poll`, if given, is called between layers (to progress MPI requests in flight).
        """
        n = X.shape[0]
        layers = self._bound(flat)
        glayers = self._bound(grad)
        acts, dacts, masks, head = self._buffers(n)
        z = self._forward(layers, X, acts, poll)
        loss, dz = self._head_loss_grad(z, y, n, head)
        ones = head["ones"]
        for i in range(len(layers) - 1, -1, -1):
            if poll is not None:
                poll()
            gW, gb = glayers[i]
            a_prev = X if i == 0 else acts[i - 1]
            np.matmul(a_prev.T, dz, out=gW)
            np.matmul(ones, dz, out=gb)
            if i == 0:
                break
            da = dacts[i - 1]
            np.matmul(dz, layers[i][0].T, out=da)
            m = masks[i - 1]
            if self.activation == "relu":    # the derivative, 1.0 where the output is > 0
                np.greater(a_prev, 0, out=m, casting="unsafe")
            else:
                np.multiply(a_prev, a_prev, out=m)
                np.subtract(1.0, m, out=m)      # tanh' = 1 - tanh^2
            da *= m
            dz = da
        return loss

    def _head_loss_grad(self, z, y, n, work):
        """Loss of the head on pre-head output z; returns (loss, dL/dz) in place of z."""
        inv = self.dtype.type(1.0 / n)
        if self.head == "softmax":
            # Shift by the batch's largest logit: a row-wise max costs several times more
            # for narrow rows. When the logits span less than 60, no row can underflow
            # (exp(-60) ~ 1e-26 is a normal float32); otherwise shift row by row.
            hi = z.max()
            z -= hi if hi - z.min() < 60 else z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            s = work["sums"]
            np.matmul(z, work["ones_k"], out=s[:, 0])         # row sums as a GEMV: 4x faster
            z /= s
            flat = work["rows"] + y
            zf = z.reshape(-1)
            picked = zf.take(flat)
            np.maximum(picked, np.finfo(self.dtype).tiny, out=picked)
            np.log(picked, out=picked)
            loss = -float(np.add.reduce(picked)) / n
            zf[flat] -= 1.0
            z *= inv
            return loss, z
        if self.head == "sigmoid":
            t = y.reshape(n, 1).astype(self.dtype, copy=False)
            loss = float(np.mean(np.logaddexp(0.0, z) - t * z))
            np.negative(z, out=z)
            np.exp(z, out=z)
            z += 1.0
            np.reciprocal(z, out=z)               # sigmoid
            z -= t
            z *= inv
            return loss, z
        t = y.reshape(n, -1)
        z -= t
        loss = float(np.mean(np.square(z)))
        z *= 2.0 * inv
        return loss, z

    # -- inference --------------------------------------------------------------
    def predict_raw(self, flat, X, chunk=8192):
        """Head output for every row: class probabilities, P(class 1) or values."""
        layers = self.views(flat)
        out = np.empty((X.shape[0], self.sizes[-1]), self.dtype)
        for s in range(0, X.shape[0], chunk):
            xb = np.ascontiguousarray(X[s:s + chunk], dtype=self.dtype)
            acts = [np.empty((xb.shape[0], k), self.dtype) for k in self.sizes[1:]]
            z = self._forward(layers, xb, acts)
            if self.head == "softmax":
                z -= z.max(axis=1, keepdims=True)
                np.exp(z, out=z)
                z /= z.sum(axis=1, keepdims=True)
            elif self.head == "sigmoid":
                z = 1.0 / (1.0 + np.exp(-z))
            out[s:s + chunk] = z
        return out

    def loss(self, raw, y):
        """Mean loss from `predict_raw` output (for evaluation)."""
        eps = np.finfo(np.float64).tiny
        if self.head == "softmax":
            p = raw[np.arange(len(y)), y].astype(np.float64)
            return float(-np.log(np.maximum(p, eps)).mean())
        if self.head == "sigmoid":
            p = np.clip(raw[:, 0].astype(np.float64), 1e-15, 1 - 1e-15)
            t = y.astype(np.float64)
            return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())
        return float(np.mean((raw.reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2))


def build(kind, n_features, n_outputs, hidden=(), activation="relu", dtype=np.float32,
          task="classification"):
    """The network for a model kind ('linear', 'logistic', 'softmax', 'mlp')."""
    if kind == "mlp":
        if task == "regression":
            head = "identity"
        else:
            head = "sigmoid" if n_outputs == 1 else "softmax"
        return Net([n_features, *hidden, n_outputs], head, activation, dtype)
    return Net([n_features, n_outputs], HEADS[kind], activation, dtype)
