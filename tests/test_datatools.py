"""data synth / convert / inspect, and training on what they make."""
import re
import sys

import h5py
import numpy as np
import pytest
from conftest import lines, mpiexec, train, write_h5

from mpidml.cli import datatools
from mpidml.cli.datatools import convert, inspect, synth
from mpidml.errors import UsageError

pytestmark = pytest.mark.timeout(120)


def test_synth_layout_chunking_and_compression(tmp_path):
    out = tmp_path / "s.h5"
    synth(out, 1000, 6, 3, seed=1, chunk_rows=128, compression="gzip", test_samples=100)
    with h5py.File(out) as f:
        assert f["train/X"].shape == (1000, 6) and f["train/X"].dtype == np.float32
        assert f["train/X"].chunks == (128, 6) and f["train/X"].compression == "gzip"
        assert f["test/X"].shape == (100, 6) and set(np.unique(f["train/y"][...])) == {0, 1, 2}
    synth(tmp_path / "r.h5", 500, 4, 0)
    with h5py.File(tmp_path / "r.h5") as f:
        assert f["train/y"].dtype == np.float32


def test_synth_sorted_is_sorted_and_inspect_warns(tmp_path, capsys):
    out = tmp_path / "sorted.h5"
    synth(out, 3000, 5, 4, sort=True)
    with h5py.File(out) as f:
        y = f["train/y"][...]
    assert np.all(np.diff(y) >= 0) and len(y) == 3000
    import io
    buf = io.StringIO()
    inspect(out, buf)
    text = buf.getvalue()
    assert "/train/X: 3000 rows" in text and "classes (4)" in text and "labels look sorted" in text


def test_sorted_file_trains_like_a_shuffled_one(tmp_path):
    for name, sort in (("sorted", True), ("shuffled", False)):
        synth(tmp_path / f"{name}.h5", 6000, 10, 5, seed=3, sort=sort, noise=1.5)
    a = train(3, tmp_path, "--data", tmp_path / "sorted.h5", name="a.json")
    b = train(3, tmp_path, "--data", tmp_path / "shuffled.h5", name="b.json")
    assert a["test"]["accuracy"] > b["test"]["accuracy"] - 0.03 and b["test"]["accuracy"] > 0.8


