"""Streaming (--stream, --memory-limit, --stream-chunk-mb): the rows stay in the file and
each rank reads its partition chunk by chunk while it trains (issue 22).

What a user relies on: one chunk covering the partition trains the very model the in-memory
path trains; many chunks visit every training row once per epoch and learn as well; a
memory limit the in-memory path cannot live under is one a streamed run completes under;
a file that changes under a streamed run ends it with one line, and a stop signal
checkpoints a resumable run."""
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import MPIEXEC, Job, launch, lines, mpiexec, quiet_lines, refused, train

from mpidml.cli.datatools import synth
from mpidml.data import partition
from mpidml.data.distribute import describe, plan_for
from mpidml.data.partition import rows_of
from mpidml.data.stream import EpochPlan, Stream, StreamedPart
from mpidml.errors import STOPPED
from mpidml.learn.checkpoint import ModelFile

pytestmark = pytest.mark.timeout(120)
# chunks of ~100 rows of 8 float32 features (40 bytes a row with its label): 10+ chunks a rank
SMALL_CHUNK_MB = "0.004"


def _datasets(path):
    """Every dataset of a model file by name (params, optimizer_state, mean, std, ...)."""
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return found


def _assert_same_model(a, b):
    A, B = _datasets(a), _datasets(b)
    assert {"params", "optimizer_state", "mean", "std"} <= set(A), sorted(A)
    assert sorted(A) == sorted(B)
    for name in A:
        assert A[name].dtype == B[name].dtype and np.array_equal(A[name], B[name]), name
    ma, mb = ModelFile.load(a), ModelFile.load(b)
    assert (ma.y_mean, ma.y_std) == (mb.y_mean, mb.y_std)


# -- 1. one chunk covering the partition: the in-memory model, bit for bit --------------------
EQUAL_CASES = [(n, kind) for kind in ("classes", "regression") for n in (1, 2, 3)] + [(3, "classes-no-validation")]


@pytest.fixture(scope="module")
def equal_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("equal")
    files = {"classes": d / "c.h5", "regression": d / "r.h5"}
    synth(str(files["classes"]), 2400, 8, 3, seed=11, noise=2.0)                   # test split from /train
    synth(str(files["regression"]), 2400, 8, 0, seed=12, test_samples=500)         # a /test group
    files["classes-no-validation"] = d / "g.h5"
    synth(str(files["classes-no-validation"]), 2400, 8, 4, seed=13, test_samples=400)
    return files


@pytest.mark.parametrize("n, kind", EQUAL_CASES)
def test_one_chunk_trains_the_in_memory_model_bit_for_bit(tmp_path, equal_files, n, kind):
    """The default chunk (64 MB) covers these partitions: the streamed run must save the
    same parameters, optimizer state and standardization as the in-memory run, and score
    the same validation (and classification test) metrics every epoch."""
    args = ["--data", equal_files[kind], "--epochs", "3", "--seed", "7", "--optimizer", "adam"]
    if kind == "regression":
        args += ["--model", "mlp", "--hidden", "8"]
    if kind != "classes-no-validation":
        args += ["--validation-fraction", "0.1"]
    streamed = train(n, tmp_path, *args, "--stream", "--save", tmp_path / "s.h5", name="s.json")
    memory = train(n, tmp_path, *args, "--save", tmp_path / "m.h5", name="m.json")
    assert "stream" not in memory["data"]
    assert streamed["data"]["stream"]["why"] == "--stream"
    assert streamed["data"]["stream"]["chunk_rows"] >= max(streamed["data"]["partition_sizes"])   # one chunk
    _assert_same_model(tmp_path / "s.h5", tmp_path / "m.h5")
    assert [h["train_loss"] for h in streamed["history"]] == [h["train_loss"] for h in memory["history"]]
    assert [h["rows"] for h in streamed["history"]] == [h["rows"] for h in memory["history"]]
    if kind == "classes-no-validation":
        assert "val_loss" not in streamed["history"][0] and memory["data"]["validation_samples"] == 0
    else:
        assert streamed["validation"] == memory["validation"]
        assert [(h["val_loss"], h.get("val_r2", h.get("val_accuracy"))) for h in streamed["history"]] == \
            [(h["val_loss"], h.get("val_r2", h.get("val_accuracy"))) for h in memory["history"]]
    if kind != "regression":    # see test_streamed_regression_scores_its_test_rows_as_in_memory
        assert streamed["test"] == memory["test"]


def test_streamed_regression_scores_its_test_rows_as_in_memory(tmp_path, equal_files):
    args = ["--data", equal_files["regression"], "--epochs", "3", "--seed", "7"]
    streamed = train(1, tmp_path, *args, "--stream", name="s.json")
    memory = train(1, tmp_path, *args, name="m.json")
    assert streamed["test"] == memory["test"]


