"""The leaderboard: ranking by the selection metric, the printout, --results CSV, the
`results` subcommand and the score-by-option plot, all from the metrics document."""
import csv
import filecmp
import json
import re
import shutil

import pytest
from conftest import DIGITS, lines, mpiexec, quiet_lines, refused

from mpidml.cli.plot import load
from mpidml.learn import leaderboard
from mpidml.learn.leaderboard import Leaderboard
from mpidml.training import sweep

pytestmark = pytest.mark.timeout(120)
SWEEP = ["--epochs", "3", "--sweep", "lr=0.01 0.1 0.5"]


def classification(loss, accuracy, f1=None):
    return {"loss": loss, "accuracy": accuracy, "macro_f1": accuracy if f1 is None else f1}


def document(validations, select="val_loss", train_losses=None, **fields):
    """A sweep's metrics document: one model per validation dict (None: none held out), lr 1, 2, 3 ..."""
    train_losses = train_losses or [1.0] * len(validations)
    models = [{"overrides": {"lr": float(i + 1), "hidden": [16 * (i + 1), 8]},
               "history": [{"epoch": e, "train_loss": t, "val_loss": 1.0, "val_accuracy": 0.5}
                           for e, t in ((1, 2.0), (2, loss))],
               "validation": v, "test": classification(0.5, 0.9), "early_stopped": None, **fields}
              for i, (v, loss) in enumerate(zip(validations, train_losses))]
    return {"config": {"select": select}, "history": models[0]["history"], "sweep": models, "best": 0,
            "data": {"classes": 3}}


def order(doc):
    return Leaderboard(doc).order


def test_every_selection_metric_has_its_direction():
    assert set(leaderboard.METRICS) == set(sweep.SELECTIONS)


@pytest.mark.parametrize("select, expected", [
    ("val_loss", [2, 0, 1]),            # lowest loss first, whatever the accuracy
    ("val_accuracy", [1, 0, 2]),        # highest accuracy first
    ("val_f1", [0, 2, 1]),              # highest macro F1 first
])
def test_models_are_ranked_by_the_selection_metric(select, expected):
    doc = document([classification(0.5, 0.8, f1=0.9), classification(0.6, 0.95, f1=0.5),
                    classification(0.1, 0.7, f1=0.6)], select)
    assert order(doc) == expected


def test_r2_ranks_regression_higher_first_and_its_columns_say_r2():
    regression = [{"loss": 1.0, "r2": 0.3, "rmse": 1.0, "mae": 1.0}, {"loss": 2.0, "r2": 0.9, "rmse": 1, "mae": 1}]
    doc = document(regression, "val_r2")
    doc["data"]["classes"] = 0
    board = Leaderboard(doc)
    assert board.order == [1, 0]
    assert "val_r2" in board.columns() and "val_f1" not in board.columns() and "test_r2" in board.columns()


def test_ties_go_to_the_lower_model_index():
    same = classification(0.3, 0.9)
    for select in ("val_loss", "val_accuracy"):
        assert order(document([classification(0.5, 0.5), same, same, same], select)) == [1, 2, 3, 0]


def test_without_validation_the_final_training_loss_ranks_and_untrained_models_come_last():
    doc = document([None, None, None, None], train_losses=[0.4, 0.2, 0.4, 0.1])
    doc["sweep"][3]["history"] = []         # never trained (a stopped sweep's model not started)
    board = Leaderboard(doc)
    assert board.order == [1, 0, 2, 3] and board.score_name() == "train_loss"
    assert "no validation rows" in board.lines()[0]


def test_models_with_validation_rank_above_those_without():
    doc = document([None, classification(2.0, 0.1), classification(1.0, 0.2)], train_losses=[0.01, 1, 1])
    assert order(doc) == [2, 1, 0]


def test_a_document_from_before_select_ranks_as_it_chose_by_accuracy_then_loss():
    doc = document([classification(0.3, 0.8), classification(0.5, 0.9), classification(0.4, 0.9)])
    del doc["config"]["select"]
    assert order(doc) == [2, 1, 0]