def test_convert_csv_and_train(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label,c\n" + "".join(f"{r[0]},{r[1]},{t},{r[2]}\n" for r, t in zip(X, y)))
    convert(csv, tmp_path / "d.h5")
    with h5py.File(tmp_path / "d.h5") as f:
        np.testing.assert_allclose(f["train/X"][...], X[:, [0, 1, 2]], rtol=1e-6)
        assert f["train/y"][...].tolist() == y.tolist()
    doc = train(2, tmp_path, "--data", tmp_path / "d.h5")
    assert doc["model"] == "logistic" and doc["test"]["accuracy"] > 0.9


def test_convert_string_labels_npz_npy(tmp_path):
    csv = tmp_path / "s.csv"
    csv.write_text("x1,x2,species\n1,2,setosa\n3,4,virginica\n5,6,setosa\n")
    convert(csv, tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5") as f:
        labels = [v.decode() if isinstance(v, bytes) else v for v in f["train/y"][...]]
        assert labels == ["setosa", "virginica", "setosa"]
    np.savez(tmp_path / "a.npz", X=np.ones((5, 2)), y=np.arange(5) % 2)
    convert(tmp_path / "a.npz", tmp_path / "a.h5")
    np.save(tmp_path / "b.npy", np.c_[np.ones((4, 3)), np.arange(4) * 0.5])
    convert(tmp_path / "b.npy", tmp_path / "b.h5")
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert a["train/X"].shape == (5, 2) and b["train/X"].shape == (4, 3)
        assert b["train/y"].dtype == np.float64


def test_convert_npz_names_the_arrays_it_leaves_out(tmp_path):
    """An NPZ's other arrays (X_test and y_test, target beside y) were dropped without a
    word; the summary now names them."""
    rows = np.arange(8.0).reshape(4, 2)
    np.savez(tmp_path / "t.npz", X=rows, y=np.arange(4) % 2, X_test=rows, y_test=np.arange(4) % 2)
    summary = convert(tmp_path / "t.npz", tmp_path / "t.h5")
    assert summary.endswith("label array 'y': 2 classes; left out arrays X_test, y_test"), summary
    np.savez(tmp_path / "u.npz", X=rows, y=np.arange(4) % 2, target=np.arange(4.0))
    assert convert(tmp_path / "u.npz", tmp_path / "u.h5").endswith("; left out array target")
    np.savez(tmp_path / "v.npz", X=rows, y=np.arange(4) % 2)
    assert "left out" not in convert(tmp_path / "v.npz", tmp_path / "v.h5")


def test_data_commands_from_the_command_line(tmp_path):
    out = tmp_path / "c.h5"
    mpiexec(1, ["data", "synth", "--samples", "300", "--features", "4", "--classes", "3", "--out", out], check=0)
    proc = mpiexec(1, ["data", "inspect", out], check=0)
    assert "300 rows" in proc.stdout
    proc = mpiexec(2, ["data", "convert", tmp_path / "none.csv", tmp_path / "x.h5"], timeout=30)
    assert proc.returncode == 2 and "none.csv: no such file" in proc.stderr


def test_real_data_stored_sorted_by_label_trains_like_shuffled(tmp_path):
    from conftest import DIGITS
    with h5py.File(DIGITS) as f:
        X, y, TX, Ty = f["train/X"][...], f["train/y"][...], f["test/X"][...], f["test/y"][...]
    order = np.argsort(y, kind="stable")
    with h5py.File(tmp_path / "sorted.h5", "w") as f:
        f["train/X"], f["train/y"], f["test/X"], f["test/y"] = X[order], y[order], TX, Ty
    sorted_run = train(3, tmp_path, "--data", tmp_path / "sorted.h5", name="s.json")
    shuffled = train(3, tmp_path, name="u.json")
    assert sorted_run["test"]["accuracy"] >= shuffled["test"]["accuracy"] - 0.03


def _rows(path):
    with h5py.File(path) as f:
        return f["train/X"][...], f["train/y"][...]


def _refused(src, match, **options):
    """convert(src) fails with one line naming the file and matching `match`."""
    dst = src.with_name("refused.h5")
    with pytest.raises(UsageError) as e:
        convert(src, dst, **options)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(src)) and re.search(match, message), message
    assert not dst.exists()


SPECIES = [("setosa", "1.5", "-2"), ("x, y", "3", "4e-1"), ("virginica", "5", "6")]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_convert_csv_sniffs_delimiter_quotes_bom_and_utf16(tmp_path, delimiter, encoding):
    src = tmp_path / "d.csv"
    lines = [delimiter.join(["label", "a", "b"])]      # a BOM must not hide the label column's name
    lines += [delimiter.join([f'"{c}"', a, b]) for c, a, b in SPECIES]
    src.write_text("\n".join(lines) + "\n", encoding=encoding)
    convert(src, tmp_path / "d.h5")
    X, y = _rows(tmp_path / "d.h5")
    np.testing.assert_allclose(X, [[1.5, -2], [3, 0.4], [5, 6]], rtol=1e-6)
    assert y.tolist() == [b"setosa", b"x, y", b"virginica"]


def test_convert_csv_delimiter_option_and_column_selection(tmp_path):
    src = tmp_path / "d.txt"
    src.write_text("id\tx\tz\tclass\n7\t1\t2\t0\n8\t3\t4\t1\n")
    convert(src, tmp_path / "d.h5", label="class", features="z, x", delimiter="tab")
    X, y = _rows(tmp_path / "d.h5")
    assert X.tolist() == [[2, 1], [4, 3]] and y.tolist() == [0, 1]
    _refused(src, r"one column only \('id\\tx\\tz\\tclass', delimiter ','\)", delimiter=",")
    for bad, match in ((dict(delimiter=";;"), "--delimiter ';;': expects one character"),
                       (dict(features="x,,z"), "--features 'x,,z': empty column name")):
        with pytest.raises(UsageError, match=match):
            convert(src, tmp_path / "refused.h5", **bad)
    _refused(src, r"--features: no column 'w' \(columns: id, x, z, class\)", features="x,w")
    _refused(src, "column 'class' is the label and cannot be a feature", features="x,class")
    (tmp_path / "l.csv").write_text("label\n1\n0\n")
    _refused(tmp_path / "l.csv", "one column only")


@pytest.mark.parametrize("body, match", [
    ('1,2,0\n\n"3",4,1\n1,x,0\n', r"line 5, column 'b': 'x' is not a number"),      # a blank line counted
    ('1,2,"multi\nline"\n1,2\n', "line 4 has 2 fields, the header has 3"),           # a record of two lines
    ("1,2,0\n3,4,\n", "line 3, column 'label': missing value; --dropna drops rows with missing values"),
    ("1,2,0\n3,nan,1\n", "line 3, column 'b': missing value"),
    ("1,2,0\n3,inf,1\n", "line 3, column 'b': inf is not a finite float32"),
    ("1,2,0\n3,1e39,1\n", "line 3, column 'b': 1e\\+39 is not a finite float32"),
    ("1,2,0\n3,4,0.5\n5,6,inf\n", "line 4: label inf is not a finite number"),
    ("1,2,0\n3,4,1\n5,6,\xe9\n", "line 4: not UTF-8 text"),
])
def test_convert_csv_errors_name_the_line(tmp_path, body, match):
    src = tmp_path / "bad.csv"
    src.write_bytes(("a,b,label\n" + body).encode("utf-8").replace(b"\xc3\xa9", b"\xe9"))
    _refused(src, match)


def test_convert_csv_labels_that_change_type_after_the_first_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(datatools, "CELLS", 8)      # 4 rows of 2 columns per batch
    src = tmp_path / "d.csv"
    src.write_text("a,label\n" + "1,0\n" * 5 + "2,0.5\n")
    _refused(src, "line 7: label 0.5 is not a whole number like the labels before it")
    src.write_text("a,label\n" + "1,0\n" * 9 + "2,cat\n")
    _refused(src, "line 11: label 'cat' is text, the labels before it are numbers")
    src.write_text("a,label\n" + "1,0\n" * 9 + "3,1\n")
    convert(src, tmp_path / "d.h5")
    assert _rows(tmp_path / "d.h5")[1].tolist() == [0] * 9 + [1]


def test_convert_refuses_utf16_without_bom_and_unknown_formats(tmp_path):
    src = tmp_path / "w.csv"
    src.write_bytes("a,label\n1,0\n".encode("utf-16-le"))
    _refused(src, "NUL bytes: UTF-16 without a byte-order mark")
    for name, match in (("cells.h5ad", "is HDF5 already"), ("d.json", "unknown format .json"),
                        ("data", r"unknown format \(no extension\)")):
        (tmp_path / name).write_text("a,label\n1,0\n")
        _refused(tmp_path / name, match + r".*data convert reads \.csv, .*\.parquet")


def test_convert_npz_npy_errors(tmp_path):
    X = np.ones((4, 2))
    cases = {
        "bool.npz": (dict(X=X, y=np.array([True, False] * 2)), "y has dtype bool.*y.astype\\(int\\)"),
        "wide.npz": (dict(X=X, y=np.ones((4, 2))), r"one label per row of X: X has shape \(4, 2\), y \(4, 2\)"),
        "unnamed.npz": ((X, np.ones(4)), r"needs arrays named X and y \(has arr_0, arr_1\)"),
        "empty.npz": (dict(X=X, y=np.array([b"a", b"", b"b", b"c"])), "row 1, label: missing value"),
        "nan.npy": (None, "row 2, column 1: missing value"),
    }
    for name, (arrays, match) in cases.items():
        if arrays is None:
            np.save(tmp_path / name, np.c_[X, np.arange(4)] + np.where(np.arange(12) == 7, np.nan, 0).reshape(4, 3))
        elif isinstance(arrays, dict):
            np.savez(tmp_path / name, **arrays)
        else:
            np.savez(tmp_path / name, *arrays)
        _refused(tmp_path / name, match)
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04 cut short")
    _refused(tmp_path / "zip.npz", "cannot read")
    np.savez(tmp_path / "z.npz", X=X, y=np.arange(4))
    (tmp_path / "z.npy").write_bytes((tmp_path / "z.npz").read_bytes())
    _refused(tmp_path / "z.npy", "not an NPY file")
    _refused(tmp_path / "z.npz", "--label, --features and --drop name CSV or Parquet columns", label="y")
    np.savez(tmp_path / "col.npz", X=X, y=np.arange(4.0)[:, None])      # a column vector is one label per row
    convert(tmp_path / "col.npz", tmp_path / "col.h5")
    assert _rows(tmp_path / "col.h5")[1].tolist() == [0, 1, 2, 3]


def _table(n=300, seed=0):
    """Columns of a small 3-class task: float and int features, a text label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return {"f": rng.standard_normal(n) + 4 * y, "i": rng.integers(-3, 3, n) + 6 * y,
            "kind": np.array(["alpha", "beta", "gamma"])[y]}


def test_convert_parquet_matches_the_same_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    cols = _table()
    table = pa.table({"f": cols["f"], "i": cols["i"], "kind": pa.array(cols["kind"]).dictionary_encode()})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=64)
    rows = zip(*(c.tolist() for c in cols.values()))
    (tmp_path / "d.csv").write_text("f,i,kind\n" + "".join(f"{f!r},{i},{k}\n" for f, i, k in rows))
    for fmt in ("parquet", "csv"):
        convert(tmp_path / f"d.{fmt}", tmp_path / f"{fmt}.h5", label="kind", features="i,f")
    (px, py), (cx, cy) = _rows(tmp_path / "parquet.h5"), _rows(tmp_path / "csv.h5")
    np.testing.assert_array_equal(px, cx)
    assert px.shape == (300, 2) and py.tolist() == cy.tolist() == [k.encode() for k in cols["kind"]]


def test_convert_parquet_errors(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    cases = {
        "null.parquet": ({"a": [1.0, 2.0, None], "y": [0, 1, 0]}, "row 2, column 'a': missing value"),
        "bool.parquet": ({"a": [1.0, 2.0], "y": [True, False]}, "label column 'y' has type bool"),
        "text.parquet": ({"a": ["1", "2"], "y": [0, 1]}, "feature column 'a' has type string"),
        "only.parquet": ({"y": [0, 1]}, "no feature columns, only the label 'y'"),
    }
    for name, (columns, match) in cases.items():
        pq.write_table(pa.table(columns), tmp_path / name, row_group_size=2)
        _refused(tmp_path / name, match)
    (tmp_path / "junk.parquet").write_text("a,label\n1,0\n")
    _refused(tmp_path / "junk.parquet", "not a readable Parquet file")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    _refused(tmp_path / "only.parquet", r"reading Parquet needs pyarrow: pip install 'mpidml\[parquet\]'")


def test_parquet_converted_on_the_command_line_trains(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table(_table(600, seed=1)), tmp_path / "d.parquet", row_group_size=100)
    mpiexec(1, ["data", "convert", tmp_path / "d.parquet", tmp_path / "d.h5", "--label", "kind"], check=0)
    doc = train(1, tmp_path, "--data", tmp_path / "d.h5")
    assert doc["data"]["classes"] == 3 and doc["test"]["accuracy"] > 0.9
    (tmp_path / "e.csv").write_text("a;b;label\n1;2;x\n3;4;\n")
    proc = mpiexec(1, ["data", "convert", tmp_path / "e.csv", tmp_path / "e.h5"], check=2)
    assert proc.stderr.strip() == (f"mpidml: error: {tmp_path / 'e.csv'}: line 3, column 'label': missing value; "
                                   "--dropna drops rows with missing values")


# -- issue 20: no silent guess of the label's type or column; a summary; splits, drops, missing values
def test_whole_number_float_targets_stay_float_targets(tmp_path):
    """scikit-learn's diabetes targets are floats with whole values ("151.0" in pandas'
    CSV, float64 in Parquet): stored as int64 they trained a 214-class softmax to
    accuracy 0.0 without a word. The column's own type decides; --label-type overrides."""
    pytest.importorskip("pyarrow")
    datasets = pytest.importorskip("sklearn.datasets")
    frame = datasets.load_diabetes(as_frame=True).frame
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.parquet"):
        summary = convert(tmp_path / name, tmp_path / "d.h5")
        assert summary == (f"{tmp_path / 'd.h5'}: 442 training rows, 10 features; label column 'target' (named like "
                           "a label): float targets (regression; --label-type class reads them as classes)")
        X, y = _rows(tmp_path / "d.h5")
        assert X.shape == (442, 10) and y.dtype == np.float64 and y[0] == 151.0
    convert(tmp_path / "d.csv", tmp_path / "c.h5", label_type="class")
    assert _rows(tmp_path / "c.h5")[1].dtype == np.int64
    doc = train(1, tmp_path, "--data", tmp_path / "d.h5", "--epochs", "3")
    assert doc["model"] == "linear" and "r2" in doc["test"]


