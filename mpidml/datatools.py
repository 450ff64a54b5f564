"""`mpidml data synth | convert | inspect`: make, import and look at HDF5 files.

All three stream in bounded chunks, so files larger than memory work (convert holds an
NPZ file's arrays whole: a zip member cannot be memory-mapped).
"""
import codecs
import collections
import contextlib
import csv
import itertools
import operator
import os
import sys
import zipfile
import zlib

import h5py
import numpy as np

from .checkpoint import atomic_write, check_output, create_h5
from .data import open_h5
from .errors import UsageError

CHUNK = 65536


def run(args):
    if args.data_command == "synth":
        check_output(args.out, "--out")
        synth(args.out, args.samples, args.features, args.classes, args.seed, args.noise, args.kind,
              args.sorted, args.chunk_rows, args.compression, args.test_samples)
    elif args.data_command == "convert":
        check_output(args.dst, "dst", (("src", args.src),))
        convert(args.src, args.dst, args.label, args.features, args.delimiter)
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
# Every source (CSV, NPY/NPZ, Parquet) is opened as (label name, feature names, batches):
# each batch is (X, y, where) with y already in its stored type (int64, float64 or bytes)
# and where(i) naming row i in the source's own terms ("line 7", "row 6"), so that one
# writer checks and stores them all and every error points at the right place.
LABEL_NAMES = ("label", "y", "target")
FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".npy": "npy", ".npz": "npz",
           ".parquet": "parquet", ".pq": "parquet"}
HDF5_EXTS = (".h5", ".hdf5", ".h5ad")
DELIMITERS = ",;\t|"
SNIFF_CHARS = 16384
CELLS = 1 << 20         # values per batch: memory stays bounded whatever the width
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
NPY_MAGIC, ZIP_MAGICS = b"\x93NUMPY", (b"PK\x03\x04", b"PK\x05\x06")


def convert(src, dst, label=None, features=None, delimiter=None):
    """SRC (CSV, NPY, NPZ or Parquet) to DST in the default layout. `features` is a
    comma-separated list of column names as on the command line; `delimiter` one
    character or "tab" (default: sniffed)."""
    if not os.path.exists(src):
        raise UsageError(f"{src}: no such file")
    if not os.path.isfile(src) or not os.access(src, os.R_OK):
        raise UsageError(f"{src}: not a readable file")
    fmt = _format(src)
    if delimiter is not None and fmt != "csv":
        raise UsageError(f"{src}: --delimiter applies to CSV files only")
    if fmt == "csv":
        source = _csv_source(src, label, _names(features), _delimiter(delimiter))
    elif fmt == "parquet":
        source = _parquet_source(src, label, _names(features))
    elif label is not None or features is not None:
        raise UsageError(f"{src}: --label and --features name CSV or Parquet columns; an {fmt.upper()} "
                         "file has no column names")
    else:
        source = _numpy_source(src, fmt)
    with source as (label_name, feature_names, batches):
        atomic_write(dst, lambda tmp: _write(tmp, src, label_name, feature_names, batches))


def _format(src):
    """The reader for SRC's extension; anything else is refused rather than read as CSV."""
    ext = os.path.splitext(src)[1].lower()
    if ext in FORMATS:
        return FORMATS[ext]
    supported = ", ".join(FORMATS)
    if ext in HDF5_EXTS:
        raise UsageError(f"{src}: is HDF5 already: train on it with --data (data convert reads {supported})")
    raise UsageError(f"{src}: unknown format {ext or '(no extension)'}; data convert reads {supported}")


def _names(features):
    """--features A,B,C as a list of names (None: every column but the label)."""
    if features is None:
        return None
    names = [n.strip() for n in features.split(",")]
    if "" in names:
        raise UsageError(f"--features {features!r}: empty column name")
    twice = next((n for n, count in collections.Counter(names).items() if count > 1), None)
    if twice is not None:
        raise UsageError(f"--features {features!r}: column {twice!r} named twice")
    return names


