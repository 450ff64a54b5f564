"""Sampled sweep axes (issue 23): `--sweep "lr=loguniform(1e-4,1e-1)"`, uniform, int, choice
beside grid axes, `--trials N` points from `--sweep-seed S`, the same at every rank count."""
import json
import math

import numpy as np
import pytest
from conftest import mpiexec, refused, train

from mpidml.cli.datatools import synth
from mpidml.cli.main import parse
from mpidml.learn.checkpoint import ModelFile
from mpidml.training import sweep
from mpidml.training.options import make_config

pytestmark = pytest.mark.timeout(180)
SAMPLED = ["--sweep", "lr=loguniform(1e-3,1e-1)", "--sweep", "batch-size=32 64", "--sweep", "l2=uniform(0,0.01)"]


def config(*args, environ=None):
    return make_config(parse(list(args)), environ=environ or {})


@pytest.fixture
def tiny(tmp_path):
    """A small 3-class file: a sweep of softmax models on it takes a second."""
    path = tmp_path / "tiny.h5"
    synth(str(path), 600, 4, 3, seed=1)
    return ["--data", path, "--model", "softmax"]


@pytest.mark.parametrize("args, axes", [
    (["--sweep", "lr=loguniform(1e-4, 1e-1)"], (("lr", "loguniform(0.0001, 0.1)"),)),
    (["--sweep", "momentum=uniform(0.5,0.99)"], (("momentum", "uniform(0.5, 0.99)"),)),
    (["--sweep", "batch-size=int(16,256)", "--sweep", "lr=0.1 0.01"],
     (("batch_size", "int(16, 256)"), ("lr", (0.1, 0.01)))),
    (["--sweep", "seed=int(3,3)"], (("seed", "int(3, 3)"),)),
    (["--model", "mlp", "--sweep", "hidden=choice(64 | 128,64)"], (("hidden", "choice(64 | 128,64)"),)),
    (["--model", "mlp", "--sweep", "hidden=choice(none 8)"], (("hidden", "choice(none | 8)"),)),
    (["--sweep", "optimizer=choice(sgd adam)"], (("optimizer", "choice(sgd | adam)"),)),
])
def test_sampled_axes_parse_to_their_text(args, axes):
    cfg = config(*args)
    assert cfg.sweep == axes and cfg.trials == sweep.DEFAULT_TRIALS
    assert json.loads(json.dumps(cfg.as_dict()))["sweep"] == json.loads(json.dumps(axes))
    # the text parses back to the same axis (what a model file's config records)
    again = [a for k, v in cfg.sweep for a in ("--sweep", f"{k}={sweep.axis_text(v)}")]
    assert config(*args[:2 if args[0] == "--model" else 0], *again).sweep == axes


@pytest.mark.parametrize("args, needle", [
    (["--sweep", "lr=uniform(-1,1)"], "must be a finite number >= 0, got -1"),
    (["--sweep", "lr=loguniform(0,0.1)"], "loguniform(A,B) needs 0 < A < B"),
    (["--sweep", "lr=uniform(0.2,0.1)"], "uniform(A,B) needs A < B"),
    (["--sweep", "batch-size=int(8,4)"], "int(A,B) needs whole numbers A <= B"),
    (["--sweep", "batch-size=int(1.5,4)"], "expects a whole number, got '1.5'"),
    (["--sweep", "lr=normal(0,1)"], "unknown distribution 'normal'"),
    (["--sweep", "lr=uniform(0.1)"], "uniform(A,B) takes two numbers"),
    (["--sweep", "lr=uniform(0.1,0.2,0.3)"], "uniform(A,B) takes two numbers"),
    (["--sweep", "lr=uniform(0.1,,0.2)"], "has an empty argument"),
    (["--sweep", "lr=uniform(fast,0.2)"], "expects a number, got 'fast'"),
    (["--sweep", "lr=int(1,3)"], "lr takes uniform, loguniform, choice"),
    (["--sweep", "optimizer=uniform(1,2)"], "optimizer takes choice"),
    (["--sweep", "optimizer=choice(sgd,adam)"], "separated by spaces or |, not commas: choice(sgd adam)"),
    (["--model", "mlp", "--sweep", "hidden=choice(64,128)"], "takes two values or more"),
    (["--sweep", "lr=choice(0.1 0.1)"], "a value appears twice"),
    (["--sweep", "lr=0.1 uniform(0.1,0.2)"], "a sampled axis is one distribution"),
    (["--sweep", "lr=uniform(0.1,0.2"], "a sampled axis is one distribution"),
    (["--trials", "4"], "--trials applies to a sweep with a sampled axis"),
    (["--sweep", "lr=0.1 0.01", "--trials", "4"], "--trials applies to a sweep with a sampled axis"),
    (["--sweep", "seed=int(0,9)", "--trials", "200000"], "makes 200000 models, more than 100000"),
    (["--lr", "0.5", "--sweep", "lr=uniform(0.1,0.2)"], "--lr 0.5 contradicts --sweep lr=uniform(0.1, 0.2)"),
])
def test_bad_sampled_axes_are_one_line_exit_2(args, needle):
    refused(1, args, needle)


