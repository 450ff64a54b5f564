"""Validate HDF5 data, and give every rank its partition.

Rank 0 `describe`s the file (layout, shapes, dtypes, classes) and broadcasts that as a
small JSON document; datasets are opened by name through `formats` (AnnData and pandas
layouts besides plain datasets) and `h5`. `distribute` then fills each rank's preallocated partition, either
by streaming: rank 0 reads the file window by window (a bounded buffer aligned to the
HDF5 chunks) and sends every rank its rows with buffer-based point-to-point messages,
or by having every rank read its own rows (`read`; for compressed data, every rank reads
a slab of windows and passes rows on, so no chunk is decompressed twice). Both give
identical partitions. Values are checked (NaN/inf) by the rank that keeps them, as they
land, and all ranks agree on the verdict before anything trains.
"""
import contextlib
import logging
import os

import h5py
import numpy as np

from ..errors import UsageError
from . import formats
from .h5 import node, open_h5, read_error, reading, short
from .partition import default_block_rows, make_plan, pieces, rows_of, runs_of, slabs, validation_draw

log = logging.getLogger("mpidml")
LABEL_WINDOW = 1 << 20  # labels are read and checked a million rows at a time
BUFFERS = 2  # window buffers per reader: the next window is read while the last one's sends drain
X_TAG = 11  # training rows use tags 11 (X) and 12 (y); test rows 13 and 14
MIN_CHUNK_MB = 0.01  # --chunk-mb 1e-9 made windows of one row: minutes of messages for a small file
LABEL_KINDS = {"i": "integer", "S": "text"}  # as_labels' two kinds


# -- layouts and validation --------------------------------------------------------------
def resolve_layout(f, path, x=None, y=None):
    """Dataset names (x, y, test_x, test_y) for the contract's layouts or explicit names
    (labels named alone: their features are the rest of their frame, or AnnData's X)."""
    if x or y:
        if not y:
            raise UsageError("--x-dataset and --y-dataset go together")
        return x or formats.default_features(f, path, y), y, None, None
    if "train" in f:
        if "test" not in f:
            return "/train/X", "/train/y", None, None
        test = node(f, path, "/test")
        if not isinstance(test, h5py.Group) or "X" not in test or "y" not in test:
            raise UsageError(f"{path}: /test must be a group with datasets X and y")
        return "/train/X", "/train/y", "/test/X", "/test/y"
    hint = formats.layout_hint(f, path)       # AnnData and pandas files: what to name
    if hint:
        raise hint
    if "X" in f:
        return "/X", "/y", None, None
    raise UsageError(f"{path}: no training data (expected /train/X and /train/y, or /X and /y)")


