"""Successive halving (--search halving) and the selection metric (--select)."""
import csv
import json
import os
import signal
import sys

import numpy as np
import pytest
from conftest import DIGITS, MPIEXEC, Job, mpiexec, refused, train

from mpidml.cli.datatools import synth
from mpidml.errors import STOPPED
from mpidml.learn.checkpoint import ModelFile

pytestmark = pytest.mark.timeout(240)
NET = ["--data", DIGITS, "--model", "mlp", "--hidden", "16", "--no-overlap"]
LRS = "0.0003 0.001 0.003 0.01 0.03 0.1 0.3 0.6 1.0"


def test_halving_keeps_the_best_third_at_each_rung_and_the_winner_is_the_model_trained_alone(tmp_path):
    doc = train(2, tmp_path, *NET, "--epochs", "9", "--sweep", f"lr={LRS}", "--search", "halving",
                "--save-dir", tmp_path / "models", "--results", tmp_path / "r.csv")
    halving = doc["halving"]
    assert halving["rungs"] == [1, 3, 9]
    first, second = halving["decisions"]
    assert (first["epoch"], len(first["kept"]), len(first["stopped"])) == (1, 3, 6)
    assert (second["epoch"], len(second["kept"]), len(second["stopped"])) == (3, 1, 2)
    sweep = doc["sweep"]
    for decision in halving["decisions"]:
        # the kept ones had the lowest validation loss at the rung's end (--select val_loss)
        at = {i: sweep[i]["history"][decision["epoch"] - 1]["val_loss"] for i in decision["kept"] + decision["stopped"]}
        assert max(at[i] for i in decision["kept"]) <= min(at[i] for i in decision["stopped"])
        for i in decision["stopped"]:
            assert sweep[i]["halved"] == sweep[i]["epochs"] == decision["epoch"]
            assert ModelFile.load(tmp_path / "models" / f"model-{i:03d}.h5").epoch == decision["epoch"]
    with open(tmp_path / "r.csv") as f:         # the CSV says where halving stopped each model
        rows = list(csv.DictReader(f))
    assert {int(r["model"]): r["halved"] for r in rows} == {i: str(e["halved"] or "") for i, e in enumerate(sweep)}
    winner = second["kept"][0]
    assert doc["best"] == winner and sweep[winner]["epochs"] == 9 and sweep[winner]["rung"] == 2
    # resting between rungs changes nothing: the winner is the model trained straight through
    alone = tmp_path / "alone.h5"
    mpiexec(2, ["--quiet", *NET, "--epochs", "9", "--lr", str(sweep[winner]["overrides"]["lr"]),
                "--validation-fraction", "0.1", "--save", alone], check=0, timeout=90)
    a = ModelFile.load(tmp_path / "models" / f"model-{winner:03d}.h5").optimizer_state
    assert np.array_equal(a, ModelFile.load(alone).optimizer_state)


def test_a_stopped_halving_search_resumes_to_the_same_models(tmp_path):
    """SIGTERM in the middle of a search, then --resume DIR: the same rungs, verdicts and
    models as a search never interrupted."""
    data = tmp_path / "d.h5"
    synth(str(data), 40000, 16, 4, seed=2)
    search = ["--data", data, "--model", "mlp", "--hidden", "16", "--no-overlap", "--epochs", "6",
              "--sweep", "lr=0.003 0.01 0.03 0.1", "--search", "halving", "--halving-factor", "2"]
    stopped = tmp_path / "stopped"
    job = Job([MPIEXEC, "-n", "2", sys.executable, "-m", "mpidml", *search, "--save-dir", stopped,
               "--checkpoint-every", "1"], f"halving-stop-{os.getpid()}", 2)
    try:
        job.wait_epochs(2)
        job.proc.send_signal(signal.SIGTERM)
        _, err = job.proc.communicate(timeout=60)
    finally:
        job.close()
    assert job.proc.returncode == STOPPED, err
    mpiexec(2, ["--quiet", *search, "--save-dir", stopped, "--resume", stopped], check=0, timeout=150)
    whole = tmp_path / "whole"
    doc = train(2, tmp_path, *search, "--save-dir", whole, timeout=150)
    assert [len(d["kept"]) for d in doc["halving"]["decisions"]] == [2, 1, 1]     # rungs end at 1, 2, 4, 6
    for i in range(4):
        a = ModelFile.load(stopped / f"model-{i:03d}.h5")
        b = ModelFile.load(whole / f"model-{i:03d}.h5")
        assert (a.epoch, a.halving) == (b.epoch, b.halving), i
        assert np.array_equal(a.optimizer_state, b.optimizer_state), i


def test_select_ranks_and_early_stopping_keeps_the_best_by_it(tmp_path):
    doc = train(2, tmp_path, *NET, "--epochs", "6", "--sweep", "lr=0.03 0.3 1.0", "--select", "val_accuracy",
                "--early-stopping", "2")
    for entry in doc["sweep"]:
        accuracies = [h["val_accuracy"] for h in entry["history"]]
        # the kept weights are those of the best validation accuracy (the first of equals)
        assert entry["validation"]["accuracy"] == max(accuracies)
    best = max(range(3), key=lambda i: (doc["sweep"][i]["validation"]["accuracy"], -i))
    assert doc["best"] == best


@pytest.mark.parametrize("args, needle", [
    (["--search", "halving"], "--search halving needs a sweep"),
    (["--sweep", "lr=0.1 0.2", "--search", "halving", "--validation-fraction", "0"], "ranks models on validation"),
    (["--sweep", "lr=0.1 0.2", "--search", "halving", "--halving-factor", "1"], "must be at least 2"),
    (["--rung-epochs", "2"], "--rung-epochs applies to --search halving"),
    (["--select", "val_r2"], "--select val_r2 does not score classification"),
])
def test_bad_search_options_are_one_line(args, needle):
    refused(1, ["--data", DIGITS, "--epochs", "1", *args], needle)


def test_bad_select_at_3_ranks_is_one_line(tmp_path):
    data = tmp_path / "r.h5"
    synth(str(data), 3000, 8, 0, seed=1)
    refused(3, ["--data", data, "--epochs", "1", "--select", "val_accuracy"],
            "--select val_accuracy does not score regression")


def test_a_diverging_model_leaves_the_sweep_and_the_others_go_on(tmp_path):
    """A search over decades of learning rates meets some that diverge: that model stops
    (one warning, ranked last), the others train on; only a sweep where all diverge fails."""
    args = [*NET, "--epochs", "2", "--no-standardize"]
    proc = mpiexec(2, [*args, "--sweep", "lr=0.05 5000", "--metrics-json", tmp_path / "m.json"], check=0)
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["sweep"][0]["diverged"] is None and doc["sweep"][1]["diverged"] in (1, 2) and doc["best"] == 0
    assert len(doc["sweep"][0]["history"]) == 2
    warned = [ln for ln in proc.stderr.splitlines() if "the sweep goes on without it" in ln]
    assert len(warned) == 1 and "sweep model 1: lr=5000" in warned[0], proc.stderr
    refused(2, [*args, "--sweep", "lr=5000 9000"], "diverged in every model of the sweep", code=3)
