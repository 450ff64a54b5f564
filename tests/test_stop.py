"""Batch-job life: stopping on SIGTERM/SIGUSR1 with a checkpoint, exact and safe resume,
resubmission of a finished run, and the batch scripts' requeue under stand-in launchers."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import MPIEXEC, ROOT, Job, mpiexec, quiet_lines, rank_pids, refused
from test_batch import _site_env

from mpidml.cli.datatools import synth
from mpidml.errors import STOPPED
from mpidml.learn.checkpoint import ModelFile
from mpidml.runtime.stop import parse_signals

pytestmark = pytest.mark.timeout(180)
# a run long enough to be stopped in the middle of an epoch (780 steps per rank at 2 ranks)
TRAIN = ["--model", "mlp", "--hidden", "32", "--optimizer", "adam", "--lr", "0.005", "--sync-every", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("stop") / "d.h5"
    synth(str(path), 100000, 16, 4, seed=5)
    return path


def _stop(job, sig, timeout=30):
    """Signal the launcher; the job's ranks must end within `timeout` s."""
    t0 = time.time()
    job.proc.send_signal(sig)
    out, err = job.proc.communicate(timeout=timeout)
    return job.proc.returncode, out, err, time.time() - t0


def _mpidml_lines(text):
    return [ln for ln in quiet_lines(text) if ln.startswith("mpidml:")]


@pytest.mark.parametrize("n, sig, sync", [(3, signal.SIGTERM, "average"), (2, signal.SIGUSR1, "gradients")])
def test_a_signal_stops_every_rank_at_one_step_and_the_resume_is_exact(tmp_path, data, n, sig, sync):
    """The acceptance check: a signal to the launcher mid-epoch; every rank exits 75 with one
    mpidml line and a checkpoint from that step; resumed, the run ends bit-identical to one
    never interrupted."""
    ckpt, metrics = tmp_path / "ckpt.h5", tmp_path / "m.json"
    args = [*TRAIN, "--sync", sync, "--data", data, "--seed", "3"]
    job = Job([MPIEXEC, "-n", str(n), sys.executable, "-m", "mpidml", *args, "--epochs", "1000",
               "--save", ckpt, "--metrics-json", metrics], f"stop-{n}-{os.getpid()}", n)
    try:
        job.wait_epochs(1)
        rc, out, err, seconds = _stop(job, sig)
    finally:
        job.close()
    assert rc == STOPPED and seconds < 30, err
    assert "BAD TERMINATION" not in out + err
    lines = _mpidml_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"mpidml: stopped by {sig.name}"), err
    doc = json.loads(metrics.read_text())
    saved = ModelFile.load(ckpt)
    assert doc["status"] == "stopped" and doc["stopped"]["epoch"] == saved.epoch == len(doc["history"])
    # finish the interrupted epoch and one more, against the same two epochs never interrupted
    epochs = str(saved.epoch + 2)
    mpiexec(n, [*args, "--quiet", "--epochs", epochs, "--resume", ckpt, "--save", ckpt], check=0, timeout=120)
    mpiexec(n, [*args, "--quiet", "--epochs", epochs, "--save", tmp_path / "whole.h5"], check=0, timeout=120)
    resumed, whole = ModelFile.load(ckpt), ModelFile.load(tmp_path / "whole.h5")
    assert np.array_equal(resumed.optimizer_state, whole.optimizer_state)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]


def test_resume_on_other_data_of_the_same_shape_exits_2_naming_it(tmp_path, data):
    other = tmp_path / "other.h5"
    synth(str(other), 100000, 16, 4, seed=6)
    mpiexec(2, ["--quiet", "--data", data, "--epochs", "1", "--save", tmp_path / "m.h5"], check=0)
    before = (tmp_path / "m.h5").read_bytes()
    proc = mpiexec(2, ["--data", other, "--epochs", "2", "--resume", tmp_path / "m.h5"], check=2)
    assert _mpidml_lines(proc.stderr) == [proc.stderr.strip()]
    assert "other rows" in proc.stderr and str(other) in proc.stderr
    assert (tmp_path / "m.h5").read_bytes() == before


def test_resume_takes_the_files_model_options_and_refuses_contradictions(tmp_path, blobs):
    model = tmp_path / "m.h5"
    mpiexec(1, ["--quiet", "--data", blobs, "--model", "mlp", "--hidden", "16", "--optimizer", "adam",
                "--epochs", "1", "--save", model], check=0)
    proc = mpiexec(1, ["--data", blobs, "--resume", model, "--hidden", "64"], check=2)
    assert "--hidden 16" in proc.stderr and "--hidden 64" in proc.stderr
    proc = mpiexec(1, ["--data", blobs, "--resume", model, "--optimizer", "sgd"], check=2)
    assert "--optimizer adam" in proc.stderr
    out = tmp_path / "r.json"
    mpiexec(1, ["--quiet", "--data", blobs, "--resume", model, "--epochs", "2", "--metrics-json", out], check=0)
    doc = json.loads(out.read_text())
    assert (doc["model"], doc["config"]["hidden"], doc["config"]["optimizer"]) == ("mlp", [16], "adam")
    assert len(doc["history"]) == 2


