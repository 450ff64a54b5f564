"""Rows in memory as a training job's data: each rank passes its own shard (the user
shards, as with Horovod), so there is nothing to read or send; the ranks only agree on
what the rows are (counts, features, classes), as data.distribute.describe does for a file.

ArraySource is job.Job's `source` for the estimators' fit and partial_fit. Labels are
kept in the form data.as_labels gives file labels (int64, or UTF-8 bytes for text), so
that classes are united, encoded and stored exactly as for an HDF5 file.
"""
import numpy as np

from ..errors import UsageError
from .distribute import Partition, class_array, encode_labels

NAME = "<arrays>"       # where info names the file: in messages and the metrics document


def labels(y):
    """Class labels in data.as_labels' form; ValueError for values that are not classes
    (the messages scikit-learn gives)."""
    y = np.asarray(y)
    if y.dtype.kind == "O":
        if all(isinstance(v, str) for v in y):
            y = y.astype(str)
        elif any(isinstance(v, (str, bytes)) for v in y):
            raise ValueError("Mix of label input types (string and number)")
        else:
            y = y.astype(np.float64)
    if y.dtype.kind == "U":
        return np.char.encode(y, "utf-8")
    if y.dtype.kind == "S":
        return y
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise ValueError("Input y contains NaN or infinity.")
        if np.any(y != np.round(y)):
            raise ValueError("Unknown label type: continuous (class labels must be integers or text; "
                             "use mpidml.Regressor for continuous targets)")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"Unknown label type: y of dtype {y.dtype}")
    if y.dtype.kind in "uf":       # as for a file's labels (data.scan_labels): they would wrap to negative classes
        beyond = y > np.iinfo(np.int64).max if y.dtype.kind == "u" else np.abs(y) >= 2.0 ** 63
        if beyond.any():
            i = int(np.argmax(beyond))
            raise ValueError(f"y has label {y[i]!r} at row {i}, beyond the 64-bit integer range of classes")
    return y.astype(np.int64)


def as_json(classes):
    """Sorted unique labels as JSON values (ints, or text), and their kind."""
    if classes.dtype.kind == "S":
        return [c.decode("utf-8", "replace") for c in classes], "str"
    return [int(c) for c in classes], "int"


class ArraySource:
    """This rank's rows X (2-D, finite), y (labels as `labels` gives them, or regression
    targets) for a `task`; `classes`: the model's classes when they are known already
    (partial_fit), else the labels of all ranks. `error`: what was wrong with this rank's
    rows (the exception the check raised): every rank raises once they all arrived, this
    one that exception, the others a UsageError with its message."""

    def __init__(self, X, y, task, classes=None, error=None):
        self.X, self.y, self.task, self.classes, self.error = X, y, task, classes, error

    def describe(self, group):
        """Generator (collective): data.distribute.describe's info for the rows of every rank together."""
        named = None if self.error is None else UsageError(f"rank {group.rank}: {self.error}")
        try:
            yield from group.agree(named, "validate")
        except UsageError:
            if self.error is not None:
                raise self.error from None      # this rank's own, as the check raised it
            raise
        mine = [len(self.X), int(self.X.shape[1]), None]
        if self.task == "classification":
            mine[2] = as_json(np.unique(self.y))
        shards = yield from group.gather_json(mine, label="describe")
        return (yield from group.on_root(lambda: self._unite(shards), "describe"))

    def _unite(self, shards):
        """Rank 0: the info of every rank's rows, or a UsageError naming the rank that differs."""
        rows, features = [n for n, _, _ in shards], shards[0][1]
        for rank, (n, d, _) in enumerate(shards):
            if d != features:
                raise UsageError(f"rank {rank} passes {d} features, rank 0 passes {features}")
            if n == 0:
                raise UsageError(f"rank {rank} passes no rows; every rank needs at least one")
        classes = kind = None
        if self.task == "classification":
            kinds = {k for _, _, (_, k) in shards}
            if len(kinds) > 1:
                raise UsageError("Mix of label input types (string and number) across the ranks")
            kind = kinds.pop()
            seen = sorted(set().union(*(c for _, _, (c, _) in shards)))
            if self.classes is not None:
                classes, kind = as_json(np.unique(labels(self.classes)))
                unknown = sorted(set(seen) - set(classes))
                if unknown:
                    raise UsageError(f"y contains labels not in classes: {unknown[:5]}")
            else:
                classes = seen
            if len(classes) < 2:
                raise UsageError(f"y has one class ({classes[0]!r}); classification needs at least two")
        return {"path": NAME, "x": "X", "y": "y", "rows": sum(rows), "features": features, "task": self.task,
                "classes": classes, "label_kind": kind, "test": None, "sizes": rows,
                "partition": "arrays", "block_rows": 0, "partition_seed": 0}

    def distribute(self, group, info, how, dtype):
        """Generator: this rank's Partition, copies in `dtype` (the job standardizes them in
        place; the caller's arrays stay as they are). No messages: the rows are here."""
        yield from ()
        X = np.array(self.X, dtype=dtype, order="C")
        if info["task"] == "regression":
            y = np.array(self.y, dtype=dtype).reshape(-1)
        else:
            y = encode_labels(self.y, info, dtype, class_array(info))
        return Partition(X, y, sizes=list(info["sizes"]))