@pytest.mark.parametrize("stream", [False, True])
def test_regression_validation_scores_agree_with_test_scores(tmp_path, stream):
    """Validation and test rows drawn from one distribution: a well-fitted model's R² on
    both must be close (here 0.99); --no-standardize gives that already."""
    path = tmp_path / "r.h5"
    synth(str(path), 3000, 8, 0, seed=2)
    doc = train(1, tmp_path, "--data", path, "--validation-fraction", "0.1", "--epochs", "5", "--seed", "4",
                *(["--stream"] if stream else []))
    assert doc["test"]["r2"] > 0.95 and abs(doc["validation"]["r2"] - doc["test"]["r2"]) < 0.05, \
        (doc["validation"], doc["test"])


# -- 2. many chunks ------------------------------------------------------------------------
def test_many_chunks_visit_every_row_each_epoch_learn_as_well_and_repeat_exactly(tmp_path):
    path = tmp_path / "d.h5"
    synth(str(path), 6000, 8, 3, seed=3, noise=2.5)
    args = ["--data", path, "--epochs", "4", "--seed", "5"]
    chunked = [*args, "--stream", "--stream-chunk-mb", SMALL_CHUNK_MB]
    first = train(3, tmp_path, *chunked, "--save", tmp_path / "a.h5", name="a.json")
    again = train(3, tmp_path, *chunked, "--save", tmp_path / "b.h5", name="b.json")
    memory = train(3, tmp_path, *args, name="m.json")
    stream = first["data"]["stream"]
    assert max(first["data"]["partition_sizes"]) >= 10 * stream["chunk_rows"], stream
    assert [h["rows"] for h in first["history"]] == [first["data"]["train_samples"]] * 4
    assert abs(first["test"]["accuracy"] - memory["test"]["accuracy"]) <= 0.005, (first["test"], memory["test"])
    _assert_same_model(tmp_path / "a.h5", tmp_path / "b.h5")
    assert [h["train_loss"] for h in first["history"]] == [h["train_loss"] for h in again["history"]]


# -- 3. the order of an epoch, without MPI -------------------------------------------------
def _drive(gen):
    """Run a stream generator to its end outside the scheduler: each Future it yields is
    waited for, as the scheduler would."""
    try:
        item = next(gen)
        while True:
            assert isinstance(item, concurrent.futures.Future), item
            concurrent.futures.wait([item])
            item = gen.send(None)
    except StopIteration as stop:
        return stop.value


@pytest.fixture
def numbered(tmp_path):
    """Rows that say which they are: X[:, 0] is the file row, y the file row mod 3."""
    n = 1003
    X = np.random.default_rng(0).standard_normal((n, 4)).astype(np.float32)
    X[:, 0] = np.arange(n)
    path = tmp_path / "numbered.h5"
    with h5py.File(path, "w") as f:
        f["train/X"], f["train/y"] = X, np.arange(n) % 3
    return describe(str(path), test_fraction=0.2, block_rows=37)


def _parts(info, size, chunk_bytes, fraction, seed=9):
    plan = plan_for(info, size)
    parts = [StreamedPart.of_plan(info, plan, r, size, np.float32, chunk_bytes) for r in range(size)]
    for r, part in enumerate(parts):
        part.hold_out(fraction, seed, r)
    return parts


