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


def score(net, params, X, y, task, n_classes, scaling):
    """Test metrics for standardized X against labels/targets y (in the data's units)."""
    raw = net.predict_raw(params, X)
    if task == "regression":
        out = metrics.regression(y, scaling.targets_out(raw[:, 0].astype(np.float64)))
        out["loss"] = net.loss(raw, scaling.targets_in(np.asarray(y, np.float64)))
        return out
    out = metrics.classification(y, raw, n_classes)
    out["loss"] = net.loss(raw, y)
    return out


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