def _delimiter(value):
    """--delimiter: one character; "tab" and a typed backslash-t mean a tab."""
    if value in ("tab", "\\t"):
        return "\t"
    if value is not None and (len(value) != 1 or value in "\"\r\n"):
        raise UsageError(f"--delimiter {value!r}: expects one character (or tab), not a quote or newline")
    return value


def _select(src, names, label, features):
    """Indices of the label column and of the feature columns among `names`."""
    positions = collections.defaultdict(list)
    for j, name in enumerate(names):
        positions[name].append(j)
    if label is not None:
        li = _column(src, names, positions, label, "--label")
    else:
        li = next((positions[c][0] for c in LABEL_NAMES if c in positions), len(names) - 1)
    if features is None:
        fi = [j for j in range(len(names)) if j != li]
    else:
        fi = [_column(src, names, positions, n, "--features") for n in features]
        if li in fi:
            raise UsageError(f"{src}: column {names[li]!r} is the label and cannot be a feature too")
    if not fi:
        raise UsageError(f"{src}: no feature columns, only the label {names[li]!r}")
    return li, fi


def _column(src, names, positions, name, option):
    """The index of the column `name`, which must appear exactly once."""
    if name not in positions:
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        raise UsageError(f"{src}: {option}: no column {name!r} (columns: {shown})")
    if len(positions[name]) > 1:
        raise UsageError(f"{src}: {option}: column {name!r} appears {len(positions[name])} times")
    return positions[name][0]


def _write(tmp, src, label, features, batches):
    """Check and append every batch; the first one fixes the width and the label type."""
    with create_h5(tmp) as f:
        X = Y = None
        for xb, yb, where in batches:
            xb = _finite_float32(src, xb, features, where)
            if yb.dtype.kind == "f":
                _finite_labels(src, yb, label, where)
            if X is None:
                X, Y = _writer(f, xb.shape[1], yb.dtype)
            _append(X, Y, xb, yb)
        if X is None:
            raise UsageError(f"{src}: no data rows")
        f.attrs["source"] = os.path.basename(src)
        if label is not None:
            f.attrs["label_column"] = label