@pytest.mark.parametrize("args, needle", [
    (["--sweep", "lr=loguniform(-1,1)"], "must be a finite number >= 0"),
    (["--sweep", "sync-every=choice(4 x)"], "expects a whole number"),
    (["--trials", "3"], "--trials applies"),
])
def test_bad_sampled_axes_at_3_ranks_are_one_line(args, needle):
    refused(3, args, needle)


def test_a_sampled_sweep_has_the_same_points_at_1_and_3_ranks(tmp_path, tiny):
    """Trial after trial, each crossed with the grid; every rank draws alike, no rank tells
    another, and the points depend on the seed alone, not on the rank count."""
    args = [*tiny, "--epochs", "1", *SAMPLED, "--trials", "3", "--sweep-seed", "11"]
    one, three = (train(n, tmp_path, *args, name=f"m{n}.json") for n in (1, 3))
    points = [e["overrides"] for e in one["sweep"]]
    assert points == [e["overrides"] for e in three["sweep"]]
    assert len(points) == 6 and [p["batch_size"] for p in points] == [32, 64] * 3
    assert all(list(p) == ["lr", "batch_size", "l2"] for p in points)
    trials = [(p["lr"], p["l2"]) for p in points[::2]]
    assert trials == [(p["lr"], p["l2"]) for p in points[1::2]] and len(set(trials)) == 3
    assert all(1e-3 <= lr <= 0.1 and 0 <= l2 < 0.01 for lr, l2 in trials)
    assert points == json.loads(json.dumps(sweep.points(config(*map(str, args)))))
    assert one["search"] == three["search"] == {
        "kind": "grid", "models": 6, "trials": 3, "sweep_seed": 11,
        "axes": {"lr": "loguniform(0.001, 0.1)", "batch_size": [32, 64], "l2": "uniform(0.0, 0.01)"}}
    assert one["config"]["trials"] == 3 and one["config"]["sweep"][0] == ["lr", "loguniform(0.001, 0.1)"]


def test_other_seeds_draw_other_points_and_more_trials_keep_the_first():
    def points(*extra):
        return sweep.points(config(*SAMPLED, *extra))
    assert points("--sweep-seed", "1") != points("--sweep-seed", "2")
    assert points("--sweep-seed", "1") == points("--sweep-seed", "1")
    assert len(points()) == 2 * sweep.DEFAULT_TRIALS
    assert points("--trials", "12")[:10] == points("--trials", "5")


def test_loguniform_spreads_over_its_decades():
    """200 draws of loguniform(1e-4,1e-1): all within the bounds, about a third in each
    decade (binomial, sd 6.7 around 66.7), not crowded into the top one as uniform's are
    (a tenth below 1e-2, sd 4.2 around 20)."""
    lrs = [p["lr"] for p in sweep.points(config("--sweep", "lr=loguniform(1e-4,1e-1)", "--trials", "200"))]
    assert 1e-4 <= min(lrs) and max(lrs) <= 0.1 and len(set(lrs)) == 200
    decades = np.histogram(np.log10(lrs), bins=[-4, -3, -2, -1])[0]
    assert all(45 <= d <= 90 for d in decades), decades
    uniform = [p["lr"] for p in sweep.points(config("--sweep", "lr=uniform(1e-4,1e-1)", "--trials", "200"))]
    assert sum(u < 1e-2 for u in uniform) < 40 < 100 < sum(decades[:2])


