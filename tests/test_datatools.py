"""data synth / convert / inspect, and training on what they make."""
import h5py
import numpy as np
import pytest
from conftest import mpiexec, train

from mpidml.datatools import convert, inspect, synth

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
