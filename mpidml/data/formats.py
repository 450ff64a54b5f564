"""Features and labels as the tools users already have lay them out, AnnData (.h5ad) and
pandas HDF5 files, read with h5py alone (neither anndata nor pandas is needed).

Every dataset the trainer reads is opened by name through `features` and `labels`. A
plain dataset is itself; another layout is an object with what the readers use of a
dataset (shape, dtype, compression, slices of rows) and a `reader` whose
`read(start, count, out)` fills `count` rows of an array, so describe, both distribution
modes, the test split, evaluate and predict read every layout alike:
- `Csr`: AnnData's sparse X, a group of data, indices and indptr (encoding-type
  csr_matrix). A run of rows reads its slice of indptr, then of data and indices, and is
  densified into the caller's rows: each rank's partition is dense in memory.
- `Categorical`: integer codes with their categories (an AnnData obs column, a pandas
  table's category column); the labels are the categories, so that models and
  predictions carry the class names.
- `Columns`: columns of a pandas frame, fixed format (a 2-D block of columns per dtype)
  or table format (one compound dataset; any compound dataset's fields likewise), named
  FRAME:COLUMN[,COLUMN...]; a frame named alone means its numeric columns but the label.
"""
import collections
import pickletools

import h5py
import numpy as np

from ..errors import UsageError
from .h5 import dataset, node, reading
from .rows import Rows

SHOWN = 8  # column names listed in an error
# PyTables pickles list attributes (pandas keeps column names in them). They are never
# unpickled: `plain_data` interprets the opcodes of plain data itself (lists, tuples, dicts,
# strings, numbers), from pickletools' parse, and refuses every other opcode (globals,
# calls, objects; but see objects=True below), so nothing in a file can run code.
VALUE_OPCODES = frozenset("INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT STRING BINSTRING "
                          "SHORT_BINSTRING BINBYTES SHORT_BINBYTES UNICODE SHORT_BINUNICODE BINUNICODE".split())
CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
EMPTY = {"EMPTY_LIST": list, "EMPTY_TUPLE": tuple, "EMPTY_DICT": dict}
# pandas' fixed format pickles an index of mixed types (column names 0, 1, 2 and 'label') as a
# numpy object array: a call of numpy's _reconstruct, then its state. `plain_data(objects=True)`
# keeps a global as its name (Global) and a call as a record of what it would call (Call),
# calling and importing nothing; `_object_array` accepts exactly that array's shape.
Global = collections.namedtuple("Global", "module name")
RECONSTRUCT = {Global(m, "_reconstruct") for m in ("numpy.core.multiarray", "numpy._core.multiarray")}


def reader(ds, dtype, fd=None):
    """What reads runs of rows of `ds` (from `features` or `labels`) into arrays of `dtype`."""
    return Rows(ds, dtype, fd) if isinstance(ds, h5py.Dataset) else ds.reader(fd)


# -- naming ---------------------------------------------------------------------------------
def features(f, path, name, label=None):
    """The features `name` names: a 2-D dataset, a CSR matrix group (AnnData's sparse X),
    or columns of a frame (FRAME:A,B; FRAME alone: its numeric columns but the label
    `label`, when that is one of its columns)."""
    frame, wanted = _columns_of(f, path, name)
    if frame is None:
        obj = node(f, path, name)
        if isinstance(obj, h5py.Group) and _is_csr(path, name, obj):
            return Csr(f, path, name, obj)
        frame = _frame(f, path, obj)
        if frame is None:
            return dataset(f, path, name)
        label_frame, label_columns = _columns_of(f, path, label) if label else (None, None)
        skip = label_columns[0] if label_frame is not None and label_frame.name == frame.name else None
        wanted = [c.name for c in frame.columns if c.numeric and not c.level and c.name != skip]
        if not wanted:
            raise UsageError(f"{path}: frame {name} has no numeric column besides the label")
    return frame.select(name, wanted)


