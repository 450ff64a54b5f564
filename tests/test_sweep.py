"""Sweeps: several models trained at once in one job, validation, early stopping."""
import json

import h5py
import numpy as np
import pytest
from conftest import DIGITS, lines, mpiexec, refused, train

from mpidml.cli.main import parse
from mpidml.errors import UsageError
from mpidml.learn.checkpoint import ModelFile
from mpidml.training.options import make_config

pytestmark = pytest.mark.timeout(180)
NET = ["--data", DIGITS, "--model", "mlp", "--hidden", "32", "--epochs", "3", "--no-overlap"]
GRID = ["--sweep", "lr=0.1 0.03", "--sweep", "batch-size=32 64"]


def _same_as_separate_runs(tmp_path, n, exact):
    """Each model of a sweep against the same options trained alone (same seed and
    validation fraction): the sweep's interleaving must not change a single bit."""
    doc = train(n, tmp_path, *NET, *GRID, "--save-dir", tmp_path / "models")
    assert [e["overrides"] for e in doc["sweep"]] == [{"lr": lr, "batch_size": b} for lr in (0.1, 0.03)
                                                      for b in (32, 64)]
    for index in (1, 2):
        entry = doc["sweep"][index]
        alone = tmp_path / f"alone{index}.h5"
        mpiexec(n, ["--quiet", *NET, "--lr", entry["overrides"]["lr"], "--batch-size", entry["overrides"]["batch_size"],
                    "--validation-fraction", "0.1", "--save", alone], check=0, timeout=90)
        a = ModelFile.load(tmp_path / "models" / f"model-{index:03d}.h5").optimizer_state
        b = ModelFile.load(alone).optimizer_state
        assert np.array_equal(a, b) if exact else np.allclose(a, b, rtol=1e-5, atol=1e-6)
    return doc


def test_every_model_of_a_sweep_is_bit_identical_to_its_run_alone_at_2_ranks(tmp_path):
    doc = _same_as_separate_runs(tmp_path, 2, exact=True)
    assert doc["config"]["validation_fraction"] == 0.1 and doc["data"]["validation_samples"] > 0


def test_a_sweep_at_3_ranks_equals_separate_runs_within_rounding(tmp_path):
    _same_as_separate_runs(tmp_path, 3, exact=False)


@pytest.mark.parametrize("select, key, sign", [(None, "loss", -1), ("val_accuracy", "accuracy", 1),
                                               ("val_f1", "macro_f1", 1)])
def test_the_best_model_is_chosen_on_validation_by_select_and_saved(tmp_path, select, key, sign):
    best = tmp_path / "best.h5"
    doc = train(2, tmp_path, *NET, *GRID, "--save", best, *(("--select", select) if select else ()))
    scores = [sign * e["validation"][key] for e in doc["sweep"]]
    assert doc["best"] == max(range(4), key=lambda i: (scores[i], -i))
    chosen = doc["sweep"][doc["best"]]
    assert doc["test"] == chosen["test"] and doc["history"] == chosen["history"]
    assert {k: doc["config"][k] for k in chosen["overrides"]} == chosen["overrides"]
    assert all("val_loss" in h and "val_accuracy" in h for h in doc["history"])
    # evaluate reproduces the best model's test metrics from the saved file
    out = tmp_path / "eval.json"
    mpiexec(1, ["evaluate", "--model", best, "--data", DIGITS, "--metrics-json", out], check=0)
    assert json.loads(out.read_text())["test"]["accuracy"] == pytest.approx(chosen["test"]["accuracy"])


def test_the_progress_line_shows_the_best_so_far_and_the_models_training(tmp_path):
    proc = mpiexec(2, [*NET, *GRID], check=0)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch")]
    assert len(lines) == 3 and all("4 of 4 models training" in ln and "best so far: model" in ln for ln in lines)


def test_early_stopping_keeps_the_best_weights(tmp_path):
    """A learning rate so high that validation loss soon stops improving: the model stops
    after P epochs without a better one and keeps the best epoch's weights."""
    model = tmp_path / "m.h5"
    doc = train(2, tmp_path, "--data", DIGITS, "--model", "mlp", "--hidden", "32", "--lr", "0.5", "--epochs", "40",
                "--validation-fraction", "0.2", "--early-stopping", "2", "--save", model)
    history = doc["history"]
    losses = [h["val_loss"] for h in history]
    best = int(np.argmin(losses))
    assert len(history) == best + 1 + 2 < 40, losses          # stopped 2 epochs after the best
    assert doc["validation"]["loss"] == pytest.approx(losses[best])
    assert doc["test"]["loss"] == pytest.approx(history[best]["test_loss"])
    assert ModelFile.load(model).best_epoch == best + 1


