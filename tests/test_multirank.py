"""Multi-rank behaviour under mpiexec (each launch bounded by a timeout)."""
import json
import os

import h5py
import numpy as np
import pytest
from conftest import DIGITS, ROOT, mpiexec, train, write_h5

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_averaged_weights_equal_the_weighted_mean(n):
    proc = mpiexec(n, [], script=os.path.join(ROOT, "tests", "mpi_average.py"), check=0, timeout=60)
    res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("{")))
    assert res["blocking_err"] < 1e-12 and res["overlap_err"] < 1e-12 and res["identical"]
    assert res["started_at_sync_point"]


@pytest.mark.parametrize("n", [1, 3])
def test_digits_accuracy_floor(tmp_path, n):
    doc = train(n, tmp_path)
    assert doc["ranks"] == n and doc["model"] == "softmax"
    assert doc["test"]["accuracy"] > 0.93, doc["test"]
    assert doc["data"]["train_samples"] == 1438 and doc["data"]["test_samples"] == 359
    # auto epochs: at least 300 steps per rank (batch 64), at least 10 epochs
    steps = -(-max(doc["data"]["partition_sizes"]) // 64)
    assert doc["config"]["epochs"] == max(10, -(-300 // steps)) == len(doc["history"])
    assert len(doc["memory"]["peak_rss_mb"]) == n
    cm = np.array(doc["test"]["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 359


def test_same_seed_same_ranks_bit_identical_and_seed_matters(tmp_path):
    a = train(3, tmp_path, "--model", "mlp", "--hidden", "16", "--epochs", "3", name="a.json")
    b = train(3, tmp_path, "--model", "mlp", "--hidden", "16", "--epochs", "3", name="b.json")
    c = train(3, tmp_path, "--model", "mlp", "--hidden", "16", "--epochs", "3", "--seed", "1", name="c.json")
    strip = lambda d: [(h["train_loss"], h["test_loss"]) for h in d["history"]]  # noqa: E731
    assert strip(a) == strip(b) and a["test"] == b["test"]
    assert strip(a) != strip(c)


def test_uneven_flat_file_on_three_ranks(tmp_path, blobs):
    doc = train(3, tmp_path, "--data", blobs, "--test-fraction", "0")
    assert doc["data"]["partition_sizes"] == [334, 334, 333]
    assert "test" not in doc and doc["data"]["test_samples"] == 0
    doc = train(3, tmp_path, "--data", blobs)
    assert sorted(doc["data"]["partition_sizes"]) == [267, 267, 267] or \
        max(doc["data"]["partition_sizes"]) - min(doc["data"]["partition_sizes"]) <= 1
    assert doc["test"]["accuracy"] > 0.9


def gzip_file(tmp_path):
    """Compressed, chunked /train and /test, sorted by label: `read` takes the two-phase path
    (every rank decompresses a slab of windows and passes rows on)."""
    rng = np.random.default_rng(2)
    y = np.sort(rng.integers(0, 3, 3000))
    X = (rng.standard_normal((3000, 5)) + 3 * np.eye(3, 5)[y]).astype(np.float32)
    path = tmp_path / "gzip.h5"
    with h5py.File(path, "w") as f:
        for group, rows in (("train", slice(0, 2500)), ("test", slice(2500, 3000))):
            f.create_dataset(f"{group}/X", data=X[rows], chunks=(100, 5), compression="gzip")
            f.create_dataset(f"{group}/y", data=y[rows], chunks=(100,), compression="gzip")
    return str(path)


@pytest.mark.parametrize("layout", ["contiguous", "gzip"])
def test_scatter_and_read_give_identical_results(tmp_path, blobs, layout):
    data = blobs if layout == "contiguous" else gzip_file(tmp_path)
    # small windows: several per reader, both window buffers in use
    a = train(3, tmp_path, "--data", data, "--distribute", "scatter", "--chunk-mb", "0.01", name="a.json")
    b = train(3, tmp_path, "--data", data, "--distribute", "read", "--chunk-mb", "0.01", name="b.json")
    assert a["test"] == b["test"] and a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    assert a["data"]["partition_sizes"] == b["data"]["partition_sizes"]


@pytest.mark.parametrize("args", [["--sync", "gradients"], ["--overlap", "--sync-every", "2"],
                                  ["--optimizer", "adam", "--lr", "0.01"], ["--dtype", "float64"]])
def test_modes_reach_the_accuracy_of_the_default(tmp_path, args):
    doc = train(2, tmp_path, *args)
    assert doc["test"]["accuracy"] > 0.93, (args, doc["test"])
    assert doc["timing"]["comm_s"] > 0 and doc["timing"]["compute_s"] > 0


def test_regression_r2(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 8))
    y = X @ rng.standard_normal(8) * 100 + 500 + rng.standard_normal(3000)
    path = write_h5(tmp_path / "r.h5", X=X, y=y)
    doc = train(3, tmp_path, "--data", path)
    assert doc["model"] == "linear" and doc["test"]["r2"] > 0.99
    lstsq = np.linalg.lstsq(np.c_[X, np.ones(3000)], y, rcond=None)[0]
    assert doc["test"]["rmse"] < 3 * np.sqrt(np.mean((np.c_[X, np.ones(3000)] @ lstsq - y) ** 2))


def test_string_labels_and_predict(tmp_path):
    rng = np.random.default_rng(2)
    idx = rng.integers(0, 2, 600)
    X = rng.standard_normal((600, 3)) + 2.5 * idx[:, None]
    labels = np.array([b"cat", b"dog"])[idx]
    path = write_h5(tmp_path / "s.h5", X=X, y=labels)
    doc = train(2, tmp_path, "--data", path, "--save", tmp_path / "m.h5")
    assert doc["model"] == "logistic" and doc["test"]["accuracy"] > 0.9
    mpiexec(3, ["predict", "--model", tmp_path / "m.h5", "--data", path, "--out", tmp_path / "p.h5"], check=0)
    with h5py.File(tmp_path / "p.h5") as f:
        assert f["labels"].shape == (600,) and f["proba"].shape == (600, 2)
        assert np.mean(f["labels"][...] == labels) > 0.9


def test_trace_shows_every_rank(tmp_path):
    trace = tmp_path / "t.json"
    train(3, tmp_path, "--overlap", "--sync-every", "2", "--epochs", "2", "--trace", trace)
    events = json.loads(trace.read_text())["traceEvents"]
    assert {e["pid"] for e in events} == {0, 1, 2}
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"trainer", "comm", "blocked", "io"} <= names
    assert any(e["name"] == "average (overlapped)" for e in events if e["ph"] == "X")


def _sklearn_logistic_accuracy(path):
    sk = pytest.importorskip("sklearn.linear_model")
    from sklearn.preprocessing import StandardScaler
    with h5py.File(path) as f:
        X, y, TX, Ty = f["train/X"][...], f["train/y"][...], f["test/X"][...], f["test/y"][...]
    sc = StandardScaler().fit(X)
    return sk.LogisticRegression(max_iter=3000).fit(sc.transform(X), y).score(sc.transform(TX), Ty)


@pytest.mark.parametrize("opt", [["--optimizer", "sgd", "--lr", "0.1"], ["--optimizer", "momentum"],
                                 ["--optimizer", "momentum", "--nesterov", "--schedule", "cosine"],
                                 ["--optimizer", "adam", "--lr", "0.005", "--warmup-epochs", "1"]])
def test_every_optimizer_reaches_logistic_regression_at_3_ranks(tmp_path, opt):
    reference = _sklearn_logistic_accuracy(DIGITS)
    doc = train(3, tmp_path, *opt)
    assert doc["test"]["accuracy"] >= reference - 0.03, (opt, doc["test"]["accuracy"], reference)


def test_mlp_separates_what_no_linear_model_can(tmp_path):
    from mpidml.cli.datatools import synth
    path = tmp_path / "nl.h5"
    synth(path, 6000, 6, 3, kind="nonlinear", test_samples=2000)
    linear = train(3, tmp_path, "--data", path, "--model", "softmax", name="l.json")
    mlp = train(3, tmp_path, "--data", path, "--model", "mlp", "--hidden", "64", "--epochs", "40", name="m.json")
    assert linear["test"]["accuracy"] < 0.5 < 0.8 < mlp["test"]["accuracy"], (linear["test"], mlp["test"])
