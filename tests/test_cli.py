"""Command line, configuration precedence, subcommands, thread pinning."""
import json
import os

import h5py
import numpy as np
import pytest
from conftest import DIGITS, mpiexec, train

from mpidml.cli import datatools
from mpidml.cli.main import parse
from mpidml.errors import UsageError
from mpidml.runtime.threads import pin_blas_threads
from mpidml.training.options import make_config

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


def test_predict_writes_csv_for_a_csv_out(tmp_path):
    """--out p.csv was an HDF5 file named .csv: now a header and a row per sample, the rows
    the HDF5 output holds (class names, float32 probabilities); other extensions are refused."""
    import csv

    from conftest import refused, write_h5
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    names = np.array([b"cat", b"dog, big", b"eel"])
    path = write_h5(tmp_path / "d.h5", X=rng.standard_normal((300, 4)) + np.eye(3, 4)[y], y=names[y])
    train(1, tmp_path, "--data", path, "--epochs", "2", "--save", tmp_path / "m.h5")
    for out in ("p.csv", "p.h5"):
        mpiexec(3, ["predict", "--model", tmp_path / "m.h5", "--data", path, "--out", tmp_path / out], check=0)
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["label", "proba_cat", "proba_dog, big", "proba_eel"] and len(rows) == 301
    with h5py.File(tmp_path / "p.h5") as f:
        assert [r[0].encode() for r in rows[1:]] == list(f["labels"][:])
        assert np.array_equal(np.array([r[1:] for r in rows[1:]], np.float32), f["proba"][:])
    for out in ("p.txt", "p"):
        refused(1, ["predict", "--model", tmp_path / "m.h5", "--data", path, "--out", tmp_path / out],
                "predictions are written as HDF5 (.h5, .hdf5) or CSV (.csv)")
    assert not (tmp_path / "p.txt").exists()


def test_evaluate_warns_when_it_scores_the_training_data(tmp_path):
    """A converted file has no /test: evaluate scored all its rows, training rows included,
    without a word. The model file's data identity tells when the rows are its training
    datasets; held-out /test rows get no warning."""
    from conftest import write_h5
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 4)), rng.integers(0, 2, 200)
    flat = write_h5(tmp_path / "flat.h5", X=X, y=y)
    split = write_h5(tmp_path / "split.h5", train__X=X[:150], train__y=y[:150], test__X=X[150:], test__y=y[150:])
    warning = "include its training rows"
    for path, extra, warned in ((flat, [], True), (split, [], False),
                                (split, ["--x-dataset", "/train/X", "--y-dataset", "/train/y"], True)):
        model = tmp_path / f"{path.stem}.model.h5"
        if not model.exists():
            train(1, tmp_path, "--data", path, "--epochs", "1", "--save", model)
        proc = mpiexec(1, ["evaluate", "--model", model, "--data", path, *extra], check=0)
        assert (warning in proc.stderr) == warned, proc.stderr
    proc = mpiexec(1, ["evaluate", "--model", tmp_path / "split.model.h5", "--data", flat], check=0)
    assert warning not in proc.stderr                   # other datasets (the same rows, more of them)


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


