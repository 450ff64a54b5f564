"""--stage-dir: rank 0 copies every rank's rows into a file of its own, which the rank streams
from. The same model as in memory and as --stream; the files gone after a completed run,
kept by a stopped one and reused by --resume; bad directories, bad values and a failing
write end with one line (exit 2) and no staged file left."""
import json
import os
import resource
import stat
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import MPIEXEC, ROOT, Job, mpiexec, quiet_lines, refused, write_h5

from mpidml.errors import STOPPED
from mpidml.learn.checkpoint import ModelFile

pytestmark = pytest.mark.timeout(120)


def classes_file(tmp_path):
    """3 classes labelled 2, 5 and 7 (staged as indices 0, 1, 2), no test set (a split)."""
    rng = np.random.default_rng(4)
    k = rng.integers(0, 3, 2400)
    X = (rng.standard_normal((2400, 6)) + 2 * np.eye(3, 6)[k]).astype(np.float32)
    return write_h5(tmp_path / "classes.h5", X=X, y=np.array([2, 5, 7])[k])


def regression_file(tmp_path):
    """Regression on float64 features (read as float32), with a /test group of its own."""
    rng = np.random.default_rng(5)
    X, TX = rng.standard_normal((1800, 5)), rng.standard_normal((301, 5))
    w = rng.standard_normal(5)
    return write_h5(tmp_path / "regression.h5", train__X=X, train__y=X @ w + 0.1, test__X=TX, test__y=TX @ w + 0.1)


def params(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f if isinstance(f[name], h5py.Dataset)}


def staged(folder):
    """What staging left in `folder`: every name, hidden temporaries too."""
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize("n, make", [(2, classes_file), (3, regression_file)])
def test_staged_stream_and_memory_train_the_same_model_and_the_files_go(tmp_path, n, make):
    data, stage = make(tmp_path), tmp_path / "scratch" / "stage"       # made as mkdir -p
    args = ["--quiet", "--data", data, "--epochs", "3", "--validation-fraction", "0.1", "--seed", "2"]
    for name, mode in (("staged", ["--stage-dir", stage]), ("streamed", ["--stream"]), ("memory", [])):
        mpiexec(n, [*args, *mode, "--save", tmp_path / f"{name}.h5", "--metrics-json", tmp_path / f"{name}.json"],
                timeout=60, check=0)
    doc = json.loads((tmp_path / "staged.json").read_text())
    assert doc["data"]["stream"]["why"] == "--stage-dir" and doc["data"]["stream"]["staged"].startswith(str(stage))
    assert doc["data"]["validation_samples"] > 0 and doc["data"]["test_samples"] > 0
    ours = params(tmp_path / "staged.h5")
    for other in ("streamed", "memory"):
        theirs = params(tmp_path / f"{other}.h5")
        assert ours.keys() == theirs.keys()
        assert all(np.array_equal(ours[k], theirs[k]) for k in ours), other
    assert staged(stage) == []


def _until_epoch(job):
    """stdout lines up to the first epoch line (the job then trains)."""
    seen = []
    while not seen or not seen[-1].startswith("epoch"):
        line = job.proc.stdout.readline()
        assert line, job.proc.stderr.read()
        seen.append(line)
    return seen


def _stopped(cmd, tag, n):
    """Run `cmd` until its first epoch, then SIGTERM the launcher: (stdout lines, stderr)."""
    job = Job(cmd, tag, n)
    try:
        seen = _until_epoch(job)
        job.proc.terminate()
        out, err = job.proc.communicate(timeout=30)
    finally:
        job.close()
    assert job.proc.returncode == STOPPED, err
    return seen + out.splitlines(), err


def _files(stage):
    return {name: (st.st_ino, st.st_mtime_ns, st.st_size)
            for name in staged(stage) for st in [os.stat(stage / name)]}


def _launch(n, args):
    return [MPIEXEC, "-n", str(n), sys.executable, "-m", "mpidml", *map(str, args)]