def test_a_finished_run_resubmitted_says_already_complete(tmp_path, blobs):
    model = tmp_path / "m.h5"
    mpiexec(2, ["--quiet", "--data", blobs, "--epochs", "2", "--save", model], check=0)
    before = model.read_bytes()
    proc = mpiexec(2, ["--data", blobs, "--resume", model, "--save", model], check=0)
    assert "already complete" in proc.stdout and "train" not in proc.stdout.replace("nothing to train", "")
    assert model.read_bytes() == before
    proc = mpiexec(2, ["--data", blobs, "--resume", model, "--save", model, "--epochs", "3"], check=0)
    assert ModelFile.load(model).epoch == 3


def test_checkpoint_signal_names_are_checked():
    assert parse_signals("TERM,usr1") == (signal.SIGTERM, signal.SIGUSR1)
    assert parse_signals("none") == ()
    for bad in ("KILL", "NOPE"):
        with pytest.raises(ValueError):
            parse_signals(bad)
    proc = mpiexec(1, ["--checkpoint-signal", "KILL"], check=2)
    assert "--checkpoint-signal" in proc.stderr


def _wait_running(metrics, proc, timeout=60):
    """Until the job's metrics file shows a finished epoch."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists() and json.loads(metrics.read_text())["history"]:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("no epoch finished")


@pytest.mark.parametrize("script, sig, requeue", [("slurm.sbatch", signal.SIGUSR1, "scontrol requeue 4242"),
                                                  ("pbs.sh", signal.SIGTERM, "qsub -v")])
def test_batch_scripts_forward_the_signal_wait_and_requeue(tmp_path, data, script, sig, requeue):
    """The scheduler's warning (Slurm: USR1 to the batch shell; PBS: TERM at the walltime) is
    passed on to the ranks; the script waits for the checkpoint, requeues, and the requeued
    job resumes and completes."""
    env = _site_env(tmp_path, DATA=str(data), EPOCHS="400", SLURM_JOB_ID="4242", NP="2", WALLTIME="1",
                    REQUEUE_LOG=str(tmp_path / "requeue.log"))
    for tool in ("scontrol", "qsub"):           # record the call instead of queueing
        fake = tmp_path / "fake-bin" / tool
        fake.write_text(f'#!/bin/bash\necho "{tool} $*" >> "$REQUEUE_LOG"\n')
        fake.chmod(0o755)
    out = tmp_path / ("mpidml-mpidml" if script == "slurm.sbatch" else "mpidml-out")
    cmd = ["bash", os.path.join(ROOT, "run", script)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_running(out / "metrics.json", proc)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == STOPPED, stderr
    assert (tmp_path / "requeue.log").read_text().startswith(requeue)
    saved = ModelFile.load(out / "model.h5")
    assert json.loads((out / "metrics.json").read_text())["status"] == "stopped"
    env["EPOCHS"] = str(saved.epoch + 1)      # the requeued job: resume and finish
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["status"] == "complete"
    assert ModelFile.load(out / "model.h5").epoch == saved.epoch + 1


def test_keep_checkpoints_keeps_the_last_k_epochs_across_a_resume(tmp_path, blobs):
    model = tmp_path / "m.h5"
    args = ["--quiet", "--data", blobs, "--save", model, "--keep-checkpoints", "2"]
    mpiexec(2, [*args, "--epochs", "4"], check=0)
    assert sorted(p.name for p in tmp_path.glob("m.epoch*.h5")) == ["m.epoch0003.h5", "m.epoch0004.h5"]
    mpiexec(2, [*args, "--epochs", "6", "--resume", model], check=0)
    kept = sorted(tmp_path.glob("m.epoch*.h5"))
    assert [p.name for p in kept] == ["m.epoch0005.h5", "m.epoch0006.h5"]
    assert [ModelFile.load(p).epoch for p in kept] == [5, 6] and ModelFile.load(model).epoch == 6
    assert mpiexec(1, ["--keep-checkpoints", "2"], check=2).stderr.count("--save") == 1


def test_resume_keeps_the_saved_split_on_a_rechunked_copy_and_refuses_another(tmp_path):
    """The default --block-rows follows the HDF5 chunking, so resuming on a re-chunked copy of
    the same rows split them otherwise (test rows that had been trained on). The model file
    records the split as used; the resumed run takes it, or refuses an option against it."""
    small, large = tmp_path / "c4.h5", tmp_path / "c8.h5"
    for path, chunk in ((small, "4"), (large, "8")):      # the same rows, 20 or 16 rows per block
        mpiexec(1, ["data", "synth", "--samples", "20000", "--features", "4", "--chunk-rows", chunk, "--seed", "3",
                    "--out", path], check=0)
    net = ["--quiet", "--model", "softmax", "--validation-fraction", "0.1"]
    model, whole, resumed = tmp_path / "m.h5", tmp_path / "whole.json", tmp_path / "resumed.json"
    mpiexec(2, [*net, "--data", small, "--epochs", "1", "--save", model], check=0)
    mpiexec(2, [*net, "--data", small, "--epochs", "2", "--metrics-json", whole], check=0)
    mpiexec(2, ["--quiet", "--data", large, "--epochs", "2", "--resume", model, "--metrics-json", resumed], check=0)
    a, b = json.loads(whole.read_text()), json.loads(resumed.read_text())
    assert a["history"][-1]["test_loss"] == b["history"][-1]["test_loss"]
    assert b["config"]["block_rows"] == 20 and b["data"]["validation_samples"] == a["data"]["validation_samples"]
    for option, value, saved in (("--block-rows", "16", "20"), ("--validation-fraction", "0.2", "0.1"),
                                 ("--partition", "contiguous", "blocks"), ("--test-fraction", "0.3", "0.2")):
        proc = mpiexec(1, ["--data", large, "--resume", model, "--epochs", "2", option, value], check=2)
        assert f"trained with {option} {saved}, this run asks for {option} {value}" in proc.stderr


def test_resume_without_validation_refuses_validation_rows(tmp_path, blobs):
    """A file trained without validation records --validation-fraction 0, which was taken
    for "not recorded": resuming with --validation-fraction 0.2 carved validation rows out
    of rows the model had trained on and scored them, without a word."""
    model = tmp_path / "m.h5"
    mpiexec(1, ["--quiet", "--data", blobs, "--epochs", "1", "--save", model], check=0)
    refused(1, ["--data", blobs, "--resume", model, "--epochs", "2", "--validation-fraction", "0.2"],
            "trained with --validation-fraction 0.0, this run asks for --validation-fraction 0.2")


def _catches(pid, sig):
    """Whether process `pid` has a handler for `sig` (/proc's SigCgt mask)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(int(ln.split()[1], 16) for ln in f if ln.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(mask >> (sig - 1) & 1)


def _launch(data, tag, *extra, n=2):
    return Job([MPIEXEC, "-n", str(n), sys.executable, "-m", "mpidml", *TRAIN, "--data", data, "--epochs", "1000",
                *map(str, extra)], tag, n)


def _one_stop_line(job, sig):
    _, err = job.proc.communicate(timeout=30)
    assert job.proc.returncode == STOPPED, err
    assert "BAD TERMINATION" not in err and "Traceback" not in err
    assert len(_mpidml_lines(err)) == 1 and f"stopped by {sig.name}" in err and len(err.splitlines()) == 1, err


def test_a_signal_during_start_up_stops_with_one_line(data):
    """SIGTERM while the ranks still import numpy and start MPI (a handler is there from the
    first line of mpidml's code on; before, the ranks died of it and MPICH printed its banner)."""
    tag = f"early-{os.getpid()}"
    job = _launch(data, tag)
    try:
        ranks = rank_pids(tag, 2)
        deadline = time.time() + 0.3      # the old code never caught SIGTERM this early
        while time.time() < deadline and not all(_catches(p, signal.SIGTERM) for p in ranks.values()):
            time.sleep(0.002)
        job.proc.send_signal(signal.SIGTERM)
        _one_stop_line(job, signal.SIGTERM)
    finally:
        job.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2])