def labels(f, path, name):
    """The labels `name` names: a 1-D dataset, an AnnData categorical column (codes and
    categories), or one column of a frame (FRAME:COLUMN)."""
    frame, wanted = _columns_of(f, path, name)
    if frame is not None:
        if len(wanted) != 1:
            raise UsageError(f"{path}: {name} names {len(wanted)} columns; the labels are one")
        return frame.label(f, name, wanted[0])
    obj = node(f, path, name)
    kind = _attr(obj, "encoding-type") if isinstance(obj, h5py.Group) else ""
    if kind == "categorical":
        return Categorical(path, name, *(_piece(f, path, obj, k, "a categorical column") for k in ("codes",
                                                                                                 "categories")))
    if kind.startswith("nullable-"):
        return Nullable(path, name, *(_piece(f, path, obj, k, f"a {kind} column") for k in ("values", "mask")))
    frame = _frame(f, path, obj)
    if frame is not None:
        raise UsageError(f"{path}: {name} is a frame; name its label column, --y-dataset {name}:COLUMN "
                         f"(columns: {_listed(frame.columns)})")
    ds = dataset(f, path, name)
    categories = _anndata_categories(f, path, ds) if ds.dtype.kind in "iu" and is_anndata(f) else None
    return ds if categories is None else Categorical(path, name, ds, categories)


def default_features(f, path, y):
    """The features that go with labels `y` named alone: AnnData's X, the rest of y's frame."""
    if is_anndata(f):
        return "/X"
    if _columns_of(f, path, y)[0] is not None:
        return y.split(":", 1)[0]
    raise UsageError("--x-dataset and --y-dataset go together")


def layout_hint(f, path):
    """For a file of a known layout without default training data: the error that says what
    to name (None for other files)."""
    if is_anndata(f):
        obs = f.get("obs")
        columns = [k for k in obs if not k.startswith("_")] if isinstance(obs, h5py.Group) else []
        categorical = [k for k in columns if _attr(obs.get(k, default=obs), "encoding-type") == "categorical"]
        return UsageError(f"{path} is an AnnData file: name its labels, e.g. --y-dataset "
                          f"obs/{(categorical or ['COLUMN'])[0]} (features are /X; obs columns: {_listed(columns)})")
    for name, obj in f.items():
        frame = _frame(f, path, obj) if isinstance(obj, h5py.Group) and _attr(obj, "pandas_type") else None
        if frame is not None:
            return UsageError(f"{path} holds a pandas frame /{name}: name its label column, --y-dataset "
                              f"/{name}:COLUMN (columns: {_listed(frame.columns)})")
    return None


def is_anndata(f):
    """An AnnData file: marked so at the root (anndata >= 0.8), or laid out as one (older)."""
    return _attr(f, "encoding-type") == "anndata" or all(k in f for k in ("X", "obs", "var"))


def _columns_of(f, path, name):
    """(frame, column names) for FRAME:COLUMN[,COLUMN...]; (None, None) for an object's name."""
    if ":" not in name or f.get(name, getlink=True) is not None:     # (f.get fails on the root group)
        return None, None
    where, columns = name.split(":", 1)
    obj = node(f, path, where)
    frame = _frame(f, path, obj)
    if frame is None:
        hint = f" (an AnnData column is {where}/COLUMN)" if _attr(obj, "encoding-type") == "dataframe" else ""
        raise UsageError(f"{path}: {where} is not a pandas frame or a compound dataset, so {name} names no "
                         f"column{hint}")
    return frame, [c.strip() for c in columns.split(",")]


def _attr(obj, key):
    """A text attribute as str ('' when absent)."""
    v = obj.attrs.get(key, "")
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _listed(columns):
    names = [getattr(c, "name", c) for c in columns]
    return ", ".join(names[:SHOWN]) + (f", ... ({len(names)})" if len(names) > SHOWN else "") if names else "none"


def _piece(f, path, group, key, what):
    """Dataset `key` of a group of several (a CSR matrix, a categorical column)."""
    if key not in group:
        raise UsageError(f"{path}: {group.name} is {what} without its dataset {key}")
    return dataset(f, path, f"{group.name}/{key}")


# -- layouts ----------------------------------------------------------------------------------
class Derived:
    """What the readers use of a dataset, for a layout that is not one: subclasses set name,
    path, shape, dtype, compression and define reader(fd)."""
    chunks = None
    is_virtual = False

    @property
    def ndim(self):
        return len(self.shape)

    def __getitem__(self, key):
        """Rows by a slice (describe's label scan) or by sorted indices (the fingerprint)."""
        if isinstance(key, slice):
            start, stop, _ = key.indices(self.shape[0])
            out = np.empty((max(0, stop - start),) + tuple(self.shape[1:]), self.dtype)
            self.reader(None).read(start, len(out), out)
            return out
        return np.concatenate([self[int(i):int(i) + 1] for i in key]) if len(key) else self[0:0]

    def error(self, what, row=None):
        at = "" if row is None else f" at row {row}"
        return UsageError(f"{self.path}: {self.name} {what}{at}")


