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
from .partition import default_block_rows, make_plan, pieces, slabs

LABEL_WINDOW = 1 << 20  # labels are read and checked a million rows at a time
X_TAG = 11  # training rows use tags 11 (X) and 12 (y); test rows 13 and 14


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
        # read-only opens need no lock; HDF5's file locking fails on many parallel file
        # systems ("unable to lock file") and only serializes the ranks' opens elsewhere
        return h5py.File(path, "r", locking=False)
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


def _label_chunks(Y):
    for s in range(0, Y.shape[0], LABEL_WINDOW):
        yield s, np.asarray(Y[s:s + LABEL_WINDOW]).reshape(-1)


def as_labels(yc):
    """Labels of a chunk in the form classes are compared in: int64, or bytes for text
    (h5py returns variable-length strings as objects)."""
    if yc.dtype.kind == "O":
        return np.array([v.encode() if isinstance(v, str) else bytes(v) for v in yc], "S")
    if yc.dtype.kind == "S":
        return yc
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
        u = np.unique(as_labels(yc))
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
        window = max(1, (chunk_mb << 20) // 2 // row_bytes)      # two windows share the budget
        if chunk_rows and (chunk_rows <= window or X.compression):
            # whole chunks per window: a compressed chunk is decompressed whole anyway
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


# -- distribution -------------------------------------------------------------------------
class Partition:
    """This rank's training rows (X, y) and its share of the test rows (test_X, test_y)."""

    def __init__(self, X, y, test_X=None, test_y=None, sizes=None, test_sizes=None):
        self.X, self.y, self.test_X, self.test_y = X, y, test_X, test_y
        self.sizes, self.test_sizes = sizes, test_sizes


class Job:
    """Rows of one dataset pair (`rows` long) bound for the ranks: `ranges[r]` as in
    partition.Plan, received into this rank's (X, y) with message tags `tag`, `tag + 1`."""

    def __init__(self, x, y, rows, ranges, X, Y, tag):
        self.x, self.y, self.rows, self.ranges, self.X, self.Y, self.tag = x, y, rows, ranges, X, Y, tag


def first_nonfinite(block):
    """Index of the first row of `block` holding NaN or inf, or None. One fast pass (the
    sum of finite values is finite unless it overflows); the exact check only if not."""
    if block.dtype.kind != "f" or np.isfinite(np.add.reduce(block, axis=None)):
        return None
    ok = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
    return None if ok.all() else int(np.argmin(ok))


def _nonfinite(block, path, name, first_row):
    """A UsageError naming the file row of the first NaN/inf in `block`, or None."""
    bad = first_nonfinite(block)
    if bad is None:
        return None
    return UsageError(f"{path}: dataset {name} has NaN or inf at row {first_row + bad}")


def distribute(group, info, how="scatter", dtype=np.float32):
    """Generator: this rank's Partition. `how` is 'scatter' (rank 0 streams) or 'read'."""
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
    err = None
    try:
        if how == "scatter":
            # one pass over each file dataset: the split test rows travel with the training rows
            passes = {}
            for job in jobs:
                passes.setdefault(job.x, []).append(job)
            for batch in passes.values():
                verdict = yield from _stream(group, info, batch, dtype)   # every pass, always:
                err = err or verdict                                      # rank 0 sends regardless
        elif how == "read":
            err = _read_own(group, info, jobs, dtype)
        else:
            raise UsageError(f"--distribute {how!r}: expected scatter or read")
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


def _stream(group, info, jobs, dtype):
    """Generator: rank 0 reads the jobs' dataset window by window and sends every rank its
    rows; the others receive straight into their partition. Every rank checks the rows it
    keeps as they arrive (so the NaN/inf pass runs on all ranks at once, not all on rank
    0) and returns its verdict, naming the file row."""
    rank, size = group.rank, group.size
    n, W = jobs[0].rows, info["window_rows"]
    err = None
    if rank != 0:
        posted = []
        for job in jobs:
            for _, start, length, off in pieces(job.ranges[rank], W, n):
                posted.append((job, start, length, off,
                               group.comm.Irecv(job.X[off:off + length], source=0, tag=job.tag),
                               group.comm.Irecv(job.Y[off:off + length], source=0, tag=job.tag + 1)))
        for job, start, length, off, rx, ry in posted:
            yield from group.wait(rx, "scatter")
            yield from group.wait(ry, "scatter")
            err = err or _nonfinite(job.X[off:off + length], info["path"], job.x, start)
        return err
    # rank 0: rows (window, file_start, length, offset, dest rank, job index) in file order
    table = []
    for j, job in enumerate(jobs):
        for r in range(size):
            p = pieces(job.ranges[r], W, n)
            table.append(np.column_stack([p, np.full(len(p), r), np.full(len(p), j)]))
    allp = np.concatenate(table)
    allp = allp[np.lexsort((allp[:, 1], allp[:, 0]))]
    classes = class_array(info)
    with open_h5(info["path"]) as f:
        ds, ys = f[jobs[0].x], f[jobs[0].y]
        # two window buffers: the next window is read while the last one's sends drain
        bufs = [np.empty((min(W, n), info["features"]), ds.dtype) for _ in range(2)]
        convs = [b if ds.dtype == dtype else np.empty(b.shape, dtype) for b in bufs]
        pending = [[], []]
        yencs = [None, None]
        nwin = -(-n // W)
        bounds = np.searchsorted(allp[:, 0], np.arange(nwin + 1))
        for w in range(nwin):
            sel = allp[bounds[w]:bounds[w + 1]]
            if len(sel) == 0:
                continue
            i = w % 2
            raw, conv = bufs[i], convs[i]
            for req in pending[i]:
                yield from group.wait(req, "scatter")
            pending[i] = []
            a, b = w * W, min(n, (w + 1) * W)
            _read_rows(ds, a, b, raw[:b - a])
            if conv is not raw:
                conv[:b - a] = raw[:b - a]
            yenc = yencs[i] = encode_labels(ys[a:b], info, dtype, classes)
            for _, start, length, off, dest, j in sel:
                lo, hi, job = start - a, start - a + length, jobs[j]
                if dest == 0:
                    job.X[off:off + length], job.Y[off:off + length] = conv[lo:hi], yenc[lo:hi]
                    err = err or _nonfinite(job.X[off:off + length], info["path"], job.x, start)
                else:
                    pending[i].append(group.comm.Isend(conv[lo:hi], dest=int(dest), tag=job.tag))
                    pending[i].append(group.comm.Isend(yenc[lo:hi], dest=int(dest), tag=job.tag + 1))
        for req in pending[0] + pending[1]:
            yield from group.wait(req, "scatter")
    return err


def _read_own(group, info, jobs, dtype):
    """Every rank reads its own rows of every job: features straight into the partition,
    labels through a bounded window (one read per million rows, not one per range)."""
    classes = class_array(info)
    with open_h5(info["path"]) as f:
        for job in jobs:
            ds, ys = f[job.x], f[job.y]
            ranges = job.ranges[group.rank]
            for start, length, off in ranges:
                _read_rows(ds, start, start + length, job.X[off:off + length])
            win = -1
            for w, start, length, off in pieces(ranges, LABEL_WINDOW, job.rows):
                if w != win:
                    win, base = w, w * LABEL_WINDOW
                    labels = encode_labels(ys[base:min(job.rows, base + LABEL_WINDOW)], info, dtype, classes)
                job.Y[off:off + length] = labels[start - base:start - base + length]
            bad = first_nonfinite(job.X)
            if bad is not None:     # name the file row, not the partition row
                start, _, off = next(r for r in ranges if r[2] <= bad < r[2] + r[1])
                return _nonfinite(job.X[bad:bad + 1], info["path"], job.x, int(start + bad - off))
    return None


# -- standardization ---------------------------------------------------------------------
def _chunks(n, rows=8192):
    return ((s, min(n, s + rows)) for s in range(0, n, rows))


def global_stats(group, X, n_total):
    """Generator: global per-column mean and std (float64), by two Allreduce passes
    (sums, then squared deviations: no cancellation), in cache-sized chunks."""
    X2 = X.reshape(len(X), -1)
    acc = np.zeros(X2.shape[1], np.float64)
    for a, b in _chunks(len(X2)):
        acc += np.add.reduce(X2[a:b], axis=0, dtype=np.float64)
    yield from group.allreduce(acc, "stats")
    mean = acc / n_total
    m = mean.astype(X2.dtype)
    acc = np.zeros_like(mean)
    tmp = np.empty((min(8192, len(X2)), X2.shape[1]), X2.dtype)
    for a, b in _chunks(len(X2)):
        d = tmp[:b - a]
        np.subtract(X2[a:b], m, out=d)
        np.multiply(d, d, out=d)
        acc += np.add.reduce(d, axis=0, dtype=np.float64)
    yield from group.allreduce(acc, "stats")
    std = np.sqrt(acc / n_total)
    std[std == 0] = 1.0
    return mean, std


