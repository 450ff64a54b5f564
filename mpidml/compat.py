"""scikit-learn where it is installed, a small stand-in where it is not.

With scikit-learn (the extra mpidml[sklearn]) the estimators are scikit-learn estimators:
BaseEstimator and the mixins give clone, pipelines, tags and the repr, and validate_data
checks inputs with scikit-learn's own messages (what its estimator checks expect). Without
it, mpidml still imports and a model from `mpidml.load` still predicts: these stand-ins give
get_params/set_params and the plain array checks.
"""
import inspect

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import NotFittedError
except ImportError:
    class NotFittedError(ValueError, AttributeError):
        """The estimator has not been fitted (scikit-learn's exception of the same name)."""

    class ClassifierMixin:
        _estimator_type = "classifier"

    class RegressorMixin:
        _estimator_type = "regressor"

    class BaseEstimator:
        """get_params/set_params from the constructor's keyword parameters."""

        @classmethod
        def _get_param_names(cls):
            return sorted(p.name for p in inspect.signature(cls.__init__).parameters.values()
                          if p.name != "self" and p.kind == p.KEYWORD_ONLY)

        def get_params(self, deep=True):
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for name, value in params.items():
                if name not in valid:
                    raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                                     f"Valid parameters are: {valid!r}.")
                setattr(self, name, value)
            return self

        def __repr__(self):
            params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({params})"

try:
    from sklearn.utils.validation import validate_data as _sklearn_validate
except ImportError:             # scikit-learn older than 1.6, or none
    _sklearn_validate = None


def validate_data(estimator, X, y="no_validation", reset=True):
    """(X, y), or X alone without y, as float arrays checked for shape and finite values;
    sets (reset) or checks n_features_in_. ValueError or TypeError when they are wrong."""
    if _sklearn_validate is not None:
        if isinstance(y, str) and y == "no_validation":
            return _sklearn_validate(estimator, X, reset=reset, dtype=[np.float64, np.float32])
        return _sklearn_validate(estimator, X, y, reset=reset, dtype=[np.float64, np.float32],
                                 y_numeric=getattr(estimator, "_estimator_type", None) == "regressor")
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target y is None.")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"Expected a 2-D array, got {X.ndim}-D; reshape your data (one row per sample)")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"X must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float64) if X.dtype.kind != "f" else X
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty (shape {X.shape})")
    if not np.all(np.isfinite(X)):
        raise ValueError("Input X contains NaN or infinity.")
    if reset:
        estimator.n_features_in_ = X.shape[1]
    elif X.shape[1] != estimator.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
                         f"{estimator.n_features_in_} features as input.")
    if isinstance(y, str) and y == "no_validation":
        return X
    y = np.asarray(y)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"y must be 1-D with one value per row of X, got shape {y.shape} for {len(X)} rows")
    return X, y