def _reshaped(out, *shape):
    """`out` (contiguous, as every caller's stretch of rows is) in another shape, a view:
    writes land in `out` (reshape would copy a non-contiguous array silently)."""
    view = out.view()
    view.shape = shape              # raises where a copy would be needed
    return view


def _is_csr(path, name, group):
    """Whether a group holds a CSR matrix (AnnData >= 0.7: encoding-type; older files:
    h5sparse_format); CSC, by columns, cannot be read a partition of rows at a time."""
    kind = _attr(group, "encoding-type") or _attr(group, "h5sparse_format")
    if kind in ("csc_matrix", "csc"):
        raise UsageError(f"{path}: {name} is a CSC sparse matrix (stored by columns), whose rows cannot be read a "
                         "partition at a time; store it as CSR (anndata: adata.X = adata.X.tocsr())")
    return kind in ("csr_matrix", "csr")


class Csr(Derived):
    """A sparse matrix of rows: row i's values are data[indptr[i]:indptr[i + 1]], in the
    columns indices[...]. Opening checks the pieces fit together; each read checks its own
    slices (indptr rising, columns in range), so no pass over the whole matrix is needed."""

    def __init__(self, f, path, name, group):
        self.path, self.name = path, name
        what = "a CSR matrix"
        self.data, self.indices, self.indptr = (_piece(f, path, group, k, what) for k in ("data", "indices", "indptr"))
        self.shape = self._shape(group)
        self.dtype, self.compression = self.data.dtype, self.data.compression or self.indices.compression
        for ds, kinds in ((self.data, "fiub"), (self.indices, "iu"), (self.indptr, "iu")):
            if ds.ndim != 1 or ds.dtype.kind not in kinds:
                raise self.error(f"has {ds.name} of shape {ds.shape} and dtype {ds.dtype}; CSR needs 1-D "
                                 f"{'numbers' if kinds == 'fiub' else 'integers'}")
        if len(self.indptr) != self.shape[0] + 1:
            raise self.error(f"has {len(self.indptr)} indptr entries for its {self.shape[0]} rows (rows + 1 needed)")
        if len(self.data) != len(self.indices):
            raise self.error(f"has {len(self.data)} values in data but {len(self.indices)} in indices")
        with reading(path, self.indptr.name):
            first, last = self.indptr[0], self.indptr[-1]
        if first != 0 or last != len(self.data):
            raise self.error(f"has indptr from {first} to {last}, not from 0 to its {len(self.data)} values")

    def _shape(self, group):
        shape = group.attrs.get("shape", group.attrs.get("h5sparse_shape"))
        try:
            rows, cols = (int(v) for v in np.ravel(shape))
        except (TypeError, ValueError):
            raise self.error(f"has no valid shape attribute ({shape!r}); a CSR matrix needs (rows, columns)") from None
        if rows < 0 or cols < 0:
            raise self.error(f"has shape ({rows}, {cols})")
        return rows, cols

    def reader(self, fd):
        return _CsrRows(self, fd)


class _CsrRows:
    """Reads rows of a Csr dense into the caller's array (values of a repeated column add
    up, as in scipy)."""

    def __init__(self, m, fd):
        self.m = m
        self.indptr, self.data, self.indices = (Rows(ds, ds.dtype, fd) for ds in (m.indptr, m.data, m.indices))

    def read(self, start, count, out):
        m = self.m
        ptr = np.empty(count + 1, m.indptr.dtype)
        self.indptr.read(start, count + 1, ptr)
        ptr = ptr.astype(np.int64)
        lengths = np.diff(ptr)
        falling = np.flatnonzero(lengths < 0)
        if len(falling):
            i = int(falling[0])
            raise m.error(f"has indptr falling from {ptr[i]} to {ptr[i + 1]}", start + i)
        if ptr[0] < 0 or ptr[-1] > len(m.data):
            raise m.error(f"has indptr {ptr[0]}..{ptr[-1]}, outside its {len(m.data)} values", start)
        a, nnz = int(ptr[0]), int(ptr[-1] - ptr[0])
        values, columns = np.empty(nnz, m.data.dtype), np.empty(nnz, m.indices.dtype)
        if nnz:
            self.data.read(a, nnz, values)
            self.indices.read(a, nnz, columns)
        outside = (columns < 0) | (columns >= m.shape[1])
        if outside.any():
            i = int(np.argmax(outside))
            raise m.error(f"has column index {columns[i]}, beyond its {m.shape[1]} columns",
                          start + int(np.searchsorted(ptr, a + i, side="right")) - 1)
        flat = _reshaped(out, -1)
        flat[...] = 0
        np.add.at(flat, np.repeat(np.arange(count, dtype=np.int64) * m.shape[1], lengths) + columns,
                  values.astype(out.dtype, copy=False))


