"""Hostile inputs (issue 15): each ends with exit 2 (3 for NaN metrics) and one
`mpidml: error:` line, or trains right; warnings for legal but surely unintended settings."""
import json
import re
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from conftest import lines, mpiexec, refused, train

from mpidml.data import distribute as data
from mpidml.errors import UsageError
from mpidml.learn.checkpoint import ModelFile
from mpidml.runtime.comm import drive

pytestmark = pytest.mark.timeout(120)


def rows(n=200, d=4, seed=0):
    """Two classes a linear model separates well."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return (rng.standard_normal((n, d)) + 2 * y[:, None]).astype(np.float32), y


def write(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name.replace("__", "/")] = value
    return path


def virtual(path, sources, total=200, d=4):
    """A virtual /X (total rows) whose rows [a, b) come from the named files' /X."""
    layout = h5py.VirtualLayout(shape=(total, d), dtype=np.float32)
    for name, a, b in sources:
        layout[a:b] = h5py.VirtualSource(name, "X", shape=(b - a, d))
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("X", layout)
        f["y"] = rows()[1]
    return path


# -- hostile files: (builder(tmp_path) -> (file, extra options), needle, ranks) ----------
def _virtual_missing(t):
    write(t / "a.h5", X=rows()[0])
    path = virtual(t / "v.h5", [("a.h5", 0, 200)])
    (t / "a.h5").unlink()
    return path, ["--distribute", "read"]


def _virtual_gap(t):
    write(t / "a.h5", X=rows()[0][:100])
    return virtual(t / "v.h5", [("a.h5", 0, 100)]), []


def _links(kind):
    def build(t):
        with h5py.File(t / "l.h5", "w") as f:
            f["X"] = h5py.ExternalLink("nowhere.h5", "/X") if kind == "external" else h5py.SoftLink("/nothing")
            f["y"] = rows()[1]
        return t / "l.h5", []
    return build


def _group_x(t):
    with h5py.File(t / "f.h5", "w") as f:
        f.create_group("X")
        f["y"] = Y0
    return t / "f.h5", []


def _file(options=(), **datasets):
    return lambda t: (write(t / "f.h5", **datasets), list(options))


X0, Y0 = rows()
HOSTILE = {
    "virtual source missing": (_virtual_missing, "is virtual and its source a.h5:X cannot be opened", (1, 3)),
    "virtual rows unmapped": (_virtual_gap, "is virtual and maps 400 of its 800 values", (1,)),
    "dangling external link": (_links("external"), "/X is an external link to nowhere.h5:/X", (1,)),
    "dangling soft link": (_links("soft"), "/X is a soft link to /nothing, which does not exist", (1,)),
    "group for a dataset": (_group_x, "/X is a group, not a dataset", (1,)),
    "labels of shape (n, 2)": (_file(X=X0, y=np.stack([Y0, Y0], 1)), "dataset /y must be 1-D", (1,)),
    "uint64 labels": (_file(X=X0, y=Y0.astype(np.uint64) + np.uint64(2 ** 63)),
                      "at row 0, beyond the 64-bit integer range of classes", (1,)),
    "empty text label": (_file(X=X0, y=np.array([b"a" if v else b"" for v in Y0])), "an empty label at row", (1,)),
    "test label unseen in training": (_file(train__X=X0, train__y=Y0, test__X=X0[:20], test__y=np.r_[Y0[:19], 5]),
                                      "dataset /test/y has label 5, not a class of /train/y", (1,)),
    "test labels of another type": (_file(train__X=X0, train__y=Y0, test__X=X0[:20], test__y=np.array([b"a"] * 20)),
                                    "/test/y holds text labels but /train/y holds integer labels", (1,)),
    "float64 beyond the variance": (_file(["--dtype", "float64"], X=X0.astype(np.float64) * 1e200, y=Y0),
                                    "dataset /X: column 0 has mean", (1, 3)),
    "float64 beyond float32": (_file([], X=X0.astype(np.float64) * 1e300, y=Y0),
                               "beyond float32's range at row 0 (--dtype float64", (1, 3)),
    "tiny --chunk-mb": (_file(["--chunk-mb", "1e-9"], X=X0, y=Y0), "--chunk-mb 1e-09 is below the minimum", (1,)),
}
HOSTILE_RUNS = [(case, n) for case, (_, _, ranks) in HOSTILE.items() for n in ranks]