def test_the_printout_lists_the_top_ten_the_options_that_differ_and_names_the_winner():
    doc = document([classification(0.1 * (12 - i), 0.5) for i in range(12)])
    for entry in doc["sweep"]:
        entry["overrides"]["seed"] = 7              # swept with one value: tells no model apart
    out = Leaderboard(doc).lines()
    header, rows = out[1].split(), out[2:12]
    assert header == ["rank", "model", "lr", "hidden", "val_loss", "val_accuracy", "epochs", "test_accuracy"]
    assert [int(r.split()[1]) for r in rows] == list(range(11, 1, -1))
    assert rows[0].split()[-1] == "0.9000" and len(rows[1].split()) == len(header) - 1   # the winner's test alone
    assert out[12] == "... 2 more"
    assert out[13] == "best: model 11 (lr=12 hidden=192,8 seed=7): val_loss 0.1, test accuracy 0.9000"


def _csv_rows(path):
    """The CSV as pandas reads it (as csv reads it where pandas is not installed: the same
    header and cells, all text)."""
    try:
        import pandas
    except ImportError:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    return pandas.read_csv(path).to_dict("records")


def test_the_csv_reads_back_in_the_printout_order_with_every_column(tmp_path):
    doc = document([classification(0.3, 0.8), classification(0.2, 0.9), None], rung=1, halved=None)
    doc["sweep"][1]["early_stopped"] = 2
    doc["sweep"][0]["rung"] = 2
    board = Leaderboard(doc)
    board.write_csv(tmp_path / "r.csv")
    rows = _csv_rows(tmp_path / "r.csv")
    assert list(rows[0]) == ["rank", "model", "lr", "hidden", "epochs", "train_loss", "val_loss", "val_accuracy",
                             "val_f1", "test_loss", "test_accuracy", "early_stopped", "rung", "halved"]
    printed = [int(line.split()[1]) for line in board.lines()[2:5]]
    assert [int(r["model"]) for r in rows] == printed == [1, 0, 2]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3]
    assert str(rows[0]["hidden"]) == "32,8" and float(rows[0]["val_loss"]) == 0.2
    assert float(rows[0]["early_stopped"]) == 2 and str(rows[1]["early_stopped"]) in ("nan", "")
    assert int(rows[1]["rung"]) == 2 and str(rows[0]["halved"]) in ("nan", "")


@pytest.mark.parametrize("change, needle", [
    (lambda d: d["config"].update(select="val_r2"), "sweep model 0: its validation has no r2"),
    (lambda d: d["config"].update(select=["val_loss"]), "config.select is ['val_loss']"),
    (lambda d: d["sweep"][0].update(overrides=[1]), "sweep model 0: overrides is not an object"),
    (lambda d: d["sweep"][0]["test"].update(loss="0.5"), "sweep model 0: test is not an object of numeric"),
])
def test_the_metrics_check_names_what_the_leaderboard_cannot_read(tmp_path, change, needle):
    from mpidml.errors import UsageError
    doc = document([classification(0.3, 0.8)])
    change(doc)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=re.escape(needle)):
        load(path)


def test_a_two_rank_sweep_prints_the_leaderboard_whose_winner_is_best_in_metrics_and_csv(tmp_path):
    metrics, results = tmp_path / "m.json", tmp_path / "r.csv"
    proc = mpiexec(2, ["--data", DIGITS, *SWEEP, "--metrics-json", metrics, "--results", results], timeout=90, check=0)
    doc = json.loads(metrics.read_text())
    best = doc["best"]
    assert Leaderboard(doc).winner == best
    assert lines(proc, "leaderboard: 3 models, best first by val_loss")
    (line,) = lines(proc, "best: ")
    lr = doc["sweep"][best]["overrides"]["lr"]
    assert line.startswith(f"best: model {best} (lr={lr:g}): val_loss ")
    assert line.endswith(f"test accuracy {doc['test']['accuracy']:.4f}")
    assert len(lines(proc, "test: accuracy")) == 1
    rows = _csv_rows(results)
    assert int(rows[0]["model"]) == best and len(rows) == 3
    validation = [doc["sweep"][int(r["model"])]["validation"]["loss"] for r in rows]
    assert validation == sorted(validation)