def test_a_stopped_run_keeps_its_staged_files_and_resume_reuses_them(tmp_path):
    """Stopped (SIGTERM): the files stay, whole. Resumed and stopped again: the same files,
    untouched, every rank says so. Resumed to the end: the model of a run never stopped,
    and the files are gone."""
    data, stage, ckpt = classes_file(tmp_path), tmp_path / "stage", tmp_path / "ckpt.h5"
    train = ["--data", data, "--model", "mlp", "--hidden", "16", "--seed", "3", "--validation-fraction", "0.1",
             "--batch-size", "8"]
    tag = f"stage-{os.getpid()}"
    _stopped(_launch(2, [*train, "--stage-dir", stage, "--epochs", "1000", "--save", ckpt]), tag, 2)
    first = _files(stage)
    assert len(first) == 2 and not any(name.startswith(".") for name in first), first
    umask = os.umask(0)
    os.umask(umask)
    modes = {stat.S_IMODE(os.stat(stage / name).st_mode) for name in first}
    assert modes == {0o666 & ~umask}, modes         # readable as any tool's output, not mkstemp's 0600
    lines, _ = _stopped(_launch(2, [*train, "--stage-dir", stage, "--epochs", "1000", "--resume", ckpt,
                                    "--save", ckpt]), tag, 2)
    assert any("2 of 2 ranks reuse" in ln for ln in lines), lines
    assert _files(stage) == first
    epochs = ModelFile.load(ckpt).epoch + 2
    mpiexec(2, [*train, "--stage-dir", stage, "--quiet", "--epochs", epochs, "--resume", ckpt, "--save", ckpt],
            timeout=60, check=0)
    assert staged(stage) == []
    mpiexec(2, [*train, "--quiet", "--epochs", epochs, "--save", tmp_path / "whole.h5"], timeout=60, check=0)
    resumed, never = ModelFile.load(ckpt), ModelFile.load(tmp_path / "whole.h5")
    assert np.array_equal(resumed.optimizer_state, never.optimizer_state)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in never.history]


def test_a_staged_file_cut_short_is_staged_anew(tmp_path):
    """A rank whose file is not whole gets its rows again; the other keeps its own."""
    data, stage, ckpt = classes_file(tmp_path), tmp_path / "stage", tmp_path / "ckpt.h5"
    train = ["--data", data, "--stage-dir", stage, "--batch-size", "8", "--save", ckpt]
    _stopped(_launch(2, [*train, "--epochs", "1000"]), f"stage-cut-{os.getpid()}", 2)
    first = _files(stage)
    cut = next(name for name in first if "-rank1-" in name)
    os.truncate(stage / cut, first[cut][2] - 100)
    epochs = ModelFile.load(ckpt).epoch + 1
    out = mpiexec(2, [*train, "--epochs", epochs, "--resume", ckpt], timeout=60, check=0).stdout
    assert "1 of 2 ranks reuse" in out, out
    assert staged(stage) == []


def test_a_stage_dir_that_is_a_file_is_refused_by_every_rank_at_once(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    refused(3, ["--data", classes_file(tmp_path), "--stage-dir", afile], "--stage-dir")
    assert afile.read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any directory")
def test_a_stage_dir_without_write_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    refused(2, ["--data", classes_file(tmp_path), "--stage-dir", locked], "--stage-dir")


def test_nan_in_the_data_names_its_row_and_leaves_no_staged_file(tmp_path):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((3000, 4)).astype(np.float32)
    X[2345, 1] = np.nan
    data = write_h5(tmp_path / "nan.h5", X=X, y=rng.integers(0, 2, 3000))
    stage = tmp_path / "stage"
    proc = mpiexec(3, ["--data", data, "--stage-dir", stage, "--epochs", "1"], timeout=60, check=2)
    assert quiet_lines(proc.stderr) == [f"mpidml: error: {data}: dataset /X has NaN or inf at row 2345"]
    assert staged(stage) == []


def test_a_failing_write_ends_with_one_line_and_removes_the_partial_file(tmp_path):
    """A file size limit (RLIMIT_FSIZE: writes past it fail with EFBIG) stands in for a
    full disk: each rank's rows need more than the limit."""
    rng = np.random.default_rng(7)
    data = write_h5(tmp_path / "big.h5", X=rng.standard_normal((150000, 48)).astype(np.float32),
                    y=rng.integers(0, 2, 150000))
    stage = tmp_path / "stage"
    limit = 10 << 20

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    cmd = _launch(2, ["--data", data, "--stage-dir", stage, "--test-fraction", "0", "--epochs", "1"])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT, preexec_fn=limited)
    assert proc.returncode == 2, proc.stderr
    errors = quiet_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith(f"mpidml: error: --stage-dir {stage}: cannot write"), errors
    assert staged(stage) == []
