"""Testing the global model: metrics on held-out data, and predictions for new rows."""
import numpy as np

from . import metrics


class Scaling:
    """Standardization statistics stored with a model (None where not used)."""

    def __init__(self, mean=None, std=None, y_mean=None, y_std=None):
        self.mean, self.std, self.y_mean, self.y_std = mean, std, y_mean, y_std

    def features(self, X, dtype):
        """Standardized float copy of X (the stored data is never changed)."""
        X = np.asarray(X, dtype=dtype)
        if self.mean is not None:
            X = (X - self.mean.astype(dtype)) / self.std.astype(dtype)
        return X

    def targets_out(self, values):
        """Model outputs -> targets in the data's units."""
        if self.y_mean is None:
            return values
        return values * self.y_std + self.y_mean

    def targets_in(self, y):
        if self.y_mean is None:
            return y
        return (y - self.y_mean) / self.y_std


def partial_sums(net, params, X, y, task, n_classes, scaling):
    """The additive pieces of the test metrics on these rows (float64 vector), so that
    ranks holding parts of the test set can Allreduce them into exact global metrics.

    classification: [rows, loss sum, confusion matrix (k*k)]
    regression:     [rows, loss sum, sum d, sum d^2, sum residual^2, sum |residual|],
                    d = y - c with c the training target mean (keeps the sums well scaled)
    """
    n = len(y)
    if task == "regression":
        out = np.zeros(6)
        if n:
            raw = net.predict_raw(params, X)
            y64 = np.asarray(y, np.float64)
            pred = scaling.targets_out(raw[:, 0].astype(np.float64))
            c = scaling.y_mean or 0.0
            d, res = y64 - c, y64 - pred
            out[:] = [n, net.loss(raw, scaling.targets_in(y64)) * n, d.sum(), (d * d).sum(),
                      (res * res).sum(), np.abs(res).sum()]
        return out
    out = np.zeros(2 + n_classes * n_classes)
    if n:
        raw = net.predict_raw(params, X)
        pred = (raw[:, 0] >= 0.5).astype(np.int64) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        out[0], out[1] = n, net.loss(raw, y) * n
        out[2:] = metrics.confusion_matrix(y, pred, n_classes).ravel()
    return out


def from_sums(sums, task, n_classes):
    """Metrics from (global) partial sums; see `partial_sums`."""
    n = max(sums[0], 1.0)
    if task == "regression":
        _, loss, sd, sdd, ss_res, sabs = sums
        ss_tot = sdd - sd * sd / n
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
        return {"r2": float(r2), "rmse": float(np.sqrt(ss_res / n)), "mae": float(sabs / n), "loss": float(loss / n)}
    cm = sums[2:].reshape(n_classes, n_classes).round().astype(np.int64)
    return {"accuracy": float(np.trace(cm) / n), "loss": float(sums[1] / n), "macro_f1": metrics.macro_f1(cm),
            "confusion_matrix": cm.tolist()}


def score(net, params, X, y, task, n_classes, scaling):
    """Test metrics for standardized X against labels/targets y (in the data's units)."""
    return from_sums(partial_sums(net, params, X, y, task, n_classes, scaling), task, n_classes)


def predict(net, params, X, task, scaling):
    """(labels as class indices or values, probabilities or None) for standardized X."""
    raw = net.predict_raw(params, X)
    if task == "regression":
        return scaling.targets_out(raw[:, 0].astype(np.float64)), None
    if raw.shape[1] == 1:
        proba = np.concatenate([1 - raw, raw], axis=1)
    else:
        proba = raw
    return np.argmax(proba, axis=1), proba
