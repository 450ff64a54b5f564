"""Test metrics with scikit-learn's definitions, computed from additive sums so that ranks
holding parts of the test set can Allreduce the sums and get exact global metrics.

classification: the confusion matrix -> accuracy, macro F1
regression: n, sum d, sum d^2, sum residual^2, sum |residual| (d = y - c for any constant
c, which keeps the sums well scaled) -> R^2, RMSE, MAE
"""
import numpy as np


def predicted_classes(proba):
    """Class indices from probabilities (n, k), or from P(class 1) (n, 1)."""
    if proba.shape[1] == 1:
        return (proba[:, 0] >= 0.5).astype(np.int64)
    return np.argmax(proba, axis=1)


def confusion_matrix(y_true, y_pred, k):
    """k x k counts; row = true class, column = predicted class."""
    return np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)


def macro_f1(cm):
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN); 0 for a class with
    no true and no predicted samples (scikit-learn's zero_division=0)."""
    tp = np.diag(cm).astype(np.float64)
    denom = 2 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def classification(cm):
    """Accuracy, macro F1 and the matrix itself from a confusion matrix."""
    cm = np.asarray(cm).round().astype(np.int64)
    n = max(int(cm.sum()), 1)
    return {"accuracy": float(np.trace(cm) / n), "macro_f1": macro_f1(cm), "confusion_matrix": cm.tolist()}


def regression_sums(y_true, y_pred, c=0.0):
    """[n, sum d, sum d^2, sum residual^2, sum |residual|] with d = y_true - c."""
    y = np.asarray(y_true, np.float64).reshape(-1)
    res = y - np.asarray(y_pred, np.float64).reshape(-1)
    d = y - c
    return np.array([len(y), d.sum(), (d * d).sum(), (res * res).sum(), np.abs(res).sum()])


def regression(sums):
    """R^2, RMSE and MAE from (global) `regression_sums`."""
    n, sd, sdd, ss_res, sabs = sums
    n = max(n, 1.0)
    ss_tot = sdd - sd * sd / n
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return {"r2": float(r2), "rmse": float(np.sqrt(ss_res / n)), "mae": float(sabs / n)}