def _epoch_rows(part, seed, rank, epoch, batch=16, first_step=0):
    """The file rows one epoch's minibatches deliver, in order, from step `first_step` (a
    resumed run's first step), and their labels."""
    plan = EpochPlan(part, seed, rank, epoch)
    stream = Stream(part)
    xb, yb = np.empty((batch, 4), np.float32), np.empty(batch, np.int32)
    rows, labels = [], []
    try:
        for s in range(first_step, -(-plan.rows // batch)):
            m = min(batch, plan.rows - s * batch)
            _drive(stream.batch(plan, s * batch, m, xb, yb))
            rows.append(xb[:m, 0].astype(np.int64))
            labels.append(yb[:m].copy())
    finally:
        stream.close()
    return np.concatenate(rows), np.concatenate(labels)


def _kept_file_rows(part):
    local = np.setdiff1d(np.arange(part.train.rows), rows_of(part.held))
    return part.train.file_rows(local)


@pytest.mark.parametrize("fraction, runs", [(0, False), (0.1, False), (0.1, True)], ids=["none", "rows", "runs"])
def test_each_epoch_visits_every_training_row_once_and_no_validation_row(numbered, fraction, runs, monkeypatch):
    """`runs`: validation held out in runs of rows, as partitions of millions of rows are
    (partition.ROW_DRAW_MAX), here in runs of 5 rows that straddle chunks and ranges."""
    if runs:
        monkeypatch.setattr(partition, "ROW_DRAW_MAX", 100)
        monkeypatch.setattr(partition, "HELD_RUN", 5)
    size, seed = 3, 9
    parts = _parts(numbered, size, chunk_bytes=24 * 20, fraction=fraction)    # 20 rows a chunk
    try:
        every = []
        for rank, part in enumerate(parts):
            assert len(part.chunks()) >= 10
            val = set(part.train.file_rows(rows_of(part.held)).tolist())
            assert len(val) == len(rows_of(part.held)) == (0 if not fraction else round(fraction * part.train.rows))
            orders = []
            for epoch in range(3):
                rows, labels = _epoch_rows(part, seed, rank, epoch)
                assert np.array_equal(np.sort(rows), np.sort(_kept_file_rows(part)))
                assert not val & set(rows.tolist())
                assert np.array_equal(labels, rows % 3)
                orders.append(rows)
            assert not np.array_equal(orders[0], orders[1])      # shuffled anew each epoch
            every.append(part.train.file_rows(np.arange(part.train.rows)))
            every.append(part.test.file_rows(np.arange(part.test.rows)))
        dealt = np.concatenate(every)            # partitions and test shares: every file row, once
        assert np.array_equal(np.sort(dealt), np.arange(numbered["rows"]))
    finally:
        for part in parts:
            part.close()


@pytest.mark.parametrize("fraction", [0, 0.1])
def test_one_chunk_order_is_the_in_memory_permutation(numbered, fraction):
    size, seed = 2, 4
    parts = _parts(numbered, size, chunk_bytes=1 << 20, fraction=fraction)
    try:
        for rank, part in enumerate(parts):
            assert len(part.chunks()) == 1
            kept = _kept_file_rows(part)            # the in-memory partition's rows, in its order
            for epoch in range(2):
                rows, _ = _epoch_rows(part, seed, rank, epoch)
                perm = np.random.default_rng([seed, rank, epoch]).permutation(part.local_rows)
                assert np.array_equal(rows, kept[perm])
    finally:
        for part in parts:
            part.close()


def test_an_epoch_resumed_at_a_step_goes_on_with_the_same_rows(numbered):
    """A run stopped within an epoch resumes at its minibatch: a new plan, started at step
    s, delivers what the whole epoch delivers from step s on."""
    (part,) = _parts(numbered, 1, chunk_bytes=24 * 50, fraction=0.1)
    try:
        whole, _ = _epoch_rows(part, 3, 0, 2)
        tail, _ = _epoch_rows(part, 3, 0, 2, first_step=17)
        assert np.array_equal(tail, whole[17 * 16:])
    finally:
        part.close()


# -- 4. under a memory limit the in-memory path cannot live under --------------------------
PROBE = """import atexit, runpy, sys
def peak():
    for line in open('/proc/self/status'):
        if line.startswith('VmPeak:'):
            sys.stderr.write('probe ' + line)
atexit.register(peak)
sys.argv[0] = 'mpidml'
runpy.run_module('mpidml', run_name='__main__', alter_sys=True)
"""


def _peaks_mb(args, metrics):
    """A one-rank run's peak address space (what prlimit --as limits) and peak RSS, in MB."""
    proc = launch([MPIEXEC, "-n", "1", sys.executable, "-c", PROBE, *map(str, args), "--metrics-json", metrics],
                  60, check=0)
    found = [ln.split()[2] for ln in proc.stderr.splitlines() if ln.startswith("probe VmPeak:")]
    assert found, proc.stderr
    return int(found[0]) / 1024, json.loads(metrics.read_text())["memory"]["peak_rss_mb"][0]


MARGIN_MB = 128     # the limit: a streamed run's own peak address space and this much more


def test_a_limit_the_in_memory_path_exceeds_is_one_a_streamed_run_completes_under(tmp_path):
    """prlimit --as: the peak address space of a streamed run on a small file (the
    interpreter, numpy, h5py, MPI, the reader thread) plus MARGIN_MB. A file of twice the
    margin cannot be held under it (the in-memory run ends with one line, exit 2); streamed
    with --memory-limit 64M it trains, its peak RSS within 64 MB of the small file's run.
    Without --memory-limit the run takes the address-space limit as its own and streams by
    itself."""
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) not found: no address-space limit to run under")
    opts = ["--epochs", "1", "--seed", "1", "--threads", "1", "--batch-size", "2048", "--quiet"]
    streamed = ["--stream", "--memory-limit", "64M"]
    small, big = tmp_path / "small.h5", tmp_path / "big.h5"
    synth(str(small), 20000, 50, 3, seed=1)
    vm_mb, rss_mb = _peaks_mb(["--data", small, *opts, *streamed], tmp_path / "small.json")
    limit_mb = int(vm_mb) + MARGIN_MB
    synth(str(big), 2_000_000, 50, 3, seed=1)          # 400 MB
    assert os.path.getsize(big) > 2 * MARGIN_MB << 20

    def run(*args):
        return launch(["prlimit", f"--as={limit_mb << 20}", MPIEXEC, "-n", "1", sys.executable, "-m", "mpidml",
                       "--data", str(big), *opts, *map(str, args)], 120)
    try:
        held = run("--memory-limit", "1T")          # in memory: 400 MB of rows, the limit leaves 128 MB
        errors = lines(held, "mpidml: error:")
        assert held.returncode == 2 and len(errors) == 1 and "out of memory" in errors[0], held.stderr
        for i, args in enumerate([streamed, []]):
            metrics = tmp_path / f"m{i}.json"
            proc = run(*args, "--metrics-json", metrics)
            assert proc.returncode == 0, f"{args} under {limit_mb} MB: {proc.stderr}"
            doc = json.loads(metrics.read_text())
            assert doc["data"]["stream"]["why"] == ("--stream" if args else "auto")
            assert doc["history"][0]["rows"] == doc["data"]["train_samples"]
            assert doc["memory"]["peak_rss_mb"][0] < (rss_mb + 64 if args else limit_mb), (doc["memory"], rss_mb)
    finally:
        big.unlink()


# -- 5. streaming chosen by the memory limit -----------------------------------------------
def test_a_small_memory_limit_streams_with_one_line_and_a_large_one_does_not(tmp_path):
    path = tmp_path / "d.h5"
    synth(str(path), 90000, 8, 3, seed=1)     # 3 ranks: 24000 rows of 40 bytes each, 0.96 MB > half of 2 MB
    small = tmp_path / "small.json"
    proc = mpiexec(3, ["--data", path, "--epochs", "2", "--memory-limit", "2M", "--metrics-json", small],
                   timeout=60, check=0)
    said = [ln for ln in quiet_lines(proc.stderr) if ln.startswith("mpidml: streaming")]
    assert len(said) == 1 and str(path) in said[0] and "--memory-limit 2M" in said[0], proc.stderr
    assert "mpidml: error" not in proc.stderr
    doc = json.loads(small.read_text())
    assert doc["data"]["stream"]["why"] == "auto" and doc["data"]["stream"]["memory_limit_mb"] == 2
    assert [h["rows"] for h in doc["history"]] == [doc["data"]["train_samples"]] * 2
    large = tmp_path / "large.json"
    proc = mpiexec(3, ["--data", path, "--epochs", "2", "--memory-limit", "8G", "--metrics-json", large],
                   timeout=60, check=0)
    assert not [ln for ln in proc.stderr.splitlines() if ln.startswith("mpidml: streaming")], proc.stderr
    assert "stream" not in json.loads(large.read_text())["data"]


@pytest.mark.parametrize("value", ["abc", "0", "-1G", "1X"])
def test_a_bad_memory_limit_exits_2_naming_the_option(value):
    refused(2, ["--epochs", "1", "--memory-limit", value], "--memory-limit")


# -- 6. the file changes under a streamed run ----------------------------------------------
def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def _touch(path):
    later = os.stat(path).st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))


