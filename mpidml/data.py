"""Open and validate HDF5 data, and give every rank its partition.

Rank 0 `describe`s the file (layout, shapes, dtypes, classes) and broadcasts that as a
small JSON document. `distribute` then fills each rank's preallocated partition, either
by streaming: rank 0 reads the file window by window (a bounded buffer aligned to the
HDF5 chunks) and sends every rank its rows with buffer-based point-to-point messages,
or by having every rank read its own rows (`read`). Both give identical partitions.
Values are checked (NaN/inf, labels) on the reading rank while the data streams, and all
ranks agree on the verdict before anything trains.
"""
import os

import h5py
import numpy as np

from .errors import UsageError
from .partition import default_block_rows, make_plan, pieces

X_TAG, Y_TAG = 11, 12
TEST = -1  # destination of held-out rows (kept on rank 0)


# -- opening and validating ------------------------------------------------------------
def open_h5(path):
    """Open an HDF5 file read-only, or raise a UsageError that says what is wrong."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory, not an HDF5 file")
    try:
        if not h5py.is_hdf5(path):
            raise UsageError(f"{path}: not an HDF5 file")
        return h5py.File(path, "r")
    except UsageError:
        raise
    except Exception as e:  # truncated or corrupt files raise OSError from HDF5
        raise UsageError(f"{path}: cannot read HDF5 file ({_short(e)})") from e


def _short(e):
    return str(e).split("\n")[0][:200]


def _dataset(f, path, name):
    if name not in f:
        raise UsageError(f"{path}: no dataset {name}")
    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        raise UsageError(f"{path}: {name} is a group, not a dataset")
    return ds


def resolve_layout(f, path, x=None, y=None):
    """Dataset names (x, y, test_x, test_y) for the contract's layouts or explicit names."""
    if x or y:
        if not (x and y):
            raise UsageError("--x-dataset and --y-dataset go together")
        return x, y, None, None
    if "train" in f:
        tx, ty = ("/test/X", "/test/y") if "test" in f else (None, None)
        if "test" in f and ("X" not in f["test"] or "y" not in f["test"]):
            raise UsageError(f"{path}: group /test needs datasets X and y")
        return "/train/X", "/train/y", tx, ty
    if "X" in f:
        return "/X", "/y", None, None
    raise UsageError(f"{path}: no training data (expected /train/X and /train/y, or /X and /y)")