@pytest.mark.parametrize("case,n", HOSTILE_RUNS, ids=[f"{c}-{n}" for c, n in HOSTILE_RUNS])
def test_hostile_training_file(tmp_path, case, n):
    build, needle, _ = HOSTILE[case]
    path, options = build(tmp_path)
    refused(n, ["--quiet", "--epochs", "1", "--data", path, *options], needle)


# -- evaluate and predict ---------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A logistic model of rows() (2 classes, 4 features)."""
    t = tmp_path_factory.mktemp("model")
    train(1, t, "--data", write(t / "d.h5", X=X0, y=Y0), "--epochs", "2", "--save", t / "m.h5")
    return t / "m.h5"


@pytest.mark.parametrize("command,datasets,options,needle", [
    ("evaluate", {"X": X0, "y": Y0 + 0.5}, [], "non-integer label 1.5 at row 0; model"),
    ("evaluate", {"X": X0, "y": np.r_[Y0[:-1], 7]}, [], "has label 7, not a class of model"),
    ("evaluate", {"X": X0, "y": np.stack([Y0, Y0], 1)}, [], "dataset /y must be 1-D"),
    ("evaluate", {"X": X0, "y": Y0}, ["--x-dataset", "/X"], "--x-dataset and --y-dataset go together"),
    ("predict", {"X": X0, "y": Y0}, ["--x-dataset", "/y"], "dataset /y must be 2-D"),
    ("predict", {"X": X0[:, :3]}, [], "dataset /X has 3 features, the model expects 4"),
])
def test_hostile_evaluate_and_predict(tmp_path, model, command, datasets, options, needle):
    path = write(tmp_path / "f.h5", **datasets)
    out = ["--out", tmp_path / "p.h5"] if command == "predict" else []
    refused(1, [command, "--model", model, "--data", path, *out, *options], needle)


def test_ranks_without_test_rows_contribute_nothing(tmp_path):
    """A /test of one row at 3 ranks: two ranks score no rows, in training, evaluate and predict."""
    path = write(tmp_path / "one.h5", train__X=X0, train__y=Y0, test__X=X0[:1], test__y=Y0[:1])
    doc = train(3, tmp_path, "--data", path, "--epochs", "2", "--save", tmp_path / "m.h5")
    assert doc["data"]["test_samples"] == 1 and sum(map(sum, doc["test"]["confusion_matrix"])) == 1
    for n in (3, 1):
        mpiexec(n, ["evaluate", "--model", tmp_path / "m.h5", "--data", path, "--metrics-json", tmp_path / "e.json"],
                check=0)
        assert json.loads((tmp_path / "e.json").read_text())["test"] == doc["test"]
    proc = mpiexec(3, ["predict", "--model", tmp_path / "m.h5", "--data", path, "--out", tmp_path / "p.h5"], check=0)
    assert f"predict: 1 rows of {path}:/test/X" in proc.stdout
    with h5py.File(tmp_path / "p.h5") as f:
        assert (f["labels"][0] == Y0[0]) == (doc["test"]["accuracy"] == 1.0)


def test_evaluate_and_predict_take_named_datasets(tmp_path, model):
    path = write(tmp_path / "named.h5", features=X0, labels=Y0, X=X0[:5], y=Y0[:5])
    proc = mpiexec(3, ["evaluate", "--model", model, "--data", path, "--x-dataset", "/features",
                       "--y-dataset", "/labels", "--metrics-json", tmp_path / "e.json"], check=0)
    assert f"evaluate: 200 rows of {path}:/features, labels /labels" in proc.stdout
    assert sum(map(sum, json.loads((tmp_path / "e.json").read_text())["test"]["confusion_matrix"])) == 200
    proc = mpiexec(3, ["predict", "--model", model, "--data", path, "--x-dataset", "/features",
                       "--out", tmp_path / "p.h5"], check=0)
    assert f"predict: 200 rows of {path}:/features" in proc.stdout
    with h5py.File(tmp_path / "p.h5") as f:
        assert f["labels"].shape == (200,) and f.attrs["dataset"] == "/features"