def _append(path):
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("change, said", [(_truncate, ""), (_touch, "changed"), (_append, "changed")])
def test_a_file_changed_mid_stream_ends_the_job_with_one_line(tmp_path, n, change, said):
    """Truncated, touched or appended to after the first epoch: the next chunk read finds
    it; exit 2 with one line naming the file, within seconds (no rank left waiting)."""
    path = tmp_path / "d.h5"
    synth(str(path), 6000, 8, 3, seed=1)
    tag = f"change-{change.__name__}-{n}-{os.getpid()}"
    job = Job([MPIEXEC, "-n", str(n), sys.executable, "-m", "mpidml", "--data", str(path), "--stream",
               "--stream-chunk-mb", SMALL_CHUNK_MB, "--epochs", "100000"], tag, n)
    try:
        job.wait_epochs(1)
        change(path)
        try:
            _, err = job.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{change.__name__}: the job went on for 30 s after its file changed")
    finally:
        job.close()
    assert job.proc.returncode == 2, err
    assert "Traceback" not in err and "BAD TERMINATION" not in err
    errors = [ln for ln in quiet_lines(err) if ln.startswith("mpidml:")]
    assert errors and all(ln.startswith("mpidml: error:") and str(path) in ln and said in ln.replace(str(path), "")
                          for ln in errors), err
    assert len(errors) == 1


