"""Test metrics with scikit-learn's definitions: accuracy, macro F1, confusion matrix;
R^2, RMSE and MAE for regression."""
import numpy as np


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


def classification(y_true, proba, k):
    """Metrics from class probabilities (n, k), or P(class 1) (n, 1) when k == 2."""
    if proba.shape[1] == 1:
        pred = (proba[:, 0] >= 0.5).astype(np.int64)
    else:
        pred = np.argmax(proba, axis=1)
    cm = confusion_matrix(y_true, pred, k)
    return {"accuracy": float(np.mean(pred == y_true)), "macro_f1": macro_f1(cm),
            "confusion_matrix": cm.tolist()}


def regression(y_true, y_pred):
    y_true = np.asarray(y_true, np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, np.float64).reshape(-1)
    resid = y_true - y_pred
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    ss_res = float(np.sum(resid ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return {"r2": r2, "rmse": float(np.sqrt(np.mean(resid ** 2))), "mae": float(np.mean(np.abs(resid)))}
