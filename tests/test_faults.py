"""Fault injection: broken inputs and options, divergence, stalled and killed ranks,
unwritable outputs, corrupt checkpoints, exact resume. Every launch has a timeout."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import DIGITS, MPIEXEC, ROOT, Job, mpiexec, quiet_lines, train, write_h5

from mpidml.runtime.abort import wait_until_read

pytestmark = pytest.mark.timeout(300)


def broken_inputs(tmp):
    """(name, extra args) for each kind of bad file or option."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4)).astype(np.float32)
    y = np.arange(60) % 2
    nan = X.copy()
    nan[41, 2] = np.nan
    inf = X.copy()
    inf[7, 0] = np.inf
    files = {
        "nan": dict(X=nan, y=y), "inf": dict(X=inf, y=y), "mismatch": dict(X=X, y=y[:59]),
        "1d_x": dict(X=X[:, 0], y=y), "3d_x": dict(X=X.reshape(60, 2, 2), y=y),
        "empty": dict(X=np.zeros((0, 4)), y=np.zeros(0, int)), "no_features": dict(X=np.zeros((60, 0)), y=y),
        "strings_x": dict(X=np.array([[b"a"] * 4] * 60), y=y), "one_class": dict(X=X, y=np.zeros(60, int)),
        "nan_label": dict(X=X, y=np.where(y == 0, np.nan, 1.0)), "y_only": dict(y=y),
        "test_mismatch": dict(train__X=X, train__y=y, test__X=X[:, :3], test__y=y),
        # a test set large enough that its rows travel by rendezvous, not eager sends
        "nan_with_test_set": dict(train__X=nan, train__y=y, test__X=np.ones((60000, 4), np.float32),
                                  test__y=np.arange(60000) % 2),
        "few_rows": dict(X=X[:2], y=y[:2]),
    }
    cases = [(name, ["--data", write_h5(tmp / f"{name}.h5", **d)]) for name, d in files.items()]
    (tmp / "text.h5").write_text("not hdf5")
    with open(DIGITS, "rb") as f:
        (tmp / "truncated.h5").write_bytes(f.read(30000))
    cases += [("missing", ["--data", tmp / "missing.h5"]), ("not_hdf5", ["--data", tmp / "text.h5"]),
              ("truncated", ["--data", tmp / "truncated.h5"]), ("directory", ["--data", tmp]),
              ("no_dataset", ["--data", DIGITS, "--x-dataset", "/nope", "--y-dataset", "/train/y"]),
              ("zero_epochs", ["--epochs", "0"]), ("negative_batch", ["--batch-size", "-4"]),
              ("nan_lr", ["--lr", "nan"]), ("unknown_option", ["--frobnicate"]),
              ("unknown_model", ["--model", "svm"]), ("bad_hidden", ["--model", "mlp", "--hidden", "12,x"]),
              ("logistic_10_classes", ["--model", "logistic"]), ("save_missing_dir", ["--save", tmp / "no" / "m.h5"]),
              ("test_fraction_1", ["--test-fraction", "1"]), ("checkpoint_without_save", ["--checkpoint-every", "1"])]
    return cases


