"""`mpidml data synth | convert | inspect`: make, import and look at HDF5 files.

All three stream in bounded chunks, so files larger than memory work.
"""
import csv
import os
import sys

import h5py
import numpy as np

from .checkpoint import atomic_write
from .data import open_h5
from .errors import UsageError

CHUNK = 65536


def run(args):
    if args.data_command == "synth":
        synth(args.out, args.samples, args.features, args.classes, args.seed, args.noise, args.kind,
              args.sorted, args.chunk_rows, args.compression, args.test_samples)
    elif args.data_command == "convert":
        convert(args.src, args.dst, args.label)
    else:
        inspect(args.path)


# -- synth -----------------------------------------------------------------------------
def _generate(rng, centers, w, n, d, k, noise, kind):
    """n rows of the synthetic task: X (float32) and labels/targets."""
    X = rng.standard_normal((n, d)).astype(np.float32)
    if k == 0:
        y = X @ w + noise * 0.1 * rng.standard_normal(n)
        return X, y.astype(np.float32)
    if kind == "blobs":
        y = rng.integers(0, k, n)
        X *= noise
        X += centers[y]
        return X, y.astype(np.int64)
    # nonlinear: the class is the band of a radial/sinusoidal score; no hyperplane separates
    r = np.sqrt((X[:, :2] ** 2).sum(axis=1)) + 0.5 * np.sin(3 * X[:, 2 % d])
    edges = np.quantile(np.sqrt(rng.chisquare(2, 200000)) + 0.5 * np.sin(3 * rng.standard_normal(200000)),
                        np.linspace(0, 1, k + 1)[1:-1])
    y = np.searchsorted(edges, r)
    X[:, 3 % d:] += 0.05 * noise * rng.standard_normal((n, d - 3 % d)).astype(np.float32)
    return X, y.astype(np.int64)