# -- hand-edited model files ----------------------------------------------------------------
def edited(model, folder, attrs=(), datasets=()):
    """A copy of `model` with attributes set to JSON text and datasets replaced (None: removed)."""
    path = folder / "edited.h5"
    path.write_bytes(model.read_bytes())
    with h5py.File(path, "a") as f:
        for key, value in dict(attrs).items():
            f.attrs[key] = value
        for key, value in dict(datasets).items():
            old = f[key][()] if key in f else None
            if key in f:
                del f[key]
            if value is not None:
                f[key] = value(old) if callable(value) else value
    return path


def config_with(model, **entries):
    with h5py.File(model) as f:
        return json.dumps(dict(json.loads(f.attrs["config"]), **entries))


STOP = {"epoch": 2, "step": 1, "steps": 4, "signal": "SIGTERM", "ranks": 1, "batch_size": 64,
        "partition": ["blocks", 1, 0], "loss": [[0.5, 64]]}
EDITS = {      # what a hand (or a bad disk) may do to a model file, and what load says of it
    "stopped_at a word": ({"stopped_at": '"now"'}, {}, 'attribute stopped_at is "now", not null or a JSON object'),
    "stopped_at without a step": ({"stopped_at": json.dumps(dict(STOP, step=None))}, {},
                                  "attribute stopped_at has step null, not a count"),
    "stopped_at in another epoch": ({"stopped_at": json.dumps(dict(STOP, epoch=7))}, {},
                                    "attribute stopped_at has epoch 7, the file's epoch is 2"),
    "stopped_at loss of 2 ranks at 1": ({"stopped_at": json.dumps(dict(STOP, loss=[[0.5, 64], [0.5, 64]]))}, {},
                                        "attribute stopped_at has no loss pair for each of its 1 ranks"),
    "stopped_at step beyond the epoch": ({"stopped_at": json.dumps(dict(STOP, step=9))}, {},
                                         "attribute stopped_at has step 9 of 4"),
    "unknown optimizer": ({"config": lambda m: config_with(m, optimizer="rmsprop")}, {},
                          'config optimizer is "rmsprop", not one of sgd, momentum, adam'),
    "epochs a word": ({"config": lambda m: config_with(m, epochs="ten")}, {}, 'config epochs is "ten", not a count'),
    "test_fraction 2": ({"config": lambda m: config_with(m, test_fraction=2)}, {}, "config test_fraction is 2"),
    "standardize a word": ({"config": lambda m: config_with(m, standardize="yes")}, {}, "config standardize is"),
    "partition_seed -1": ({"config": lambda m: config_with(m, partition_seed=-1)}, {}, "config partition_seed is -1"),
    "kind bogus": ({"kind": '"svm"'}, {}, 'attribute kind is "svm", not one of linear, logistic, softmax, mlp'),
    "kind of other layers": ({"kind": '"softmax"'}, {}, "kind softmax has other layers than [4, 1] (sigmoid)"),
    "dtype int8": ({"dtype": '"int8"'}, {}, 'attribute dtype is "int8", not float32 or float64'),
    "sizes of floats": ({"sizes": "[4.5, 1]"}, {}, "attribute sizes is [4.5, 1], not a list of 2 or more"),
    "sizes too wide": ({"sizes": "[4, 100000000000, 1]"}, {}, "does not fit the 5 parameters in params"),
    "history of numbers": ({"history": "[1, 2]"}, {}, "attribute history is [1, 2], not a list of JSON objects"),
    "data identity of another shape": ({"data": '{"path": 1}'}, {}, 'attribute data is {"path": 1}, not null or'),
    "early_stopped 0": ({"early_stopped": "0"}, {}, "attribute early_stopped is 0, not null or the epoch"),
    "early_stopped after the end": ({"early_stopped": "9"}, {}, "early_stopped is epoch 9, after the file's epoch 2"),
    "label_kind float": ({"label_kind": '"float"'}, {}, 'attribute label_kind is "float", not int, str or null'),
    "series a number": ({"series": "5"}, {}, "attribute series is 5, not a checkpoint series"),
    "step -1": ({"step": "-1"}, {}, "attribute step is -1, not a count"),
    "optimizer_state short": ({}, {"optimizer_state": lambda old: old[:-1]},
                              "optimizer_state is float32 of shape (9,), expected 2 x 5 floats (momentum)"),
    "optimizer_state text": ({}, {"optimizer_state": lambda old: old.astype("S8")}, "optimizer_state is |S8"),
    "optimizer_state of 2-D": ({}, {"optimizer_state": lambda old: old.reshape(2, -1)}, "of shape (2, 5)"),
    "optimizer_state NaN": ({}, {"optimizer_state": lambda old: old * np.nan}, "optimizer_state contains NaN"),
    "optimizer_state other weights": ({}, {"optimizer_state": lambda old: old + 1},
                                      "optimizer_state does not begin with the weights params holds"),
    "classes repeated": ({}, {"classes": np.array([1, 1])}, "classes are not a sorted list without repeats"),
    "classes unsorted": ({}, {"classes": np.array([1, 0])}, "classes are not a sorted list without repeats"),
    "std without mean": ({}, {"mean": None}, "mean and std go together"),
    "target scaling on a classifier": ({}, {"y_mean": np.zeros(1), "y_std": np.ones(1)},
                                       "a classifier with target statistics"),
}


