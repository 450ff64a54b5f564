"""Run under mpiexec by tests/test_fuzz.py: one hostile use of the Python API on every rank.

  python fuzz_api.py CASE OUTDIR SEED

A user's script as the API promises it may be written: bad arguments raise ValueError (or
TypeError; MemoryError for sizes no machine has) on every rank together, a diverged run
DivergedError, a stalled peer StallError. Those end this script as the command line ends:
one `mpidml: error:` line (rank 0, the message's first line), the contract's exit code
(2, 3, 4). Any other exception escapes with its traceback: an internal error, which the
fuzz test reports. Each rank writes what happened to OUTDIR/outcome.RANK,
so that the test can see ranks that disagree. A fit that succeeds is checked where a wrong
answer would be silent (classes that are not the labels given).
"""
import resource
import signal
import sys

resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
signal.alarm(60)                     # no rank outlives a timed-out launch for long

from mpidml.runtime.threads import pin_blas_threads  # noqa: E402

pin_blas_threads([])

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import mpidml  # noqa: E402
from mpidml.errors import DivergedError, StallError  # noqa: E402

comm = MPI.COMM_WORLD
rank = comm.rank
name, outdir, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng([seed, rank])


def blobs(n=60, d=4, k=3):
    """This rank's rows: an easy classification set with every class present."""
    y = rng.permutation(np.arange(n) % k)
    X = rng.standard_normal((n, d)) + 3 * np.eye(k, d)[y]
    return X, y


def fit(X, y, estimator="Classifier", **params):
    """Fit with one epoch unless the case says otherwise; the estimator fitted."""
    params.setdefault("epochs", 1)
    return getattr(mpidml, estimator)(**params).fit(X, y)


def planted(a, value):
    """A float copy of `a` with `value` in a random row (all of it, for X)."""
    a = np.array(a, dtype=float)
    a[int(rng.integers(len(a)))] = value
    return a


X_CHECK = blobs()[0]         # rows to predict after a fit


def same_classes(clf, y):
    """The fitted classes are the labels given, as given (no wrap, no merge)."""
    got = np.asarray(clf.classes_)
    assert set(got.tolist()) == set(np.unique(y).tolist()), f"classes {got.tolist()} for labels {np.unique(y).tolist()}"
    predicted = clf.predict(X_CHECK)
    assert set(predicted.tolist()) <= set(got.tolist()), f"predictions {set(predicted.tolist())} not among classes"


def uint64_labels_huge():
    X, y = blobs()
    y = y.astype(np.uint64) + np.uint64(2 ** 63)
    same_classes(fit(X, y), y)


def uint64_labels_max():
    X, y = blobs()
    y = np.uint64(2 ** 64 - 1) - y.astype(np.uint64)
    same_classes(fit(X, y), y)


def int64_labels_extremes():
    X, y = blobs()
    y = np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max])[y]
    same_classes(fit(X, y), y)


def float_labels_above_2_53():
    X, y = blobs()
    same_classes(fit(X, y + 2.0 ** 53), y + 2.0 ** 53)


def nan_row():
    X, y = blobs()
    fit(planted(X, np.nan), y)


def nan_row_on_rank_1():
    X, y = blobs()
    fit(planted(X, np.nan) if rank == 1 else X, y)


def inf_row():
    X, y = blobs()
    fit(planted(X, np.inf), y)


def nan_label():
    X, y = blobs()
    fit(X, planted(y, np.nan))


def nan_target():
    X, y = blobs()
    fit(X, planted(y, np.nan), "Regressor")


def zero_rows():
    fit(np.zeros((0, 4)), np.zeros(0, int))


def zero_rows_on_rank_2():
    X, y = blobs()
    fit(X[:0] if rank == 2 else X, y[:0] if rank == 2 else y)


def x_1d():
    X, y = blobs()
    fit(X[:, 0], y)


def x_3d():
    X, y = blobs()
    fit(X.reshape(60, 2, 2), y)


def x_strings():
    X, y = blobs()
    fit(X.astype(str), y)