# -- 7. a stop signal mid-stream -----------------------------------------------------------
STOP_ARGS = ["--stream", "--stream-chunk-mb", "0.02", "--model", "mlp", "--hidden", "32", "--optimizer", "adam",
             "--lr", "0.005", "--sync-every", "4", "--batch-size", "16", "--seed", "3"]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A streamed run on 2 ranks stopped by SIGTERM to the launcher (mpiexec forwards it)
    in its second epoch: (data file, checkpoint, exit code, stderr)."""
    d = tmp_path_factory.mktemp("stopped")
    path, ckpt = d / "d.h5", d / "ckpt.h5"
    synth(str(path), 20000, 16, 4, seed=5)
    job = Job([MPIEXEC, "-n", "2", sys.executable, "-m", "mpidml", "--data", str(path), *STOP_ARGS,
               "--epochs", "1000", "--save", str(ckpt)], f"stream-stop-{os.getpid()}", 2)
    try:
        job.wait_epochs(1)
        time.sleep(0.05)                        # into the second epoch
        job.proc.send_signal(signal.SIGTERM)
        _, err = job.proc.communicate(timeout=30)
    finally:
        job.close()
    return path, ckpt, job.proc.returncode, err


def test_sigterm_mid_stream_checkpoints_and_the_resume_is_exact(tmp_path, stopped):
    """Exit STOPPED with one line and a checkpoint within the epoch; resumed with the same
    options to the same --epochs, the model is bit-identical to one never interrupted."""
    path, saved_at, code, err = stopped
    assert code == STOPPED, err
    stops = [ln for ln in quiet_lines(err) if ln.startswith("mpidml:")]
    assert len(stops) == 1 and stops[0].startswith("mpidml: stopped by SIGTERM"), err
    ckpt = shutil.copy(saved_at, tmp_path / "ckpt.h5")
    saved = ModelFile.load(ckpt)
    stopped_at = saved.attrs["stopped_at"]
    assert stopped_at["step"] > 0 and stopped_at["chunk_rows"], stopped_at      # within an epoch, chunked
    args, epochs = ["--data", path, *STOP_ARGS, "--quiet"], str(saved.epoch + 2)
    mpiexec(2, [*args, "--epochs", epochs, "--resume", ckpt, "--save", ckpt], timeout=120, check=0)
    mpiexec(2, [*args, "--epochs", epochs, "--save", tmp_path / "whole.h5"], timeout=120, check=0)
    _assert_same_model(ckpt, tmp_path / "whole.h5")
    resumed, whole = ModelFile.load(ckpt), ModelFile.load(tmp_path / "whole.h5")
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]


def test_a_resume_with_other_chunks_starts_the_epoch_over_saying_why(tmp_path, stopped):
    """Another --stream-chunk-mb gives the stopped epoch another order: it starts over, and
    the one warning names the chunks."""
    path, saved_at, _, _ = stopped
    ckpt = shutil.copy(saved_at, tmp_path / "ckpt.h5")
    args = ["--data", path, *STOP_ARGS, "--stream-chunk-mb", "0.05", "--quiet"]     # the last one counts
    proc = mpiexec(2, [*args, "--epochs", str(ModelFile.load(ckpt).epoch + 1), "--resume", ckpt], timeout=120,
                   check=0)
    warned = [ln for ln in proc.stderr.splitlines() if "starts over" in ln]
    assert len(warned) == 1 and "chunk" in warned[0].replace(str(ckpt), "CKPT"), proc.stderr


# -- 8. a sweep streams each model's rows --------------------------------------------------
def test_a_streamed_sweep_trains_every_model_on_every_row(tmp_path):
    path = tmp_path / "d.h5"
    synth(str(path), 4000, 8, 3, seed=2)
    doc = train(2, tmp_path, "--data", path, "--stream", "--stream-chunk-mb", SMALL_CHUNK_MB, "--epochs", "3",
                "--sweep", "lr=0.05 0.1", "--validation-fraction", "0.1")
    assert doc["data"]["stream"]["why"] == "--stream"
    assert [m["overrides"] for m in doc["sweep"]] == [{"lr": 0.05}, {"lr": 0.1}]
    for model in doc["sweep"]:
        assert [h["rows"] for h in model["history"]] == [doc["data"]["train_samples"]] * 3
        assert model["test"]["accuracy"] > 0.8 and model["validation"]["accuracy"] > 0.8
