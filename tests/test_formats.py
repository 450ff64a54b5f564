"""Files of the tools users already have (issue 15): AnnData (.h5ad, dense or sparse CSR X,
categorical obs labels) and pandas HDF5 (fixed and table format) train as the same rows
in the default layout do; their bad inputs end with one error line (exit 2); rank 0
shows its progress through a long distribution.

anndata and pandas (with PyTables, which pandas writes HDF5 with) are test dependencies
only: they write the files here, so the readers are checked against the real writers;
reading needs neither. Older and broken layouts are written by hand with h5py."""
import collections
import io
import logging
import pickle
import sys
import warnings

import h5py
import numpy as np
import pytest
import scipy.sparse
from conftest import lines, mpiexec, refused, train, write_h5

from mpidml.data import distribute as data
from mpidml.errors import UsageError
from mpidml.files import progress
from mpidml.learn.checkpoint import ModelFile

pytestmark = pytest.mark.timeout(120)
NAMES = np.array(["B cell", "NK cell", "T cell"])
OPTIONS = ["--epochs", "5", "--seed", "5"]


def cells(n=600, d=30, seed=0):
    """Three cell types over d genes, about 70% zeros, like expression counts."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.gamma(2.0, 1.0, (n, d)) * (rng.random((n, d)) < 0.3)
    X[np.arange(n), y] += 6.0
    return X.astype(np.float32), y


def write_anndata(path, X, y, sparse=True):
    """An .h5ad file as anndata writes it: X (CSR or dense), obs/cell_type categorical."""
    import anndata
    import pandas as pd
    obs = pd.DataFrame({"cell_type": pd.Categorical(NAMES[y])}, index=[f"cell{i}" for i in range(len(y))])
    anndata.AnnData(X=scipy.sparse.csr_matrix(X) if sparse else X, obs=obs).write_h5ad(path)
    return path


def h5ad(path, X, codes, categories=NAMES, X_attrs=None, **pieces):
    """An .h5ad file written by hand: CSR X from `X` with `pieces` replaced (None: left out)
    and `X_attrs` for its attributes, obs/cell_type of `codes` and `categories`."""
    m = scipy.sparse.csr_matrix(X)
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        g = f.create_group("X")
        g.attrs.update(X_attrs or {"encoding-type": "csr_matrix", "shape": X.shape})
        for key, value in {"data": m.data, "indices": m.indices, "indptr": m.indptr, **pieces}.items():
            if value is not None:
                g[key] = value
        col = f.create_group("obs/cell_type")
        col.attrs["encoding-type"] = "categorical"
        col["codes"] = np.asarray(codes, np.int8)
        if categories is not None:
            col["categories"] = categories.astype(object)
    return path


def frame(n=500, seed=2):
    """A pandas frame: float32 and int64 features, a text and an integer label."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 3)).astype(np.float32) + 2 * np.eye(3, dtype=np.float32)[y]
    return pd.DataFrame({"f0": X[:, 0], "count": rng.integers(0, 5, n) + 3 * y, "kind": NAMES[y], "f1": X[:, 1],
                         "code": y, "f2": X[:, 2]})