def x_complex():
    X, y = blobs()
    fit(X + 1j, y)


def lengths_differ():
    X, y = blobs()
    fit(X, y[:-3])


def features_differ_on_rank_2():
    X, y = blobs(d=5 if rank == 2 else 4)
    fit(X, y)


def classes_differ_by_rank():
    X, y = blobs()
    if rank == 1:
        y = y % 2
    clf = fit(X, y)
    assert np.asarray(clf.classes_).tolist() == [0, 1, 2], f"rank {rank}: classes {clf.classes_}"


def regressor_on_strings():
    X, y = blobs()
    fit(X, np.array(["a", "b", "c"])[y], "Regressor")


def partial_fit_unknown_class():
    X, y = blobs()
    mpidml.Classifier(epochs=1).partial_fit(X, y, classes=[0, 1])


def param(**params):
    def run():
        X, y = blobs()
        fit(X, y, **params)
    return run


def param_on_rank_1(**params):
    """Rank 1 alone passes other parameters: the command line refuses ranks that disagree."""
    def run():
        X, y = blobs()
        fit(X, y, **(params if rank == 1 else {}))
    return run


def fit_on_rank_0_only():
    """The other ranks never call fit: rank 0 must end within its stall timeout (exit 4)."""
    if rank == 0:
        X, y = blobs()
        fit(X, y, stall_timeout=3)


def train_unknown_keyword():
    mpidml.train(epochs=1, colour="blue")


def train_nan_lr():
    mpidml.train(epochs=1, lr=float("nan"))


CASES = {f.__name__: f for f in (
    uint64_labels_huge, uint64_labels_max, int64_labels_extremes, float_labels_above_2_53, nan_row,
    nan_row_on_rank_1, inf_row, nan_label, nan_target, zero_rows, zero_rows_on_rank_2, x_1d, x_3d, x_strings,
    x_complex, lengths_differ, features_differ_on_rank_2, classes_differ_by_rank, regressor_on_strings,
    partial_fit_unknown_class, fit_on_rank_0_only, train_unknown_keyword, train_nan_lr)}
CASES.update({
    "epochs_zero": param(epochs=0), "epochs_negative": param(epochs=-1), "epochs_fraction": param(epochs=1.5),
    "epochs_string": param(epochs="3"), "epochs_bool": param(epochs=True), "lr_nan": param(lr=float("nan")),
    "lr_negative": param(lr=-1.0), "lr_string": param(lr="fast"), "hidden_zero": param(model="mlp", hidden=(0,)),
    "hidden_string": param(model="mlp", hidden="a"), "hidden_huge": param(model="mlp", hidden=(10 ** 12,)),
    "batch_huge": param(batch_size=10 ** 30), "model_unknown": param(model="svm"),
    "optimizer_unknown": param(optimizer="rmsprop"), "seed_negative": param(seed=-1), "seed_2_70": param(seed=2 ** 70),
    "stall_timeout_nan": param(stall_timeout=float("nan")),
    "warmup_huge": param(epochs=2, batch_size=8, warmup_epochs=1e308),
    "validation_tiny": param(validation_fraction=1e-9, early_stopping=1, epochs=3),
    "validation_one": param(validation_fraction=1.0),
    "lr_on_rank_1": param_on_rank_1(lr=0.5), "model_on_rank_1": param_on_rank_1(model="mlp"),
    "epochs_on_rank_1": param_on_rank_1(epochs=4), "seed_on_rank_1": param_on_rank_1(seed=7),
})


def main():
    code, line = 0, ""
    try:
        CASES[name]()
    except StallError as e:
        code, line = 4, str(e)
    except DivergedError as e:
        code, line = 3, str(e)
    except (ValueError, TypeError, MemoryError) as e:     # scikit-learn's messages may run on: the first line
        code, line = 2, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    with open(f"{outdir}/outcome.{rank}", "w") as f:
        f.write(f"{code}\n")
    if code and rank == 0:
        print(f"mpidml: error: {line}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