def test_quiet_prints_no_leaderboard_but_writes_the_csv(tmp_path):
    proc = mpiexec(1, ["--data", DIGITS, *SWEEP, "--quiet", "--results", tmp_path / "r.csv"], timeout=90, check=0)
    assert not proc.stdout and len(_csv_rows(tmp_path / "r.csv")) == 3


def test_a_single_run_writes_one_row(tmp_path):
    proc = mpiexec(1, ["--data", DIGITS, "--epochs", "2", "--results", tmp_path / "r.csv"], timeout=90, check=0)
    (row,) = _csv_rows(tmp_path / "r.csv")
    assert int(row["rank"]) == 1 and int(row["model"]) == 0 and int(row["epochs"]) == 2
    assert not lines(proc, "leaderboard") and not lines(proc, "best:")


@pytest.mark.parametrize("other", ["--data", "--metrics-json"])
def test_results_over_an_input_or_another_output_is_refused_before_training(tmp_path, other):
    data = tmp_path / "d.h5"            # a copy: were the refusal broken, the CSV would replace it
    shutil.copyfile(DIGITS, data)
    target = data if other == "--data" else tmp_path / "m.json"
    args = [*SWEEP, "--data", data, *([] if other == "--data" else [other, target])]
    proc = mpiexec(2, [*args, "--results", target], timeout=60, check=2)
    assert quiet_lines(proc.stdout + proc.stderr) == [f"mpidml: error: --results {target}: is the same file as "
                                                      f"{other} {target}"]
    assert not (tmp_path / "m.json").exists() and filecmp.cmp(data, DIGITS, shallow=False)


def test_the_results_subcommand_prints_the_leaderboard_and_writes_the_csv(tmp_path):
    doc = document([classification(0.3, 0.8), classification(0.2, 0.9), classification(0.4, 0.7)])
    metrics, out = tmp_path / "m.json", tmp_path / "r.csv"
    metrics.write_text(json.dumps(doc))
    proc = mpiexec(2, ["results", metrics, "-o", out], timeout=60, check=0)
    assert proc.stdout.splitlines() == Leaderboard(doc).lines()
    assert [int(r["model"]) for r in _csv_rows(out)] == [1, 0, 2]


@pytest.mark.parametrize("text, needle", [
    ('{"history": []}', "not a sweep's metrics"),
    ("{", "not JSON"),
    ('{"history": [], "sweep": [{"history": [], "validation": 3}], "best": 0}', "validation is not an object"),
])
def test_the_results_subcommand_refuses_a_bad_or_single_run_metrics_file(tmp_path, text, needle):
    (tmp_path / "m.json").write_text(text)
    refused(1, ["results", tmp_path / "m.json", "-o", tmp_path / "r.csv"], needle)
    assert not (tmp_path / "r.csv").exists()


def test_results_refuses_to_write_its_csv_over_the_metrics_file(tmp_path):
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps(document([classification(0.3, 0.8)] * 2)))
    refused(1, ["results", metrics, "-o", metrics], "is the same file as metrics")


def test_the_plot_draws_the_score_against_each_swept_option_on_a_log_axis_where_it_spans_decades(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mpidml.cli.plot import _score_by_option, plot
    doc = document([classification(0.3, 0.8), classification(0.2, 0.9), classification(0.4, 0.7)])
    for entry, lr in zip(doc["sweep"], (1e-4, 1e-3, 1e-2)):
        entry["overrides"]["lr"] = lr
    board = Leaderboard(doc)
    _, (by_lr, by_hidden) = plt.subplots(1, 2)
    _score_by_option(by_lr, board, "lr")
    _score_by_option(by_hidden, board, "hidden")
    assert by_lr.get_xscale() == "log" and by_hidden.get_xscale() == "linear"
    assert [t.get_text() for t in by_hidden.get_xticklabels()] == ["16,8", "32,8", "48,8"]
    assert by_lr.get_ylabel() == "val_loss"
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps(doc))
    plot(metrics, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