def _check_xy(f, path, xn, yn):
    X, Y = _dataset(f, path, xn), _dataset(f, path, yn)
    if X.ndim != 2:
        raise UsageError(f"{path}: dataset {xn} must be 2-D (rows, features), has shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise UsageError(f"{path}: dataset {xn} has non-numeric dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise UsageError(f"{path}: dataset {xn} is empty (shape {X.shape})")
    if not (Y.ndim == 1 or (Y.ndim == 2 and Y.shape[1] == 1)):
        raise UsageError(f"{path}: dataset {yn} must be 1-D, has shape {Y.shape}")
    if Y.shape[0] != X.shape[0]:
        raise UsageError(f"{path}: {xn} has {X.shape[0]} rows but {yn} has {Y.shape[0]}")
    if Y.dtype.kind not in "fiubSO":
        raise UsageError(f"{path}: dataset {yn} has unsupported label dtype {Y.dtype}")
    return X, Y


def _label_chunks(Y, rows=1 << 20):
    for s in range(0, Y.shape[0], rows):
        yield s, np.asarray(Y[s:s + rows]).reshape(-1)


def _as_labels(yc, task):
    """Labels of a chunk in the form classes are compared in (int64 or bytes)."""
    if yc.dtype.kind in "SO":
        return np.array([v.encode() if isinstance(v, str) else bytes(v) for v in yc], "S") \
            if yc.dtype.kind == "O" else yc
    if yc.dtype.kind == "f":
        return yc.astype(np.int64)
    return yc.astype(np.int64)


def scan_labels(Y, path, name, task):
    """Check labels chunk by chunk; returns the sorted classes (classification) or None."""
    classes = None
    for s, yc in _label_chunks(Y):
        if task == "regression":
            if yc.dtype.kind not in "fiub":
                raise UsageError(f"{path}: dataset {name} holds non-numeric targets; regression needs numbers")
            bad = ~np.isfinite(yc.astype(np.float64))
            if bad.any():
                raise UsageError(f"{path}: dataset {name} has NaN or inf at row {s + int(np.argmax(bad))}")
            continue
        if yc.dtype.kind == "f":
            bad = ~np.isfinite(yc)
            if bad.any():
                raise UsageError(f"{path}: dataset {name} has NaN or inf at row {s + int(np.argmax(bad))}")
            frac = yc != np.round(yc)
            if frac.any():
                raise UsageError(f"{path}: dataset {name} has non-integer label {yc[np.argmax(frac)]!r} at row "
                                 f"{s + int(np.argmax(frac))}; use --model linear for regression")
        u = np.unique(_as_labels(yc, task))
        classes = u if classes is None else np.union1d(classes, u)
    return classes


def describe(path, x=None, y=None, task=None, test_fraction=0.2, block_rows=None,
             partition_seed=0, partition="blocks", chunk_mb=16):
    """Validate the file and return what every rank needs to know, as a JSON-able dict."""
    with open_h5(path) as f:
        xn, yn, txn, tyn = resolve_layout(f, path, x, y)
        X, Y = _check_xy(f, path, xn, yn)
        n, d = X.shape
        if task is None:
            task = "regression" if Y.dtype.kind == "f" else "classification"
        classes = scan_labels(Y, path, yn, task)
        test = None
        if txn:
            TX, TY = _check_xy(f, path, txn, tyn)
            if TX.shape[1] != d:
                raise UsageError(f"{path}: {txn} has {TX.shape[1]} features but {xn} has {d}")
            tc = scan_labels(TY, path, tyn, task)
            if classes is not None:
                classes = np.union1d(classes, tc)
            test = {"x": txn, "y": tyn, "rows": int(TX.shape[0]), "source": "dataset"}
        elif test_fraction > 0:
            m = int(round(test_fraction * n))
            if m == 0 or m >= n:
                raise UsageError(f"--test-fraction {test_fraction:g} leaves no training or no test rows of {n}")
            test = {"x": xn, "y": yn, "rows": m, "source": "split"}
        if classes is not None and len(classes) < 2:
            raise UsageError(f"{path}: dataset {yn} has a single class; classification needs at least two")
        chunk_rows = X.chunks[0] if X.chunks else None
        row_bytes = d * X.dtype.itemsize
        window = max(1, (chunk_mb << 20) // row_bytes)
        if chunk_rows:
            window = max(chunk_rows, window // chunk_rows * chunk_rows)
        label_kind = None
        if classes is not None:
            label_kind = "str" if classes.dtype.kind == "S" else "int"
            classes = [c.decode("utf-8", "replace") for c in classes] if label_kind == "str" \
                else [int(c) for c in classes]
        return {
            "path": os.path.abspath(path), "x": xn, "y": yn, "rows": int(n), "features": int(d),
            "file_dtype": X.dtype.str, "task": task, "classes": classes, "label_kind": label_kind,
            "test": test, "chunk_rows": chunk_rows, "window_rows": int(window),
            "block_rows": int(block_rows or default_block_rows(n, chunk_rows)),
            "partition_seed": int(partition_seed), "partition": partition,
            "compression": X.compression,
        }


def class_array(info):
    """The classes as a sorted numpy array comparable with `_as_labels` output."""
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
    lab = _as_labels(yc, info["task"])
    return np.searchsorted(classes, lab).astype(np.int32)


def plan_for(info, nranks):
    test_rows = info["test"]["rows"] if info["test"] and info["test"]["source"] == "split" else 0
    n_train = info["rows"] - test_rows
    if n_train < nranks:
        raise UsageError(f"{info['path']}: {n_train} training rows cannot be shared by {nranks} ranks "
                         "(each rank needs at least one)", agreed=True)
    return make_plan(info["rows"], nranks, test_rows, info["block_rows"], info["partition_seed"],
                     info["partition"])


# -- distribution -------------------------------------------------------------------------
class Partition:
    """This rank's training rows (X, y) and, on rank 0, the test set."""

    def __init__(self, X, y, test_X=None, test_y=None, sizes=None):
        self.X, self.y, self.test_X, self.test_y, self.sizes = X, y, test_X, test_y, sizes


def _nonfinite(block, path, name, first_row):
    if block.dtype.kind != "f":
        return None
    ok = np.isfinite(block).all(axis=1)
    if ok.all():
        return None
    return UsageError(f"{path}: dataset {name} has NaN or inf at row {first_row + int(np.argmin(ok))}")


def distribute(group, info, how="scatter", dtype=np.float32):
    """Generator: this rank's Partition. `how` is 'scatter' (rank 0 streams) or 'read'."""
    plan = plan_for(info, group.size)
    rank, d = group.rank, info["features"]
    ydtype = dtype if info["task"] == "regression" else np.int32
    X = np.empty((int(plan.sizes[rank]), d), dtype)
    y = np.empty(int(plan.sizes[rank]), ydtype)
    part = Partition(X, y, sizes=[int(s) for s in plan.sizes])
    err = None
    if rank == 0 and info["test"]:
        m = info["test"]["rows"]
        part.test_X, part.test_y = np.empty((m, d), dtype), np.empty(m, ydtype)
    try:
        if how == "scatter":
            err = yield from _scatter(group, info, plan, part, dtype)
        elif how == "read":
            err = _read_own(group, info, plan, part, dtype)
        else:
            raise UsageError(f"--distribute {how!r}: expected scatter or read")
        if rank == 0 and err is None and info["test"] and info["test"]["source"] == "dataset":
            err = _read_test_set(info, part, dtype)
    except UsageError as e:
        err = e
    yield from group.agree(err, "validate")
    return part


def _read_rows(ds, start, stop, out):
    """Rows [start, stop) of `ds` into the preallocated `out` (converting dtype if needed)."""
    if out.dtype == ds.dtype and out.flags.c_contiguous:
        ds.read_direct(out, np.s_[start:stop], np.s_[0:stop - start])
    else:
        out[...] = ds[start:stop]


def _scatter(group, info, plan, part, dtype):
    rank, size = group.rank, group.size
    W, n = info["window_rows"], info["rows"]
    classes = class_array(info)
    if rank != 0:
        mine = pieces(plan.ranges[rank], W, n)
        reqs = []
        for _, _, length, off in mine:
            reqs.append(group.comm.Irecv(part.X[off:off + length], source=0, tag=X_TAG))
            reqs.append(group.comm.Irecv(part.y[off:off + length], source=0, tag=Y_TAG))
        for req in reqs:
            yield from group.wait(req, "scatter")
        return None
    # rank 0: stream the file window by window
    dests = [(r, pieces(plan.ranges[r], W, n)) for r in range(size)]
    if info["test"] and info["test"]["source"] == "split":
        dests.append((TEST, pieces(plan.test, W, n)))
    allp = np.concatenate([np.column_stack([p, np.full(len(p), r)]) for r, p in dests])
    allp = allp[np.lexsort((allp[:, 1], allp[:, 0]))]
    err = None
    with open_h5(info["path"]) as f:
        ds, ys = f[info["x"]], f[info["y"]]
        raw = np.empty((min(W, n), info["features"]), ds.dtype)
        conv = raw if ds.dtype == dtype else np.empty(raw.shape, dtype)
        bounds = np.searchsorted(allp[:, 0], np.arange(-(-n // W) + 1))
        for w in range(-(-n // W)):
            sel = allp[bounds[w]:bounds[w + 1]]
            if len(sel) == 0:
                continue
            a, b = w * W, min(n, (w + 1) * W)
            if err is None:         # after an error, keep the stream going without reading
                _read_rows(ds, a, b, raw[:b - a])
                err = _nonfinite(raw[:b - a], info["path"], info["x"], a)
                if conv is not raw:
                    conv[:b - a] = raw[:b - a]
                yenc = encode_labels(ys[a:b], info, dtype, classes)
            sends = []
            for _, start, length, off, dest in sel:
                lo, hi = start - a, start - a + length
                if dest == 0:
                    part.X[off:off + length], part.y[off:off + length] = conv[lo:hi], yenc[lo:hi]
                elif dest == TEST:
                    part.test_X[off:off + length], part.test_y[off:off + length] = conv[lo:hi], yenc[lo:hi]
                else:
                    sends.append(group.comm.Isend(conv[lo:hi], dest=int(dest), tag=X_TAG))
                    sends.append(group.comm.Isend(yenc[lo:hi], dest=int(dest), tag=Y_TAG))
            for req in sends:
                yield from group.wait(req, "scatter")
    return err


def _read_own(group, info, plan, part, dtype):
    """Every rank reads its own rows (and rank 0 the split test rows)."""
    classes = class_array(info)
    jobs = [(plan.ranges[group.rank], part.X, part.y)]
    if group.rank == 0 and info["test"] and info["test"]["source"] == "split":
        jobs.append((plan.test, part.test_X, part.test_y))
    with open_h5(info["path"]) as f:
        ds, ys = f[info["x"]], f[info["y"]]
        for ranges, X, y in jobs:
            for start, length, off in ranges:
                _read_rows(ds, start, start + length, X[off:off + length])
                y[off:off + length] = encode_labels(ys[start:start + length], info, dtype, classes)
                err = _nonfinite(X[off:off + length], info["path"], info["x"], start)
                if err:
                    return err
    return None


def _read_test_set(info, part, dtype):
    t = info["test"]
    with open_h5(info["path"]) as f:
        _read_rows(f[t["x"]], 0, t["rows"], part.test_X)
        part.test_y[...] = encode_labels(f[t["y"]][...], info, dtype, class_array(info))
    return _nonfinite(part.test_X, info["path"], t["x"], 0)


# -- standardization ---------------------------------------------------------------------
def _chunks(n, rows=65536):
    return ((s, min(n, s + rows)) for s in range(0, n, rows))


def global_stats(group, X, n_total):
    """Generator: global per-column mean and std (float64), by two Allreduce passes."""
    X2 = X.reshape(len(X), -1)
    acc = np.zeros(X2.shape[1], np.float64)
    for a, b in _chunks(len(X2)):
        acc += X2[a:b].sum(axis=0, dtype=np.float64)
    yield from group.allreduce(acc, "stats")
    mean = acc / n_total
    acc = np.zeros_like(mean)
    for a, b in _chunks(len(X2)):
        acc += np.square(X2[a:b] - mean).sum(axis=0)
    yield from group.allreduce(acc, "stats")
    std = np.sqrt(acc / n_total)
    std[std == 0] = 1.0
    return mean, std


def standardize(X, mean, std):
    """In place: (X - mean) / std, chunk by chunk."""
    X2 = X.reshape(len(X), -1)
    m, s = mean.astype(X.dtype), std.astype(X.dtype)
    for a, b in _chunks(len(X2)):
        X2[a:b] -= m
        X2[a:b] /= s