@pytest.mark.parametrize("case", EDITS)
def test_every_field_of_a_model_file_is_checked_when_it_is_loaded(tmp_path, model, case):
    attrs, datasets, needle = EDITS[case]
    path = edited(model, tmp_path, {k: v(model) if callable(v) else v for k, v in attrs.items()}, datasets)
    with pytest.raises(UsageError) as e:
        ModelFile.load(path)
    assert str(e.value).startswith(f"{path}: corrupt model file (") and needle in str(e.value)


@pytest.mark.parametrize("case, command, n", [("unknown optimizer", "resume", 3),
                                              ("stopped_at loss of 2 ranks at 1", "resume", 1),
                                              ("optimizer_state text", "resume", 1),
                                              ("optimizer_state short", "evaluate", 3),
                                              ("kind bogus", "predict", 1)])
def test_a_corrupt_model_file_is_one_line_wherever_it_is_read(tmp_path, model, case, command, n):
    attrs, datasets, needle = EDITS[case]
    path = edited(model, tmp_path, {k: v(model) if callable(v) else v for k, v in attrs.items()}, datasets)
    data = ["--data", model.parent / "d.h5"]
    args = {"resume": ["--quiet", *data, "--epochs", "3", "--resume", path],
            "evaluate": ["evaluate", "--model", path, *data],
            "predict": ["predict", "--model", path, *data, "--out", tmp_path / "p.h5"]}[command]
    refused(n, args, f"{path}: corrupt model file ({needle}")


def test_a_run_stopped_at_an_epochs_start_resumes(tmp_path, model):
    """A stop voted at the end of an epoch is recorded at step 0 with no partial loss."""
    path = edited(model, tmp_path, {"stopped_at": json.dumps(dict(STOP, step=0, loss=None))})
    doc = train(1, tmp_path, "--data", model.parent / "d.h5", "--epochs", "3", "--resume", path)
    assert [e["epoch"] for e in doc["history"]] == [1, 2, 3]