class Categorical(Derived):
    """Labels as integer `codes` (a dataset or a column) index into the dataset `categories`:
    the labels are the categories themselves (text or numbers). A code of -1 is a missing
    value."""

    def __init__(self, path, name, codes, categories):
        self.path, self.name, self.codes = path, name, codes
        if codes.ndim != 1 or codes.dtype.kind not in "iu":
            raise self.error(f"has codes of shape {codes.shape} and dtype {codes.dtype}; a categorical column needs "
                             "1-D integer codes")
        with reading(path, categories.name):
            values = np.asarray(categories[()]).reshape(-1)
        if values.dtype.names:              # a pandas table's categories: its meta table's field values
            if "values" not in values.dtype.names:
                raise self.error(f"has categories {categories.name} without a field values")
            values = values["values"]
        self.categories = as_bytes(values) if values.dtype.kind == "O" else values
        if len(np.unique(self.categories)) != len(self.categories):
            raise self.error(f"has categories {categories.name} that repeat a value")
        self.shape, self.dtype, self.compression = codes.shape, self.categories.dtype, codes.compression

    def reader(self, fd):
        return _CodesRows(self, reader(self.codes, self.codes.dtype, fd))


class _CodesRows:
    def __init__(self, c, codes):
        self.c, self.codes = c, codes

    def read(self, start, count, out):
        c = self.c
        codes = np.empty(count, c.codes.dtype)
        self.codes.read(start, count, codes)
        bad = (codes < 0) | (codes >= len(c.categories))
        if bad.any():
            i = int(np.argmax(bad))
            what = ("has a missing value (code -1)" if codes[i] == -1 else
                    f"has code {codes[i]}, but {len(c.categories)} categories: codes and categories do not match")
            raise c.error(what, start + i)
        out[...] = c.categories[codes]


class Nullable(Derived):
    """An AnnData nullable column (nullable-integer, -boolean, -string-array): `values` and
    a `mask` that is true where a value is missing; a row whose label is missing is refused."""

    def __init__(self, path, name, values, mask):
        self.path, self.name, self.values, self.mask = path, name, values, mask
        if values.ndim != 1 or mask.shape != values.shape or mask.dtype.kind not in "biu":
            raise self.error(f"has values of shape {values.shape} and a mask of shape {mask.shape} and dtype "
                             f"{mask.dtype}; a nullable column needs a 1-D mask of one flag per value")
        self.shape, self.dtype, self.compression = values.shape, values.dtype, values.compression

    def reader(self, fd):
        return _MaskedRows(self, reader(self.values, self.values.dtype, fd), reader(self.mask, np.bool_, fd))


class _MaskedRows:
    def __init__(self, n, values, mask):
        self.n, self.values, self.mask = n, values, mask

    def read(self, start, count, out):
        mask = np.empty(count, np.bool_)
        self.mask.read(start, count, mask)
        if mask.any():
            raise self.n.error("has a missing value (its mask is set)", start + int(np.argmax(mask)))
        self.values.read(start, count, out)


def as_bytes(values):
    """Text as h5py returns variable-length strings (objects: str or bytes) as bytes, the
    form text classes are compared in."""
    return np.array([v.encode() if isinstance(v, str) else bytes(v) for v in values], "S")


def _anndata_categories(f, path, ds):
    """The categories of integer codes `ds` as older anndata kept them: an object reference
    in its attribute `categories` (0.7), PARENT/__categories/NAME, or /uns/NAME_categories
    (0.6); None for codes of none (plain integer labels)."""
    ref = ds.attrs.get("categories")
    if isinstance(ref, h5py.Reference):
        try:
            return f[ref]
        except (KeyError, ValueError) as e:
            raise UsageError(f"{path}: {ds.name} has a categories reference that leads nowhere ({e})") from None
    base = ds.name.rsplit("/", 1)[-1]
    for where in (f"{ds.parent.name.rstrip('/')}/__categories/{base}", f"/uns/{base}_categories"):
        if where in f:
            return dataset(f, path, where)
    return None