def test_int_includes_both_ends_and_choice_gives_every_value():
    cfg = config("--model", "mlp", "--sweep", "batch-size=int(1,3)", "--sweep", "hidden=choice(8 | 16,8)",
                 "--trials", "60")
    drawn = sweep.points(cfg)
    assert {p["batch_size"] for p in drawn} == {1, 2, 3}
    assert {p["hidden"] for p in drawn} == {(8,), (16, 8)}
    assert all(type(p["batch_size"]) is int for p in drawn)


def test_a_config_file_and_the_environment_take_sampled_axes(tmp_path, tiny):
    toml = tmp_path / "search.toml"
    toml.write_text('trials = 2\nsweep_seed = 5\n[sweep]\nlr = "loguniform(1e-3, 1e-1)"\nl2 = [0, 0.001]\n')
    cfg = config("--config", str(toml), environ={"MPIDML_SWEEP": "seed=int(0,100)"})
    assert cfg.sweep == (("lr", "loguniform(0.001, 0.1)"), ("l2", (0.0, 0.001)), ("seed", "int(0, 100)"))
    doc = train(1, tmp_path, *tiny, "--epochs", "1", "--config", toml)
    assert [e["overrides"]["l2"] for e in doc["sweep"]] == [0.0, 0.001] * 2
    assert doc["search"]["axes"] == {"lr": "loguniform(0.001, 0.1)", "l2": [0.0, 0.001]}
    assert doc["search"]["trials"] == 2 and doc["search"]["sweep_seed"] == 5
    toml.write_text('[sweep]\nlr = "0.1 0.01"\n')
    refused(1, ["--config", toml], "a sampled axis is one distribution")


def test_a_sampled_sweep_saves_and_resumes_to_the_same_models(tmp_path, tiny):
    """--save-dir of a sampled sweep, then the same command with --resume DIR: the points
    come again from the seed, and each file ends bit-identical to a sweep never stopped."""
    search = [*tiny, *SAMPLED, "--trials", "2"]
    args = ["--quiet", *search, "--sweep-seed", "4"]
    part, whole = tmp_path / "part", tmp_path / "whole"
    mpiexec(2, [*args, "--epochs", "1", "--save-dir", part], check=0)
    mpiexec(2, [*args, "--epochs", "2", "--save-dir", part, "--resume", part], check=0)
    mpiexec(2, [*args, "--epochs", "2", "--save-dir", whole], check=0)
    expected = sweep.points(config(*map(str, args)))
    for i, point in enumerate(expected):
        a, b = (ModelFile.load(d / f"model-{i:03d}.h5") for d in (part, whole))
        assert a.epoch == b.epoch == 2 and np.array_equal(a.optimizer_state, b.optimizer_state), i
        assert {k: a.attrs["config"][k] for k in point} == point
        assert a.attrs["config"]["sweep"][0] == ["lr", "loguniform(0.001, 0.1)"]
    proc = mpiexec(2, [*search, "--sweep-seed", "5", "--epochs", "3", "--resume", part], check=2)
    assert "model-000.h5 was trained with lr" in proc.stderr and proc.stderr.count("mpidml: error:") == 1


def test_sampled_values_are_plain_python_numbers():
    """Overrides go into the model files' JSON and dataclasses.replace as the grid's do."""
    point, = sweep.points(config("--sweep", "lr=uniform(0,1)", "--sweep", "seed=int(0,9)", "--trials", "1"))
    assert type(point["lr"]) is float and type(point["seed"]) is int and math.isfinite(point["lr"])


def test_a_grid_sweep_records_its_search_without_trials():
    cfg = config("--model", "mlp", "--sweep", "lr=0.1 0.01", "--sweep", "hidden=8 16,8")
    assert cfg.trials == 0 and len(sweep.points(cfg)) == 4
    assert sweep.document(cfg) == {"kind": "grid", "models": 4, "trials": None, "sweep_seed": None,
                                   "axes": {"lr": [0.1, 0.01], "hidden": [[8], [16, 8]]}}