def synth(out, n, d, k, seed=0, noise=1.0, kind="blobs", sort=False, chunk_rows=None,
          compression="none", test_samples=0):
    """Synthetic float32 data in the default layout; k = 0 gives regression."""
    if k == 1 or k < 0:
        raise UsageError(f"--classes {k}: use 0 (regression) or at least 2")
    if kind == "nonlinear" and d < 3:
        raise UsageError("--kind nonlinear needs --features 3 or more")
    rng = np.random.default_rng(seed)
    centers = (rng.standard_normal((max(k, 1), d)) * (4.0 / np.sqrt(d))).astype(np.float32)
    w = rng.standard_normal(d)
    if chunk_rows is None:
        chunk_rows = max(1, min(n, (1 << 20) // (4 * d)))
    comp = None if compression == "none" else compression

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            for group, rows in (("train", n), ("test", test_samples)):
                if rows <= 0:
                    continue
                chunks = None if chunk_rows == 0 and comp is None else (min(chunk_rows or rows, rows), d)
                X = f.create_dataset(f"{group}/X", (rows, d), np.float32, chunks=chunks, compression=comp)
                Y = f.create_dataset(f"{group}/y", (rows,), np.float32 if k == 0 else np.int64,
                                     chunks=(min(rows, 1 << 16),), compression=comp)
                if sort and k:
                    _write_sorted(rng, centers, w, rows, d, k, noise, kind, X, Y)
                    continue
                for s in range(0, rows, CHUNK):
                    m = min(CHUNK, rows - s)
                    xb, yb = _generate(rng, centers, w, m, d, k, noise, kind)
                    X[s:s + m], Y[s:s + m] = xb, yb
            f.attrs["source"] = f"mpidml data synth --kind {kind} --seed {seed}"
    atomic_write(out, write)


def _write_sorted(rng, centers, w, rows, d, k, noise, kind, X, Y):
    """Rows sorted by label without holding them all: generate class by class."""
    counts = np.bincount(rng.integers(0, k, rows), minlength=k)
    pos = 0
    for c in range(k):
        need = int(counts[c])
        while need > 0:
            xb, yb = _generate(rng, centers, w, CHUNK, d, k, noise, kind)
            xb = xb[yb == c][:need]
            X[pos:pos + len(xb)], Y[pos:pos + len(xb)] = xb, c
            pos += len(xb)
            need -= len(xb)


# -- convert ---------------------------------------------------------------------------
LABEL_NAMES = ("label", "y", "target")


def convert(src, dst, label=None):
    if not os.path.exists(src):
        raise UsageError(f"{src}: no such file")
    if not os.path.isfile(src) or not os.access(src, os.R_OK):
        raise UsageError(f"{src}: not a readable file")
    ext = os.path.splitext(src)[1].lower()
    if ext in (".npy", ".npz"):
        return _convert_numpy(src, dst, ext)
    return _convert_csv(src, dst, label)


def _writer(f, d, label_dtype):
    X = f.create_dataset("train/X", (0, d), np.float32, maxshape=(None, d), chunks=(8192, d))
    Y = f.create_dataset("train/y", (0,), label_dtype, maxshape=(None,), chunks=(8192,))
    return X, Y


def _append(X, Y, xb, yb):
    n = X.shape[0]
    X.resize(n + len(xb), axis=0)
    Y.resize(n + len(yb), axis=0)
    X[n:], Y[n:] = xb, yb


def _label_dtype(values):
    """int64 when every label is an integer, float64 when numeric, else bytes."""
    try:
        as_float = np.array(values, np.float64)
    except ValueError:
        return "S"
    if np.all(as_float == np.round(as_float)) and np.all(np.isfinite(as_float)):
        return np.int64
    return np.float64


def _convert_csv(src, dst, label):
    def write(tmp):
        with open(src, newline="") as fh, h5py.File(tmp, "w") as f:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise UsageError(f"{src}: empty CSV file") from None
            names = [h.strip() for h in header]
            if label:
                if label not in names:
                    raise UsageError(f"{src}: no column {label!r} (columns: {', '.join(names)})")
                li = names.index(label)
            else:
                li = next((names.index(c) for c in LABEL_NAMES if c in names), len(names) - 1)
            X = Y = None
            kind = None
            line = 1
            while True:
                rows = [r for _, r in zip(range(CHUNK), reader)]
                if not rows:
                    break
                for r in rows:
                    line += 1
                    if len(r) != len(names):
                        raise UsageError(f"{src}: line {line} has {len(r)} fields, the header has {len(names)}")
                labels = [r[li].strip() for r in rows]
                try:
                    feats = np.array([r[:li] + r[li + 1:] for r in rows], np.float64)
                except ValueError as e:
                    raise UsageError(f"{src}: non-numeric feature value near line {line} ({e})") from None
                if kind is None:
                    kind = _label_dtype(labels)
                    X, Y = _writer(f, feats.shape[1], h5py.string_dtype("ascii", None) if kind == "S" else kind)
                try:
                    yb = np.array(labels, np.float64).astype(kind) if kind != "S" else np.array(labels, "S")
                except ValueError:
                    raise UsageError(f"{src}: label column {names[li]!r} mixes numbers and text near line "
                                     f"{line}") from None
                if kind == np.int64 and not np.all(np.array(labels, np.float64) == yb):
                    raise UsageError(f"{src}: label column {names[li]!r} turns non-integer near line {line}; "
                                     "put a non-integer value in its first rows to store float targets")
                _append(X, Y, feats.astype(np.float32), yb)
            if X is None:
                raise UsageError(f"{src}: no data rows")
            f.attrs["source"] = os.path.basename(src)
            f.attrs["label_column"] = names[li]
    atomic_write(dst, write)


def _convert_numpy(src, dst, ext):
    try:
        if ext == ".npy":
            arr = np.load(src, mmap_mode="r", allow_pickle=False)
            if arr.ndim != 2 or arr.shape[1] < 2:
                raise UsageError(f"{src}: expected a 2-D array whose last column is the label")
            xs, ys = arr[:, :-1], arr[:, -1]
        else:
            z = np.load(src, allow_pickle=False)
            xk = next((k for k in ("X", "x", "data", "features") if k in z.files), None)
            yk = next((k for k in ("y", "Y", "target", "labels", "label") if k in z.files), None)
            if xk is None or yk is None:
                raise UsageError(f"{src}: needs arrays named X and y (has {', '.join(z.files)})")
            xs, ys = z[xk], z[yk]
    except (ValueError, OSError) as e:
        raise UsageError(f"{src}: cannot read ({e})") from None
    if xs.ndim != 2 or len(xs) != len(ys):
        raise UsageError(f"{src}: X must be 2-D with one label per row (X {xs.shape}, y {ys.shape})")
    kind = _label_dtype(ys[:CHUNK]) if ys.dtype.kind in "fiu" else "S"

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            X, Y = _writer(f, xs.shape[1], kind if kind != "S" else h5py.string_dtype("ascii", None))
            for s in range(0, len(xs), CHUNK):
                yb = np.asarray(ys[s:s + CHUNK])
                _append(X, Y, np.asarray(xs[s:s + CHUNK], np.float32), yb.astype(kind) if kind != "S" else yb)
            f.attrs["source"] = os.path.basename(src)
    atomic_write(dst, write)


# -- inspect ---------------------------------------------------------------------------
def inspect(path, out=sys.stdout):
    with open_h5(path) as f:
        out.write(f"{path}\n")
        items = []
        f.visititems(lambda name, obj: items.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
        if not items:
            out.write("  (no datasets)\n")
        for name, ds in items:
            chunks = "contiguous" if ds.chunks is None else f"chunks {ds.chunks}"
            comp = f", {ds.compression}" if ds.compression else ""
            rows = ds.shape[0] if ds.shape else 0
            out.write(f"  /{name}: {rows} rows, shape {ds.shape}, {ds.dtype}, {chunks}{comp}\n")
            if ds.ndim == 1 and ds.dtype.kind in "iubSO" and rows:
                _class_counts(ds, out)


def _class_counts(ds, out):
    counts, runs, last = {}, 0, None
    for s in range(0, ds.shape[0], 1 << 20):
        y = np.asarray(ds[s:s + (1 << 20)])
        u, c = np.unique(y, return_counts=True)
        for a, b in zip(u.tolist(), c.tolist()):
            counts[a] = counts.get(a, 0) + b
        runs += int(np.count_nonzero(y[1:] != y[:-1])) + (last is not None and y[0] != last)
        last = y[-1]
    if len(counts) > 100:
        out.write(f"    {len(counts)} distinct values\n")
        return
    shown = ", ".join(f"{k.decode() if isinstance(k, bytes) else k}: {v}" for k, v in sorted(counts.items()))
    out.write(f"    classes ({len(counts)}): {shown}\n")
    n = ds.shape[0]
    p = np.array(list(counts.values()), np.float64) / n
    expected = (n - 1) * (1 - float(np.sum(p ** 2)))     # label changes if rows were shuffled
    if len(counts) > 1 and expected > 20 and runs < 0.1 * expected:
        out.write(f"    warning: labels look sorted ({runs} label changes where shuffled rows would give about "
                  f"{expected:.0f}); the default --partition blocks copes, --partition contiguous would not\n")