# -- frames -----------------------------------------------------------------------------------
class Column:
    """A column of a frame: entry `index` (None: all of it) of field `field` (None: the
    record) of each row of dataset `ds`. `declared`: the type pandas wrote (datetime64...),
    `missing`: the text pandas writes for a missing value, `categories` its dataset.
    `level`: a level of the frame's index (a MultiIndex in table format is stored as
    columns), which may be the labels but is never a feature."""
    level = False

    def __init__(self, name, ds, field=None, index=None, declared="", missing=None, categories=None):
        self.name, self.ds, self.field, self.index = name, ds, field, index
        self.dtype = (ds.dtype if field is None else ds.dtype.fields[field][0]).base
        self.declared, self.missing, self.categories = declared, missing, categories

    @property
    def numeric(self):
        return (self.dtype.kind in "fiub" and self.categories is None
                and not self.declared.startswith(("datetime", "timedelta")))


class Frame:
    """Named columns of `rows` rows each (a pandas frame, or a compound dataset's fields)."""

    def __init__(self, path, name, columns, rows):
        self.path, self.name, self.columns, self.rows = path, name, columns, rows

    def column(self, name):
        for c in self.columns:
            if c.name == name:
                return c
        raise UsageError(f"{self.path}: frame {self.name} has no column {name!r} (columns: {_listed(self.columns)})")

    def select(self, name, wanted):
        """The columns `wanted` as features (numeric, in that order)."""
        columns = [self.column(w) for w in wanted]
        for c in columns:
            if c.level:
                raise UsageError(f"{self.path}: column {c.name!r} of frame {self.name} is a level of its index, "
                                 "not a feature (df.reset_index() makes it a column)")
            if not c.numeric:
                raise UsageError(f"{self.path}: column {c.name!r} of frame {self.name} holds "
                                 f"{c.declared or c.dtype}, not numbers: it cannot be a feature")
        return Columns(self.path, name, columns, (self.rows, len(columns)))

    def label(self, f, name, wanted):
        """Column `wanted` as labels: its categories where it has them (a pandas category
        column; integer codes of an AnnData 0.6 obs with /uns/NAME_categories)."""
        c = self.column(wanted)
        if c.dtype.kind == "O":
            raise UsageError(f"{self.path}: column {c.name!r} of frame {self.name} is stored pickled (pandas' fixed "
                             "format keeps text so), which mpidml does not read: write the frame with "
                             "format='table', or the labels as numbers")
        codes = Columns(self.path, name, [c], (self.rows,))
        categories = c.categories
        if categories is None and c.dtype.kind in "iu" and is_anndata(f) and f"/uns/{c.name}_categories" in f:
            categories = dataset(f, self.path, f"/uns/{c.name}_categories")
        return codes if categories is None else Categorical(self.path, name, codes, categories)


class Columns(Derived):
    """Columns of a frame as a features matrix (shape (rows, k)) or one as labels (rows,):
    each read takes the rows of every dataset (or compound field) involved once."""

    def __init__(self, path, name, columns, shape):
        self.path, self.name, self.columns, self.shape = path, name, columns, shape
        self.dtype = np.result_type(*[c.dtype for c in columns])
        self.compression = next((c.ds.compression for c in columns if c.ds.compression), None)

    def reader(self, fd):
        return _ColumnsRows(self, fd)


class _ColumnsRows:
    def __init__(self, cols, fd):
        self.cols, self.sources = cols, {}      # per dataset and field: (its reader, [(out column, Column)])
        for j, c in enumerate(cols.columns):
            key = (c.ds.id, c.field)
            if key not in self.sources:
                rows = Rows(c.ds, c.ds.dtype, fd) if c.field is None else c.ds.fields(c.field)
                self.sources[key] = (rows, [])
            self.sources[key][1].append((j, c))

    def read(self, start, count, out):
        out2 = _reshaped(out, count, -1)        # labels: one column
        for rows, targets in self.sources.values():
            if isinstance(rows, Rows):
                block = np.empty((count,) + rows.ds.shape[1:], rows.ds.dtype)
                rows.read(start, count, block)
            else:
                block = rows[start:start + count]
            for j, c in targets:
                values = block if c.index is None else block[:, c.index]
                missing = np.flatnonzero(values == c.missing) if c.missing is not None else ()
                if len(missing):
                    raise self.cols.error(f"has a missing value ({c.missing.decode()!r} in pandas' table)",
                                          start + int(missing[0]))
                out2[:, j] = values


