"""Testing the global model: metrics on held-out data, and predictions for new rows."""
import numpy as np

from ..errors import DivergedError
from . import metrics


class Scaling:
    """Standardization statistics stored with a model (None where not used)."""

    def __init__(self, mean=None, std=None, y_mean=None, y_std=None):
        self.mean, self.std, self.y_mean, self.y_std = mean, std, y_mean, y_std

    @classmethod
    def from_arrays(cls, mean, std, y_mean, y_std):
        """From stored arrays (model file or JSON lists): target statistics as floats."""
        def scalar(v):
            return None if v is None else float(np.ravel(v)[0])
        def vector(v):
            return None if v is None else np.asarray(v, np.float64)
        return cls(vector(mean), vector(std), scalar(y_mean), scalar(y_std))

    def apply(self, X, rows=65536):
        """Standardize X (rows, features) in place, chunk by chunk (no full-size temporaries)."""
        if self.mean is None:
            return X
        m, s = self.mean.astype(X.dtype), self.std.astype(X.dtype)
        for a in range(0, len(X), rows):
            X[a:a + rows] -= m
            X[a:a + rows] /= s
        return X

    def apply_targets(self, y):
        """Standardize training targets in place, in their own dtype (the model's)."""
        if self.y_mean is not None:
            y -= y.dtype.type(self.y_mean)
            y /= y.dtype.type(self.y_std)
        return y

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

    classification: [loss sum, rows, confusion matrix (k*k)]
    regression:     [loss sum, metrics.regression_sums around the training target mean]
    """
    n = len(y)
    if task == "regression":
        out = np.zeros(6)
        if n:
            raw = net.predict_raw(params, X)
            y64 = np.asarray(y, np.float64)
            out[0] = net.loss(raw, scaling.targets_in(y64)) * n
            pred = scaling.targets_out(raw[:, 0].astype(np.float64))
            out[1:] = metrics.regression_sums(y64, pred, scaling.y_mean or 0.0)
        return out
    out = np.zeros(2 + n_classes * n_classes)
    if n:
        raw = net.predict_raw(params, X)
        out[0], out[1] = net.loss(raw, y) * n, n
        out[2:] = metrics.confusion_matrix(y, metrics.predicted_classes(raw), n_classes).ravel()
    return out


def from_sums(sums, task, n_classes):
    """Metrics (with the mean loss) from (global) partial sums; see `partial_sums`."""
    if task == "regression":
        res = metrics.regression(sums[1:])
    else:
        res = metrics.classification(sums[2:].reshape(n_classes, n_classes))
    res["loss"] = float(sums[0] / max(sums[1], 1.0))      # sums[1] counts the rows either way
    _check_finite(res)
    return res


def _check_finite(res):
    """NaN metrics are no result: the model's outputs overflowed on some rows, which is
    divergence (exit 3). Every rank holds the same sums, so all raise it together."""
    bad = [f"{k} {v}" for k, v in res.items() if isinstance(v, float) and not np.isfinite(v)]
    if bad:
        raise DivergedError(f"test metrics are not finite ({', '.join(bad)}): the model's outputs overflow on "
                            "some test rows", agreed=True)


def predict(net, params, X, task, scaling):
    """(labels as class indices or values, probabilities or None) for standardized X."""
    raw = net.predict_raw(params, X)
    if task == "regression":
        return scaling.targets_out(raw[:, 0].astype(np.float64)), None
    labels = metrics.predicted_classes(raw)     # the rule the test metrics use (ties: class 1)
    return labels, np.concatenate([1 - raw, raw], axis=1) if raw.shape[1] == 1 else raw