def check_x(f, path, name, label=None):
    """The features `name` (formats.features; `label`: the labels they go with): 2-D (rows,
    features), numeric, not empty."""
    X = formats.features(f, path, name, label)
    if X.ndim != 2:
        raise UsageError(f"{path}: dataset {name} must be 2-D (rows, features), has shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise UsageError(f"{path}: dataset {name} has non-numeric dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise UsageError(f"{path}: dataset {name} is empty (shape {X.shape})")
    return X


def check_xy(f, path, xn, yn):
    """Features `xn` (see check_x) and labels `yn`: one per row, of a label dtype."""
    X, Y = check_x(f, path, xn, yn), formats.labels(f, path, yn)
    if not (Y.ndim == 1 or (Y.ndim == 2 and Y.shape[1] == 1)):
        raise UsageError(f"{path}: dataset {yn} must be 1-D, has shape {Y.shape}")
    if Y.shape[0] != X.shape[0]:
        raise UsageError(f"{path}: {xn} has {X.shape[0]} rows but {yn} has {Y.shape[0]}")
    if Y.dtype.kind not in "fiubSO" or (Y.dtype.kind == "O" and h5py.check_string_dtype(Y.dtype) is None):
        what = "object references" if h5py.check_ref_dtype(Y.dtype) else f"dtype {Y.dtype}"
        raise UsageError(f"{path}: dataset {yn} holds {what}; labels must be numbers or text")
    return X, Y


def _label_chunks(Y, path, name):
    for s in range(0, Y.shape[0], LABEL_WINDOW):
        with reading(path, name):
            yc = np.asarray(Y[s:s + LABEL_WINDOW]).reshape(-1)
        yield s, yc


def as_labels(yc):
    """Labels of a chunk in the form classes are compared in: int64, or bytes for text
    (h5py returns variable-length strings as objects)."""
    if yc.dtype.kind == "O":
        return formats.as_bytes(yc)
    if yc.dtype.kind == "S":
        return yc
    return yc.astype(np.int64)


def label_text(v):
    """A label as its file holds it: 3, 0.5 or 'cat' (not np.bytes_(b'cat'))."""
    if isinstance(v, bytes):
        return repr(v.decode("utf-8", "replace"))
    return repr(v.item() if isinstance(v, np.generic) else v)


def _refuse(where, s, values, bad, what, tail=""):
    """Raise `what` (with {} for the value) naming the first `bad` row of a chunk of
    `values` that starts at file row `s`."""
    if bad.any():
        i = int(np.argmax(bad))
        raise UsageError(f"{where} has {what.format(label_text(values[i]))} at row {s + i}{tail}")


def _class_labels(yc, s, where, hint):
    """A chunk of labels (file rows from `s`) as classes (`as_labels`), refusing what is no
    class as it is: NaN, fractions, integers beyond int64 (they wrapped to negative
    classes) and empty text (a class named "")."""
    if yc.dtype.kind == "f":
        _refuse(where, s, yc, ~np.isfinite(yc), "NaN or inf")
        _refuse(where, s, yc, yc != np.round(yc), "non-integer label {}", f"; {hint}")
    if yc.dtype.kind in "fu":
        _refuse(where, s, yc, yc > np.iinfo(np.int64).max if yc.dtype.kind == "u" else np.abs(yc) >= 2.0 ** 63,
                "label {}", ", beyond the 64-bit integer range of classes")
    labels = as_labels(yc)
    if labels.dtype.kind == "S":
        _refuse(where, s, labels, np.char.strip(labels) == b"", "an empty label")
    return labels


def scan_labels(Y, path, name, task, hint="use --model linear for regression"):
    """Check labels chunk by chunk; returns the sorted classes (classification) or None.
    `hint`: what to do about a fractional class label."""
    classes, where = None, f"{path}: dataset {name}"
    for s, yc in _label_chunks(Y, path, name):
        if task == "regression":
            if yc.dtype.kind not in "fiub":
                raise UsageError(f"{where} holds non-numeric targets; regression needs numbers")
            _refuse(where, s, yc, ~np.isfinite(yc.astype(np.float64)), "NaN or inf")
            continue
        u = np.unique(_class_labels(yc, s, where, hint))
        classes = u if classes is None else np.union1d(classes, u)
    return classes


def check_classes(found, known, path, name, owner):
    """Refuse labels of dataset `name` (sorted `found`) that `owner` (the training labels,
    a model) has no class for, or of another kind: merged in, they were classes that no
    model had learnt."""
    kind, owner_kind = LABEL_KINDS[found.dtype.kind], LABEL_KINDS[known.dtype.kind]
    if kind != owner_kind:
        raise UsageError(f"{path}: dataset {name} holds {kind} labels but {owner} holds {owner_kind} labels")
    unseen = np.setdiff1d(found, known)
    if len(unseen):
        raise UsageError(f"{path}: dataset {name} has label {label_text(unseen[0])}, not a class of {owner}")


def storage(X):
    """How dataset X is stored, as its readers need to know (JSON-able)."""
    return {"chunk_rows": X.chunks[0] if X.chunks else None, "compression": X.compression,
            "chunk_bytes": int(np.prod(X.chunks) * X.dtype.itemsize) if X.chunks else None}


def _window_rows(X, chunk_mb):
    """Rows per read window: the --chunk-mb budget shared by the BUFFERS windows, in whole
    chunks where one fits (or is compressed: it is decompressed whole anyway)."""
    window = max(1, int(chunk_mb * (1 << 20)) // BUFFERS // (X.shape[1] * X.dtype.itemsize))
    chunk_rows = X.chunks[0] if X.chunks else None
    if chunk_rows and (chunk_rows <= window or X.compression):
        window = max(chunk_rows, window // chunk_rows * chunk_rows)
    return window


def describe(path, x=None, y=None, task=None, test_fraction=0.2, block_rows=None,
             partition_seed=0, partition="blocks", chunk_mb=16):
    """See _describe; HDF5 failing on the file's metadata (a corrupt B-tree, say) found
    only while it is walked is one line too."""
    try:
        return _describe(path, x, y, task, test_fraction, block_rows, partition_seed, partition, chunk_mb)
    except RuntimeError as e:
        raise UsageError(f"{path}: corrupt HDF5 file ({short(e)})") from e


def _describe(path, x, y, task, test_fraction, block_rows, partition_seed, partition, chunk_mb):
    """Validate the file and return what every rank needs to know, as a JSON-able dict
    (rank 0: it also warns of a regression on integer labels, and of classes too many
    for their rows)."""
    if chunk_mb < MIN_CHUNK_MB:
        raise UsageError(f"--chunk-mb {chunk_mb:g} is below the minimum {MIN_CHUNK_MB:g}: windows of a few rows "
                         "only multiply the messages")
    with open_h5(path) as f:
        xn, yn, txn, tyn = resolve_layout(f, path, x, y)
        X, Y = check_xy(f, path, xn, yn)
        n, d = X.shape
        if task is None:
            task = "regression" if Y.dtype.kind == "f" else "classification"
        elif task == "regression" and Y.dtype.kind in "iu":
            log.warning(f"mpidml: warning: {path}: dataset {yn} holds integer labels, fitted as numbers "
                        "(regression, --model linear); for classes use --model auto, logistic, softmax or mlp")
        classes = scan_labels(Y, path, yn, task)
        test = None
        if txn:
            TX, TY = check_xy(f, path, txn, tyn)
            if TX.shape[1] != d:
                raise UsageError(f"{path}: {txn} has {TX.shape[1]} features but {xn} has {d}")
            tc = scan_labels(TY, path, tyn, task)
            if classes is not None:
                check_classes(tc, classes, path, tyn, yn)
            test = {"x": txn, "y": tyn, "rows": int(TX.shape[0]), "source": "dataset"}
        elif test_fraction > 0:
            m = int(round(test_fraction * n))
            if m == 0 or m >= n:
                raise UsageError(f"--test-fraction {test_fraction:g} leaves no training or no test rows of {n}")
            test = {"x": xn, "y": yn, "rows": m, "source": "split"}
        if classes is not None and len(classes) < 2:
            raise UsageError(f"{path}: dataset {yn} has a single class; classification needs at least two")
        if classes is not None and sparse_classes(n, len(classes)):
            log.warning(f"mpidml: warning: {path}: dataset {yn} has {len(classes)} classes in {n} rows (fewer than "
                        "5 rows each): if its labels are numbers to fit, use --model linear (regression)")
        label_kind = None
        if classes is not None:
            label_kind = "str" if classes.dtype.kind == "S" else "int"
            classes = [c.decode("utf-8", "replace") for c in classes] if label_kind == "str" \
                else [int(c) for c in classes]
        stored = storage(X)
        return {
            "path": os.path.abspath(path), "x": xn, "y": yn, "rows": int(n), "features": int(d),
            "file_dtype": X.dtype.str, "task": task, "classes": classes, "label_kind": label_kind,
            "test": test, "window_rows": int(_window_rows(X, chunk_mb)),
            "block_rows": int(block_rows or default_block_rows(n, stored["chunk_rows"])),
            "partition_seed": int(partition_seed), "partition": partition, **stored,
        }


def sparse_classes(rows, k):
    """More than 10 classes of fewer than 5 rows each on average: too few to learn a
    class from, and most often numbers to fit (regression targets) stored as integers."""
    return k > 10 and rows < 5 * k


def class_array(info):
    """The classes as a sorted numpy array comparable with `as_labels` output."""
    if info["classes"] is None:
        return None
    if info["label_kind"] == "str":
        return np.array([c.encode() for c in info["classes"]], "S")
    return np.array(info["classes"], np.int64)


def encode_labels(yc, info, dtype, classes):
    """Raw labels -> class indices (int32) or regression targets (`dtype`)."""
    yc = np.asarray(yc).reshape(-1)
    if info["task"] == "regression":
        return yc.astype(dtype)
    lab = as_labels(yc)
    if classes.dtype.kind == "i" and classes[0] == 0 and classes[-1] == len(classes) - 1:
        return lab.astype(np.int32)             # labels 0..k-1 are their own indices
    return np.searchsorted(classes, lab).astype(np.int32)


def plan_for(info, nranks):
    test_rows = info["test"]["rows"] if info["test"] and info["test"]["source"] == "split" else 0
    n_train = info["rows"] - test_rows
    if n_train < nranks:
        raise UsageError(f"{info['path']}: {n_train} training rows cannot be shared by {nranks} ranks "
                         "(each rank needs at least one)", agreed=True)
    return make_plan(info["rows"], nranks, test_rows, info["block_rows"], info["partition_seed"],
                     info["partition"])


def warn_unintended(cfg, info, sizes):
    """Rank 0: warnings for options given (cfg.given) that the data makes legal but surely
    unintended: --batch-size above a rank's training rows (each of its steps takes them
    all), --test-fraction where the file has a test set (it is ignored)."""
    rank = int(np.argmin(sizes))
    if "batch_size" in cfg.given and cfg.batch_size > sizes[rank]:
        log.warning(f"mpidml: warning: --batch-size {cfg.batch_size} is more than the {sizes[rank]} training rows "
                    f"of rank {rank}: each of its steps takes all of them")
    test = info["test"]
    if "test_fraction" in cfg.given and test and test["source"] == "dataset":
        log.warning(f"mpidml: warning: {info['path']} has a test set ({test['x']}): --test-fraction "
                    f"{cfg.test_fraction:g} is ignored")


# -- distribution -------------------------------------------------------------------------
class Partition:
    """This rank's training rows (X, y) and its share of the test rows (test_X, test_y), in
    memory (stream.StreamedPart: left in the file)."""
    streamed = False

    def __init__(self, X, y, test_X=None, test_y=None, sizes=None, test_sizes=None):
        self.X, self.y, self.test_X, self.test_y = X, y, test_X, test_y
        self.sizes, self.test_sizes = sizes, test_sizes
        self.val_X = self.val_y = None
        self.val_sizes = [0] * len(sizes) if sizes is not None else None

    @property
    def local_rows(self):
        return len(self.y)

    def holds(self, kind):
        """Whether this job has rows of `kind` ("test", "val")."""
        return getattr(self, kind + "_X") is not None

    def hold_out(self, fraction, seed, rank):
        """Hold out `fraction` of each rank's training rows for validation (seeded, per
        rank: a representative sample wherever the partitions came from; see
        partition.validation_draw). Sets val_X/val_y and turns `sizes` into the training
        rows each rank keeps."""
        held, runs = validation_draw(self.sizes, fraction, seed, rank)
        if runs is None:
            return
        rows = rows_of(runs)
        keep = np.ones(len(self.y), bool)
        keep[rows] = False
        self.val_X, self.val_y = self.X[rows], self.y[rows]
        self.X, self.y = self.X[keep], self.y[keep]
        self.val_sizes = held
        self.sizes = [n - h for n, h in zip(self.sizes, held)]

    def close(self, complete=False):
        pass


class Job:
    """Rows of one dataset pair (`rows` long) bound for the ranks: `ranges[r]` as in
    partition.Plan, received into this rank's (X, y) with message tags `tag`, `tag + 1`."""

    def __init__(self, x, y, rows, ranges, X, Y, tag):
        self.x, self.y, self.rows, self.ranges, self.X, self.Y, self.tag = x, y, rows, ranges, X, Y, tag


def first_nonfinite(block):
    """Index of the first row of `block` holding NaN or inf, or None. One fast pass (a dot
    product with itself is finite unless a value is not, or the squares overflow); the
    exact check only if not."""
    if block.dtype.kind != "f" or not block.size:
        return None
    flat = block.reshape(-1)
    quick = np.dot(flat, flat) if block.dtype in (np.float32, np.float64) else np.add.reduce(flat)
    if np.isfinite(quick):
        return None
    ok = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
    return None if ok.all() else int(np.argmin(ok))


def nonfinite_error(block, runs, path, name, file_dtype=None):
    """A UsageError naming the file row of the first NaN/inf in `block`, whose rows are
    the file rows `runs` ((start, length) pairs) in order; None if all are finite.
    `file_dtype`: the dataset's, where wider than the block's: its values beyond the
    block's range were read as inf, and the message says so."""
    bad = first_nonfinite(block)
    if bad is None:
        return None
    ends = np.cumsum(runs[:, 1])
    i = int(np.searchsorted(ends, bad, side="right"))
    row = int(runs[i, 0] + bad - (ends[i] - runs[i, 1]))
    if file_dtype is not None and np.dtype(file_dtype).kind == "f" and np.dtype(file_dtype).itemsize > block.itemsize:
        return UsageError(f"{path}: dataset {name} has NaN, inf or a value beyond {block.dtype}'s range at row {row} "
                          f"(--dtype {np.dtype(file_dtype).name} reads it as it is)")
    return UsageError(f"{path}: dataset {name} has NaN or inf at row {row}")


def windows(ranges, window_rows, n_rows):
    """The rows of `ranges` (a Plan's, in file order) window by window: yields (window,
    stretch, runs), where runs is a (k, 2) array of (file_start, length) that fills the
    partition rows `stretch` (a slice)."""
    p = pieces(ranges, window_rows, n_rows)
    cuts = np.flatnonzero(np.diff(p[:, 0])) + 1
    for group in np.split(p, cuts) if len(p) else []:
        lo = int(group[0, 3])
        yield int(group[0, 0]), slice(lo, lo + int(group[:, 2].sum())), group[:, 1:3]


class Source:
    """The datasets of a Job (y None: features only) in an open file, read run by run
    straight into the caller's arrays (rows.Rows), labels encoded and features checked as
    each stretch lands, while it is still in cache. A Source that cannot read at all (the
    file did not open here, or a dataset changed since `describe`) holds that error: it
    fills zeros and returns it, so a reader still sends every message the others await."""

    def __init__(self, opened, info, job, dtype, classes):
        self.info, self.job, self.dtype, self.classes = info, job, dtype, classes
        self.error = opened if isinstance(opened, UsageError) else None
        if self.error is None:
            try:
                self._bind(*opened)
            except UsageError as e:
                self.error = e

    def _bind(self, f, fd):
        path, job = self.info["path"], self.job
        with reading(path, job.x):
            self.xs = self._opened(formats.features(f, path, job.x, job.y), job.x)
            self.X = formats.reader(self.xs, self.dtype, fd)
        self.ys, self.Y = None, None    # variable-length text labels (or none) go through h5py, which converts them
        if job.y:
            with reading(path, job.y):
                self.ys = self._opened(formats.labels(f, path, job.y), job.y)
                if self.ys.dtype.kind != "O":
                    self.Y = formats.reader(self.ys, self.ys.dtype, fd)

    def _opened(self, ds, name):
        """Dataset `name` (formats.features or labels), as long as it still has the rows
        `describe` saw: a writer growing the file meanwhile also moves the metadata under
        the reader."""
        path, rows = self.info["path"], self.job.rows
        if ds.shape[0] != rows:
            raise UsageError(f"{path}: dataset {name} has {ds.shape[0]} rows now, {rows} when it was opened: "
                             "another program is writing the file; use it once the writer is done")
        return ds

    def fill(self, runs, X, Y=None, check=True):
        """Read the file rows `runs` ((start, length) pairs) into X and Y (None: no labels),
        in order; returns a UsageError for a read error or (if `check`) naming the file row
        of the first NaN/inf, or None."""
        try:
            if self.error:
                raise self.error
            raw_y = self._read(runs, X)
        except UsageError as e:
            X[...] = 0      # finite: whoever receives these rows must not report garbage as NaN
            return e
        if Y is not None:
            Y[...] = encode_labels(raw_y, self.info, Y.dtype, self.classes)
        return nonfinite_error(X, runs, self.info["path"], self.job.x, self.xs.dtype) if check else None

    def _read(self, runs, X):
        """The runs' features into X; returns their raw labels (None without labels)."""
        job, labels = self.job, self.ys is not None
        raw_y = np.empty(len(X), self.ys.dtype) if self.Y else []
        pos, name = 0, job.x
        try:
            for start, length in runs:
                start, length = int(start), int(length)
                name = job.x
                self.X.read(start, length, X[pos:pos + length])
                name = job.y
                if self.Y:
                    self.Y.read(start, length, raw_y[pos:pos + length])
                elif labels:
                    raw_y.extend(np.asarray(self.ys[start:start + length]).reshape(-1))
                pos += length
        except OSError as e:
            raise read_error(self.info["path"], name, e) from e
        if not labels:
            return None
        return raw_y if self.Y else np.array(raw_y, dtype=object)


def file_identity(path, fd=None):
    """What changes when a file is written, truncated or replaced: (size, modification and
    change times, inode), of its open descriptor `fd` where given."""
    try:
        st = os.fstat(fd) if fd is not None else os.stat(path)
    except OSError as e:
        raise UsageError(f"{path}: cannot read the file ({e.strerror})", everywhere=True) from None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def read_rows(info, start, stop, dtype):
    """File rows [start, stop) of info's datasets x (features as `dtype`) and y (class
    indices, or float64 targets; None without y), for one rank's slab at evaluate and
    predict: (X, y, a UsageError or None)."""
    runs = np.array([[start, stop - start]] if stop > start else np.empty((0, 2)), np.int64)
    return _read_runs(info, (info["x"], info["y"], info["rows"]), runs, dtype, np.float64)


def _read_runs(info, datasets, runs, dtype, target_dtype):
    """The file rows `runs` ((start, length) pairs) of `datasets` (features, labels or None,
    their rows): features as `dtype`, labels as class indices or `target_dtype` targets;
    (X, y, a UsageError or None)."""
    x, y, total = datasets
    n = int(runs[:, 1].sum())
    X = np.empty((n, info["features"]), dtype)
    Y = np.empty(n, target_dtype if info["task"] == "regression" else np.int32) if y else None
    job = Job(x, y, total, None, X, Y, None)
    with open_for(info) as opened:
        err = Source(opened, info, job, dtype, class_array(info)).fill(runs, X, Y)
    return X, Y, err


class Unseen:
    """A meter that shows nothing: where the caller passes none (`meter(what, total,
    row_bytes, share)` makes one with tick(rows) and close(); files.progress.Progress is
    the job's, so that reading data never decides how progress looks)."""

    def __init__(self, *args, **kwargs):
        pass

    def tick(self, rows):
        pass

    def close(self):
        pass


def distribute(group, info, how="scatter", dtype=np.float32, meter=Unseen):
    """Generator: this rank's Partition. `how` is 'scatter' (rank 0 streams) or 'read';
    `meter`: makes what shows this rank's progress (see Unseen)."""
    plan = plan_for(info, group.size)
    rank, d = group.rank, info["features"]
    ydtype = dtype if info["task"] == "regression" else np.int32

    def arrays(n):
        return np.empty((int(n), d), dtype), np.empty(int(n), ydtype)

    X, y = arrays(plan.sizes[rank])
    jobs = [Job(info["x"], info["y"], info["rows"], plan.ranges, X, y, X_TAG)]
    part = Partition(X, y, sizes=[int(v) for v in plan.sizes])
    test = info["test"]
    if test:
        if test["source"] == "split":
            ranges, sizes = plan.test, plan.test_sizes     # rows of the training dataset
            rows = info["rows"]
        else:
            ranges, sizes = slabs(test["rows"], group.size)
            rows = test["rows"]
        part.test_X, part.test_y = arrays(sizes[rank])
        part.test_sizes = [int(v) for v in sizes]
        jobs.append(Job(test["x"], test["y"], rows, ranges, part.test_X, part.test_y, X_TAG + 2))
    total = sum(int(s) for s in plan.sizes) + sum(part.test_sizes or [])
    meter = meter("distributing", total, d * np.dtype(dtype).itemsize, 1.0 if how == "scatter" else 1 / group.size)
    err = None
    try:
        if how not in ("scatter", "read"):
            raise UsageError(f"--distribute {how!r}: expected scatter or read")
        if how == "read" and not info["compression"]:
            err = _read_own(group, info, jobs, dtype, meter)
        else:
            # scatter: rank 0 reads every window. read, compressed: every rank reads a
            # slab of windows, so each chunk is decompressed once, not once per rank.
            readers = 1 if how == "scatter" else group.size
            passes = {}     # one pass per file dataset: split test rows travel with the training rows
            for job in jobs:
                passes.setdefault(job.x, []).append(job)
            for batch in passes.values():
                verdict = yield from _stream(group, info, batch, dtype, meter, readers)   # every pass, always:
                err = err or verdict                                    # the readers send regardless
    except UsageError as e:
        err = e
    meter.close()
    yield from group.agree(err, "validate")
    return part


@contextlib.contextmanager
def open_for(info):
    """The file twice: for HDF5 (with a chunk cache that holds a compressed chunk or two,
    so runs of rows cut from one chunk do not decompress it once per run) and for raw
    reads (os.open); or the UsageError when this rank cannot open it (for a Source to hold:
    a reader that raised here would leave the others waiting for its messages)."""
    cache = 2 * info["chunk_bytes"] if info["compression"] and info["chunk_bytes"] else None
    try:
        f = open_h5(info["path"], cache)
    except UsageError as e:
        yield e
        return
    with f:
        try:
            fd = os.open(info["path"], os.O_RDONLY)
        except OSError:
            fd = None                           # HDF5 reads only
        try:
            yield f, fd
        finally:
            if fd is not None:
                os.close(fd)


def _stream(group, info, jobs, dtype, meter, readers=1):
    """Generator: ranks 0..readers-1 each read a slab of windows of the jobs' dataset and
    send every rank its rows of each window as one message (a rank's rows are in file
    order, so they fill one stretch of its partition); rows a reader keeps go straight
    into its partition. Every rank checks the rows it receives (so the NaN/inf pass runs
    on all ranks at once) and returns its verdict, naming the file row."""
    rank = group.rank
    n, W = jobs[0].rows, info["window_rows"]
    nwin = -(-n // W)

    def reader(w):
        return w * readers // nwin

    posted = []
    for job in jobs:
        for w, rows, runs in windows(job.ranges[rank], W, n):
            source = reader(w)
            if source != rank:
                posted.append((job, rows, runs, group.comm.Irecv(job.X[rows], source=source, tag=job.tag),
                               group.comm.Irecv(job.Y[rows], source=source, tag=job.tag + 1)))
    err = None
    if rank < readers:
        err = yield from _send_windows(group, info, jobs, dtype, meter, {w for w in range(nwin) if reader(w) == rank})
    for job, rows, runs, rx, ry in posted:
        yield from group.wait(rx, "scatter")
        yield from group.wait(ry, "scatter")
        err = err or nonfinite_error(job.X[rows], runs, info["path"], job.x, info["file_dtype"])
    return err


def _send_windows(group, info, jobs, dtype, meter, mine):
    """Generator: read the windows `mine` and send their rows on (pass_on); this rank's own
    rows go straight into its partition, checked. A read error is kept, not raised: the
    others are waiting for these messages."""
    n, W = jobs[0].rows, info["window_rows"]
    # window by window; in each, the others' rows first, so they travel while this rank reads its own
    todo = sorted(((w, r == group.rank, j, r), rows, runs) for j, job in enumerate(jobs) for r in range(group.size)
                  for w, rows, runs in windows(job.ranges[r], W, n) if w in mine)
    with open_for(info) as opened:
        src = Source(opened, info, jobs[0], dtype, class_array(info))

        def keep(j, rows, runs, xb, yb, err):
            return src.fill(runs, jobs[j].X[rows], jobs[j].Y[rows])
        return (yield from pass_on(group, src, jobs, todo, n, (dtype, jobs[0].Y.dtype), meter, keep, "scatter"))


def pass_on(group, src, jobs, todo, n, dtypes, meter, keep, label):
    """Generator: the rows of `todo` (((window, own, job index, rank), rows, runs), window by
    window, of a dataset of `n` rows) read through `src` into BUFFERS window buffers and sent, one message pair per rank
    and window, tagged by `jobs[j].tag` (the next window is read while the last one's sends
    drain), `meter` ticked once a window. A rank's own rows go to `keep(j, rows, runs, xb,
    yb, err)` (buffer room of their size, if it needs any; the first error so far), which
    returns its verdict. Every
    stretch is read and every message sent whatever fails, as the others wait for them;
    returns the first error. The sender of data.distribute (scatter, and read's
    compressed slabs) and of data.stage."""
    W = src.info["window_rows"]
    xbufs = [np.empty((min(W, n), src.info["features"]), dtypes[0]) for _ in range(BUFFERS)]
    ybufs = [np.empty(min(W, n), dtypes[1]) for _ in range(BUFFERS)]
    pending, slot, used, last, moved, err = [[] for _ in range(BUFFERS)], -1, 0, -1, 0, None
    for (w, own, j, r), rows, runs in todo:
        m = rows.stop - rows.start
        if w != last:
            meter.tick(moved)
            slot, last, used, moved = (slot + 1) % BUFFERS, w, 0, 0
            for req in pending[slot]:
                yield from group.wait(req, label)
            pending[slot] = []
        xb, yb = xbufs[slot][used:used + m], ybufs[slot][used:used + m]
        used += m
        moved += m
        if own:
            verdict = keep(j, rows, runs, xb, yb, err)
            err = err or verdict
            continue
        verdict = src.fill(runs, xb, yb, check=False)
        err = err or verdict
        tag = jobs[j].tag
        pending[slot] += [group.comm.Isend(xb, dest=r, tag=tag), group.comm.Isend(yb, dest=r, tag=tag + 1)]
        group.poke()
    meter.tick(moved)
    for req in sum(pending, []):
        yield from group.wait(req, label)
    return err


def _read_own(group, info, jobs, dtype, meter):
    """Every rank reads its own rows of every job straight into its partition, a window
    of file rows at a time (so each stretch is checked while still in cache)."""
    classes = class_array(info)
    with open_for(info) as opened:
        for job in jobs:
            src = Source(opened, info, job, dtype, classes)
            for _, rows, runs in windows(job.ranges[group.rank], info["window_rows"], job.rows):
                err = src.fill(runs, job.X[rows], job.Y[rows])
                if err:
                    return err
                meter.tick(rows.stop - rows.start)
    return None


# -- standardization ---------------------------------------------------------------------
class Moments:
    """Per-column count, mean and sum of squared deviations (M2) of rows fed in order, in
    float64: float32 values around 1e20 square beyond float32's range. The rows are taken
    in fixed blocks of their sequence (BLOCK_BYTES of float64, so wide rows take no more
    memory than narrow ones), whatever stretches they come in, each
    block's moments computed around its own mean (no cancellation) and merged by Chan et
    al.'s formula: one pass over the data (a stream reads it once), and the same rows in
    the same order give the same bits, in memory or chunk by chunk."""
    BLOCK_BYTES = 16 << 20

    def __init__(self, columns):
        self.n, self.mean, self.m2 = 0, np.zeros(columns), np.zeros(columns)
        self.rows = max(64, min(8192, self.BLOCK_BYTES // (8 * columns)))
        self.block, self.dev, self.filled = np.empty((self.rows, columns)), np.empty((self.rows, columns)), 0

    def add(self, X, rows=None):
        """The rows of X (2-D), or with `rows` the rows X[rows], next in the sequence."""
        count = len(X) if rows is None else len(rows)
        pos = 0
        while pos < count:
            take = min(self.rows - self.filled, count - pos)
            part = X[pos:pos + take] if rows is None else X[rows[pos:pos + take]]
            self.block[self.filled:self.filled + take] = part.reshape(take, -1)
            self.filled += take
            pos += take
            if self.filled == self.rows:
                self._merge_block()

    def _merge_block(self):
        block, dev = self.block[:self.filled], self.dev[:self.filled]
        with np.errstate(over="ignore", invalid="ignore"):      # what overflows, _check_scale names
            mean = np.add.reduce(block, axis=0) / self.filled
            np.subtract(block, mean, out=dev)
            np.multiply(dev, dev, out=dev)
            self.merge(self.filled, mean, np.add.reduce(dev, axis=0))
        self.filled = 0

    def merge(self, n, mean, m2):
        """Fold in the moments of `n` more rows."""
        if not n:
            return
        total = self.n + n
        with np.errstate(over="ignore", invalid="ignore"):
            delta = mean - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + m2 + delta * delta * (self.n * n / total)
        self.n = total

    def finish(self):
        """The moments of every row fed: (n, mean, M2)."""
        if self.filled:
            self._merge_block()
        return self.n, self.mean, self.m2


def global_stats(group, moments, dtype, name="the features"):
    """Generator: global per-column mean and std from each rank's Moments: every rank's
    (n, mean, M2) reach every rank (one Allreduce of a table of zeros but its own row) and
    are merged in rank order, so all ranks hold the same bits. `name` (file: dataset) is
    named when a column's scale does not fit `dtype`, the data's."""
    n, mean, m2 = moments.finish()
    d = len(mean)
    table = np.zeros((group.size, 2 * d + 1))
    table[group.rank] = np.concatenate([[n], mean, m2])
    yield from group.allreduce(table, "stats")
    total = Moments(d)
    for row in table:
        total.merge(int(row[0]), row[1:d + 1], row[d + 1:])
    with np.errstate(over="ignore", invalid="ignore"):
        std = np.sqrt(total.m2 / max(total.n, 1))
    _check_scale(total.mean, std, np.dtype(dtype), name)
    std[std == 0] = 1.0
    return total.mean, std


def _check_scale(mean, std, dtype, name):
    """Refuse statistics that do not fit `dtype` (features would be scaled by inf, to 0);
    every rank holds the same sums, so all raise it together."""
    fits = np.isfinite(mean) & np.isfinite(std) & (std <= np.finfo(dtype).max)
    if not fits.all():
        j = int(np.argmin(fits))
        raise UsageError(f"{name}: column {j} has mean {mean[j]:.3g} and std {std[j]:.3g}, beyond what {dtype} "
                         "standardizes; rescale the column", agreed=True)


def read_file_rows(info, rows, dtype, test=False):
    """The sorted file `rows` of the training datasets (or with `test`, of the test
    datasets), features as `dtype` and labels encoded as distribute gives them: (X, y, a
    UsageError or None). For the survivors of a lost rank, who take its rows over."""
    if test and info["test"]["source"] == "dataset":
        datasets = (info["test"]["x"], info["test"]["y"], info["test"]["rows"])
    else:
        datasets = (info["x"], info["y"], info["rows"])
    return _read_runs(info, datasets, runs_of(rows), dtype, dtype)
