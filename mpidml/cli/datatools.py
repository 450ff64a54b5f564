"""`mpidml data synth | convert | inspect`: make, import and look at HDF5 files.

All three stream in bounded chunks, so files larger than memory work (convert holds an
NPZ file's arrays whole: a zip member cannot be memory-mapped).
"""
import codecs
import collections
import contextlib
import csv
import itertools
import logging
import operator
import os
import re
import sys
import zipfile
import zlib

import h5py
import numpy as np

from ..data.distribute import label_text, open_h5, sparse_classes
from ..data.h5 import CONVERTIBLE
from ..errors import UsageError
from ..files.outputs import atomic_write, check_output, create_h5

log = logging.getLogger("mpidml")
CHUNK = 65536


def run(args):
    if args.data_command == "synth":
        check_output(args.out, "--out")
        synth(args.out, args.samples, args.features, args.classes, args.seed, args.noise, args.kind,
              args.sorted, args.chunk_rows, args.compression, args.test_samples)
    elif args.data_command == "convert":
        check_output(args.dst, "dst", (("src", args.src),))
        log.info(convert(args.src, args.dst, args.label, args.features, args.delimiter, args.label_type, args.drop,
                         args.dropna, args.test_fraction, args.stratify, args.seed))
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
        with create_h5(tmp) as f:
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
# Every source (CSV, NPY/NPZ, Parquet) is opened as a Table: which column is the label and
# why, the feature names, the label's kind, and batches. Each batch is (X, y, missing,
# where): X float64 with NaN where a value is missing, y already in the label's stored
# type, `missing` the rows whose label is missing, and where(i) naming row i in the
# source's own terms ("line 7", "row 6"), so that one writer checks, drops or refuses
# them all and every error points at the right place.
#
# The label's kind is the column's own type: integers and text are classes, floats are
# targets to fit (regression), whatever their values: whole-number floats such as
# scikit-learn's diabetes targets ("151.0") stay floats. In CSV text, a column of plain
# integers is classes and any decimal point or exponent makes floats, as pandas.read_csv
# types them. An NPY file's label column has X's dtype: a float array's labels are float
# targets too (np.c_[X, y] makes integer classes floats: --label-type class). The summary
# says what was decided, and --label-type class or float says otherwise.
Table = collections.namedtuple("Table", "label how features kind batches left_out")
Columns = collections.namedtuple("Columns", "label features drop")     # as named on the command line
Split = collections.namedtuple("Split", "fraction stratify seed")
LABEL_NAMES = ("label", "labels", "class", "classes", "target", "targets", "y")
LABEL_TYPES = ("auto", "class", "float")
# what pandas.read_csv reads as a missing value (its default na_values)
MISSING = frozenset(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"])
INTEGER = re.compile(r"[+-]?[0-9]+\Z")
INT64 = (-2 ** 63, 2 ** 63)
HDF5_EXTS = (".h5", ".hdf5", ".h5ad")
DELIMITERS = ",;\t|"
SNIFF_CHARS = 16384
CELLS = 1 << 20         # values per batch: memory stays bounded whatever the width
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
NPY_MAGIC, ZIP_MAGICS = b"\x93NUMPY", (b"PK\x03\x04", b"PK\x05\x06")


def convert(src, dst, label=None, features=None, delimiter=None, label_type="auto", drop=None, dropna=False,
            test_fraction=0.0, stratify=False, seed=None):
    """SRC (CSV, NPY, NPZ or Parquet) to DST in the default layout, with a seeded test
    split of `test_fraction` of the rows when asked. `features` and `drop` are
    comma-separated lists of column names as on the command line; `delimiter` one
    character or "tab" (default: sniffed). Returns the one-line summary of what was
    written (and logs a warning for labels that look like numbers rather than classes)."""
    if not os.path.exists(src):
        raise UsageError(f"{src}: no such file")
    if not os.path.isfile(src) or not os.access(src, os.R_OK):
        raise UsageError(f"{src}: not a readable file")
    if label_type not in LABEL_TYPES:
        raise UsageError(f"--label-type {label_type!r}: expects one of {', '.join(LABEL_TYPES)}")
    for option, given in (("--stratify", stratify), ("--seed", seed is not None)):
        if given and not test_fraction:     # a setting that would change nothing
            raise UsageError(f"{option} applies to the split that --test-fraction holds out")
    fmt = _format(src)
    if delimiter is not None and fmt != "csv":
        raise UsageError(f"{src}: --delimiter applies to CSV files only")
    columns = Columns(label, _names(features, "--features"), _names(drop, "--drop"))
    if columns.features is not None and columns.drop is not None:
        raise UsageError("--features and --drop: name the features to keep or the columns to drop, not both")
    if fmt == "csv":
        source = _csv_source(src, columns, label_type, _delimiter(delimiter))
    elif fmt == "parquet":
        source = _parquet_source(src, columns, label_type)
    elif columns != (None, None, None):
        raise UsageError(f"{src}: --label, --features and --drop name CSV or Parquet columns; an {fmt.upper()} "
                         "file has no column names")
    else:
        source = _numpy_source(src, fmt, label_type)
    split = Split(test_fraction, stratify, seed or 0)
    with source as table:
        if stratify and table.kind == "float":
            raise UsageError(f"{src}: --stratify needs classes; {_which_label(table)} holds float targets")
        stats = {}
        atomic_write(dst, lambda tmp: stats.update(_write(tmp, src, table, dropna, split)))
    if stats["classes"] is not None and sparse_classes(stats["rows"], stats["classes"]):
        log.warning(f"mpidml: warning: {_which_label(table)}: {stats['classes']} classes in {stats['rows']} rows "
                    "(fewer than 5 rows each): if they are numbers to fit, --label-type float stores them as "
                    "float targets")
    return _summary(dst, table, **stats)


def _which_label(table):
    return f"column {table.label!r}" if table.label is not None else table.how


def _summary(dst, table, rows, test_rows, features, classes, dropped):
    """One line: what DST holds, which column is the label and why, what was left out."""
    test = f", {_plural(test_rows, 'test row')}" if test_rows else ""
    label = f"column {table.label!r} ({table.how})" if table.label is not None else table.how
    if classes is None:
        kind = "float targets (regression; --label-type class reads them as classes)"
    else:
        kind = _plural(classes, "class", "classes") + (" (text)" if table.kind == "text" else "")
    text = (f"{dst}: {_plural(rows - test_rows, 'training row')}{test}, {_plural(features, 'feature')}; "
            f"label {label}: {kind}")
    if dropped:
        text += f"; dropped {_plural(dropped, 'row')} with missing values"
    if table.left_out:
        text += f"; left out {', '.join(table.left_out)}"
    return text


def _plural(n, thing, things=None):
    """`n` and `thing` in its number, as in "1 class", "3 classes" (`things`: an irregular plural)."""
    return f"{n} {thing if n == 1 else things or thing + 's'}"


def _format(src):
    """The reader for SRC's extension; anything else is refused rather than read as CSV."""
    ext = os.path.splitext(src)[1].lower()
    if ext in CONVERTIBLE:
        return CONVERTIBLE[ext]
    supported = ", ".join(CONVERTIBLE)
    if ext in HDF5_EXTS:
        raise UsageError(f"{src}: is HDF5 already: train on it with --data (data convert reads {supported})")
    raise UsageError(f"{src}: unknown format {ext or '(no extension)'}; data convert reads {supported}")


def _names(text, option):
    """--features A,B,C (or --drop) as a list of names (None: not given)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if "" in names:
        raise UsageError(f"{option} {text!r}: empty column name")
    twice = next((n for n, count in collections.Counter(names).items() if count > 1), None)
    if twice is not None:
        raise UsageError(f"{option} {text!r}: column {twice!r} named twice")
    return names


def _delimiter(value):
    """--delimiter: one character; "tab" and a typed backslash-t mean a tab."""
    if value in ("tab", "\\t"):
        return "\t"
    if value is not None and (len(value) != 1 or value in "\"\r\n"):
        raise UsageError(f"--delimiter {value!r}: expects one character (or tab), not a quote or newline")
    return value


def _select(src, names, columns, index=()):
    """(label index, how it was chosen, feature indices) among `names`. The label is
    --label, else the one column named like a label (any case), else the last; features
    are --features, else every other column but --drop's and the indices in `index`
    (pandas' index: row names or ids, no feature unless --features names it; it is the
    label only by --label or by its name, never as the last column)."""
    positions = collections.defaultdict(list)
    for j, name in enumerate(names):
        positions[name].append(j)
    dropped = {j for name in columns.drop or () for j in _positions(src, names, positions, name, "--drop")}
    rest = [j for j in range(len(names)) if j not in dropped and j not in index]
    if columns.label is not None:
        li, how = _column(src, names, positions, columns.label, "--label"), "--label"
        if li in dropped:
            raise UsageError(f"{src}: column {columns.label!r} is the label and cannot be dropped")
    else:
        li, how = _guess_label(src, names, [j for j in range(len(names)) if j not in index], dropped, index)
    if columns.features is None:
        fi = [j for j in rest if j != li]
    else:
        fi = [_column(src, names, positions, n, "--features") for n in columns.features]
        if li in fi:
            raise UsageError(f"{src}: column {names[li]!r} is the label and cannot be a feature too")
    if not fi:
        raise UsageError(f"{src}: no feature columns, only the label {names[li]!r}")
    return li, how, fi


def _guess_label(src, names, candidates, dropped, by_name_only=()):
    """The one column named like a label (LABEL_NAMES, any case) among `candidates` and
    `by_name_only` (pandas' index: the label by its name only), else the last candidate;
    two such names are refused rather than one picked. --drop resolves two such names, but
    a dropped column is never replaced by a guess: dropping the one column that would be
    the label (by its name, or as the last) would make some feature the label."""
    hits = sorted(j for j in (*candidates, *by_name_only) if names[j].lower() in LABEL_NAMES)
    kept = [j for j in hits if j not in dropped]
    if len(kept) > 1:
        shown = " and ".join(repr(names[j]) for j in kept)
        raise UsageError(f"{src}: columns {shown} could each be the label; name it with --label")
    if kept:
        return kept[0], "named like a label"
    rest = [j for j in candidates if j not in dropped]
    if not rest:
        raise UsageError(f"{src}: every column is dropped")
    default = hits[0] if hits else candidates[-1]
    if default in dropped:
        raise UsageError(f"{src}: --drop {names[default]} drops the column that would be the label "
                         f"({'named like a label' if hits else 'the last'}); name the label with --label")
    return default, "the last column; --label names another"


def _positions(src, names, positions, name, option):
    """Where the column `name` is (all its places, for a name the file repeats)."""
    if name not in positions:
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        raise UsageError(f"{src}: {option}: no column {name!r} (columns: {shown})")
    return positions[name]


def _column(src, names, positions, name, option):
    """The index of the column `name`, which must appear exactly once."""
    found = _positions(src, names, positions, name, option)
    if len(found) > 1:
        raise UsageError(f"{src}: {option}: column {name!r} appears {len(found)} times")
    return found[0]


def _kind(src, natural, label_type, label):
    """The label's stored kind ("class", "float" or "text") from the column's own type
    and --label-type."""
    if label_type == "auto":
        return natural
    if natural == "text":
        if label_type == "float":
            raise UsageError(f"{src}: --label-type float: the label{_of(label)} holds text, not numbers")
        return natural
    return label_type


def _write(tmp, src, table, dropna, split):
    """Check and append every batch, then hold out the test split; returns the counts
    that the summary reports."""
    with create_h5(tmp) as f:
        X = Y = classes = None
        dropped = 0
        for xb, yb, missing, where in table.batches:
            keep = ~_missing_rows(src, table, xb, missing, where, dropna)
            if not keep.all():
                dropped += int(np.count_nonzero(~keep))
                xb, yb, where = xb[keep], yb[keep], _renumbered(where, np.flatnonzero(keep))
            xb = _finite_float32(src, xb, table.features, where)
            if table.kind == "float":
                _finite_labels(src, yb, table.label, where)
            elif len(yb):
                classes = np.unique(yb) if classes is None else np.union1d(classes, yb)
            if X is None:
                X, Y = _writer(f, "train", xb.shape[1], table.kind)
            _append(X, Y, xb, yb)
        if X is None or not len(X):
            raise UsageError(f"{src}: no data rows" + (" left after --dropna" if dropped else ""))
        test_rows = _split(f, src, X, Y, split, table.kind) if split.fraction else 0
        f.attrs["source"] = os.path.basename(src)
        if table.label is not None:
            f.attrs["label_column"] = table.label
        return {"rows": len(X) + test_rows, "test_rows": test_rows, "features": X.shape[1], "dropped": dropped,
                "classes": None if classes is None else len(classes)}


def _missing_rows(src, table, xb, missing, where, dropna):
    """The rows of a batch with a missing value (NaN or an empty cell); refused, naming
    the first, unless --dropna drops them."""
    gone = np.isnan(xb).any(axis=1) | missing
    if gone.any() and not dropna:
        i = int(np.argmax(gone))
        nan = np.isnan(xb[i])
        if nan.any():
            j = int(np.argmax(nan))
            place = f"column {table.features[j]!r}" if table.features else f"column {j}"
        else:
            place = "label" if table.label is None else f"column {table.label!r}"
        raise UsageError(f"{src}: {where(i)}, {place}: missing value; --dropna drops rows with missing values")
    return gone


def _renumbered(where, rows):
    """where() of a batch that kept `rows` of the original."""
    return lambda i: where(rows[i])


def _writer(f, group, d, kind):
    rows = max(1, min(8192, (1 << 22) // (4 * d)))      # chunks of at most 4 MB
    h5_label = {"class": np.int64, "float": np.float64, "text": h5py.string_dtype("utf-8", None)}[kind]
    X = f.create_dataset(f"{group}/X", (0, d), np.float32, maxshape=(None, d), chunks=(rows, d))
    Y = f.create_dataset(f"{group}/y", (0,), h5_label, maxshape=(None,), chunks=(8192,))
    return X, Y


def _append(X, Y, xb, yb):
    n = X.shape[0]
    X.resize(n + len(xb), axis=0)
    Y.resize(n + len(yb), axis=0)
    X[n:], Y[n:] = xb, yb


def _split(f, src, X, Y, split, kind):
    """Move the held-out rows to /test, keeping both sets in file order: the train rows
    are compacted in place, window by window (a row only ever moves down; HDF5 reuses
    most of the space freed). The labels are read whole to draw the split. Returns how
    many rows were held out."""
    held = _held_out(src, Y[...], split)
    TX, TY = _writer(f, "test", X.shape[1], kind)
    kept, step = 0, max(1, CELLS // X.shape[1])
    for s in range(0, len(held), step):
        xb, yb, h = X[s:s + step], Y[s:s + step], held[s:s + step]
        k = len(h) - int(np.count_nonzero(h))
        X[kept:kept + k], Y[kept:kept + k] = xb[~h], yb[~h]
        kept += k
        _append(TX, TY, xb[h], yb[h])
    X.resize(kept, axis=0)
    Y.resize(kept, axis=0)
    return len(TX)


def _held_out(src, y, split):
    """Which rows the test split holds out: round(fraction * n) of them, drawn with the
    seed; --stratify takes each class in proportion (largest remainders) and never a
    class's last row. Without it a class wholly held out is refused: training would
    meet test labels it has no class for."""
    n = len(y)
    m = int(round(split.fraction * n))
    if m == 0 or m >= n:
        raise UsageError(f"{src}: --test-fraction {split.fraction:g} leaves no training or no test rows of {n}")
    rng = np.random.default_rng(split.seed)
    held = np.zeros(n, bool)
    if not split.stratify:
        held[rng.choice(n, m, replace=False)] = True
        if y.dtype.kind != "f":
            whole = np.setdiff1d(np.unique(y[held]), np.unique(y[~held]))
            if len(whole):
                raise UsageError(f"{src}: --test-fraction {split.fraction:g} holds out every row of class "
                                 f"{label_text(whole[0])}; --stratify keeps each class in training")
        return held
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    quota = split.fraction * counts
    take = np.floor(quota).astype(np.int64)
    room = np.flatnonzero(take + 1 < counts)                 # classes that can give one more
    extra = room[np.argsort(take[room] - quota[room], kind="stable")][:m - int(take.sum())]
    take[extra] += 1
    order = np.lexsort((rng.random(n), inverse))              # by class, shuffled within each
    rank = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    held[order[rank < take[inverse[order]]]] = True
    return held


def _finite_float32(src, xb, features, where):
    """X as float32; inf and values beyond float32's range would only fail training."""
    with np.errstate(over="ignore"):
        x32 = np.asarray(xb, np.float32)
    bad = ~np.isfinite(x32)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        column = repr(features[j]) if features else j
        raise UsageError(f"{src}: {where(i)}, column {column}: {xb[i, j]} is not a finite float32 value")
    return x32


def _finite_labels(src, yb, label, where):
    bad = ~np.isfinite(yb)
    if bad.any():
        i = int(np.argmax(bad))
        raise UsageError(f"{src}: {where(i)}: label {yb[i]} is not a finite number{_of(label)}")


def _of(label):
    return f" (column {label!r})" if label is not None else ""


def _typed_labels(src, yb, kind, label, where, missing=None):
    """Labels of a typed source (arrays, Parquet) in their stored kind, and which are
    missing (NaN, empty text, or `missing`: Parquet's nulls)."""
    missing = np.zeros(len(yb), bool) if missing is None else missing
    if kind == "text":
        yb = np.char.encode(yb, "utf-8") if yb.dtype.kind == "U" else yb.astype("S")
        return yb, missing | (np.char.strip(yb) == b"")
    if yb.dtype.kind == "f":
        nan = np.isnan(yb)
        yb, missing = np.where(nan, 0, yb), missing | nan
    if kind == "float":
        return yb.astype(np.float64), missing
    if yb.dtype.kind == "u" and len(yb) and yb.max() >= INT64[1]:
        _bad_label(src, yb, yb >= INT64[1], "is beyond the int64 range", label, where)
    if yb.dtype.kind == "f":
        _bad_label(src, yb, ~np.isfinite(yb) | (yb != np.round(yb)), "is not a whole number: classes are "
                   "integers (--label-type float stores float targets)", label, where)
        _bad_label(src, yb, (yb < INT64[0]) | (yb >= INT64[1]), "is beyond the int64 range", label, where)
    return yb.astype(np.int64), missing


def _bad_label(src, yb, bad, what, label, where):
    if bad.any():
        i = int(np.argmax(bad))
        raise UsageError(f"{src}: {where(i)}: label {yb[i]} {what}{_of(label)}")


def _chunked(items, n):
    while batch := list(itertools.islice(items, n)):
        yield batch


# -- CSV --
@contextlib.contextmanager
def _csv_source(src, columns, label_type, delimiter):
    encoding = _encoding(src)
    delimiter = delimiter or _sniff(src, encoding)
    with open(src, newline="", encoding=encoding) as fh:
        records = _records(src, csv.reader(fh, delimiter=delimiter, skipinitialspace=True), encoding)
        _, header = next(records, (None, None))
        if header is None:
            raise UsageError(f"{src}: empty CSV file")
        names = [h.strip() for h in header]
        if len(names) == 1:
            raise UsageError(f"{src}: one column only ({names[0]!r}, delimiter {delimiter!r}); needs feature "
                             "columns and a label (--delimiter sets the separator)")
        unnamed = {0} if names[0] == "" else set()     # pandas' to_csv(index=True), R's row names
        li, how, fi = _select(src, names, columns, unnamed)
        batches = _chunked(records, max(1, CELLS // len(names)))
        first = next(batches, None)                # its label cells give the label's type
        batches = itertools.chain([first], batches) if first else iter(())
        natural = _text_kind([r[li].strip() for _, r in first if len(r) > li] if first else [])
        kind = _kind(src, natural, label_type, names[li])
        yield Table(names[li], how, [names[j] for j in fi], kind,
                    _csv_batches(src, batches, names, li, fi, delimiter, kind),
                    ["the unnamed first column (row names)"] if unnamed else [])


def _encoding(src):
    """UTF-8 (a BOM dropped: it would stick to the first column's name) unless a UTF-16
    or UTF-32 byte-order mark says otherwise."""
    with open(src, "rb") as fh:
        head = fh.read(4096)
    encoding = next((enc for bom, enc in BOMS if head.startswith(bom)), "utf-8-sig")
    if encoding == "utf-8-sig" and b"\0" in head:
        raise UsageError(f"{src}: holds NUL bytes: UTF-16 without a byte-order mark, or not text at all; "
                         "save it as UTF-8")
    return encoding


def _sniff(src, encoding):
    """The delimiter among , ; tab | that the first lines use consistently; comma if none."""
    with open(src, newline="", encoding=encoding, errors="replace") as fh:
        sample = fh.read(SNIFF_CHARS)
    if len(sample) == SNIFF_CHARS:
        sample = sample[:sample.rfind("\n") + 1] or sample      # whole lines only
    try:
        return csv.Sniffer().sniff(sample, DELIMITERS).delimiter
    except csv.Error:
        return ","


def _records(src, reader, encoding):
    """(line, fields) of every non-blank record, `line` being the line it starts on."""
    end = 0
    try:
        for fields in reader:
            if fields:
                yield end + 1, fields
            end = reader.line_num
    except csv.Error as e:
        raise UsageError(f"{src}: line {reader.line_num}: {e}") from None
    except UnicodeDecodeError as e:
        if encoding == "utf-8-sig":
            raise UsageError(f"{src}: line {_undecodable_line(src)}: not UTF-8 text; save it as UTF-8") from None
        raise UsageError(f"{src}: not {encoding.upper()} text ({e.reason})") from None


def _undecodable_line(src):
    """The first line that is not UTF-8 (the decoder reads ahead, so the reader cannot tell)."""
    with open(src, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return n


def _csv_batches(src, batches, names, li, fi, delimiter, kind):
    """Batches of (X, y, missing, where) in the label's kind."""
    for batch in batches:
        lines, rows = zip(*batch)

        def where(i, lines=lines):
            return f"line {lines[i]}"
        if set(map(len, rows)) != {len(names)}:
            i = next(i for i, r in enumerate(rows) if len(r) != len(names))
            raise UsageError(f"{src}: {where(i)} has {len(rows[i])} field{'s' * (len(rows[i]) != 1)}, the header "
                             f"has {len(names)} (delimiter {delimiter!r})")
        cells = [r[li].strip() for r in rows]
        missing = np.array([c in MISSING for c in cells], bool)
        labels = _csv_labels(src, cells, missing, kind, names[li], where)
        yield _csv_features(src, rows, names, fi, where), labels, missing, where


def _text_kind(cells):
    """The type pandas.read_csv would give the label column: integers (classes), other
    numbers (float targets) or text; missing cells say nothing."""
    present = [c for c in cells if c not in MISSING]
    if all(INTEGER.match(c) for c in present):
        return "class"
    return "float" if all(map(_is_number, present)) else "text"


def _csv_features(src, rows, names, fi, where):
    """The feature cells as float64, missing cells as NaN."""
    get = operator.itemgetter(*fi)
    cells = [get(r) for r in rows]
    try:
        return np.array(cells, np.float64).reshape(len(rows), len(fi))
    except ValueError:
        pass
    cells = [["nan" if c.strip() in MISSING else c for c in (r if len(fi) > 1 else (r,))] for r in cells]
    try:
        return np.array(cells, np.float64).reshape(len(rows), len(fi))
    except ValueError:
        i, j = next((i, j) for i, r in enumerate(rows) for j in fi if not _is_number(r[j]) and r[j].strip()
                    not in MISSING)
        raise UsageError(f"{src}: {where(i)}, column {names[j]!r}: {rows[i][j]!r} is not a number") from None


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_labels(src, cells, missing, kind, label, where):
    """Label cells in the kind the first batch chose (missing ones as 0 or b""); a later
    cell that does not fit is an error, not a silent truncation."""
    if kind == "text":
        return np.array([c.encode() for c in cells], "S")
    values = [0 if m else _csv_number(src, c, kind, label, where, i) for i, (c, m) in enumerate(zip(cells, missing))]
    return np.array(values, np.int64 if kind == "class" else np.float64)


def _csv_number(src, text, kind, label, where, i):
    """One label cell as a float, or as an exact int64 class (an integer above 2**53
    read through float64 would merge with its neighbours)."""
    if kind == "class" and INTEGER.match(text):
        value = int(text)
    else:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{src}: {where(i)}: label {text!r} is text, the labels before it are numbers"
                             f"{_of(label)}") from None
        if kind == "float":
            return value
        if not (np.isfinite(value) and value == round(value)):
            raise UsageError(f"{src}: {where(i)}: label {text} is not a whole number like the labels before it"
                             f"{_of(label)}; --label-type float stores float targets")
        value = int(value)
    if not INT64[0] <= value < INT64[1]:
        raise UsageError(f"{src}: {where(i)}: label {text} is beyond the int64 range{_of(label)}")
    return value


# -- NPY / NPZ --
@contextlib.contextmanager
def _numpy_source(src, fmt, label_type):
    (xs, ys), how, left_out = (_load_npy(src), "the last column", ()) if fmt == "npy" else _load_npz(src)
    if xs.ndim != 2 or xs.shape[1] == 0 or xs.dtype.kind not in "biuf":
        raise UsageError(f"{src}: X must be a 2-D numeric array (rows, features), has shape {xs.shape} "
                         f"and dtype {xs.dtype}")
    if ys.ndim == 2 and ys.shape[1] == 1:
        ys = ys[:, 0]
    if ys.ndim != 1 or len(ys) != len(xs):
        raise UsageError(f"{src}: y must hold one label per row of X: X has shape {xs.shape}, y {ys.shape}")
    kind = _kind(src, _array_kind(src, ys), label_type, None)
    yield Table(None, how, None, kind, _array_batches(src, xs, ys, kind), left_out)


def _load_npy(src):
    """X and y of a 2-D array whose last column is the label (memory-mapped)."""
    arr = _load(src, (NPY_MAGIC,), "NPY", lambda: np.load(src, mmap_mode="r", allow_pickle=False))
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise UsageError(f"{src}: expected a 2-D array whose last column is the label, has shape {arr.shape}")
    return arr[:, :-1], arr[:, -1]


def _load_npz(src):
    """(X, y), the name of y's array and the arrays not read, named in the summary (an
    X_test and y_test, a second candidate like target beside y: none is dropped unsaid)."""
    def load():
        with np.load(src, allow_pickle=False) as z:
            xk = next((k for k in ("X", "x", "data", "features") if k in z.files), None)
            yk = next((k for k in ("y", "Y", "target", "labels", "label") if k in z.files), None)
            if xk is None or yk is None:
                raise UsageError(f"{src}: needs arrays named X and y (has {', '.join(z.files) or 'none'}); "
                                 "save them with np.savez(path, X=X, y=y)")
            rest = [k for k in z.files if k not in (xk, yk)]
            left_out = [f"array{'s' * (len(rest) > 1)} {', '.join(rest)}"] if rest else []
            return (z[xk], z[yk]), f"array {yk!r}", left_out
    return _load(src, ZIP_MAGICS, "NPZ (zip)", load)


def _load(src, magics, what, load):
    """load() with the ways a damaged or mislabelled file fails turned into one line."""
    with open(src, "rb") as fh:
        head = fh.read(6)
    if not head.startswith(magics):
        raise UsageError(f"{src}: not an {what} file")
    try:
        return load()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise UsageError(f"{src}: cannot read ({e})") from None


def _array_kind(src, ys):
    """The label kind of an array's dtype."""
    if ys.dtype.kind in "iu":
        return "class"
    if ys.dtype.kind == "f":
        return "float"
    if ys.dtype.kind in "SU":
        return "text"
    hint = ": store classes as integers (y.astype(int)) or text" if ys.dtype.kind == "b" else ""
    raise UsageError(f"{src}: y has dtype {ys.dtype}; labels must be integers, floats or text{hint}")


def _array_batches(src, xs, ys, kind):
    rows = max(1, CELLS // xs.shape[1])
    for s in range(0, len(xs), rows):
        def where(i, s=s):
            return f"row {s + i}"
        labels, missing = _typed_labels(src, np.asarray(ys[s:s + rows]), kind, None, where)
        yield np.asarray(xs[s:s + rows], np.float64), labels, missing, where


# -- Parquet --
@contextlib.contextmanager
def _parquet_source(src, columns, label_type):
    pa, pq = _pyarrow(src)
    try:
        pf = pq.ParquetFile(src)
    except (pa.ArrowException, OSError) as e:
        raise UsageError(f"{src}: not a readable Parquet file ({e})") from None
    with pf:
        schema = pf.schema_arrow
        index = _index_columns(schema)
        li, how, fi = _select(src, schema.names, columns, [schema.names.index(n) for n in index])
        label, features = schema.names[li], [schema.names[j] for j in fi]
        counts = collections.Counter(schema.names)
        twice = next((n for n in (label, *features) if counts[n] > 1), None)
        if twice is not None:       # pyarrow reads columns by name
            raise UsageError(f"{src}: column {twice!r} appears {counts[twice]} times; --drop {twice} or name the "
                             "columns to read with --features")
        for name in features:
            t = _value_type(pa, schema.field(name).type)
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                    or pa.types.is_decimal(t)):
                raise UsageError(f"{src}: feature column {name!r} has type {schema.field(name).type}; features "
                                 "must be integer, floating, boolean or decimal")
        kind = _kind(src, _parquet_kind(src, pa, schema.field(label)), label_type, label)
        left_out = [f"pandas' {what}" for n, what in index.items()
                    if n != label and n not in features and n not in (columns.drop or ())]
        yield Table(label, how, features, kind, _parquet_batches(src, pa, pf, label, features, kind), left_out)


def _index_columns(schema):
    """pandas' index columns stored in the file, {column: how the summary names it}: row
    numbers of a filtered frame (unnamed) or ids, times, patient numbers (named,
    df.set_index('id')), no feature; a named index may be the label (df.set_index('label'))."""
    meta = schema.pandas_metadata or {}
    named = {c.get("field_name"): c.get("name") for c in meta.get("columns", [])}
    return {c: f"index {c!r}" if named.get(c) is not None else f"unnamed index {c}"
            for c in meta.get("index_columns", []) if isinstance(c, str) and c in schema.names}


def _pyarrow(src):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"{src}: reading Parquet needs pyarrow: pip install 'mpidml[parquet]'") from None
    return pa, pq


def _value_type(pa, t):
    """A categorical (dictionary) column's values' type; any other column's own."""
    return t.value_type if pa.types.is_dictionary(t) else t


def _parquet_kind(src, pa, field):
    """The label kind of the column's type: integers and strings are classes, floats targets."""
    t = _value_type(pa, field.type)
    if pa.types.is_integer(t):
        return "class"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_floating(t):
        return "float"
    raise UsageError(f"{src}: label column {field.name!r} has type {field.type}; labels must be integer, "
                     "floating or string (categorical too)")


def _parquet_read(src, pa, pf, columns, rows):
    """Record batches of `columns`, one row group at a time: iter_batches over the whole
    file keeps about all of it in memory."""
    try:
        for group in range(pf.num_row_groups):
            yield from pf.iter_batches(batch_size=rows, columns=columns, row_groups=[group])
    except (pa.ArrowException, OSError) as e:
        raise UsageError(f"{src}: cannot read ({e})") from None


def _parquet_array(pa, col):
    return col.dictionary_decode() if pa.types.is_dictionary(col.type) else col


def _parquet_batches(src, pa, pf, label, features, kind):
    start = 0
    for b in _parquet_read(src, pa, pf, features + [label], max(1, CELLS // (len(features) + 1))):
        def where(i, s=start):
            return f"row {s + i}"
        cols = [_parquet_array(pa, c) for c in b.columns]
        xb = np.column_stack([c.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False) for c in cols[:-1]])
        y = cols[-1].cast(pa.binary()) if kind == "text" else cols[-1]
        missing = y.is_null().to_numpy(zero_copy_only=False)
        y = y.fill_null(b"" if kind == "text" else 0).to_numpy(zero_copy_only=False)
        labels, missing = _typed_labels(src, y, kind, label, where, missing)
        yield xb, labels, missing, where
        start += b.num_rows


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
            text = ds.dtype.kind == "O" and h5py.check_string_dtype(ds.dtype) is not None
            if ds.ndim == 1 and (ds.dtype.kind in "iubS" or text) and rows:
                try:
                    _class_counts(ds, out)
                except (OSError, RuntimeError, KeyError) as e:     # HDF5 failing to read: a corrupt file
                    raise UsageError(f"{path}: dataset /{name} cannot be read ({str(e)[:120]})") from None


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