# -- silent wrong results that now train right ------------------------------------------
def test_float32_around_1e20_standardizes_like_unscaled_data(tmp_path):
    plain = train(1, tmp_path, "--data", write(tmp_path / "a.h5", X=X0, y=Y0), "--epochs", "3", name="a.json")
    big = train(1, tmp_path, "--data", write(tmp_path / "b.h5", X=X0 * np.float32(1e20), y=Y0), "--epochs", "3",
                name="b.json")
    assert plain["test"]["accuracy"] > 0.9
    assert big["test"]["accuracy"] == pytest.approx(plain["test"]["accuracy"], abs=0.02)


def test_virtual_dataset_with_its_sources_trains_as_the_plain_file(tmp_path):
    write(tmp_path / "a.h5", X=X0[:120])
    write(tmp_path / "b.h5", X=X0[120:])
    path = virtual(tmp_path / "v.h5", [("a.h5", 0, 120), ("b.h5", 120, 200)])
    plain = train(1, tmp_path, "--data", write(tmp_path / "p.h5", X=X0, y=Y0), "--epochs", "2", name="p.json")
    assert train(1, tmp_path, "--data", path, "--epochs", "2", name="v.json")["test"] == plain["test"]


def test_nan_test_metrics_are_divergence(tmp_path):
    """Test rows at float32's limits overflow an MLP's outputs: NaN loss, exit 3, not success."""
    huge = X0[:30].copy()
    huge[3], huge[4] = 3e38, -3e38
    path = write(tmp_path / "n.h5", train__X=X0, train__y=Y0, test__X=huge, test__y=Y0[:30])
    for n in (1, 3):
        refused(n, ["--quiet", "--data", path, "--model", "mlp", "--epochs", "1"], "test metrics are not finite",
                code=3)


# -- a file that a writer grows while it is read --------------------------------------
GROW = textwrap.dedent("""
    import sys, time, h5py, numpy as np
    f = h5py.File(sys.argv[1], "a", locking=False)
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        n = f["X"].shape[0]
        for name, block in (("X", np.ones((2000, 4), np.float32)), ("y", np.arange(2000) % 2)):
            f[name].resize(n + 2000, 0)
            f[name][n:] = block
        f.flush()
""")


def growable(path, n=20000):
    X, y = rows(n)
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X, maxshape=(None, 4), chunks=(1000, 4))
        f.create_dataset("y", data=y, maxshape=(None,), chunks=(1000,))
    return path


def test_rows_that_grew_since_describe_are_refused(tmp_path):
    path = growable(tmp_path / "g.h5")
    info = data.describe(str(path), test_fraction=0)
    with h5py.File(path, "a") as f:
        f["X"].resize(25000, 0)
    _, _, err = data.read_rows(info, 0, 100, np.float32)
    assert "dataset /X has 25000 rows now, 20000 when it was opened" in str(err)


def test_a_file_grown_while_read_ends_cleanly(tmp_path):
    path = growable(tmp_path / "g.h5")
    writer = subprocess.Popen([sys.executable, "-c", GROW, str(path), "4"])
    try:
        proc = mpiexec(3, ["--quiet", "--data", path, "--epochs", "1", "--distribute", "read"], timeout=60)
    finally:
        writer.wait(30)
    assert proc.returncode in (0, 2), proc.stderr
    assert len(lines(proc, "mpidml: error:")) == (proc.returncode == 2) and "Traceback" not in proc.stderr


# -- warnings -----------------------------------------------------------------------------
def test_warnings_for_surely_unintended_settings(tmp_path):
    path = write(tmp_path / "w.h5", train__X=X0, train__y=Y0, test__X=X0[:20], test__y=Y0[:20])
    proc = mpiexec(3, ["--quiet", "--data", path, "--epochs", "1", "--model", "linear", "--batch-size", "500",
                       "--test-fraction", "0.2"], timeout=60, check=0)       # given, though the default
    warnings = lines(proc, "mpidml: warning:")
    for needle in ("dataset /train/y holds integer labels, fitted as numbers",
                   "--batch-size 500 is more than the",
                   "--test-fraction 0.2 is ignored"):
        assert sum(needle in w for w in warnings) == 1, proc.stdout + proc.stderr


