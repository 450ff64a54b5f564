"""The Python API: scikit-learn-style estimators, models from files, one training run.

Everything here trains with the command line's code (session.run, job.Job) and checks
options with its checks (training/options.make_config): an estimator's parameters and `train`'s keywords
are the train options, underscored. mpi4py (and so MPI) is imported only by `fit`,
`partial_fit`, `fit_hdf5` and `train`; `load` and `predict` need neither MPI nor
scikit-learn.

Examples
--------
Each rank passes its own rows (the user shards, as with Horovod); the fitted model is the
global one on every rank. Save as ``fit.py``, run with ``mpiexec -n 4 python fit.py``:

>>> import numpy as np, mpidml
>>> from mpi4py import MPI
>>> rank = MPI.COMM_WORLD.rank
>>> rng = np.random.default_rng(rank)                      # this rank's shard
>>> y = rng.integers(0, 3, 500)
>>> X = rng.standard_normal((500, 8)) + np.eye(3, 8)[y] * 3
>>> clf = mpidml.Classifier(model="mlp", hidden=(32,), epochs=5).fit(X, y)
>>> clf.score(X, y) > 0.9                                  # every rank, its own rows
True
>>> clf.save("model.h5")                                   # rank 0 writes the file
>>> MPI.COMM_WORLD.Barrier()                               # before the others read it
>>> mpidml.load("model.h5").predict(X[:3])                 # anywhere, no MPI needed
array([...])
"""
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from types import SimpleNamespace

import numpy as np

from .compat import BaseEstimator, ClassifierMixin, NotFittedError, RegressorMixin, validate_data
from .config import TrainConfig
from .data.arrays import ArraySource, labels

_D = TrainConfig()          # the defaults: the command line's
# fit_hdf5's keywords: how the file is read and split, as the train options of that name
DATASET_OPTIONS = ("x_dataset", "y_dataset", "test_fraction", "distribute", "partition", "block_rows",
                   "partition_seed", "chunk_mb", "stream", "memory_limit", "stream_chunk_mb", "stage_dir")


def train(config=None, **options):
    """Run one training job on all ranks, as ``mpidml train`` does; the metrics document.

    Every rank calls it (under ``mpiexec``, or alone in one process). Options are checked
    exactly as the command line checks them, with the same precedence: defaults < `config`
    file < ``MPIDML_*`` environment < keywords.

    Parameters
    ----------
    config : str, path or mapping, optional
        A TOML file as ``--config`` takes, or a mapping of options (keywords win over it).
    **options
        The train options, underscored: ``data``, ``model``, ``hidden``, ``epochs``, ``lr``,
        ``sync_every``, ``save``, ``metrics_json``, ``sweep`` (a mapping of lists or
        distributions, ``{"lr": "loguniform(1e-4, 1e-1)", "batch_size": [64, 256]}``),
        ``trials``, ``sweep_seed``, ``search``, ``select``, ... (``mpidml train --help``);
        None means the default.

    Returns
    -------
    dict or None
        The metrics document (what ``--metrics-json`` writes), on every rank; None when
        ``resume`` names a run that is complete already.

    Raises
    ------
    ValueError
        Bad options or data (mpidml.errors.UsageError, on every rank alike).
    mpidml.errors.MpidmlError
        Divergence, a stalled rank, a stop on ``checkpoint_signal`` (errors.Stopped).

    Examples
    --------
    Under ``mpiexec -n 2 python sweep.py`` (the bundled digits data):

    >>> import mpidml
    >>> doc = mpidml.train(model="mlp", epochs=5, sweep={"lr": [0.1, 0.01]}, quiet=True)
    >>> doc["best"], doc["sweep"][1]["overrides"], doc["test"]["accuracy"]
    (0, {'lr': 0.01}, 0.95...)
    """
    from mpi4py import MPI

    from .training import session
    from .training.options import make_config
    if isinstance(config, Mapping):
        options, config = {**config, **options}, None
    args = SimpleNamespace(config=os.fspath(config)) if config is not None else SimpleNamespace()
    cfg = make_config(args, options=options, origin="mpidml.train: ")
    comm = MPI.COMM_WORLD
    _progress_to_stdout(comm.rank)
    doc, _ = session.run(cfg, comm, everywhere=True)
    return doc