@pytest.mark.parametrize("cells, label_type, dtype, values", [
    (["1", "-2", "3"], "auto", np.int64, [1, -2, 3]),               # plain integers: classes
    (["1.0", "2", "3e0"], "auto", np.float64, [1, 2, 3]),           # a decimal point or exponent: floats
    (["1", "-2", "3"], "float", np.float64, [1, -2, 3]),
    (["1.0", "2", "3e0"], "class", np.int64, [1, 2, 3]),
    (["b", "1", "b"], "class", object, [b"b", b"1", b"b"]),         # text stays text
    ([str(2 ** 53), str(2 ** 53 + 1), str(-2 ** 63)], "auto", np.int64, [2 ** 53, 2 ** 53 + 1, -2 ** 63]),
])
def test_convert_csv_label_types(tmp_path, cells, label_type, dtype, values):
    src = tmp_path / "d.csv"
    src.write_text("a,label\n" + "".join(f"{i},{c}\n" for i, c in enumerate(cells)))
    convert(src, tmp_path / "d.h5", label_type=label_type)
    y = _rows(tmp_path / "d.h5")[1]
    assert y.dtype == dtype and y.tolist() == values      # integers above 2**53 not merged through float64


def test_convert_label_type_refusals(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text(f"a,label\n1,{2 ** 63}\n")
    _refused(src, f"line 2: label {2 ** 63} is beyond the int64 range")
    src.write_text("a,label\n1,cat\n")
    _refused(src, "--label-type float: the label \\(column 'label'\\) holds text", label_type="float")
    src.write_text("a,label\n1,0.5\n")
    _refused(src, "line 2: label 0.5 is not a whole number", label_type="class")
    np.savez(tmp_path / "f.npz", X=np.ones((3, 2)), y=np.array([0.0, 1.0, 2.5]))
    _refused(tmp_path / "f.npz", "row 2: label 2.5 is not a whole number: classes are integers", label_type="class")
    convert(tmp_path / "f.npz", tmp_path / "f.h5")
    assert _rows(tmp_path / "f.h5")[1].dtype == np.float64
    np.save(tmp_path / "c.npy", np.c_[np.ones((3, 2)), [0, 1, 0]])      # np.c_ made the labels floats
    assert "label the last column: float targets (regression; --label-type class reads them as classes)" in \
        convert(tmp_path / "c.npy", tmp_path / "c.h5")     # whole numbers as for every format: no guess
    assert _rows(tmp_path / "c.h5")[1].dtype == np.float64
    assert "label the last column: 2 classes" in convert(tmp_path / "c.npy", tmp_path / "c.h5", label_type="class")
    assert _rows(tmp_path / "c.h5")[1].dtype == np.int64


def test_training_warns_of_many_classes_with_few_rows(tmp_path):
    """Integer targets (ages, prices) trained as classes: 60-odd classes of 3 rows each."""
    rng = np.random.default_rng(0)
    y = rng.integers(20, 90, 200)
    write_h5(tmp_path / "d.h5", X=rng.standard_normal((200, 2)), y=y)
    proc = mpiexec(1, ["--data", tmp_path / "d.h5", "--epochs", "1"], check=0)
    assert lines(proc, "mpidml: warning:") == [
        f"mpidml: warning: {tmp_path / 'd.h5'}: dataset /y has {len(set(y))} classes in 200 rows (fewer than 5 "
        "rows each): if its labels are numbers to fit, use --model linear (regression)"]


def test_convert_prints_a_summary_and_warns_of_many_classes_with_few_rows(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(20, 90, 200)
    (tmp_path / "d.csv").write_text("a,b,age\n" + "".join(f"{v + rng.random()},{rng.random()},{v}\n" for v in y))
    proc = mpiexec(1, ["data", "convert", tmp_path / "d.csv", tmp_path / "d.h5"], check=0)
    assert proc.stderr.splitlines() == [
        f"mpidml: warning: column 'age': {len(set(y))} classes in 200 rows (fewer than 5 rows each): if they are "
        "numbers to fit, --label-type float stores them as float targets"]
    assert proc.stdout.splitlines() == [
        f"{tmp_path / 'd.h5'}: 200 training rows, 2 features; label column 'age' (the last column; --label names "
        f"another): {len(set(y))} classes"]


@pytest.mark.parametrize("header, label", [("Label,f1,f2", "Label"), ("f1,CLASS,f2", "CLASS"),
                                           ("f1,f2,Target", "Target"), ("f1,f2,f3", "f3")])
def test_convert_finds_the_label_column_by_name_in_any_case(tmp_path, header, label):
    src = tmp_path / "d.csv"
    rows = [[1, 2, 3], [4, 5, 6]]
    src.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    summary = convert(src, tmp_path / "d.h5")
    j = header.split(",").index(label)
    how = "the last column; --label names another" if label == "f3" else "named like a label"
    assert f"label column {label!r} ({how}): 2 classes" in summary
    X, y = _rows(tmp_path / "d.h5")
    assert y.tolist() == [r[j] for r in rows] and X.tolist() == [[v for k, v in enumerate(r) if k != j] for r in rows]


def test_convert_refuses_two_label_names_and_leaves_row_names_out(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("x,y,class\n1,2,a\n3,4,b\n")
    _refused(src, "columns 'y' and 'class' could each be the label; name it with --label")
    assert "label column 'class' (--label)" in convert(src, tmp_path / "d.h5", label="class")
    src.write_text(",a,label\n0,1.5,0\n1,2.5,1\n")         # pandas' to_csv with its index
    summary = convert(src, tmp_path / "d.h5")
    assert summary.endswith("; left out the unnamed first column (row names)")
    assert _rows(tmp_path / "d.h5")[0].tolist() == [[1.5], [2.5]]


def test_convert_parquet_keeps_index_columns_and_refuses_duplicate_names(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [5.0, 6.0, 7.0, 8.0], "label": [0, 1, 0, 1]})
    frame.set_index("label").to_parquet(tmp_path / "named.parquet")      # the label became pandas' index
    assert "label column 'label' (named like a label): 2 classes" in convert(tmp_path / "named.parquet",
                                                                                tmp_path / "n.h5")
    X, y = _rows(tmp_path / "n.h5")
    assert y.tolist() == [0, 1, 0, 1] and X.tolist() == [[1, 5], [2, 6], [3, 7], [4, 8]]
    frame[frame.a > 1].to_parquet(tmp_path / "filtered.parquet")        # an unnamed index of row numbers
    summary = convert(tmp_path / "filtered.parquet", tmp_path / "f.h5")
    assert summary.endswith("; left out pandas' unnamed index __index_level_0__")
    assert _rows(tmp_path / "f.h5")[0].tolist() == [[2, 6], [3, 7], [4, 8]]
    table = pa.Table.from_arrays([pa.array([1.0, 2.0]), pa.array([3.0, 4.0]), pa.array([0, 1])], ["a", "a", "y"])
    pq.write_table(table, tmp_path / "twice.parquet")
    _refused(tmp_path / "twice.parquet", "column 'a' appears 2 times; --drop a or name the columns to read")
    _refused(tmp_path / "twice.parquet", "no feature columns, only the label 'y'", drop="a")


def test_a_named_parquet_index_is_no_feature_unless_named(tmp_path):
    """df.set_index("id"): the ids are left out (and said), not trained on; the index is
    the label only by name or --label (never as the last column), a feature by --features."""
    pytest.importorskip("pyarrow")
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"id": [7, 8, 9, 10], "a": [1.0, 2.0, 3.0, 4.0], "b": [5.0, 6.0, 7.0, 8.0],
                          "label": [0, 1, 0, 1]})
    frame.set_index("id").to_parquet(tmp_path / "ids.parquet")
    summary = convert(tmp_path / "ids.parquet", tmp_path / "i.h5")
    assert ", 2 features; label column 'label' (named like a label)" in summary
    assert summary.endswith("; left out pandas' index 'id'")
    assert _rows(tmp_path / "i.h5")[0].tolist() == [[1, 5], [2, 6], [3, 7], [4, 8]]
    frame.drop(columns="label").set_index("id").to_parquet(tmp_path / "nolabel.parquet")
    assert "label column 'b' (the last column" in convert(tmp_path / "nolabel.parquet", tmp_path / "n.h5")
    assert "label column 'id' (--label)" in convert(tmp_path / "ids.parquet", tmp_path / "l.h5", label="id")
    summary = convert(tmp_path / "ids.parquet", tmp_path / "f.h5", features="id,a")
    assert "left out" not in summary and _rows(tmp_path / "f.h5")[0].tolist() == [[7, 1], [8, 2], [9, 3], [10, 4]]


