"""mpidml: data-parallel training on HDF5 data with MPI and cooperative coroutines.

The Python API (mpidml/api.py) loads on first use, so that `import mpidml` stays cheap
and never starts MPI: mpidml.Classifier, mpidml.Regressor, mpidml.load, mpidml.train.
"""
__version__ = "0.1.0"
__all__ = ["Classifier", "Regressor", "load", "train", "__version__"]
_API = ("Classifier", "Regressor", "load", "train")


def __getattr__(name):
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))