def load(path):
    """A fitted estimator from a model file (``mpidml train --save``, or `save`).

    Needs neither MPI nor scikit-learn. The parameters are the ones the file was trained
    with; the estimator predicts at once, and `fit`/`partial_fit` go on from there.

    Parameters
    ----------
    path : str or path
        The HDF5 model file.

    Returns
    -------
    Classifier or Regressor

    Examples
    --------
    >>> import mpidml
    >>> model = mpidml.load("model.h5")
    >>> model.predict(X)
    """
    from .learn.checkpoint import ModelFile
    m = ModelFile.load(os.fspath(path))
    cls = Regressor if m.task == "regression" else Classifier
    config = m.attrs.get("config", {})
    params = {k: config[k] for k in cls._get_param_names() if k in config}
    params["model"] = m.kind
    params.pop("hidden", None)          # the MLP's widths are its layers; other kinds have none
    if m.kind == "mlp":
        params["hidden"] = tuple(int(h) for h in m.sizes[1:-1])
    estimator = cls(**params)
    estimator._adopt(m, m.attrs.get("history", []))
    return estimator


def _progress_to_stdout(rank):
    """Progress lines as the command line prints them, unless the program set up logging."""
    if not logging.getLogger("mpidml").hasHandlers():
        from .files.progress import setup_logging
        setup_logging(rank)


def _is_default(name, value):
    default = getattr(_D, name)
    return type(value) is type(default) and value == default