def _frame(f, path, obj):
    """The frame `obj` is: a pandas frame group (fixed or table format) or a compound
    dataset; None for anything else."""
    if isinstance(obj, h5py.Dataset):
        return _table(f, path, obj) if obj.dtype.names else None
    kind = _attr(obj, "pandas_type")
    if kind == "frame":
        return _fixed(f, path, obj)
    if kind == "frame_table":
        return _table(f, path, _piece(f, path, obj, "table", "a pandas table"))
    return None


def _fixed(f, path, group):
    """A pandas fixed-format frame: column names in axis0, the index in axis1, and for each
    block i its columns' names (block{i}_items) and values (block{i}_values, rows x
    columns; text blocks are pickled objects, which are listed but never read)."""
    what = "a pandas frame"
    if _attr(group, "axis0_variety") != "regular":
        raise UsageError(f"{path}: frame {group.name} has columns of several levels (a MultiIndex), not supported")
    order = _names(path, _piece(f, path, group, "axis0", what))
    index = _piece(f, path, group, "axis1_label0" if _attr(group, "axis1_variety") == "multi" else "axis1", what)
    rows = len(_names(path, index)) if _pickled_dataset(index) else index.shape[0]      # (a MultiIndex: its codes)
    found = {}
    for i in range(int(group.attrs.get("nblocks", 0))):
        items = _names(path, _piece(f, path, group, f"block{i}_items", what))
        values = _piece(f, path, group, f"block{i}_values", what)
        if values.dtype.kind != "O" and (values.ndim != 2 or values.shape != (rows, len(items))):
            raise UsageError(f"{path}: frame {group.name} has {values.name} of shape {values.shape}, not "
                             f"({rows}, {len(items)}) for its rows and columns")
        for j, item in enumerate(items):
            found[item] = Column(item, values, None, j, _attr(values, "value_type"))
    return Frame(path, group.name, [found[c] for c in order if c in found], rows)


def _table(f, path, ds):
    """A compound dataset as a frame: in pandas' table format a field per block of columns
    of one dtype (values_block_N, the names pickled in its attribute values_block_N_kind)
    or per data column, besides the index fields; any other's fields are its columns."""
    if ds.ndim != 1:
        raise UsageError(f"{path}: compound dataset {ds.name} must be 1-D (a row per record), has shape {ds.shape}")
    group = ds.parent
    pandas = _attr(group, "pandas_type") == "frame_table"       # then the frame is the group
    index = {n for _, n in _pairs(path, group, "index_cols")} if pandas and "index_cols" in group.attrs else set()
    pickled_levels = pandas and _pickled_attribute(group.attrs.get("levels"))
    levels = set(map(str, _pickled(path, group, "levels"))) if pickled_levels else ()
    missing = group.attrs.get("nan_rep", b"nan") if pandas else None
    columns = []
    for field in ds.dtype.names:
        if field in index:
            continue
        width = ds.dtype.fields[field][0].shape
        names = _pickled(path, ds, f"{field}_kind") if f"{field}_kind" in ds.attrs else [field]
        if width and len(names) != int(np.prod(width)):
            names = [f"{field}[{j}]" for j in range(int(np.prod(width)))]
        meta = f"{group.name}/meta/{field}/meta/table"
        categories = dataset(f, path, meta) if _attr(ds, f"{field}_meta") == "category" else None
        for j, name in enumerate(names):
            c = Column(str(name), ds, field, j if width else None, _attr(ds, f"{field}_dtype"), None, categories)
            c.missing = np.bytes_(missing) if missing is not None and c.dtype.kind == "S" else None
            c.level = c.name in levels
            columns.append(c)
    if pandas and "non_index_axes" in group.attrs:
        order = {str(n): i for _, names in _pairs(path, group, "non_index_axes") for i, n in enumerate(names)}
        columns.sort(key=lambda c: order.get(c.name, len(order)))
    return Frame(path, group.name if pandas else ds.name, columns, ds.shape[0])