def _one_error_line(proc):
    """The one error line on stderr, beside any warnings (3 ranks on this 2-core VM warn)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("mpidml: warning:")]
    assert len(lines) == 1 and lines[0].startswith("mpidml: error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("second, needle", [(["--lr", "0.2"], "'--lr 0.2'"), (["info"], "'info'")])
def test_ranks_that_run_different_commands_exit_2_instead_of_hanging(second, needle):
    """An MPMD launch (`mpiexec -n 2 A : -n 1 B`) used to hang past --stall-timeout."""
    import subprocess
    import sys

    from conftest import MPIEXEC, ROOT
    py = [sys.executable, "-m", "mpidml"]
    proc = subprocess.run([MPIEXEC, "-n", "2", *py, "--lr", "0.1", ":", "-n", "1", *py, *second],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "rank 2" in line and needle in line


def test_an_environment_that_differs_per_rank_is_named():
    import subprocess
    import sys

    from conftest import MPIEXEC, ROOT
    py = [sys.executable, "-m", "mpidml", "--quiet"]
    proc = subprocess.run([MPIEXEC, "-n", "1", "-env", "MPIDML_EPOCHS", "3", *py, ":", "-n", "2", *py],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "MPIDML_EPOCHS is '3' on rank 0, '(unset)' on rank 1" in _one_error_line(proc)


@pytest.mark.parametrize("args, needle", [(["--seed", "-1"], "--seed"),
                                          (["--partition-seed", "-5"], "--partition-seed"),
                                          (["--model", "mlp", "--hidden", "10000000000"], "out of memory")])
def test_bad_sizes_and_seeds_are_one_line_at_3_ranks(args, needle):
    proc = mpiexec(3, args, check=2)
    assert needle in _one_error_line(proc)


def test_a_batch_larger_than_the_data_allocates_only_the_partition(tmp_path):
    doc = train(3, tmp_path, "--batch-size", str(10 ** 12), "--epochs", "2")
    assert doc["config"]["batch_size"] == 10 ** 12 and len(doc["history"]) == 2


@pytest.mark.parametrize("text, needle", [("data = 5", "expects a string"), ("model = ['mlp']", "expects a string"),
                                          ("hidden = [1, 'a']", "--hidden"), ("quiet = 3", "true or false")])
def test_config_values_of_the_wrong_type(tmp_path, text, needle):
    toml = tmp_path / "bad.toml"
    toml.write_text(text + "\n")
    with pytest.raises(UsageError, match=needle):
        make_config(parse(["--config", str(toml)]), environ={})


@pytest.mark.parametrize("bar", [[], ["--progress-bar"]])
def test_a_closed_stdout_pipe_ends_the_output_not_the_run(tmp_path, bar):
    """`mpidml ... | head -1`: one process, its stdout a pipe whose reader has gone (the bar
    used to end rank 0 with BrokenPipeError, leaving its peers waiting)."""
    import subprocess
    import sys

    from conftest import ROOT
    out = tmp_path / "m.json"
    head = subprocess.Popen([sys.executable, "-m", "mpidml", "--epochs", "4", "--metrics-json", out, *bar],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    head.stdout.close()                          # the reader is gone before the first line
    _, err = head.communicate(timeout=60)
    assert head.returncode == 0 and b"Traceback" not in err and b"Logging error" not in err, err
    assert json.loads(out.read_text())["status"] == "complete"


def test_a_closed_stdout_drops_the_output(tmp_path):
    """`mpidml ... >&-`: Python starts without stdout; every command that prints ended with an
    internal error (and a file opened later took descriptor 1). Each runs, its output dropped.
    (Under mpiexec, MPICH's launcher itself fails on a closed stdout: one process here.)"""
    import os
    import subprocess
    import sys

    from conftest import ROOT, quiet_lines
    m, d = tmp_path / "m.h5", tmp_path / "d.h5"
    for args in (["data", "synth", "--samples", "200", "--features", "4", "--out", d], ["data", "inspect", d],
                 ["--data", d, "--epochs", "2", "--save", m], ["--data", d, "--epochs", "1", "--progress-bar"],
                 ["evaluate", "--model", m, "--data", d], ["predict", "--model", m, "--data", d, "--out",
                                                           tmp_path / "p.h5"], ["info"]):
        proc = subprocess.run([sys.executable, "-m", "mpidml", *map(str, args)], stderr=subprocess.PIPE, text=True,
                              cwd=ROOT, timeout=60, preexec_fn=lambda: os.close(1))
        assert proc.returncode == 0 and not quiet_lines(proc.stderr), (args, proc.stderr)
    with h5py.File(tmp_path / "p.h5") as f:
        assert f["labels"].shape == (200,)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_stdout_on_a_full_disk_is_one_line(tmp_path):
    """`mpidml ... > run.log` on a full disk: training printed logging's traceback for every
    line, --progress-bar, info and data inspect ended in an internal error (exit 1). A run
    now warns once and goes on, its output dropped; a command whose product is its output
    says stdout cannot take it (exit 2)."""
    import subprocess
    import sys

    from conftest import ROOT
    out = tmp_path / "m.json"

    def run(*args):
        with open("/dev/full", "w") as full:
            return subprocess.run([sys.executable, "-m", "mpidml", *map(str, args)], stdout=full,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60)
    for bar in ([], ["--progress-bar"]):
        proc = run("--epochs", "2", "--metrics-json", out, *bar)
        assert proc.returncode == 0 and proc.stderr == ("mpidml: warning: stdout: cannot write (No space left on "
                                                        "device); the rest of the output is dropped\n"), proc.stderr
        assert json.loads(out.read_text())["status"] == "complete"
    for args in (["info"], ["data", "inspect", out.with_name("d.h5")]):
        if args[0] == "data":
            datatools.synth(str(args[-1]), 50, 2, 2)
        proc = run(*args)
        assert (proc.returncode, proc.stderr) == (2, "mpidml: error: stdout: cannot write (No space left on device)\n")


def test_data_that_convert_reads_is_pointed_at_it(tmp_path):
    """--data x.csv (train, evaluate, predict all open it with open_h5) names the command that
    makes it HDF5; a file of no format convert reads gets the plain line."""
    from conftest import refused

    from mpidml.data.h5 import open_h5
    for name in ("x.csv", "x.parquet", "x.NPY"):
        (tmp_path / name).write_text("a,b\n1,2\n")
        with pytest.raises(UsageError, match=f"not an HDF5 file; convert it first: mpidml data convert "
                                             f"{tmp_path / name} {tmp_path / 'x'}.h5$"):
            open_h5(str(tmp_path / name))
    (tmp_path / "x.py").write_text("")
    with pytest.raises(UsageError, match="not an HDF5 file$"):
        open_h5(str(tmp_path / "x.py"))
    refused(1, ["--data", tmp_path / "x.csv"], "convert it first")


def test_help_of_every_subcommand_shows_defaults(capsys):
    for argv in (["data", "synth", "--help"], ["train", "--help"]):
        with pytest.raises(SystemExit):
            parse(argv)
    text = capsys.readouterr().out
    assert "rows of /train (default 10000)" in text and "(default 64)" in text


@pytest.mark.parametrize("doc, needle", [("[]", "not an object"), ('{"history": 3}', "no history"),
                                         ('{"history": [{"epoch": "1"}]}', "entry 0"), ("{", "not JSON"),
                                         ('{"history": [], "timing": {"per_rank": {"compute_s": [1]}}}',
                                          "per_rank")])
def test_plot_names_what_is_wrong_with_a_metrics_file(tmp_path, doc, needle):
    from mpidml.cli.plot import load
    path = tmp_path / "m.json"
    path.write_text(doc)
    with pytest.raises(UsageError, match=needle):
        load(path)


def test_plot_refuses_an_unknown_image_type(tmp_path):
    pytest.importorskip("matplotlib")
    from mpidml.cli.plot import plot
    path = tmp_path / "m.json"
    path.write_text('{"history": [{"epoch": 1, "train_loss": 0.5}]}')
    with pytest.raises(UsageError, match="unknown image type .xyz"):
        plot(path, tmp_path / "out.xyz")
    plot(path, tmp_path / "out.png")
    assert (tmp_path / "out.png").stat().st_size > 0


@pytest.mark.parametrize("args", [["--warmup-epochs", "1e308"], ["--chunk-mb", "1e300"], ["--gamma", "1e300"],
                                  ["--stall-timeout", "1e20"]])
def test_float_options_beyond_their_range_are_refused(args, tmp_path):
    """Every float option feeds arithmetic (epochs x steps, megabytes x 2**20) that a value
    near float's range overflows: refused as the option, from a TOML file and the
    environment alike."""
    with pytest.raises(UsageError, match=args[0]):
        parse(args)
    key = args[0][2:].replace("-", "_")
    toml = tmp_path / "run.toml"
    toml.write_text(f"{key} = {args[1]}\n")
    with pytest.raises(UsageError, match=f"{key}: must be"):
        make_config(parse(["--config", str(toml)]), environ={})
    with pytest.raises(UsageError, match=f"MPIDML_{key.upper()}: must be"):
        make_config(parse([]), environ={f"MPIDML_{key.upper()}": args[1]})


def test_an_overflowing_warmup_is_one_line_exit_2():
    proc = mpiexec(1, ["--epochs", "1", "--warmup-epochs", "1e308"], check=2)
    assert _one_error_line(proc) == "mpidml: error: argument --warmup-epochs: must be at most 1e+09, got 1e308"


@pytest.mark.parametrize("argv,hint", [
    (["-n", "2", "--epochs", "3"], "-n is an mpiexec option: mpiexec -n 2 python -m mpidml --epochs 3"),
    (["train", "-np", "4"], "-np is an mpiexec option: mpiexec -np 4 python -m mpidml train"),
    (["--hiden", "64"], "unrecognized arguments: --hiden 64; did you mean --hidden?"),
    (["data", "synth", "--sampels", "9", "--out", "x.h5"], "did you mean --samples?"),
])
def test_a_forgotten_mpiexec_and_a_mistyped_option_get_a_hint(argv, hint):
    with pytest.raises(UsageError) as raised:
        parse(argv)
    assert hint in str(raised.value)


def test_the_hints_are_one_line_exit_2():
    proc = mpiexec(1, ["-n", "2", "--epochs", "1"], check=2)
    assert _one_error_line(proc) == "mpidml: error: -n is an mpiexec option: mpiexec -n 2 python -m mpidml --epochs 1"


@pytest.mark.parametrize("argv,environ,toml,needle", [
    (["--lr", "0.5", "--sweep", "lr=0.1 0.2"], {}, None, "--lr 0.5 contradicts --sweep lr=0.1 0.2"),
    ([], {"MPIDML_SWEEP": "lr=0.1 0.2", "MPIDML_LR": "0.5"}, None, "MPIDML_LR=0.5 contradicts MPIDML_SWEEP lr="),
    (["--lr", "0.5"], {}, "[sweep]\nlr = [0.1, 0.2]\n", "--lr 0.5 contradicts --config"),
])
def test_a_single_value_beside_a_sweep_of_the_same_option_is_refused(tmp_path, argv, environ, toml, needle):
    """The sweep's values would replace the single one without a word."""
    if toml:
        (tmp_path / "run.toml").write_text(toml)
        argv = [*argv, "--config", str(tmp_path / "run.toml")]
    with pytest.raises(UsageError, match=needle):
        make_config(parse(argv), environ=environ)


def test_a_lower_precedence_value_is_overridden_by_a_sweep_and_mpidml_sweep_works(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("lr = 0.5\n")
    cfg = make_config(parse(["--config", str(toml), "--sweep", "lr=0.1 0.2"]), environ={})
    assert cfg.sweep == (("lr", (0.1, 0.2)),)
    cfg = make_config(parse([]), environ={"MPIDML_SWEEP": "lr=0.1 0.2; l2=0 1e-3"})
    assert cfg.sweep == (("lr", (0.1, 0.2)), ("l2", (0.0, 1e-3)))
    cfg = make_config(parse(["--sweep", "seed=1 2"]), environ={"MPIDML_SWEEP": "lr=0.1 0.2"})
    assert cfg.sweep == (("lr", (0.1, 0.2)), ("seed", (1, 2)))      # levels combine axis by axis
    with pytest.raises(UsageError, match="MPIDML_SWEEP 'colour=1 2': cannot sweep"):
        make_config(parse([]), environ={"MPIDML_SWEEP": "colour=1 2"})


def test_a_bad_mpidml_threads_is_one_line_exit_2():
    proc = mpiexec(1, ["info"], env={"MPIDML_THREADS": "abc"}, check=2)
    assert _one_error_line(proc) == "mpidml: error: MPIDML_THREADS: expects a whole number, got 'abc'"


def test_quiet_prints_nothing_but_warnings_and_errors():
    """--quiet printed the `test:` line all the same."""
    proc = mpiexec(2, ["--quiet", "--epochs", "2"], timeout=60, check=0)
    assert proc.stdout == "", proc.stdout


def test_many_fast_epochs_print_a_few_lines_and_verbose_prints_all(tmp_path):
    """Tiny data made a line per epoch, 75 in a few seconds; beyond 10 epochs the lines come
    at most one a second (the first and the last always); --verbose prints every one, and
    the metrics file keeps every epoch either way."""
    out = tmp_path / "m.json"
    args = ["--epochs", "40", "--batch-size", "256", "--metrics-json", out]
    lines = [ln for ln in mpiexec(2, args, timeout=60, check=0).stdout.splitlines() if ln.startswith("epoch")]
    assert lines[0].startswith("epoch   1/40") and lines[-1].startswith("epoch  40/40") and len(lines) < 20, lines
    assert len(json.loads(out.read_text())["history"]) == 40
    proc = mpiexec(2, [*args, "--verbose"], timeout=60, check=0)
    assert len([ln for ln in proc.stdout.splitlines() if ln.startswith("epoch")]) == 40


def test_a_run_that_stops_early_prints_its_last_epoch(tmp_path, blobs):
    """Beyond 10 epochs "the last" line was the one of the last epoch asked for, which a run
    that stops early (early stopping, a stop signal) never reaches: it ended on epoch 1."""
    out = tmp_path / "m.json"
    proc = mpiexec(2, ["--data", blobs, "--epochs", "40", "--lr", "3", "--validation-fraction", "0.2",
                       "--early-stopping", "3", "--metrics-json", out], timeout=60, check=0)
    trained = len(json.loads(out.read_text())["history"])
    epochs = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch")]
    assert trained < 40 and epochs[-1].startswith(f"epoch {trained:>3}/40"), proc.stdout


def test_the_bars_loss_starts_afresh_each_epoch(monkeypatch, blobs):
    """The bar's running loss (Model.running) showed the last epoch's whole loss until the
    next epoch's first step: the loss seen as each epoch's first step begins is none yet."""
    import mpidml
    from mpidml.learn import trainer
    seen, init = [], trainer.Model.__init__

    def probed(model, *args, **kwargs):
        init(model, *args, **kwargs)
        loss_grad = model.net.loss_grad

        def probe(*a):
            if model.step_index == 0:
                seen.append(model.running)
            return loss_grad(*a)
        model.net.loss_grad = probe
    monkeypatch.setattr(trainer.Model, "__init__", probed)
    mpidml.train(data=str(blobs), epochs=3, quiet=True)
    assert seen == [(0.0, 0)] * 3


def test_the_bar_shows_rate_time_left_and_loss():
    from mpidml.files.progress import epoch_bar
    line = epoch_bar(3, 0.5, 2.0, 10000, 0.25)
    assert "epoch 3 [" in line and "50%" in line and "2.5k samples/s" in line and "2 s left" in line
    assert "loss 0.2500" in line


def test_sweeps_from_several_levels_combine_axis_by_axis(tmp_path):
    """A command-line --sweep beside a config file's [sweep] table replaced the table whole,
    dropping its axes without a word; now each axis is kept, the higher level's winning."""
    from mpidml.cli.main import parse
    from mpidml.training.options import make_config
    config = tmp_path / "run.toml"
    config.write_text("[sweep]\nl2 = [0.0, 0.001]\nlr = [0.5]\n")
    cfg = make_config(parse(["train", "--config", str(config), "--sweep", "lr=0.1 0.01"]), environ={})
    assert dict(cfg.sweep) == {"l2": (0.0, 0.001), "lr": (0.1, 0.01)}