def test_convert_holds_out_a_seeded_and_stratified_test_split(tmp_path, monkeypatch):
    monkeypatch.setattr(datatools, "CELLS", 256)        # batches and split windows of 128 rows
    y = np.repeat([0, 1, 2], [700, 250, 50])
    src = tmp_path / "d.csv"
    src.write_text("row,label\n" + "".join(f"{i},{c}\n" for i, c in enumerate(y)))

    def split(name, **options):
        summary = convert(src, tmp_path / name, test_fraction=0.2, **options)
        with h5py.File(tmp_path / name) as f:
            train_rows, test_rows = f["train/X"][:, 0], f["test/X"][:, 0]
            assert f["train/y"][...].tolist() == y[train_rows.astype(int)].tolist()
            assert f["test/y"][...].tolist() == y[test_rows.astype(int)].tolist()
        assert np.all(np.diff(train_rows) > 0) and np.all(np.diff(test_rows) > 0)      # file order kept
        assert sorted(np.r_[train_rows, test_rows].tolist()) == list(range(1000))
        assert summary.startswith(f"{tmp_path / name}: 800 training rows, 200 test rows, 1 feature; ")
        return test_rows.astype(int)

    a, b, c = split("a.h5", seed=1), split("b.h5", seed=1), split("c.h5", seed=2)
    assert a.tolist() == b.tolist() != c.tolist()
    assert np.bincount(y[split("s.h5", stratify=True)]).tolist() == [140, 50, 10]
    doc = train(1, tmp_path, "--data", tmp_path / "s.h5", "--epochs", "1")
    assert doc["data"]["test_samples"] == 200 and doc["data"]["train_samples"] == 800
    _refused(src, "--test-fraction 0.0001 leaves no training or no test rows of 1000", test_fraction=1e-4)
    src.write_text("a,label\n" + "".join(f"{i},{i % 7}\n" for i in range(9)))
    _refused(src, "--test-fraction 0.5 holds out every row of class [0-6]; --stratify keeps", test_fraction=0.5)
    with h5py.File(convert(src, tmp_path / "t.h5", test_fraction=0.5, stratify=True).split(":")[0]) as f:
        assert set(f["train/y"][...]) == set(range(7)) and len(f["test/y"]) == 2     # no class's last row
    src.write_text("a,label\n1,0.5\n2,1.5\n")
    _refused(src, "--stratify needs classes; column 'label' holds float targets", test_fraction=0.5, stratify=True)
    for option in ("stratify", "seed"):
        with pytest.raises(UsageError, match=f"--{option} applies to the split that --test-fraction holds out"):
            convert(src, tmp_path / "x.h5", **{option: 1})


