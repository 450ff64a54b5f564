"""data synth / convert / inspect, and training on what they make."""
import re
import sys

import h5py
import numpy as np
import pytest
from conftest import lines, mpiexec, train, write_h5

from mpidml import datatools
from mpidml.datatools import convert, inspect, synth
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
    ("1,2,0\n3,4,\n", "line 3: empty label"),
    ("1,2,0\n3,nan,1\n", "line 3, column 'b': nan is not a finite float32"),
    ("1,2,0\n3,1e39,1\n", "line 3, column 'b': 1e\\+39 is not a finite float32"),
    ("1,2,0\n3,4,0.5\n5,6,nan\n", "line 4: label nan is not a finite number"),
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
        "empty.npz": (dict(X=X, y=np.array([b"a", b"", b"b", b"c"])), "row 1: empty label"),
    }
    for name, (arrays, match) in cases.items():
        if isinstance(arrays, dict):
            np.savez(tmp_path / name, **arrays)
        else:
            np.savez(tmp_path / name, *arrays)
        _refused(tmp_path / name, match)
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04 cut short")
    _refused(tmp_path / "zip.npz", "cannot read")
    np.savez(tmp_path / "z.npz", X=X, y=np.arange(4))
    (tmp_path / "z.npy").write_bytes((tmp_path / "z.npz").read_bytes())
    _refused(tmp_path / "z.npy", "not an NPY file")
    _refused(tmp_path / "z.npz", "--label and --features name CSV or Parquet columns", label="y")
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
    assert proc.stderr.strip() == f"mpidml: error: {tmp_path / 'e.csv'}: line 3: empty label (column 'label')"


def test_training_warns_of_many_classes_with_few_rows(tmp_path):
    """Integer targets (ages, prices) trained as classes: 60-odd classes of 3 rows each."""
    rng = np.random.default_rng(0)
    y = rng.integers(20, 90, 200)
    write_h5(tmp_path / "d.h5", X=rng.standard_normal((200, 2)), y=y)
    proc = mpiexec(1, ["--data", tmp_path / "d.h5", "--epochs", "1"], check=0)
    assert lines(proc, "mpidml: warning:") == [
        f"mpidml: warning: {tmp_path / 'd.h5'}: dataset /y has {len(set(y))} classes in 200 rows (fewer than 5 "
        "rows each): if its labels are numbers to fit, use --model linear (regression)"]
