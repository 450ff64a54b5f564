"""Open and validate HDF5 data, and give every rank its partition.

Rank 0 `describe`s the file (layout, shapes, dtypes, classes) and broadcasts that as a
small JSON document. `distribute` then fills each rank's preallocated partition, either
by streaming: rank 0 reads the file window by window (a bounded buffer aligned to the
HDF5 chunks) and sends every rank its rows with buffer-based point-to-point messages,
or by having every rank read its own rows (`read`; for compressed data, every rank reads
a slab of windows and passes rows on, so no chunk is decompressed twice). Both give
identical partitions. Values are checked (NaN/inf) by the rank that keeps them, as they
land, and all ranks agree on the verdict before anything trains.
"""
import contextlib
import os

import h5py
import numpy as np

from .errors import UsageError
from .partition import default_block_rows, make_plan, pieces, slabs
from .rows import Rows

LABEL_WINDOW = 1 << 20  # labels are read and checked a million rows at a time
BUFFERS = 2  # window buffers per reader: the next window is read while the last one's sends drain
X_TAG = 11  # training rows use tags 11 (X) and 12 (y); test rows 13 and 14


# -- opening and validating ------------------------------------------------------------
def open_h5(path, cache_bytes=None):
    """Open an HDF5 file read-only, or raise a UsageError that says what is wrong.
    `cache_bytes`: the chunk cache per dataset (HDF5's default is 1 MB)."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory, not an HDF5 file")
    try:
        if not h5py.is_hdf5(path):
            raise UsageError(f"{path}: not an HDF5 file")
        # read-only opens need no lock; HDF5's file locking fails on many parallel file
        # systems ("unable to lock file") and only serializes the ranks' opens elsewhere
        cache = {"rdcc_nbytes": int(cache_bytes), "rdcc_nslots": 10007} if cache_bytes else {}
        return h5py.File(path, "r", locking=False, **cache)
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
        window = max(1, int(chunk_mb * (1 << 20)) // BUFFERS // row_bytes)      # the windows share the budget
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
            "chunk_bytes": int(np.prod(X.chunks) * X.dtype.itemsize) if X.chunks else None,
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


def nonfinite_error(block, runs, path, name):
    """A UsageError naming the file row of the first NaN/inf in `block`, whose rows are
    the file rows `runs` ((start, length) pairs) in order; None if all are finite."""
    bad = first_nonfinite(block)
    if bad is None:
        return None
    ends = np.cumsum(runs[:, 1])
    i = int(np.searchsorted(ends, bad, side="right"))
    return UsageError(f"{path}: dataset {name} has NaN or inf at row {int(runs[i, 0] + bad - (ends[i] - runs[i, 1]))}")


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
    """One (X, y) dataset pair of an open file, read run by run straight into the caller's
    arrays (rows.Rows), labels encoded and features checked as each stretch lands, while
    it is still in cache."""

    def __init__(self, opened, info, x, y, dtype, classes):
        f, fd = opened
        self.info, self.name, self.dtype, self.classes = info, x, dtype, classes
        self.X = Rows(f[x], dtype, fd)
        ys = f[y]
        self.Y = Rows(ys, ys.dtype, fd) if ys.dtype.kind in "fiub" else None
        self.ys = ys

    def fill(self, runs, X, Y, check=True):
        """Read the file rows `runs` ((start, length) pairs) into X and Y, in order; returns
        a UsageError for a read error or (if `check`) naming the file row of the first
        NaN/inf, or None."""
        raw_y = np.empty(len(Y), self.ys.dtype) if self.Y else []
        pos = 0
        try:
            for start, length in runs:
                start, length = int(start), int(length)
                self.X.read(start, length, X[pos:pos + length])
                if self.Y:
                    self.Y.read(start, length, raw_y[pos:pos + length])
                else:           # text labels: h5py converts them
                    raw_y.extend(np.asarray(self.ys[start:start + length]).reshape(-1))
                pos += length
        except OSError as e:
            X[...] = 0      # finite: whoever receives these rows must not report garbage as NaN
            return UsageError(f"{self.info['path']}: cannot read dataset {self.name} ({_short(e)})")
        Y[...] = encode_labels(raw_y if self.Y else np.array(raw_y, dtype=object), self.info, self.dtype,
                               self.classes)
        return nonfinite_error(X, runs, self.info["path"], self.name) if check else None


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
        if how not in ("scatter", "read"):
            raise UsageError(f"--distribute {how!r}: expected scatter or read")
        if how == "read" and not info["compression"]:
            err = _read_own(group, info, jobs, dtype)
        else:
            # scatter: rank 0 reads every window. read, compressed: every rank reads a
            # slab of windows, so each chunk is decompressed once, not once per rank.
            readers = 1 if how == "scatter" else group.size
            passes = {}     # one pass per file dataset: split test rows travel with the training rows
            for job in jobs:
                passes.setdefault(job.x, []).append(job)
            for batch in passes.values():
                verdict = yield from _stream(group, info, batch, dtype, readers)   # every pass, always:
                err = err or verdict                                    # the readers send regardless
    except UsageError as e:
        err = e
    yield from group.agree(err, "validate")
    return part


@contextlib.contextmanager
def _open_for(info):
    """The file twice: for HDF5 (with a chunk cache that holds a compressed chunk or two,
    so runs of rows cut from one chunk do not decompress it once per run) and for raw
    reads (os.open)."""
    cache = 2 * info["chunk_bytes"] if info["compression"] and info["chunk_bytes"] else None
    with open_h5(info["path"], cache) as f:     # a clear UsageError if this rank cannot see the file
        try:
            fd = os.open(info["path"], os.O_RDONLY)
        except OSError:
            fd = None                           # HDF5 reads only
        try:
            yield f, fd
        finally:
            if fd is not None:
                os.close(fd)


def _stream(group, info, jobs, dtype, readers=1):
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
        err = yield from _send_windows(group, info, jobs, dtype, {w for w in range(nwin) if reader(w) == rank})
    for job, rows, runs, rx, ry in posted:
        yield from group.wait(rx, "scatter")
        yield from group.wait(ry, "scatter")
        err = err or nonfinite_error(job.X[rows], runs, info["path"], job.x)
    return err


def _send_windows(group, info, jobs, dtype, mine):
    """Generator: read the windows `mine` and send their rows on, through two window
    buffers (the next window is read while the last one's sends drain). A read error
    is kept, not raised: the others are waiting for these messages."""
    n, W = jobs[0].rows, info["window_rows"]
    # window by window; in each, the others' rows first, so they travel while this rank reads its own
    todo = sorted(((w, r == group.rank, j, r), rows, runs) for j, job in enumerate(jobs) for r in range(group.size)
                  for w, rows, runs in windows(job.ranges[r], W, n) if w in mine)
    err = None
    with _open_for(info) as opened:
        src = Source(opened, info, jobs[0].x, jobs[0].y, dtype, class_array(info))
        xbufs = [np.empty((min(W, n), info["features"]), dtype) for _ in range(BUFFERS)]
        ybufs = [np.empty(min(W, n), jobs[0].Y.dtype) for _ in range(BUFFERS)]
        pending, used, last = [[] for _ in range(BUFFERS)], 0, -1
        for (w, _, j, r), rows, runs in todo:
            i, job, m = w % BUFFERS, jobs[j], rows.stop - rows.start
            if w != last:
                last, used = w, 0
                for req in pending[i]:
                    yield from group.wait(req, "scatter")
                pending[i] = []
            # every stretch is read even after an error: the others check what they receive
            if r == group.rank:
                verdict = src.fill(runs, job.X[rows], job.Y[rows])
                err = err or verdict
                continue
            xb, yb = xbufs[i][used:used + m], ybufs[i][used:used + m]
            used += m
            verdict = src.fill(runs, xb, yb, check=False)
            err = err or verdict
            pending[i] += [group.comm.Isend(xb, dest=r, tag=job.tag), group.comm.Isend(yb, dest=r, tag=job.tag + 1)]
            group.poke()
        for req in sum(pending, []):
            yield from group.wait(req, "scatter")
    return err


def _read_own(group, info, jobs, dtype):
    """Every rank reads its own rows of every job straight into its partition, a window
    of file rows at a time (so each stretch is checked while still in cache)."""
    classes = class_array(info)
    with _open_for(info) as opened:
        for job in jobs:
            src = Source(opened, info, job.x, job.y, dtype, classes)
            for _, rows, runs in windows(job.ranges[group.rank], info["window_rows"], job.rows):
                err = src.fill(runs, job.X[rows], job.Y[rows])
                if err:
                    return err
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


