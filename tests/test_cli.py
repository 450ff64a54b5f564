"""Command line, configuration precedence, subcommands, thread pinning."""
import json

import h5py
import numpy as np
import pytest
from conftest import DIGITS, mpiexec, train

from mpidml.cli import make_config, parse
from mpidml.errors import UsageError
from mpidml.threads import pin_blas_threads

pytestmark = pytest.mark.timeout(120)


def test_no_arguments_means_train_on_the_bundled_data():
    args = parse([])
    assert args.command == "train"
    cfg = make_config(parse(["--epochs", "3"]), environ={})
    assert cfg.data.endswith("digits.h5") and cfg.epochs == 3


def test_precedence_command_line_over_environment_over_config(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('epochs = 7\nsync-every = 3\nhidden = [32, 16]\nmodel = "mlp"\noverlap = true\n')
    cfg = make_config(parse(["--config", str(toml)]), environ={})
    assert (cfg.epochs, cfg.sync_every, cfg.hidden, cfg.overlap) == (7, 3, (32, 16), True)
    cfg = make_config(parse(["--config", str(toml)]), environ={"MPIDML_EPOCHS": "9"})
    assert cfg.epochs == 9
    cfg = make_config(parse(["--config", str(toml), "--epochs", "2"]), environ={"MPIDML_EPOCHS": "9"})
    assert cfg.epochs == 2


@pytest.mark.parametrize("text,needle", [("epochs = 0", "must be positive"), ("colour = 1", "unknown option"),
                                         ("optimizer = 'rmsprop'", "one of"), ("epochs = [", "not valid TOML")])
def test_bad_config_files(tmp_path, text, needle):
    toml = tmp_path / "bad.toml"
    toml.write_text(text + "\n")
    with pytest.raises(UsageError, match=needle):
        make_config(parse(["--config", str(toml)]), environ={})


def test_bad_environment_value():
    with pytest.raises(UsageError, match="MPIDML_LR"):
        make_config(parse([]), environ={"MPIDML_LR": "fast"})


def test_config_file_reproduces_the_command_line_run(tmp_path):
    args = ["--model", "mlp", "--hidden", "24", "--epochs", "3", "--sync-every", "2"]
    a = train(2, tmp_path, *args, name="a.json")
    toml = tmp_path / "run.toml"
    toml.write_text('model = "mlp"\nhidden = [24]\nepochs = 3\nsync_every = 2\n')
    b = train(2, tmp_path, "--config", toml, name="b.json")
    assert a["test"] == b["test"] and a["config"]["hidden"] == b["config"]["hidden"] == [24]


def test_help_documents_every_option_once():
    proc = mpiexec(2, ["train", "--help"], timeout=30, check=0)
    for opt in ("--data", "--model", "--hidden", "--epochs", "--batch-size", "--lr", "--l2", "--optimizer",
                "--sync", "--sync-every", "--overlap", "--distribute", "--standardize", "--seed", "--save",
                "--checkpoint-every", "--resume", "--metrics-json", "--trace", "--stall-timeout", "--config"):
        assert opt in proc.stdout
    assert proc.stdout.count("usage: mpidml train") == 1


def test_info_names_the_mpi_library():
    proc = mpiexec(2, ["info"], timeout=30, check=0)
    assert "MPICH" in proc.stdout and "ranks" in proc.stdout and "[1, 1]" in proc.stdout


def test_progress_line_per_epoch_on_rank_0():
    proc = mpiexec(3, ["--epochs", "4"], timeout=60, check=0)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch")]
    assert len(lines) == 4 and "samples/s" in lines[0]
    assert proc.stdout.count("test: accuracy") == 1


def test_metrics_document_fields(tmp_path):
    doc = train(2, tmp_path, "--epochs", "2", "--sync-every", "4", "--distribute", "read")
    assert doc["config"]["sync_every"] == 4 and doc["config"]["distribute"] == "read"
    for key in ("wall_s", "distribute_s", "train_s", "evaluate_s", "compute_s", "comm_s", "comm_wait_s",
                "samples_per_s"):
        assert doc["timing"][key] >= 0
    t = doc["timing"]
    # samples/s: every rank's training samples over the loop alone (test scoring excluded)
    assert t["samples_per_s"] * t["train_s"] == pytest.approx(2 * doc["data"]["train_samples"])
    assert t["train_s"] + t["evaluate_s"] + t["distribute_s"] < t["wall_s"]
    assert set(doc["history"][0]) >= {"epoch", "train_loss", "test_loss", "test_accuracy", "wall_s"}
    assert set(doc["test"]) == {"accuracy", "loss", "macro_f1", "confusion_matrix"}


def test_evaluate_and_predict_a_saved_model(tmp_path):
    train(3, tmp_path, "--save", tmp_path / "m.h5", name="t.json")
    with h5py.File(tmp_path / "m.h5") as f:
        assert "pickle" not in str(dict(f.attrs))
        saved = json.loads((tmp_path / "t.json").read_text())
        assert json.loads(f.attrs["config"])["epochs"] == saved["config"]["epochs"]
    mpiexec(2, ["evaluate", "--model", tmp_path / "m.h5", "--data", DIGITS, "--metrics-json", tmp_path / "e.json"],
            check=0)
    doc = json.loads((tmp_path / "e.json").read_text())
    saved = json.loads((tmp_path / "t.json").read_text())
    assert doc["test"]["accuracy"] == pytest.approx(saved["test"]["accuracy"])
    mpiexec(3, ["predict", "--model", tmp_path / "m.h5", "--data", DIGITS, "--out", tmp_path / "p.h5"], check=0)
    with h5py.File(tmp_path / "p.h5") as f, h5py.File(DIGITS) as d:
        labels, truth = f["labels"][...], d["test/y"][...]
        assert f["proba"].shape == (359, 10)
        np.testing.assert_allclose(f["proba"][...].sum(axis=1), 1, atol=1e-5)
    assert np.mean(labels == truth) == pytest.approx(saved["test"]["accuracy"])


def test_thread_pinning():
    env = {}
    assert pin_blas_threads([], env) == "1" and env["OPENBLAS_NUM_THREADS"] == "1"
    env = {"OMP_NUM_THREADS": "4"}
    assert pin_blas_threads([], env) == "4" and "OPENBLAS_NUM_THREADS" not in env
    env = {"OMP_NUM_THREADS": "4"}
    assert pin_blas_threads(["--threads", "2"], env) == "2" and env["OMP_NUM_THREADS"] == "2"
    env = {"MPIDML_THREADS": "3"}
    assert pin_blas_threads([], env) == "3" and env["MKL_NUM_THREADS"] == "3"


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    train(2, tmp_path, "--epochs", "2")
    mpiexec(1, ["plot", tmp_path / "m.json", "-o", tmp_path / "c.png"], check=0)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