def test_repeated_stop_signals_still_stop_once_with_a_checkpoint(tmp_path, data, sig):
    """A batch system (or an impatient user) signals again, every 50 ms here, while the job
    is already stopping: the first signal counts, the job exits 75 with its checkpoint (a
    second SIGTERM after the stop used to kill the ranks: exit 15 and MPICH's banner).
    SIGHUP (the terminal went away) and SIGUSR2 (SGE's warning) stop as SIGTERM does; MPICH's
    mpiexec forwards only SIGTERM (and INT, USR1) and dies of the others, so they go to
    the ranks, as srun or a process group would deliver them."""
    ckpt = tmp_path / "ck.h5"
    job = _launch(data, f"again-{sig.name}-{os.getpid()}", "--save", ckpt)
    try:
        ranks = job.wait_epochs(1)
        deadline = time.time() + 20
        while job.proc.poll() is None and time.time() < deadline:     # again every 50 ms until it ends
            for pid in [job.proc.pid] if sig == signal.SIGTERM else ranks.values():
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            time.sleep(0.05)
        _one_stop_line(job, sig)
    finally:
        job.close()
    assert ModelFile.load(ckpt).epoch >= 1


def test_a_signal_the_job_was_started_ignoring_stays_ignored(data):
    """`nohup mpiexec ...` starts every rank with SIGHUP ignored, so that the run outlives the
    terminal; a hang-up (to the whole process group, as a closing terminal sends it) must
    not stop it, although HUP is among the default --checkpoint-signal."""
    tag = f"nohup-{os.getpid()}"
    job = Job(["nohup", MPIEXEC, "-n", "2", sys.executable, "-m", "mpidml", *TRAIN, "--data", data, "--epochs", "2"],
              tag, 2)
    try:
        job.wait_epochs(1)
        os.killpg(job.proc.pid, signal.SIGHUP)
        out, err = job.proc.communicate(timeout=60)
        assert job.proc.returncode == 0 and "stopped" not in err and "test:" in out, err
    finally:
        job.close()