def _rank():
    """This process's rank, 0 where MPI is not running (a model from `load` in a notebook)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi.COMM_WORLD.Get_rank()
    return 0


_PARAMETERS = f"""
    Parameters
    ----------
    model : {{"auto", "logistic", "softmax", "mlp"}} (Classifier), {{"auto", "linear", "mlp"}} (Regressor)
        The network, default {_D.model!r}: logistic for 2 classes, softmax for more, linear for targets.
    hidden : tuple of int, default {_D.hidden}
        MLP hidden widths (``model="mlp"`` only).
    activation : {{"relu", "tanh"}}, default {_D.activation!r}
    epochs : int, default {_D.epochs}
        Passes over the data; 0: 10, or more (up to 100) so that every rank takes 300 steps.
    batch_size : int, default {_D.batch_size}
        Minibatch rows per rank.
    lr, l2, optimizer, momentum, nesterov, schedule, warmup_epochs, step_epochs, gamma, clip_norm
        The per-rank optimizer, as the train options of those names (defaults {_D.lr}, {_D.l2},
        {_D.optimizer!r}, {_D.momentum}, {_D.nesterov}, {_D.schedule!r}, {_D.warmup_epochs}, {_D.step_epochs},
        {_D.gamma}, {_D.clip_norm}).
    sync : {{"average", "gradients"}}, default {_D.sync!r}
        Model averaging every `sync_every` local steps, or a gradient Allreduce every step.
    sync_every : int or "auto", default {_D.sync_every}
        "auto": chosen, with `overlap` and `merge_after`, from measured step and average times.
    overlap : bool, default {_D.overlap}
        The averaging runs behind the next `merge_after` steps (0: `sync_every` / 2).
    merge_after : int, default {_D.merge_after}
    standardize : bool, default {_D.standardize}
        Scale features (and regression targets) by global statistics, stored with the model.
    dtype : {{"float32", "float64"}}, default {_D.dtype!r}
    seed : int, default {_D.seed}
        The same seed, rows and ranks give bit-identical models.
    validation_fraction : float, optional
        Rows of each rank held out for `early_stopping` (default none).
    early_stopping : int, default {_D.early_stopping}
        Stop after this many epochs without a better validation loss; keep the best weights.
    stall_timeout : float, default {_D.stall_timeout:g}
        Seconds a rank waits for the others in a collective before it names the missing ones.
    verbose : bool, default False
        Progress lines on rank 0 (quiet by default, as scikit-learn's estimators are).
"""

_ATTRIBUTES = """
    Attributes
    ----------
    n_features_in_ : int
    history_ : list of dict
        One entry per epoch, as the metrics document's history (train_loss, wall_s, ...).
"""


class _Estimator(BaseEstimator):
    """What Classifier and Regressor share: parameters, fitting, the model file."""

    _task = None

    def __init__(self, *, model=_D.model, hidden=_D.hidden, activation=_D.activation, epochs=_D.epochs,
                 batch_size=_D.batch_size, lr=_D.lr, l2=_D.l2, optimizer=_D.optimizer, momentum=_D.momentum,
                 nesterov=_D.nesterov, schedule=_D.schedule, warmup_epochs=_D.warmup_epochs,
                 step_epochs=_D.step_epochs, gamma=_D.gamma, clip_norm=_D.clip_norm, sync=_D.sync,
                 sync_every=_D.sync_every, overlap=_D.overlap, merge_after=_D.merge_after,
                 standardize=_D.standardize, dtype=_D.dtype, seed=_D.seed,
                 validation_fraction=_D.validation_fraction, early_stopping=_D.early_stopping,
                 stall_timeout=_D.stall_timeout, verbose=False):
        # scikit-learn's convention: store the parameters as given, check them in fit
        vars(self).update((k, v) for k, v in locals().items() if k != "self")

    # -- fitting ---------------------------------------------------------------------
    def fit(self, X, y):
        """Train from scratch on every rank's rows (collective: every rank calls it).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            This rank's rows; the ranks may pass different numbers of them.
        y : array-like of shape (n_samples,)
            Their labels (Classifier) or targets (Regressor).

        Returns
        -------
        self
            With the global model on every rank.
        """
        return self._fit_rows(X, y, reset=True)

    def fit_hdf5(self, path, **dataset_options):
        """Train from scratch on an HDF5 file, distributed exactly as ``mpidml train --data``
        does (collective; the file's /test rows, or a `test_fraction` split, are held out).

        Parameters
        ----------
        path : str or path
            The HDF5 file (default layout /train/X, /train/y, or flat /X, /y).
        **dataset_options
            x_dataset, y_dataset, test_fraction, distribute, partition, block_rows,
            partition_seed, chunk_mb, stream, memory_limit, stream_chunk_mb, stage_dir: as the
            train options of those names (a file larger than memory is streamed).

        Returns
        -------
        self
        """
        unknown = sorted(set(dataset_options) - set(DATASET_OPTIONS))
        if unknown:
            raise TypeError(f"fit_hdf5() got unexpected option(s) {', '.join(unknown)}; "
                            f"dataset options: {', '.join(DATASET_OPTIONS)}")
        self._train(self._config(data=path, **dataset_options))
        return self

    def _fit_rows(self, X, y, reset, classes=None, **options):
        """Train on this rank's rows (`options`: epochs, resume for partial_fit). Bad rows on
        any rank raise on every rank (none is left waiting in a collective)."""
        cfg = self._config(**options)
        cfg.data = ""                       # no file: the rows are the caller's
        error = None
        try:
            X, y = validate_data(self, X, y, reset=reset)
            y = labels(y) if self._task == "classification" else np.asarray(y, np.float64)
        except (ValueError, TypeError) as e:
            error = e
        self._train(cfg, ArraySource(X, y, self._task, classes, error))
        return self

    def _continue(self, X, y, classes=None):
        """partial_fit: one more epoch from the fitted state (weights, optimizer, scaling,
        classes), as --resume continues a model file."""
        if not self.__sklearn_is_fitted__():
            return self._fit_rows(X, y, reset=True, classes=classes, epochs=1)
        from .data.provenance import MODEL_OPTIONS
        from .learn.checkpoint import ModelFile
        m = self._model
        with tempfile.TemporaryDirectory(prefix="mpidml-") as tmp:
            path = os.path.join(tmp, "fitted.h5")
            if _rank() == 0:            # the file --resume reads, on rank 0 alone
                fields = {k: getattr(m, k) for k in ("params", "optimizer_state", "classes", "mean", "std",
                                                     "y_mean", "y_std")}
                ModelFile(**fields, **dict(m.attrs, early_stopped=None, stopped_at=None)).save(path)
            known = self.classes_ if self._task == "classification" else None
            self._fit_rows(X, y, reset=False, classes=known, epochs=int(m.epoch) + 1, resume=path,
                           adopt=MODEL_OPTIONS)
        return self

    def _config(self, adopt=(), **options):
        """The TrainConfig of these parameters (and `options`), checked as the command line
        checks its options; `adopt`: options a resumed file decides, whatever the parameters."""
        from .training.options import make_config
        params = self.get_params()
        verbose = params.pop("verbose")
        # the parameters changed from the defaults are the options "given" (as on a command line)
        chosen = {k: v for k, v in params.items() if not _is_default(k, v)}
        chosen.update(quiet=not verbose, checkpoint_signal="none", **options)
        cfg = make_config(SimpleNamespace(), environ={}, options=chosen, origin=f"{type(self).__name__}: ")
        cfg.given = cfg.given - set(adopt)
        return cfg

    def _train(self, cfg, source=None):
        from mpi4py import MPI

        from .training import session
        comm = MPI.COMM_WORLD
        if not cfg.quiet:
            _progress_to_stdout(comm.rank)
        doc, job = session.run(cfg, comm, source, self._task, everywhere=True, summary=not cfg.quiet)
        best = job.best_model()
        self._adopt(job.outputs.file(best, len(best.history)), doc["history"])

    def _adopt(self, m, history):
        """Become the fitted model `m` (a checkpoint.ModelFile)."""
        self._model = m
        self.n_features_in_ = int(m.sizes[0])
        self.history_ = history
        if self._task == "classification":
            self.classes_ = np.array(m.classes)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "_model")

    # -- using the model -----------------------------------------------------------
    def _outputs(self, X):
        """evaluate.predict of these rows: what ``mpidml predict`` computes (no MPI)."""
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                                 "appropriate arguments before using this estimator.")
        from .learn.evaluate import predict
        X = validate_data(self, X, reset=False)
        m = self._model
        net, scaling = m.net(), m.scaling()
        with np.errstate(all="ignore"):
            # a standardized copy in the model's dtype, as `mpidml predict` reads and scales rows
            return predict(net, m.params, scaling.apply(np.array(X, dtype=net.dtype)), m.task, scaling)

    def save(self, path):
        """Write the model file ``mpidml train --save`` writes (rank 0 writes it; others return).

        ``mpidml evaluate``, ``mpidml predict``, ``--resume`` and `load` read it.

        Parameters
        ----------
        path : str or path
        """
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet: nothing to save.")
        if _rank() == 0:
            from .files.outputs import check_output
            check_output(os.fspath(path), "save")
            self._model.save(os.fspath(path))


class Classifier(ClassifierMixin, _Estimator):
    __doc__ = f"""A classifier trained across MPI ranks: logistic, softmax or an MLP.

    ``fit`` is collective: under ``mpiexec`` every rank passes its own rows and ends with
    the same global model; in one process it is an ordinary scikit-learn estimator.
    ``predict``, ``predict_proba`` and ``score`` work on the rows each rank passes, without
    communication.
    {_PARAMETERS}{_ATTRIBUTES}    classes_ : ndarray of shape (n_classes,)
        The labels (the union over all ranks), sorted.

    Examples
    --------
    Under ``mpiexec -n 4 python fit.py``, each rank with its own ``X``, ``y``:

    >>> import mpidml
    >>> clf = mpidml.Classifier(model="mlp", hidden=(64,), epochs=20).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    """
    _task = "classification"

    def partial_fit(self, X, y, classes=None):
        """One more epoch on these rows from the current weights (collective).

        The first call fits one epoch; later calls keep the fitted classes, architecture and
        standardization (parameters changed since take effect at the next `fit`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like, optional
            Every label the model will see, at the first call (default: the labels of
            the first call's rows, all ranks together).

        Returns
        -------
        self
        """
        return self._continue(X, y, classes)

    def predict(self, X):
        """The most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from `classes_`.
        """
        index, _ = self._outputs(X)
        return self.classes_[index]

    def predict_proba(self, X):
        """Class probabilities of each row, columns in the order of `classes_`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        return self._outputs(X)[1]

    def score(self, X, y, sample_weight=None):
        """Accuracy on these rows (this rank's; no communication).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        float
        """
        return float(np.average(self.predict(X) == np.asarray(y).reshape(-1), weights=sample_weight))


class Regressor(RegressorMixin, _Estimator):
    __doc__ = f"""A regressor trained across MPI ranks: linear, or an MLP.

    ``fit`` is collective: under ``mpiexec`` every rank passes its own rows and ends with
    the same global model; in one process it is an ordinary scikit-learn estimator.
    ``predict`` and ``score`` work on the rows each rank passes, without communication.
    {_PARAMETERS}{_ATTRIBUTES}
    Examples
    --------
    Under ``mpiexec -n 4 python fit.py``, each rank with its own ``X``, ``y``:

    >>> import mpidml
    >>> reg = mpidml.Regressor(model="mlp", hidden=(64,), epochs=20).fit(X, y)
    >>> reg.score(X, y)
    0.97...
    """
    _task = "regression"

    def partial_fit(self, X, y):
        """One more epoch on these rows from the current weights (collective).

        The first call fits one epoch; later calls keep the fitted architecture and
        standardization (parameters changed since take effect at the next `fit`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        return self._continue(X, y)

    def predict(self, X):
        """The predicted target of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._outputs(X)[0]

    def score(self, X, y, sample_weight=None):
        """The coefficient of determination R² on these rows (this rank's).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        float
        """
        y = np.asarray(y, np.float64).reshape(-1)
        w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float64)
        residual = np.sum(w * (y - self.predict(X)) ** 2)
        total = np.sum(w * (y - np.average(y, weights=w)) ** 2)
        return float(1.0 - residual / total) if total > 0 else (1.0 if residual == 0 else 0.0)