@pytest.mark.parametrize("n", [1, 3])
def test_every_broken_input_exits_2_with_one_line(tmp_path, n):
    for name, args in broken_inputs(tmp_path):
        t0 = time.time()
        proc = mpiexec(n, ["--quiet", *args], timeout=30)
        lines = quiet_lines(proc.stderr)
        assert proc.returncode == 2, (name, proc.returncode, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("mpidml: error: "), (name, proc.stderr)
        assert "Traceback" not in proc.stderr and time.time() - t0 < 30
        mentioned = [str(a) for a in args if str(a).startswith(("/", "--"))]
        if name in ("missing", "nan", "mismatch", "truncated", "not_hdf5"):
            assert any(m in lines[0] for m in mentioned), (name, lines[0])


@pytest.mark.parametrize("layout", ["contiguous", "gzip"])
@pytest.mark.parametrize("how", ["scatter", "read"])
def test_nan_is_found_by_whichever_rank_reads_or_receives_it(tmp_path, layout, how):
    """Every path a row can take (raw reads, HDF5 reads, messages from one or from every
    reader) checks it, and the error names the row of the file."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 4)).astype(np.float32)
    X[2222, 1] = np.nan
    path = tmp_path / "nan.h5"
    with h5py.File(path, "w") as f:
        opts = {"chunks": (100, 4), "compression": "gzip"} if layout == "gzip" else {}
        f.create_dataset("X", data=X, **opts)
        f["y"] = np.arange(3000) % 2
    proc = mpiexec(3, ["--quiet", "--data", path, "--distribute", how, "--chunk-mb", "0.01"], timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert quiet_lines(proc.stderr) == [f"mpidml: error: {path}: dataset /X has NaN or inf at row 2222"]


def test_debug_shows_the_traceback(tmp_path):
    proc = mpiexec(1, ["--data", tmp_path / "missing.h5", "--debug"], timeout=30)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_divergence_exits_3(tmp_path):
    proc = mpiexec(3, ["--quiet", "--optimizer", "sgd", "--lr", "1e7", "--no-standardize"], timeout=30)
    assert proc.returncode == 3, proc.stderr
    assert "diverged in epoch 1" in proc.stderr and "--lr" in proc.stderr


def test_read_only_output_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):   # root ignores permissions; make it a file path instead
            blocker = tmp_path / "file"
            blocker.write_text("")
            target = blocker / "m.h5"
        else:
            target = ro / "m.h5"
        proc = mpiexec(3, ["--quiet", "--save", target], timeout=30)
        assert proc.returncode == 2 and "--save" in proc.stderr, proc.stderr
    finally:
        ro.chmod(0o755)


def test_corrupt_and_foreign_checkpoints(tmp_path):
    bad = write_h5(tmp_path / "foreign.h5", params=np.zeros(3))
    proc = mpiexec(3, ["--quiet", "--resume", bad], timeout=30)
    assert proc.returncode == 2 and "not an mpidml model file" in proc.stderr
    mpiexec(1, ["--quiet", "--epochs", "1", "--save", tmp_path / "m.h5"], check=0)
    with h5py.File(tmp_path / "m.h5", "a") as f:
        del f["params"]
        f["params"] = np.zeros(5, np.float32)
    for cmd in (["--quiet", "--resume", tmp_path / "m.h5"],
                ["evaluate", "--model", tmp_path / "m.h5", "--data", DIGITS]):
        proc = mpiexec(3, cmd, timeout=30)
        assert proc.returncode == 2 and "corrupt model file" in proc.stderr, proc.stderr
    trunc = tmp_path / "trunc.h5"
    mpiexec(1, ["--quiet", "--epochs", "1", "--save", trunc], check=0)
    data = trunc.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    proc = mpiexec(2, ["evaluate", "--model", trunc, "--data", DIGITS], timeout=30)
    assert proc.returncode == 2 and str(trunc) in proc.stderr


@pytest.mark.parametrize("args", [["--overlap", "--sync-every", "2", "--optimizer", "adam", "--lr", "0.01"],
                                  ["--sync", "gradients"]])
def test_resume_is_bit_identical(tmp_path, args):
    full = train(3, tmp_path, *args, "--epochs", "4", "--save", tmp_path / "full.h5", name="full.json")
    train(3, tmp_path, *args, "--epochs", "2", "--save", tmp_path / "half.h5", name="half.json")
    resumed = train(3, tmp_path, *args, "--epochs", "4", "--resume", tmp_path / "half.h5",
                    "--save", tmp_path / "resumed.h5", name="resumed.json")
    assert resumed["test"] == full["test"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    with h5py.File(tmp_path / "full.h5") as a, h5py.File(tmp_path / "resumed.h5") as b:
        assert np.array_equal(a["params"][...], b["params"][...])
        assert np.array_equal(a["optimizer_state"][...], b["optimizer_state"][...])


def test_resume_on_another_rank_count(tmp_path):
    train(3, tmp_path, "--epochs", "2", "--save", tmp_path / "m.h5")
    doc = train(2, tmp_path, "--epochs", "4", "--resume", tmp_path / "m.h5")
    assert len(doc["history"]) == 4 and doc["test"]["accuracy"] > 0.93


def _long_run(tag, *extra):
    """A 3-rank run of (nearly) endless epochs on the bundled data, tagged `tag`."""
    return Job([MPIEXEC, "-n", "3", sys.executable, "-m", "mpidml", "--epochs", "100000", "--sync-every", "2",
                *map(str, extra)], tag, 3)


def test_stopped_rank_is_named_within_the_stall_timeout(tmp_path):
    job = _long_run(f"stall-{os.getpid()}", "--stall-timeout", "3")
    try:
        pids = job.wait_epochs(4)
        os.kill(pids[1], signal.SIGSTOP)
        t0 = time.time()
        _, err = job.proc.communicate(timeout=30)
        elapsed = time.time() - t0
        assert job.proc.returncode == 4, err
        lines = quiet_lines(err)        # our line alone: MPICH's "Abort(4) on node ..." is silenced
        assert len(lines) == 1 and lines[0].startswith("mpidml: error:"), err
        assert "rank 1 did not arrive" in err and "rank 2" not in err, err
        assert elapsed < 3 + 8
        # MPICH's node segment would outlive the aborted job in /dev/shm
        assert job.segments and not [s for s in job.segments if os.path.exists(s)]
    finally:
        job.close()


def test_ctrl_c_ends_the_job_with_one_line(tmp_path):
    """The launcher forwards SIGINT to every rank; rank 0 alone reports it."""
    job = _long_run(f"int-{os.getpid()}")
    try:
        job.wait_epochs(3)
        job.proc.send_signal(signal.SIGINT)
        _, err = job.proc.communicate(timeout=30)
    finally:
        job.close()
    assert job.proc.returncode == 130, err
    assert quiet_lines(err) == ["mpidml: error: interrupted"], err


def test_a_rank_that_never_reaches_mpidml_ends_the_start_up_within_the_stall_timeout():
    """An MPMD launch where one rank runs another (MPI) program: the others waited in
    their first collective for ever; now the start-up is under --stall-timeout (exit 4)."""
    other = [sys.executable, "-c", "from mpi4py import MPI; import time; time.sleep(600)"]
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "mpidml", "--stall-timeout", "2", ":", "-n", "1", *other]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 4 and time.time() - t0 < 30, proc.stderr
    assert proc.stderr.splitlines() == [ln for ln in proc.stderr.splitlines() if "start-up" in ln] != [], proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "--stall-timeout" in proc.stderr
    assert "rank 2 did not arrive" in proc.stderr             # rank 0 names it, as the contract says


def test_the_api_called_on_one_rank_only_raises_within_the_stall_timeout(tmp_path):
    """mpidml.train on rank 0 alone: its first collective waited for the others for ever.
    (What it raised goes to a file: the Abort right after a print can beat mpiexec's
    forwarding of the line.)"""
    script, said = tmp_path / "one.py", tmp_path / "raised.txt"
    script.write_text("import sys, time\nfrom mpi4py import MPI\nimport mpidml\nfrom mpidml.errors import StallError\n"
                      "if MPI.COMM_WORLD.rank == 0:\n"
                      "    try:\n        mpidml.train(stall_timeout=2, epochs=1, quiet=True)\n"
                      f"    except StallError as e:\n        open({str(said)!r}, 'w').write(f'raised: {{e}}')\n"
                      "    MPI.COMM_WORLD.Abort(0)\n"
                      "time.sleep(60)\n")
    proc = mpiexec(2, [], script=script, timeout=40)
    text = said.read_text() if said.exists() else ""
    assert "raised: start-up: rank 1 did not arrive within 2 s" in text, text + proc.stdout + proc.stderr


def test_ctrl_c_in_a_terminal_reaches_the_whole_process_group_and_ends_with_one_line(tmp_path):
    """A terminal's Ctrl-C sends SIGINT to its whole foreground process group: every rank
    gets it at once, and again when mpiexec forwards its own copy, often while the first is
    being reported (a traceback, MPICH's banner, the other ranks' lines). Here the late
    copies are made certain: more SIGINTs to every rank, 5 ms apart."""
    job = _long_run(f"pgrp-{os.getpid()}")
    try:
        ranks = job.wait_epochs(3)
        os.killpg(job.proc.pid, signal.SIGINT)
        for _ in range(40):
            time.sleep(0.005)
            for pid in ranks.values():
                try:
                    os.kill(pid, signal.SIGINT)
                except OSError:
                    pass
        _, err = job.proc.communicate(timeout=30)
    finally:
        job.close()
    assert job.proc.returncode == 130, err
    assert quiet_lines(err) == ["mpidml: error: interrupted"], err


@pytest.mark.parametrize("where, reporter", [("all", 0), ("2", 2)])
def test_a_bug_is_reported_once_by_the_rank_that_hit_it(where, reporter):
    proc = mpiexec(3, [where, "--quiet"], script=os.path.join(ROOT, "tests", "fail_on_ranks.py"), timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert quiet_lines(proc.stderr) == [f"mpidml: error: rank {reporter}: internal error: RuntimeError: planted bug"]


def test_killed_rank_ends_the_job_and_checkpoint_stays_valid(tmp_path):
    ckpt, metrics = tmp_path / "ck.h5", tmp_path / "m.json"
    job = _long_run(f"kill-{os.getpid()}", "--save", ckpt, "--checkpoint-every", "1", "--metrics-json", metrics)
    try:
        pids = job.wait_epochs(5)
        os.kill(pids[2], signal.SIGKILL)
        t0 = time.time()
        job.proc.communicate(timeout=30)
        assert time.time() - t0 < 30
    finally:
        job.close()                 # SIGKILL leaves MPICH no chance to remove its segment: close does
    assert job.proc.returncode != 0
    doc = json.loads(metrics.read_text())       # rewritten after every epoch: the finished ones survive
    assert doc["status"] == "running" and len(doc["history"]) >= 5 and "test" in doc, doc.get("status")
    ev = mpiexec(1, ["evaluate", "--model", ckpt, "--data", DIGITS], check=0, timeout=30)
    assert ev.returncode == 0 and "accuracy" in ev.stdout, ev.stderr


def test_abort_waits_until_the_launcher_has_read_the_error(tmp_path):
    """MPI_Abort can end the job before mpiexec forwards a rank's last stderr bytes; the
    aborting rank first waits until its pipe (or socket) is drained, never past the timeout."""
    r, w = os.pipe()
    os.write(w, b"mpidml: error: x\n")
    t0 = time.monotonic()
    assert not wait_until_read(w, timeout=0.2) and time.monotonic() - t0 < 1
    os.read(r, 100)
    assert wait_until_read(w, timeout=0.2)
    a, b = socket.socketpair()
    a.send(b"x" * 100)
    assert not wait_until_read(a.fileno(), timeout=0.05)
    b.recv(100)
    assert wait_until_read(a.fileno(), timeout=0.05)
    with open(tmp_path / "log", "w") as f:
        f.write("x")
        f.flush()
        assert wait_until_read(f.fileno(), timeout=0.05)
    for fd in (r, w):
        os.close(fd)
    a.close()
    b.close()