def test_resume_checks_every_sweep_file_against_the_adopted_split(tmp_path, data):
    """A sweep takes its split from its first file; another file trained on another split is
    refused, not resumed on the wrong rows."""
    import h5py
    sweep = tmp_path / "sd"
    net = ["--data", data, "--model", "mlp", "--hidden", "8", "--sweep", "lr=0.1 0.01"]
    args = ["--quiet", *net, "--save-dir", sweep]
    mpiexec(1, [*args, "--epochs", "1"], check=0)
    with h5py.File(sweep / "model-001.h5", "a") as f:
        f.attrs["config"] = json.dumps(dict(json.loads(f.attrs["config"]), test_fraction=0.3))
    proc = mpiexec(1, [*net, "--resume", sweep, "--epochs", "2"], check=2)
    assert "model-001.h5 was trained with test-fraction 0.3, its sweep point has 0.2" in proc.stderr


def test_the_guard_is_installed_before_any_other_mpidml_module_loads():
    """Ctrl-C to the group 0.15 s after a 3-rank launch killed a rank with KeyboardInterrupt
    in `from mpidml.runtime.threads import ...`, a line of mpidml's __main__ that ran before the
    handlers (MPICH's banner, exit 11). The guard now comes first."""
    code = """if True:
        import sys
        import mpidml.runtime.guard as guard
        seen, install = [], guard.Guard.install
        def spy(self):
            seen.append(sorted(m for m in sys.modules if m.startswith("mpidml.")))
            return install(self)
        guard.Guard.install = spy
        from mpidml.__main__ import entry
        sys.argv = ["mpidml", "--version"]
        try:
            entry()
        except SystemExit:
            pass
        print(seen[0], file=sys.stderr)
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    loaded = "['mpidml.__main__', 'mpidml.errors', 'mpidml.runtime', 'mpidml.runtime.guard']"
    assert proc.stderr.strip() == loaded, proc.stderr


def test_a_signal_that_lands_in_a_finalizer_is_raised_after_it():
    """A Ctrl-C whose handler ran inside a weakref callback (h5py closes its objects in
    them) printed "Exception ignored ... Interrupted" with a traceback and was lost; now
    it is raised once the main thread is out of the callback, and nothing is printed."""
    code = """if True:
        import os, signal, time, weakref
        from mpidml.runtime.guard import Guard, Interrupted
        guard = Guard().install()
        guard.armed = True
        class Held: pass
        held = Held()
        def finalizer(ref):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)            # the handler runs in here
        ref = weakref.ref(held, finalizer)
        try:
            del held
            time.sleep(2)
            print("lost")
        except Interrupted as e:
            print("raised after", e.signal.name)
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout.strip() == "raised after SIGINT" and not proc.stderr, proc.stdout + proc.stderr


def test_other_errors_in_finalizers_are_reported_as_python_reports_them():
    """The guard's hook passes every other unraisable error to the hook before it, once:
    installed twice (arm installs again), it once passed them to itself, for ever."""
    code = """if True:
        from mpidml.runtime.guard import Guard
        guard = Guard().install()
        guard.install()
        class Broken:
            def __del__(self):
                raise ValueError("in a finalizer")
        Broken()
        print("went on")
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout.strip() == "went on", proc.stdout + proc.stderr
    assert "ValueError: in a finalizer" in proc.stderr and "RecursionError" not in proc.stderr, proc.stderr