def test_convert_drop_and_missing_values(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("id,a,b,label\n1,1.5,2,x\n2,NA,3,y\n3,4,,x\n4,5,6,\n5,7,8,y\n")
    _refused(src, "line 3, column 'a': missing value; --dropna drops rows with missing values", drop="id")
    summary = convert(src, tmp_path / "d.h5", drop="id", dropna=True)
    assert summary.endswith(": 2 classes (text); dropped 3 rows with missing values")
    X, y = _rows(tmp_path / "d.h5")
    assert X.tolist() == [[1.5, 2], [7, 8]] and y.tolist() == [b"x", b"y"]
    _refused(src, r"--drop: no column 'ID' \(columns: id, a, b, label\)", drop="ID")
    _refused(src, "column 'label' is the label and cannot be dropped", drop="id,label", label="label")
    with pytest.raises(UsageError, match="--features and --drop: name the features to keep or the columns to drop"):
        convert(src, tmp_path / "x.h5", features="a", drop="id")
    src.write_text("a,label\nNA,1\n")
    _refused(src, "no data rows left after --dropna", dropna=True)


def test_convert_drop_never_makes_a_feature_the_label(tmp_path):
    """--drop of the column named like a label (or of the last, the default label) took
    the last remaining column, a feature, as the label: diabetes' --drop target trained
    on s6. It is refused, naming --label; --drop still settles two label-like names."""
    src = tmp_path / "d.csv"
    src.write_text("a,b,target\n1,2,0.5\n3,4,1.5\n")
    _refused(src, "--drop target drops the column that would be the label .named like a label.; name the label "
             "with --label", drop="target")
    src.write_text("a,b,c\n1,2,0.5\n3,4,1.5\n")
    _refused(src, "--drop c drops the column that would be the label .the last.", drop="c")
    assert "label column 'b' (--label)" in convert(src, tmp_path / "c.h5", drop="c", label="b")
    src.write_text("target,a,label\n1,2,0\n3,4,1\n")
    assert "label column 'label' (named like a label)" in convert(src, tmp_path / "t.h5", drop="target")