def to_hdf(df, path, fmt, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # PyTables' PerformanceWarning for text columns
        df.to_hdf(path, key="df", format=fmt, **options)
    return path


# -- acceptance: the same rows train alike in every layout -----------------------------------
@pytest.mark.parametrize("n", [1, 3])
def test_sparse_anndata_trains_as_the_default_layout(tmp_path, n):
    X, y = cells()
    plain = write_h5(tmp_path / "plain.h5", X=X, y=NAMES[y].astype("S"))
    sparse = write_anndata(tmp_path / "cells.h5ad", X, y)
    want = train(n, tmp_path, "--data", plain, *OPTIONS, name="plain.json")["test"]
    assert want["accuracy"] > 0.85
    for how in ("scatter", "read")[:n]:
        got = train(n, tmp_path, "--data", sparse, "--y-dataset", "obs/cell_type", "--distribute", how, *OPTIONS)
        assert got["test"] == want, how


def test_anndata_class_names_reach_the_model_evaluate_and_predict(tmp_path):
    X, y = cells(300)
    path = write_anndata(tmp_path / "dense.h5ad", X, y, sparse=False)
    doc = train(1, tmp_path, "--data", path, "--y-dataset", "obs/cell_type", *OPTIONS, "--save", tmp_path / "m.h5")
    assert ModelFile.load(tmp_path / "m.h5").classes == list(NAMES)
    proc = mpiexec(3, ["evaluate", "--model", tmp_path / "m.h5", "--data", path, "--y-dataset", "obs/cell_type"],
                   check=0)
    assert f"evaluate: 300 rows of {path}:/X, labels obs/cell_type" in proc.stdout
    mpiexec(3, ["predict", "--model", tmp_path / "m.h5", "--data", path, "--out", tmp_path / "p.h5"], check=0)
    with h5py.File(tmp_path / "p.h5") as f:
        assert list(f["classes"].asstr()) == list(NAMES)
        assert np.mean(f["labels"][:] == NAMES[y].astype("S")) > doc["test"]["accuracy"] - 0.1


@pytest.mark.parametrize("fmt,label,n,how", [("fixed", "code", 1, "scatter"), ("table", "kind", 3, "read")])
def test_pandas_frames_train_as_the_default_layout(tmp_path, fmt, label, n, how):
    df = frame()
    features = [c for c in df.columns if c not in (label, "kind")]
    labels = df[label].to_numpy().astype("S" if label == "kind" else np.int64)
    plain = write_h5(tmp_path / "plain.h5", X=df[features].to_numpy(np.float32), y=labels)
    path = to_hdf(df, tmp_path / f"{fmt}.h5", fmt)
    want = train(n, tmp_path, "--data", plain, *OPTIONS, name="plain.json")
    got = train(n, tmp_path, "--data", path, "--y-dataset", f"/df:{label}", "--distribute", how, *OPTIONS)
    assert got["test"] == want["test"] and got["data"]["features"] == len(features)
    assert want["test"]["accuracy"] > 0.8


# -- what else is read ----------------------------------------------------------------------
def rows_of(path, x=None, y=None):
    """Every row of the file as training reads it: (info, X, class indices)."""
    info = data.describe(str(path), x, y, test_fraction=0)
    X, labels, err = data.read_rows(info, 0, info["rows"], np.float32)
    if err:
        raise err
    return info, X, labels


def test_older_anndata_layouts(tmp_path):
    """anndata 0.7: CSR marked h5sparse_format, codes with an object reference to their
    categories; 0.6: obs a compound dataset, categories in /uns/NAME_categories."""
    X, y = cells(50, 6)
    path = h5ad(tmp_path / "v07.h5ad", X, y, X_attrs={"h5sparse_format": "csr", "h5sparse_shape": X.shape})
    with h5py.File(path, "a") as f:
        del f["obs/cell_type"], f.attrs["encoding-type"]
        f["obs/__categories/cell_type"] = NAMES.astype(object)
        f["obs/cell_type"] = y.astype(np.int8)
        f["obs/cell_type"].attrs["categories"] = f["obs/__categories/cell_type"].ref
        f.create_group("var")
    info, got, labels = rows_of(path, y="obs/cell_type")
    assert info["classes"] == list(NAMES) and np.array_equal(got, X) and np.array_equal(labels, y)
    obs = np.array(list(zip([b"c%d" % i for i in range(50)], y)), [("index", "S4"), ("cell_type", "i1")])
    path = write_h5(tmp_path / "v06.h5ad", X=X, obs=obs, var=np.zeros(6), uns__cell_type_categories=NAMES.astype("S"))
    info, got, labels = rows_of(path, y="/obs:cell_type")
    assert info["classes"] == list(NAMES) and np.array_equal(labels, y)


def test_csr_rows_are_the_dense_rows_wherever_a_run_starts(tmp_path):
    X, y = cells(200, 12)
    X[5] = 0                                        # an empty row
    info, _, _ = rows_of(h5ad(tmp_path / "c.h5ad", X, y), y="obs/cell_type")
    for a, b in ((0, 200), (5, 6), (37, 141), (199, 200)):
        got, labels, err = data.read_rows(info, a, b, np.float64)
        assert err is None and np.array_equal(got, X[a:b]) and np.array_equal(labels, y[a:b])


def test_pandas_columns_by_name(tmp_path):
    df = frame(60)
    path = to_hdf(df, tmp_path / "t.h5", "table", data_columns=True)
    info, X, _ = rows_of(path, "/df:f2,count", "/df:kind")
    assert info["features"] == 2 and np.array_equal(X, df[["f2", "count"]].to_numpy(np.float32))
    df["kind"] = df["kind"].astype("category")
    info, X, labels = rows_of(to_hdf(df, tmp_path / "c.h5", "table"), y="/df:kind")
    assert info["classes"] == list(NAMES) and info["features"] == 5
    assert np.array_equal(NAMES[labels], df["kind"].to_numpy())


@pytest.mark.parametrize("fmt", ["table", "fixed"])
def test_index_levels_are_never_features(tmp_path, fmt):
    """Table format stores a MultiIndex's levels as columns: they were read as features (the
    row numbers among them). Its levels may be the labels, never features; fixed format,
    which keeps them apart, reads too."""
    df = frame(60)
    df["batch"], df["row"] = np.arange(60) % 4, np.arange(60)
    path = to_hdf(df.set_index(["batch", "row"]), tmp_path / "mi.h5", fmt)
    info, X, _ = rows_of(path, y="/df:code")
    assert np.array_equal(X, df[["f0", "count", "f1", "f2"]].to_numpy(np.float32)), info["features"]
    if fmt == "table":
        info, _, labels = rows_of(path, y="/df:batch")
        assert info["classes"] == [0, 1, 2, 3] and np.array_equal(labels, df["batch"])
        with pytest.raises(UsageError, match="column 'row' of frame /df is a level of its index, not a feature"):
            rows_of(path, "/df:f0,row", "/df:code")


def test_common_frames_train_or_say_what_to_do(tmp_path):
    """df.to_hdf(path, key='df') of everyday frames: integer column names, several blocks
    of mixed dtypes, category labels (table format) read as the columns are; names of mixed
    types, which fixed format pickles, were refused for 'block0_values of shape (100, 3), not
    (100, 1)' and now get the two ways out."""
    import pandas as pd
    df = frame(100)
    X = df[["f0", "count", "f1", "f2"]].to_numpy(np.float32)
    unnamed = pd.DataFrame(X)
    unnamed[4] = df["code"]
    for fmt in ("fixed", "table"):
        _, got, labels = rows_of(to_hdf(unnamed, tmp_path / f"u-{fmt}.h5", fmt), y="/df:4")
        assert np.array_equal(got, X) and np.array_equal(labels, df["code"])
    df["kind"] = df["kind"].astype("category")
    info, got, labels = rows_of(to_hdf(df, tmp_path / "c.h5", "table"), y="/df:kind")
    assert info["classes"] == list(NAMES) and np.array_equal(got[:, [0, 1, 2, 4]], X)
    mixed = pd.DataFrame(X)                                             # names of mixed types
    mixed["label"] = df["code"]
    for fmt, index in (("table", mixed.index), ("fixed", [0, "a"] + list(range(2, 100)))):    # fixed: index too
        info, got, labels = rows_of(to_hdf(mixed.set_axis(index), tmp_path / f"m-{fmt}.h5", fmt), y="/df:label")
        assert np.array_equal(got, X) and np.array_equal(labels, df["code"]), fmt
    _, got, _ = rows_of(tmp_path / "m-fixed.h5", "/df:3,1", "/df:label")
    assert np.array_equal(got, X[:, [3, 1]])
    with h5py.File(tmp_path / "m-fixed.h5", "a") as f:           # a pickle of anything else: refused
        f["df/axis0"][0] = np.frombuffer(pickle.dumps(collections.OrderedDict(a=1)), np.uint8)
    with pytest.raises(UsageError, match=r"keeps /df/axis0 pickled, and not as a plain array: name the columns "
                                         r"with text \(df.columns = df.columns.map\(str\)\)"):
        rows_of(tmp_path / "m-fixed.h5", y="/df:label")


def nullable_obs(path, missing=()):
    """An .h5ad file whose obs holds anndata's nullable columns (groups of values and mask):
    the cell type as Int64 and as boolean (type > 0), `missing` rows masked."""
    import anndata
    import pandas as pd
    X, y = cells(60, 6)
    obs = pd.DataFrame({"type": pd.array(y, dtype="Int64"), "any": pd.array(y > 0, dtype="boolean")},
                       index=[f"c{i}" for i in range(60)])
    obs.iloc[list(missing), 0] = pd.NA
    anndata.AnnData(X=X, obs=obs).write_h5ad(path)
    return path, X, y


def test_anndata_nullable_columns_are_labels(tmp_path):
    """anndata writes pandas' nullable columns as a group of values and mask: they were
    refused as 'is a group'."""
    path, X, y = nullable_obs(tmp_path / "n.h5ad")
    info, got, labels = rows_of(path, y="obs/type")
    assert info["classes"] == [0, 1, 2] and np.array_equal(got, X) and np.array_equal(labels, y)
    info, _, labels = rows_of(path, y="obs/any")
    assert len(info["classes"]) == 2 and np.array_equal(labels, y > 0)


# -- bad inputs --------------------------------------------------------------------------------
X0, Y0 = cells(40, 5)


def _table_with_code_in_names(t):
    """A column-names attribute whose pickle would run code (a global) when loaded."""
    path = to_hdf(frame(30), t / "f.h5", "table")
    with h5py.File(path, "a") as f:
        f["df/table"].attrs["values_block_0_kind"] = np.bytes_(pickle.dumps(collections.OrderedDict(), protocol=0))
    return path


def _table_with_missing_label(t):
    df = frame(30)
    df.loc[3, "kind"] = None
    return to_hdf(df, t / "f.h5", "table")


BAD = {
    "CSR without indptr": (lambda t: h5ad(t / "f.h5ad", X0, Y0, indptr=None), None, "obs/cell_type",
                           "/X is a CSR matrix without its dataset indptr"),
    "CSR indptr too short": (lambda t: h5ad(t / "f.h5ad", X0, Y0, indptr=np.arange(10)), None, "obs/cell_type",
                             "has 10 indptr entries for its 40 rows"),
    "CSR indptr ends early": (lambda t: h5ad(t / "f.h5ad", X0, Y0, data=np.ones(500, np.float32),
                                             indices=np.zeros(500, np.int32)), None, "obs/cell_type",
                              "not from 0 to its 500 values"),
    "CSR indptr falls": (lambda t: h5ad(t / "f.h5ad", X0, Y0, indptr=np.r_[0, 20, 3, np.full(38, 20)].astype(
        np.int64), data=np.ones(20, np.float32), indices=np.zeros(20, np.int32)), None, "obs/cell_type",
                         "/X has indptr falling from 20 to 3 at row 1"),
    "CSR column out of range": (lambda t: h5ad(t / "f.h5ad", X0, Y0, indices=np.full(
        scipy.sparse.csr_matrix(X0).nnz, 7, np.int32)), None, "obs/cell_type",
                                "/X has column index 7, beyond its 5 columns at row 0"),
    "CSR without shape": (lambda t: h5ad(t / "f.h5ad", X0, Y0, X_attrs={"encoding-type": "csr_matrix"}), None,
                          "obs/cell_type", "/X has no valid shape attribute"),
    "CSC": (lambda t: h5ad(t / "f.h5ad", X0, Y0, X_attrs={"encoding-type": "csc_matrix", "shape": X0.shape}), None,
            "obs/cell_type", "/X is a CSC sparse matrix"),
    "codes beyond the categories": (lambda t: h5ad(t / "f.h5ad", X0, np.r_[Y0[:-1], 3]), None, "obs/cell_type",
                                    "obs/cell_type has code 3, but 3 categories: codes and categories do not match "
                                    "at row 39"),
    "missing code": (lambda t: h5ad(t / "f.h5ad", X0, np.r_[-1, Y0[1:]]), None, "obs/cell_type",
                     "obs/cell_type has a missing value (code -1) at row 0"),
    "no categories": (lambda t: h5ad(t / "f.h5ad", X0, Y0, categories=None), None, "obs/cell_type",
                      "/obs/cell_type is a categorical column without its dataset categories"),
    "repeated categories": (lambda t: h5ad(t / "f.h5ad", X0, Y0, categories=NAMES[[0, 1, 1]]), None, "obs/cell_type",
                            "has categories /obs/cell_type/categories that repeat a value"),
    "masked label": (lambda t: nullable_obs(t / "f.h5ad", missing=[7, 30])[0], None, "obs/type",
                     "obs/type has a missing value (its mask is set) at row 7"),
    "labels unnamed": (lambda t: h5ad(t / "f.h5ad", X0, Y0), None, None,
                       "is an AnnData file: name its labels, e.g. --y-dataset obs/cell_type"),
    "missing column": (lambda t: to_hdf(frame(30), t / "f.h5", "table"), None, "/df:knd",
                       "frame /df has no column 'knd' (columns: f0, count, kind, f1, code, f2)"),
    "fixed-format text label": (lambda t: to_hdf(frame(30), t / "f.h5", "fixed"), None, "/df:kind",
                                "column 'kind' of frame /df is stored pickled"),
    "text feature": (lambda t: to_hdf(frame(30), t / "f.h5", "table"), "/df:f0,kind", "/df:code",
                     "column 'kind' of frame /df holds bytes"),
    "missing text label": (_table_with_missing_label, None, "/df:kind", "missing value ('nan' in pandas' table) at "
                           "row 3"),
    "code in column names": (_table_with_code_in_names, None, "/df:kind",
                             "attribute values_block_0_kind of /df/table is not a plain list of names"),
    "frame as labels": (lambda t: to_hdf(frame(30), t / "f.h5", "fixed"), "/df", "/df", "/df is a frame; name its "
                        "label column, --y-dataset /df:COLUMN"),
    "column of no frame": (lambda t: write_h5(t / "f.h5", X=X0, y=Y0), None, "/y:0",
                           "/y is not a pandas frame or a compound dataset"),
    "pandas labels unnamed": (lambda t: to_hdf(frame(30), t / "f.h5", "fixed"), None, None,
                              "holds a pandas frame /df: name its label column, --y-dataset /df:COLUMN"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_name_the_file_and_dataset(tmp_path, case):
    build, x, y, needle = BAD[case]
    path = build(tmp_path)
    with pytest.raises(UsageError) as e:
        rows_of(path, x, y)
    assert str(e.value).startswith(str(path)) and needle in str(e.value)


@pytest.mark.parametrize("case,how", [("CSR column out of range", "read"), ("masked label", "read"),
                                      ("codes beyond the categories", "scatter"),
                                      ("missing column", "scatter")])
def test_bad_inputs_end_with_one_line_at_3_ranks(tmp_path, case, how):
    build, _, y, needle = BAD[case]
    refused(3, ["--quiet", "--epochs", "1", "--data", build(tmp_path), "--y-dataset", y, "--distribute", how],
            needle.split(" at row")[0])     # the row: the first bad one of the rank that reports


def _bzip2_file(path):
    """/X compressed with bzip2 (HDF5 filter 307, hdf5plugin's), its chunks written raw."""
    with h5py.File(path, "w") as f:
        X = f.create_dataset("X", (100, 4), "f4", chunks=(50, 4), compression=307, allow_unknown_filter=True)
        for row in (0, 50):
            X.id.write_direct_chunk((row, 0), b"not bzip2")
        f["y"] = np.arange(100) % 2
    return path


def test_a_filter_hdf5_lacks_is_named_with_what_to_do(tmp_path, monkeypatch):
    """A blosc or bzip2 dataset failed with HDF5's 'can't open directory .../plugin'. Now one
    line names the dataset and filter and what to do, after trying to load hdf5plugin (here a
    stand-in that registers nothing, to see that it is imported)."""
    import importlib.util
    if h5py.h5z.filter_avail(307) or importlib.util.find_spec("hdf5plugin"):
        pytest.skip("this HDF5 has a bzip2 filter, or hdf5plugin would give it one")
    (tmp_path / "hdf5plugin.py").write_text("import builtins\nbuiltins.hdf5plugin_loaded = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _bzip2_file(tmp_path / "bz.h5")
    try:
        with pytest.raises(UsageError, match=r"bz.h5: dataset /X is compressed with the bzip2 filter \(HDF5 filter "
                                             r"307\), which this HDF5 cannot decode: pip install hdf5plugin"):
            rows_of(path)
    finally:
        sys.modules.pop("hdf5plugin", None)             # the stand-in
    import builtins
    assert builtins.__dict__.pop("hdf5plugin_loaded", False)
    refused(3, ["--data", path, "--distribute", "read"], "set HDF5_PLUGIN_PATH to a directory holding the filter's")


def test_hdf5plugin_filters_just_work_where_it_is_installed(tmp_path):
    """With hdf5plugin installed (pip install hdf5plugin; not a dependency), mpidml loads it
    on meeting a filter HDF5 lacks: blosc and bzip2 files train as plain ones."""
    pytest.importorskip("hdf5plugin")
    import subprocess
    X, y = cells(300, 6)
    write_h5(tmp_path / "plain.h5", X=X, y=y)
    subprocess.run([sys.executable, "-c", "import sys, h5py, hdf5plugin\n"
                    f"p = h5py.File({str(tmp_path / 'plain.h5')!r})\n"
                    f"with h5py.File({str(tmp_path / 'b.h5')!r}, 'w') as f:\n"
                    "    f.create_dataset('X', data=p['X'][()], chunks=(64, 6), **hdf5plugin.Blosc())\n"
                    "    f.create_dataset('y', data=p['y'][()], chunks=(64,), **hdf5plugin.BZip2())\n"],
                   check=True, timeout=60)
    want = train(2, tmp_path, "--data", tmp_path / "plain.h5", *OPTIONS, name="plain.json")["test"]
    assert train(2, tmp_path, "--data", tmp_path / "b.h5", "--distribute", "read", *OPTIONS)["test"] == want


# -- progress ---------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def logged():
    """The progress lines rank 0 logs."""
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    log = logging.getLogger("mpidml")
    old = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield records
    log.removeHandler(handler)
    log.setLevel(old)


def test_progress_lines_after_two_seconds_then_every_few(logged):
    clock = Clock()
    meter = progress.Progress("distributing", 1600, 10 ** 6, "lines", clock=clock)
    for t in (0.5, 1.5, 2.5, 3.0, 7.6, 8.0):
        clock.now = t
        meter.tick(100)
    clock.now = 9.0
    meter.close()
    assert logged == ["distributing: 300 MB of 1.6 GB, 19%, 2 s", "distributing: 500 MB of 1.6 GB, 31%, 8 s",
                      "distributing: 1.6 GB in 9.0 s"]


def test_progress_bar_redraws_in_place_and_clears(logged):
    clock, out = Clock(), io.StringIO()
    meter = progress.Progress("distributing", 100, 1000, "bar", share=0.5, clock=clock, out=out)
    clock.now = 3.0
    meter.tick(25)
    assert out.getvalue().startswith("\r  distributing [###############               ] 50 kB of 100 kB, 50%, 3 s")
    meter.close()
    assert out.getvalue().endswith("\r" + " " * meter.width + "\r") and logged == ["distributing: 100 kB in 3.0 s"]


def test_progress_is_silent_for_quick_work_and_with_quiet(logged):
    clock, out = Clock(), io.StringIO()
    for how in ("lines", "bar", None):
        meter = progress.Progress("distributing", 100, 1000, how, clock=clock, out=out)
        clock.now += 1.9 if how else 60
        meter.tick(100)
        meter.close()
    assert not logged and not out.getvalue()


EAGER = """
import sys
from mpidml.files import progress
progress.QUIET_S = progress.EVERY_S = 0.0     # every window shows
from mpidml.__main__ import entry
sys.exit(entry())
"""


def test_distribution_shows_progress_on_rank_0(tmp_path):
    script = tmp_path / "eager.py"
    script.write_text(EAGER)
    path = write_h5(tmp_path / "d.h5", X=np.ones((4000, 8), np.float32), y=np.arange(4000) % 2)
    args = ["--data", path, "--epochs", "1", "--chunk-mb", "0.05"]
    proc = mpiexec(2, args, script=script, check=0)
    shown = lines(proc, "distributing:")
    assert len(shown) > 3 and shown[-1].startswith("distributing: 128 kB in"), proc.stdout
    assert "of 128 kB, 100%" in shown[-2]
    assert not lines(mpiexec(2, [*args, "--quiet"], script=script, check=0), "distributing")


def test_pickled_attributes_are_read_as_plain_data_never_unpickled():
    """PyTables' pickled column names are interpreted opcode by opcode: plain data comes back
    as pickle would give it, and anything that would call code is refused."""
    import os
    import pickle

    from mpidml.data.formats import plain_data
    for value in (["a", "b"], [(1, ["x", "y"])], ("a",), {"k": [1, 2.5, None, True]}, [10 ** 30, -3, "é"], []):
        for protocol in range(6):
            assert plain_data(pickle.dumps(value, protocol=protocol)) == value
    for hostile in (pickle.dumps(os.system), b"cos\nsystem\n(S'echo hi'\ntR."):
        with pytest.raises(ValueError, match="not plain data"):
            plain_data(hostile)


def test_pickled_object_arrays_are_recognized_never_called():
    """pandas' fixed format pickles names of mixed types as a numpy object array: its items
    are read from the opcodes, the call to numpy that would rebuild it recorded, not made."""
    from mpidml.data.formats import Call, _object_array, plain_data
    for protocol in range(2, 6):
        items = [0, 1, 2.5, "label"]
        assert _object_array(pickle.dumps(np.array(items, dtype=object), protocol=protocol)) == items
        assert _object_array(pickle.dumps(np.array([[1, "a"]], dtype=object), protocol=protocol)) is None
        assert _object_array(pickle.dumps(["a"], protocol=protocol)) is None
    call = plain_data(b"cos\nsystem\n(S'touch /tmp/hacked'\ntR.", objects=True)
    assert isinstance(call, Call) and call.args == ("touch /tmp/hacked",)
    assert _object_array(b"cos\nsystem\n(S'echo hi'\ntR.") is None