def _writer(f, d, label_dtype):
    rows = max(1, min(8192, (1 << 22) // (4 * d)))      # chunks of at most 4 MB
    h5_label = h5py.string_dtype("utf-8", None) if label_dtype.kind == "S" else label_dtype
    X = f.create_dataset("train/X", (0, d), np.float32, maxshape=(None, d), chunks=(rows, d))
    Y = f.create_dataset("train/y", (0,), h5_label, maxshape=(None,), chunks=(8192,))
    return X, Y


def _append(X, Y, xb, yb):
    n = X.shape[0]
    X.resize(n + len(xb), axis=0)
    Y.resize(n + len(yb), axis=0)
    X[n:], Y[n:] = xb, yb


def _finite_float32(src, xb, features, where):
    """X as float32; NaN, inf and values beyond float32's range would only fail training."""
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


def _empty_labels(src, labels, label, where):
    """Empty label cells would silently become a class of their own."""
    i = next((i for i, v in enumerate(labels) if not v), None)
    if i is not None:
        raise UsageError(f"{src}: {where(i)}: empty label{_of(label)}")


def _of(label):
    return f" (column {label!r})" if label is not None else ""


def _numeric_kind(chunks):
    """int64 when every value is a whole number, else float64: class ids stored as
    floats (or text "1.0") stay classes."""
    for c in chunks:
        if not np.all(np.isfinite(c) & (c == np.round(c))):
            return np.float64
    return np.int64


def _typed_labels(src, yb, kind, label, where):
    """Labels of a typed source (arrays, Parquet) in their stored type."""
    if kind == "S":
        yb = np.char.encode(yb, "utf-8") if yb.dtype.kind == "U" else yb.astype("S")
        _empty_labels(src, yb, label, where)
        return yb
    if kind is np.int64 and yb.dtype.kind == "u" and len(yb) and yb.max() > np.iinfo(np.int64).max:
        i = int(np.argmax(yb > np.iinfo(np.int64).max))
        raise UsageError(f"{src}: {where(i)}: label {yb[i]} is beyond the int64 range{_of(label)}")
    return yb.astype(kind)


def _chunked(items, n):
    while batch := list(itertools.islice(items, n)):
        yield batch


# -- CSV --
@contextlib.contextmanager
def _csv_source(src, label, features, delimiter):
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
        li, fi = _select(src, names, label, features)
        yield names[li], [names[j] for j in fi], _csv_batches(src, records, names, li, fi, delimiter)


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


def _csv_batches(src, records, names, li, fi, delimiter):
    """Batches of (X, y, where); the first batch fixes the label type for the rest."""
    kind = None
    for batch in _chunked(records, max(1, CELLS // len(names))):
        lines, rows = zip(*batch)

        def where(i, lines=lines):
            return f"line {lines[i]}"
        if set(map(len, rows)) != {len(names)}:
            i = next(i for i, r in enumerate(rows) if len(r) != len(names))
            raise UsageError(f"{src}: {where(i)} has {len(rows[i])} field{'s' * (len(rows[i]) != 1)}, the header "
                             f"has {len(names)} (delimiter {delimiter!r})")
        cells = [r[li].strip() for r in rows]
        _empty_labels(src, cells, names[li], where)
        kind = kind or _text_kind(cells)
        yield _csv_features(src, rows, names, fi, where), _csv_labels(src, cells, kind, names[li], where), where


def _text_kind(cells):
    """Numeric labels when every cell is a number, else text (bytes)."""
    try:
        return _numeric_kind([np.array(cells, np.float64)])
    except ValueError:
        return "S"


def _csv_features(src, rows, names, fi, where):
    get = operator.itemgetter(*fi)
    try:
        return np.array([get(r) for r in rows], np.float64).reshape(len(rows), len(fi))
    except ValueError:
        i, j = next((i, j) for i, r in enumerate(rows) for j in fi if not _is_number(r[j]))
        raise UsageError(f"{src}: {where(i)}, column {names[j]!r}: {rows[i][j]!r} is not a number") from None


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_labels(src, cells, kind, label, where):
    """Label cells in the type the first batch chose; a later cell that does not fit is
    an error, not a silent truncation."""
    if kind == "S":
        return np.array([c.encode() for c in cells], "S")
    try:
        values = np.array(cells, np.float64)
    except ValueError:
        i = next(i for i, c in enumerate(cells) if not _is_number(c))
        raise UsageError(f"{src}: {where(i)}: label {cells[i]!r} is text, the labels before it are numbers"
                         f"{_of(label)}") from None
    if kind is np.int64 and not np.all(values == np.round(values)):
        i = int(np.argmax(values != np.round(values)))
        raise UsageError(f"{src}: {where(i)}: label {cells[i]} is not a whole number like the labels before "
                         f"it{_of(label)}; put a non-integer value in the first rows to store float targets")
    return values.astype(kind)


# -- NPY / NPZ --
@contextlib.contextmanager
def _numpy_source(src, fmt):
    xs, ys = _load_npy(src) if fmt == "npy" else _load_npz(src)
    if xs.ndim != 2 or xs.shape[1] == 0 or xs.dtype.kind not in "biuf":
        raise UsageError(f"{src}: X must be a 2-D numeric array (rows, features), has shape {xs.shape} "
                         f"and dtype {xs.dtype}")
    if ys.ndim == 2 and ys.shape[1] == 1:
        ys = ys[:, 0]
    if ys.ndim != 1 or len(ys) != len(xs):
        raise UsageError(f"{src}: y must hold one label per row of X: X has shape {xs.shape}, y {ys.shape}")
    yield None, None, _array_batches(src, xs, ys, _array_kind(src, ys))


def _load_npy(src):
    """X and y of a 2-D array whose last column is the label (memory-mapped)."""
    arr = _load(src, (NPY_MAGIC,), "NPY", lambda: np.load(src, mmap_mode="r", allow_pickle=False))
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise UsageError(f"{src}: expected a 2-D array whose last column is the label, has shape {arr.shape}")
    return arr[:, :-1], arr[:, -1]


def _load_npz(src):
    def load():
        with np.load(src, allow_pickle=False) as z:
            xk = next((k for k in ("X", "x", "data", "features") if k in z.files), None)
            yk = next((k for k in ("y", "Y", "target", "labels", "label") if k in z.files), None)
            if xk is None or yk is None:
                raise UsageError(f"{src}: needs arrays named X and y (has {', '.join(z.files) or 'none'}); "
                                 "save them with np.savez(path, X=X, y=y)")
            return z[xk], z[yk]
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
    if ys.dtype.kind in "iu":
        return np.int64
    if ys.dtype.kind == "f":
        return _numeric_kind(ys[s:s + CHUNK] for s in range(0, len(ys), CHUNK))
    if ys.dtype.kind in "SU":
        return "S"
    hint = ": store classes as integers (y.astype(int)) or text" if ys.dtype.kind == "b" else ""
    raise UsageError(f"{src}: y has dtype {ys.dtype}; labels must be integers, floats or text{hint}")


def _array_batches(src, xs, ys, kind):
    rows = max(1, CELLS // xs.shape[1])
    for s in range(0, len(xs), rows):
        def where(i, s=s):
            return f"row {s + i}"
        yield np.asarray(xs[s:s + rows]), _typed_labels(src, np.asarray(ys[s:s + rows]), kind, None, where), where


# -- Parquet --
@contextlib.contextmanager
def _parquet_source(src, label, features):
    pa, pq = _pyarrow(src)
    try:
        pf = pq.ParquetFile(src)
    except (pa.ArrowException, OSError) as e:
        raise UsageError(f"{src}: not a readable Parquet file ({e})") from None
    with pf:
        schema = pf.schema_arrow
        index = [c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)]
        names = [n for n in schema.names if n not in index]    # pandas' stored index is no feature
        li, fi = _select(src, names, label, features)
        label, features = names[li], [names[j] for j in fi]
        for name in features:
            t = _value_type(pa, schema.field(name).type)
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                    or pa.types.is_decimal(t)):
                raise UsageError(f"{src}: feature column {name!r} has type {schema.field(name).type}; features "
                                 "must be integer, floating, boolean or decimal")
        kind = _parquet_kind(src, pa, pf, schema.field(label))
        yield label, features, _parquet_batches(src, pa, pf, label, features, kind)


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


def _parquet_kind(src, pa, pf, field):
    """The label's stored type: int64, float64 (whole numbers become int64, as in CSV) or text."""
    t = _value_type(pa, field.type)
    if pa.types.is_integer(t):
        return np.int64
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "S"
    if not pa.types.is_floating(t):
        raise UsageError(f"{src}: label column {field.name!r} has type {field.type}; labels must be integer, "
                         "floating or string (categorical too)")
    batches = _parquet_read(src, pa, pf, [field.name], CELLS)
    return _numeric_kind(_parquet_array(pa, b.column(0)).to_numpy(zero_copy_only=False) for b in batches)


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
        for name, c in zip([*features, label], cols):
            if c.null_count:
                i = int(np.argmax(c.is_null().to_numpy(zero_copy_only=False)))
                raise UsageError(f"{src}: {where(i)}, column {name!r}: missing value")
        xb = np.column_stack([c.cast(pa.float64(), safe=False).to_numpy() for c in cols[:-1]])
        y = cols[-1].cast(pa.binary()) if kind == "S" else cols[-1]
        yield xb, _typed_labels(src, y.to_numpy(zero_copy_only=False), kind, label, where), where
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
