"""mpidml: data-parallel training on HDF5 data with MPI and cooperative coroutines.

The Python API (mpidml/api.py) loads on first use, so that `import mpidml` stays cheap
and never starts MPI: mpidml.Classifier, mpidml.Regressor, mpidml.load, mpidml.train.
"""
import sys
import types

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


class _Package(types.ModuleType):
    """`mpidml.train` is the run function, yet mpidml/train.py is a module too, and
    importing a submodule sets it as an attribute of its package: that one binding is
    refused, so the name stays the function (`from mpidml.train import Job` still works)."""

    def __setattr__(self, name, value):
        if name == "train" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