@pytest.mark.parametrize("args, needle", [
    (["--sweep", "colour=red blue"], "cannot sweep 'colour'"),
    (["--sweep", "lr=0.1 fast"], "expects a number"),
    (["--sweep", "lr="], "no values"),
    (["--sweep", "lr=0.1", "--sweep", "lr=0.2"], "swept twice"),
    (["--sweep", "optimizer=sgd rmsprop"], "one of"),
    (["--model", "mlp", "--sweep", "hidden=32 -4"], "--hidden"),
    (["--sweep", "lr=0.1 0.1"], "twice"),
    (["--sweep", "hidden=32 64"], "needs --model mlp"),
    (["--early-stopping", "3"], "--validation-fraction"),
    (["--save-dir", "d"], "applies to --sweep"),
])
def test_bad_sweeps_are_one_line_exit_2(args, needle):
    with pytest.raises(UsageError, match=needle):
        make_config(parse(args), environ={})


def test_bad_sweep_at_3_ranks_is_one_line():
    proc = mpiexec(3, ["--sweep", "colour=1"], check=2)
    assert proc.stderr.count("mpidml: error:") == 1 and "Traceback" not in proc.stderr


def test_a_sweep_from_a_config_table(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('model = "mlp"\n[sweep]\nlr = [0.1, 0.01]\nhidden = [[16], [32, 16]]\n')
    cfg = make_config(parse(["--config", str(toml)]), environ={})
    assert cfg.sweep == (("lr", (0.1, 0.01)), ("hidden", ((16,), (32, 16))))
    toml.write_text('[sweep]\nlr = 0.1\n')
    with pytest.raises(UsageError, match="table of lists"):
        make_config(parse(["--config", str(toml)]), environ={})


def test_a_sweep_resumes_with_the_command_that_saved_it(tmp_path, blobs):
    """A sweep of the default model (auto: softmax, no hidden layer) saved hidden [] and
    its resume, the same command, was refused: 'trained with hidden [], its sweep point
    has [128]'. Options neither swept nor given come from the files, as for one run."""
    grid = ["--quiet", "--data", blobs, "--sweep", "lr=0.1 0.2", "--save-dir", tmp_path / "s"]
    mpiexec(1, [*grid, "--epochs", "1"], check=0)
    mpiexec(1, [*grid, "--epochs", "2", "--resume", tmp_path / "s"], check=0)
    assert [ModelFile.load(tmp_path / "s" / f"model-00{i}.h5").epoch for i in (0, 1)] == [2, 2]
    refused(1, [*grid, "--epochs", "3", "--resume", tmp_path / "s", "--optimizer", "adam"],
            "trained with --optimizer momentum, this run asks for --optimizer adam")


def test_a_stopped_sweep_resumes_to_the_same_models(tmp_path):
    """SIGTERM mid-sweep: every model checkpoints where it stopped (exit 75); the same
    command with --resume DIR ends with the models of a sweep never interrupted."""
    import os
    import signal
    import sys

    from conftest import MPIEXEC, Job

    from mpidml.cli.datatools import synth
    from mpidml.errors import STOPPED
    data = tmp_path / "d.h5"
    synth(str(data), 60000, 16, 4, seed=2)
    grid = ["--data", data, "--model", "mlp", "--hidden", "16", "--sweep", "lr=0.05 0.01", "--no-overlap"]
    stopped = tmp_path / "stopped"
    job = Job([MPIEXEC, "-n", "2", sys.executable, "-m", "mpidml", *grid, "--epochs", "1000", "--save-dir", stopped,
               "--checkpoint-every", "1"], f"sweep-stop-{os.getpid()}", 2)
    try:
        job.wait_epochs(1)
        job.proc.send_signal(signal.SIGTERM)
        _, err = job.proc.communicate(timeout=30)
    finally:
        job.close()
    assert job.proc.returncode == STOPPED and "stopped by SIGTERM" in err, err
    files = [ModelFile.load(stopped / f"model-{i:03d}.h5") for i in range(2)]
    epochs = str(max(f.epoch for f in files) + 2)
    mpiexec(2, ["--quiet", *grid, "--epochs", epochs, "--save-dir", stopped, "--resume", stopped], check=0, timeout=120)
    whole = tmp_path / "whole"
    mpiexec(2, ["--quiet", *grid, "--epochs", epochs, "--save-dir", whole], check=0, timeout=120)
    for i in range(2):
        a = ModelFile.load(stopped / f"model-{i:03d}.h5")
        b = ModelFile.load(whole / f"model-{i:03d}.h5")
        assert np.array_equal(a.optimizer_state, b.optimizer_state), i
    proc = mpiexec(2, [*grid, "--epochs", epochs, "--save-dir", stopped, "--resume", stopped], check=0)
    assert "already complete" in proc.stdout      # a result, not a warning
    proc = mpiexec(2, [*grid[:-3], "--sweep", "lr=0.05 0.02", "--epochs", epochs, "--resume", stopped], check=2)
    assert "resume with the same --sweep" in proc.stderr


def test_the_progress_bar_ends_with_the_last_model():
    """The bar's task runs until every model has finished (it waited for the job's own
    end, which comes only after every task: the run never ended)."""
    proc = mpiexec(2, [*NET, "--sweep", "lr=0.1 0.03", "--progress-bar"], check=0, timeout=60)
    assert "test: accuracy" in proc.stdout


def test_a_validation_fraction_that_holds_out_no_row_is_refused(blobs):
    """1e-9 of 500 rows rounds to none: early stopping and selection would score an empty set."""
    refused(2, ["--data", blobs, "--epochs", "1", "--validation-fraction", "1e-9"],
            "--validation-fraction 1e-09 holds out no row of the 400 training rows of rank 1; give at least 0.0025")


def test_a_sweep_without_validation_chooses_on_training_loss_and_says_so(tmp_path, blobs):
    out = tmp_path / "m.json"
    proc = mpiexec(1, ["--quiet", "--data", blobs, "--epochs", "2", "--sweep", "lr=0.0001 0.1",
                       "--validation-fraction", "0", "--metrics-json", out], check=0)
    doc = json.loads(out.read_text())
    losses = [m["history"][-1]["train_loss"] for m in doc["sweep"]]
    assert doc["best"] == int(np.argmin(losses)) == 1 and doc["best_on"] == "train_loss"
    warning, = lines(proc, "mpidml: warning:")
    assert "no validation rows" in warning and "training loss" in warning


def test_a_sweep_of_more_models_than_mpi_has_communicators(tmp_path):
    """MPICH has about 2000 communicators; a model per communicator ended a sweep of 2100
    with "Too many communicators" (exit 1). Later models now take over finished ones'."""
    data = tmp_path / "tiny.h5"
    mpiexec(1, ["data", "synth", "--samples", "40", "--features", "2", "--out", data], check=0)
    out = tmp_path / "m.json"
    seeds = " ".join(map(str, range(2100)))
    mpiexec(1, ["--quiet", "--data", data, "--epochs", "1", "--sweep", f"seed={seeds}", "--metrics-json", out],
            check=0, timeout=150)
    doc = json.loads(out.read_text())
    assert len(doc["sweep"]) == 2100 and all(len(m["history"]) == 1 for m in doc["sweep"])


def _tiny_sweep(tmp_path, models):
    """Options of a sweep of `models` softmax models (one step an epoch) on a tiny file: more
    than the COMMUNICATORS (64) that train at once, so that later ones wait for a communicator."""
    from mpidml.cli.datatools import synth
    data = tmp_path / "tiny.h5"
    synth(str(data), 40, 2, 2, seed=1)
    return ["--data", data, "--model", "softmax", "--sweep", "seed=" + " ".join(map(str, range(models)))]


def test_a_stop_signal_stops_a_sweep_of_more_models_than_train_at_once(tmp_path):
    """Models 64 and 65 wait for models 0 and 1's communicators. After SIGTERM stopped the
    first 64, each of them started all the same, trained to its own second vote and saved
    that: every later generation trained after the stop. Now they never start, say so, and
    --resume trains them to the models of a sweep never stopped."""
    import os
    import signal
    import sys

    from conftest import MPIEXEC, Job

    from mpidml.errors import STOPPED
    sweep, stopped = _tiny_sweep(tmp_path, 66), tmp_path / "stopped"
    out = tmp_path / "m.json"
    job = Job([MPIEXEC, "-n", "2", sys.executable, "-m", "mpidml", *sweep, "--epochs", "1000", "--save-dir", stopped,
               "--metrics-json", out], f"sweep-generations-{os.getpid()}", 2)
    try:
        assert "a sweep of 66 softmax models" in job.proc.stdout.readline()     # training starts
        job.proc.send_signal(signal.SIGTERM)
        _, err = job.proc.communicate(timeout=30)
    finally:
        job.close()
    assert job.proc.returncode == STOPPED, err
    doc = json.loads(out.read_text())
    assert [len(doc["sweep"][index]["history"]) for index in (64, 65)] == [0, 0]
    assert [m["started"] for m in doc["sweep"]] == [True] * 64 + [False] * 2
    assert "(2 of the 66 models not started yet)" in err, err
    for index in (64, 65):
        saved = ModelFile.load(stopped / f"model-{index:03d}.h5")
        assert saved.epoch == 0 and saved.attrs["history"] == [] and saved.attrs["stopped_at"]["step"] == 0
    mpiexec(2, ["--quiet", *sweep, "--epochs", "2", "--save-dir", stopped, "--resume", stopped], check=0, timeout=60)
    alone = tmp_path / "alone.h5"       # a sweep's model is bit-identical to its run alone
    mpiexec(2, ["--quiet", *sweep[:4], "--seed", "65", "--validation-fraction", "0.1", "--epochs", "2",
                "--save", alone], check=0)
    resumed = ModelFile.load(stopped / "model-065.h5")
    assert resumed.epoch == 2 and np.array_equal(resumed.optimizer_state, ModelFile.load(alone).optimizer_state)


def test_a_sweep_of_several_generations_prints_each_ones_epochs_as_it_trains(tmp_path):
    """The line for epoch E waited for every model, started or not: in a sweep of more than
    64 models no line came until the last generation trained. Each generation's lines now
    come as it trains, with how many models have started."""
    proc = mpiexec(1, [*_tiny_sweep(tmp_path, 66), "--epochs", "2"], check=0, timeout=60)
    epochs = [ln.split("  best so far")[0] for ln in proc.stdout.splitlines() if ln.startswith("epoch")]
    assert epochs == ["epoch   1/2  models 0-63: 64 training, 64 of 66 started",
                      "epoch   2/2  models 0-63: 64 training, 64 of 66 started",
                      "epoch   1/2  models 64-65: 2 training, 66 of 66 started",
                      "epoch   2/2  models 64-65: 2 training, 66 of 66 started"], proc.stdout


def test_a_sweep_of_models_without_hidden_layers_resumes(tmp_path):
    """The grid check compared a softmax file's hidden layers ([]) with the default --hidden
    (128), which only an mlp has: 'trained with hidden [], its sweep point has [128]'."""
    sweep, saved = _tiny_sweep(tmp_path, 2), tmp_path / "models"
    mpiexec(1, ["--quiet", *sweep, "--epochs", "1", "--save-dir", saved], check=0)
    mpiexec(1, ["--quiet", *sweep, "--epochs", "2", "--save-dir", saved, "--resume", saved], check=0)
    assert all(ModelFile.load(saved / f"model-{i:03d}.h5").epoch == 2 for i in range(2))


def test_a_sweeps_training_time_is_its_loop_without_scoring(tmp_path):
    """Each model's evaluation time counted its wait in the scores' Allreduce, while the other
    models computed; the job subtracted them all from its wall time: -0.8 s of training in a
    0.4 s run of 20 models at 2 ranks."""
    from mpidml.cli.datatools import synth
    synth(str(tmp_path / "s.h5"), 2000, 8, 3, seed=1)
    doc = train(2, tmp_path, "--data", tmp_path / "s.h5", "--model", "softmax", "--epochs", "3",
                "--sweep", "lr=0.1 0.05 0.02 0.01 0.005", "--sweep", "l2=0 0.001 0.01 0.1")
    assert 0 < doc["timing"]["train_s"] <= doc["timing"]["wall_s"], doc["timing"]


def test_regression_validation_scores_in_the_data_units(tmp_path):
    """Validation targets were standardized like the training ones, then scored as raw
    targets: R² -0.97 on a fit whose test R² was 1.0, so early stopping and the choice of
    the best model ran on wrong numbers."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3000, 6)).astype(np.float32)
    y = 5.0 * X[:, 0] - 2.0 * X[:, 3] + 40.0 + 0.1 * rng.standard_normal(3000)
    path = tmp_path / "reg.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, y
    doc = train(2, tmp_path, "--data", path, "--epochs", "5", "--validation-fraction", "0.2")
    val, test = doc["validation"], doc["test"]
    assert test["r2"] > 0.99 and abs(val["r2"] - test["r2"]) < 0.01, (val, test)
    assert abs(val["rmse"] - test["rmse"]) < 0.05 * test["rmse"] + 0.02