def _names(path, ds):
    """Column names (or index values) from a dataset of them (text or numbers), as str.
    pandas pickles those it cannot store as one array (0, 1, 2 and 'label'; floats) as a
    numpy object array, which is read from its opcodes (`_object_array`), never unpickled."""
    with reading(path, ds.name):
        values = np.asarray(ds[()]).reshape(-1)
    if _pickled_dataset(ds):
        try:
            values = _object_array(bytes(values[0])) if len(values) == 1 else None
        except Exception:                   # a malformed pickle breaks the parse anywhere
            values = None
        if values is None:
            raise UsageError(f"{path}: frame {ds.parent.name} keeps {ds.name} pickled, and not as a plain array: "
                             "name the columns with text (df.columns = df.columns.map(str)) or write the frame "
                             "with format='table'")
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _pickled_dataset(ds):
    """A dataset of pickles (pandas' fixed format: objects, stored as variable-length bytes)."""
    return ds.dtype.kind == "O" and h5py.check_string_dtype(ds.dtype) is None


def _object_array(raw):
    """The items of a pickled 1-D numpy object array of plain values, or None for any other
    pickle: numpy's _reconstruct of an ndarray, then its state (version, shape, dtype,
    Fortran order, the items as a list)."""
    v = plain_data(raw, objects=True)
    if not (isinstance(v, Call) and v.func in RECONSTRUCT and v.args[:1] == (Global("numpy", "ndarray"),)):
        return None
    state = v.state
    if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], list)
            and state[1] == (len(state[4]),)):
        return None
    items = state[4]
    return items if all(isinstance(i, (str, bytes, int, float)) for i in items) else None


class Call:
    """A call a pickle asks for (REDUCE), recorded, never made; BUILD's `state` beside it."""

    def __init__(self, func, args):
        self.func, self.args, self.state = func, args, None


def plain_data(raw, objects=False):
    """The value of a pickle of plain data, computed from its opcodes without unpickling;
    ValueError for any other opcode. `objects`: globals, calls and their states are kept as
    inert records (Global, Call) for the caller to recognize."""
    stack, memo, marks = [], {}, []

    def since_mark():
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    for op, arg, _ in pickletools.genops(raw):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            return stack.pop()
        if name in VALUE_OPCODES:
            stack.append(arg)
        elif name in CONSTANTS:
            stack.append(CONSTANTS[name])
        elif name in EMPTY:
            stack.append(EMPTY[name]())
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "POP":
            stack.pop()
        elif name == "POP_MARK":
            since_mark()
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "LIST":
            stack.append(since_mark())
        elif name == "TUPLE":
            stack.append(tuple(since_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "DICT":
            items = since_mark()
            stack.append(dict(zip(items[::2], items[1::2])))
        elif name == "APPEND":
            value = stack.pop()
            stack[-1].append(value)
        elif name == "APPENDS":
            items = since_mark()
            stack[-1].extend(items)
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            stack[-1][key] = value
        elif name == "SETITEMS":
            items = since_mark()
            stack[-1].update(zip(items[::2], items[1::2]))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif objects and name in ("GLOBAL", "STACK_GLOBAL"):
            stack.append(Global(*arg.split(" ", 1)) if name == "GLOBAL" else Global(*stack[-2:]))
            if name == "STACK_GLOBAL":
                del stack[-3:-1]
        elif objects and name == "REDUCE":
            args = stack.pop()
            stack.append(Call(stack.pop(), args))
        elif objects and name == "BUILD" and isinstance(stack[-2], Call):
            state = stack.pop()
            stack[-1].state = state
        else:
            raise ValueError(f"opcode {name} is not plain data")
    raise ValueError("no STOP")


def _pickled(path, obj, key):
    """A list attribute PyTables pickled, read as plain data (`plain_data`), never unpickled."""
    try:
        value = plain_data(bytes(obj.attrs[key]))
        if isinstance(value, (list, tuple)):
            return value
    except Exception:                       # a malformed pickle breaks the parse anywhere
        pass
    raise UsageError(f"{path}: attribute {key} of {obj.name} is not a plain list of names")


def _pickled_attribute(value):
    """A pickled attribute (pandas' `levels`: a MultiIndex's level names, pickled; a plain
    index: the number 1)."""
    return isinstance(value, (bytes, np.bytes_))


def _pairs(path, obj, key):
    """The (axis, names) pairs pandas pickles in index_cols and non_index_axes."""
    value = _pickled(path, obj, key)
    if all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        return value
    raise UsageError(f"{path}: attribute {key} of {obj.name} is not a list of (axis, names) pairs")