# -- standardization statistics -------------------------------------------------------------
class OneRank:
    """A Group of one rank: its sums are already the global ones."""
    rank, size = 0, 1

    def allreduce(self, buf, label):
        yield from ()


def moments_of(X, pieces=()):
    """data.Moments of X fed in stretches cut at `pieces`."""
    m = data.Moments(X.shape[1])
    for a, b in zip((0, *pieces), (*pieces, len(X))):
        m.add(X[a:b])
    return m


def test_global_stats_of_float32_around_1e20_are_finite_and_right():
    X = (rows(20000)[0] * np.float32(1e20)) + np.float32(3e20)
    mean, std = drive(data.global_stats(OneRank(), moments_of(X), X.dtype))
    exact = X.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, exact.std(axis=0), rtol=1e-9)
    assert np.all(np.isfinite(std)) and np.all(std > 1e19)


def test_global_stats_name_the_column_that_overflows_float64():
    X = rows(100)[0].astype(np.float64)
    X[:, 2] *= 1e200
    with pytest.raises(UsageError, match="f.h5: dataset /X: column 2 has mean"):
        drive(data.global_stats(OneRank(), moments_of(X), X.dtype, "f.h5: dataset /X"))


def test_moments_are_the_same_bits_however_the_rows_come():
    """Streamed chunks and a partition in memory feed the same rows in other stretches
    (and through a row index, skipping validation rows): the statistics must not move."""
    X = rows(30000)[0] * np.float32(3) + np.float32(7)
    whole = moments_of(X).finish()
    for pieces in ((1,), (8191, 8192, 8193), (5000, 17000, 29999)):
        cut = moments_of(X, pieces).finish()
        assert all(np.array_equal(a, b) for a, b in zip(whole, cut))
    keep = np.flatnonzero(np.arange(len(X)) % 7 != 3)
    m = data.Moments(X.shape[1])
    for a in range(0, len(X), 4000):        # chunks of a partition, validation rows skipped by index
        sel = keep[(keep >= a) & (keep < a + 4000)] - a
        m.add(X[a:a + 4000], sel)
    got, want = m.finish(), moments_of(X[keep]).finish()
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    n, mean, m2 = want
    np.testing.assert_allclose(mean, X[keep].astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m2 / n, X[keep].astype(np.float64).var(axis=0), rtol=1e-10)


@pytest.mark.parametrize("entries, problem", [
    ({"partition": "zz"}, "config partition is \"zz\", not blocks or contiguous"),
    ({"block_rows": -3}, "config block_rows is -3, not a count"),
    ({"validation_fraction": "x"}, "config validation_fraction is \"x\", not null or a number in [0, 1)"),
])
def test_the_split_options_a_resume_reads_are_checked_at_load(tmp_path, entries, problem):
    """--resume adopts the split options from the file: a hand-edited one is a corrupt file
    (exit 2), not an internal error (KeyError, ValueError, ZeroDivisionError)."""
    model = _split_model(tmp_path)
    path = edited(model, tmp_path, {"config": config_with(model, **entries)})
    with pytest.raises(UsageError, match=re.escape(problem)):
        ModelFile.load(path)


def test_a_file_without_the_split_options_resumes(tmp_path):
    """A model file from before the split options were recorded has none: nothing to compare."""
    model = _split_model(tmp_path)
    with h5py.File(model, "a") as f:
        config = json.loads(f.attrs["config"])
        for key in ("partition", "block_rows", "validation_fraction"):
            config.pop(key, None)
        f.attrs["config"] = json.dumps(config)
    mpiexec(1, ["--quiet", "--data", tmp_path / "s.h5", "--resume", model, "--epochs", "2"], check=0)


def _split_model(tmp_path):
    from mpidml.cli.datatools import synth
    synth(str(tmp_path / "s.h5"), 400, 4, 2, seed=1)
    model = tmp_path / "m.h5"
    mpiexec(1, ["--quiet", "--data", tmp_path / "s.h5", "--epochs", "1", "--save", model], check=0)
    return model
