"""The leaderboard of a sweep: its models ranked best first by the selection metric (--select).

Rank 0 prints it at the end of a sweep, --results writes it as CSV, `mpidml results
METRICS.json` makes both from a metrics file, and `plot` draws validation score against
each swept option: all of them read the metrics document (training.report.Reporter.document), so a run and
its metrics file give the same table. Its first model is the document's `best`: the order
here is job.Job.best_model's (see rank_key).
"""
import csv
import json
import logging

from ..files.outputs import atomic_write

log = logging.getLogger("mpidml")

# --select: the key of a model's validation metrics it ranks by, and whether higher is better
METRICS = {"val_loss": ("loss", False), "val_accuracy": ("accuracy", True), "val_f1": ("macro_f1", True),
           "val_r2": ("r2", True)}
SHOWN = 10                      # the models the printed table lists
HALVING = ("rung", "halved")    # a halving search's fields of a sweep entry, where present
LEGACY = None                   # the selection of a document from before --select: accuracy (or R²), then loss


def selection_score(select, metrics):
    """Higher is better: `select`'s value in validation `metrics` (negated for the loss),
    and the lower loss among equals (accuracies tie often on small validation sets): the
    order of rank_key."""
    return tuple(-v for v in _badness(select, metrics))


def entry_score(select, entry):
    """The same of a history entry (keys val_loss, val_accuracy, val_f1, val_r2), or None."""
    if entry.get(select) is None:
        return None
    return selection_score(select, {"loss": entry["val_loss"], METRICS[select][0]: entry[select]})


def selection(doc):
    """The metric that chose the document's best model: its --select, or LEGACY."""
    config = doc.get("config")
    return config.get("select", LEGACY) if isinstance(config, dict) else LEGACY


def rank_key(select, index, validation, history, diverged=None):
    """Sort key of a model, best first, as job.Job.best_model chooses: models with
    validation scores by the `select` metric; without (no rows held out), by the final
    training loss; untrained ones, then those whose training `diverged`, last. Ties go to
    the lower model index."""
    if diverged:
        return (3, (), index)
    if validation is not None:
        return (0, _badness(select, validation), index)
    if history:
        return (1, (history[-1]["train_loss"],), index)
    return (2, (), index)


def _badness(select, validation):
    if select is LEGACY:
        return (-validation.get("accuracy", validation.get("r2")), validation["loss"])
    key, higher = METRICS[select]
    return (-validation[key], validation["loss"]) if higher else (validation[key],)


def entries(doc):
    """Each model's entry: a sweep's `sweep` list, or a single run as one entry."""
    if "sweep" in doc:
        return doc["sweep"]
    return [{"overrides": {}, "history": doc.get("history") or [], "validation": doc.get("validation"),
             "test": doc.get("test"), "early_stopped": None}]


def problem(doc):
    """What in a document's sweep entries the leaderboard cannot read, or None (the rest of
    the document: plot.load)."""
    select = selection(doc)
    if select is not LEGACY and not (isinstance(select, str) and select in METRICS):
        return f"config.select is {select!r}, not one of {', '.join(METRICS)}"
    for i, entry in enumerate(doc.get("sweep") or []):
        if not isinstance(entry.get("overrides", {}), dict):
            return f"sweep model {i}: overrides is not an object"
        for name in ("validation", "test"):
            scores = entry.get(name)
            if scores is not None and not (isinstance(scores, dict) and all(
                    _number(scores[k]) for k in ("loss", "accuracy", "macro_f1", "r2") if k in scores)):
                return f"sweep model {i}: {name} is not an object of numeric metrics"
        missing = entry.get("validation") is not None and _unranked(select, entry["validation"])
        if missing:
            return f"sweep model {i}: its validation has no {missing}, which ranks the models"
    return None


def _unranked(select, validation):
    """The metrics `select` ranks by that `validation` lacks, in words, or None."""
    if select is LEGACY:
        ranked = "loss" in validation and ("accuracy" in validation or "r2" in validation)
        return None if ranked else "loss and accuracy (or r2)"
    key = METRICS[select][0]
    return None if key in validation else key


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Leaderboard:
    """A metrics document's models, best first (`order`: their indices)."""

    def __init__(self, doc):
        self.select = selection(doc)
        self.entries = entries(doc)
        self.order = sorted(range(len(self.entries)), key=lambda i: rank_key(
            self.select, i, self.entries[i].get("validation"), self.entries[i].get("history"),
            self.entries[i].get("diverged")))
        data = doc.get("data")
        classes = data.get("classes") if isinstance(data, dict) else None
        self.regression = classes == 0 if classes is not None else any(
            "r2" in (e.get(k) or {}) for e in self.entries for k in ("validation", "test"))
        self.metric = "r2" if self.regression else "accuracy"
        self.validated = any(e.get("validation") is not None for e in self.entries)
        self.keys = list(dict.fromkeys(k for e in self.entries for k in e.get("overrides") or {}))
        # the options that tell the models apart: a value the same everywhere says nothing
        self.differ = [k for k in self.keys if len({option_text(_option(e, k)) for e in self.entries}) > 1]
        self.halving = [k for k in HALVING if any(k in e for e in self.entries)]

    @property
    def winner(self):
        return self.order[0]

    def score_name(self):
        """The column the models are ranked by: the --select metric (accuracy or R² for a
        document from before it), or the final training loss where nothing was held out."""
        if not self.validated:
            return "train_loss"
        return f"val_{self.metric}" if self.select is LEGACY else self.select

    def score(self, index):
        """Model `index`'s value in the ranking column, or None (not scored)."""
        return self._value(self.entries[index], self.score_name())

    def _value(self, entry, column):
        """One of the table's metrics of `entry`: train_loss (final), val_* or test_*."""
        if column == "train_loss":
            history = entry.get("history")
            return history[-1]["train_loss"] if history else None
        if column in METRICS:
            return (entry.get("validation") or {}).get(METRICS[column][0])
        return (entry.get("test") or {}).get(column.removeprefix("test_"))

    def _epochs(self, entry):
        history = entry.get("history")
        return entry.get("epochs", history[-1]["epoch"] if history else 0)

    # -- the CSV ---------------------------------------------------------------------------
    def metric_columns(self):
        """The CSV's metrics: final training loss, validation and test scores."""
        val = ["val_loss", f"val_{self.metric}"] + ([] if self.regression else ["val_f1"])
        return ["train_loss", *val, "test_loss", f"test_{self.metric}"]

    def columns(self):
        """The CSV's header: rank, model, every swept option, epochs, the metrics, then
        early stopping and the halving fields present."""
        return ["rank", "model", *self.keys, "epochs", *self.metric_columns(), "early_stopped", *self.halving]

    def rows(self):
        """One list per model, best first, in the order of `columns`."""
        metrics = self.metric_columns()
        for rank, index in enumerate(self.order, 1):
            entry = self.entries[index]
            yield [rank, index, *(_option(entry, k) for k in self.keys), self._epochs(entry),
                   *(self._value(entry, c) for c in metrics), entry.get("early_stopped"),
                   *(entry.get(k) for k in self.halving)]

    def write_csv(self, path):
        """The CSV as pandas.read_csv reads it: a header, plain values (hidden widths quoted,
        "128,64"; an empty cell where a model has no value), written atomically."""
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                out = csv.writer(f)
                out.writerow(self.columns())
                out.writerows([_cell(v) for v in row] for row in self.rows())
        atomic_write(path, write)

    # -- the printout ----------------------------------------------------------------------
    def lines(self, shown=SHOWN):
        """The table of the best `shown` models (rank, model, the options that differ, the
        ranking score with accuracy or R², epochs, the winner's test score), then `best:`."""
        score = self.score_name()
        scores = [score] + ([f"val_{self.metric}"] if self.validated and score != f"val_{self.metric}" else [])
        test = f"test_{self.metric}"
        rung = [k for k in self.halving if k == "rung"]
        header = ["rank", "model", *self.differ, *scores, "epochs", *rung, test]
        table = [header]
        for rank, index in enumerate(self.order[:shown], 1):
            entry = self.entries[index]
            table.append([str(rank), str(index), *(_shown(_option(entry, k)) for k in self.differ),
                          *(_metric(self._value(entry, c), c) for c in scores), _shown(self._epochs(entry)),
                          *(_shown(entry.get(k)) for k in rung),
                          _metric(self._value(entry, test), test) if rank == 1 else ""])
        widths = [max(len(row[c]) for row in table) for c in range(len(header))]
        out = [f"leaderboard: {len(self.entries)} models, best first by {self._ranked_by()}"]
        out += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
        if len(self.entries) > shown:
            out.append(f"... {len(self.entries) - shown} more")
        return out + [self.best_line()]

    def _ranked_by(self):
        if not self.validated:
            return "final train_loss (no validation rows)"
        if self.select is LEGACY:
            return f"val_{self.metric}, then val_loss"
        return f"{self.select} ({'higher' if METRICS[self.select][1] else 'lower'} is better)"

    def best_line(self):
        """`best: model 7 (lr=0.0031 hidden=128): val_loss 0.0812, test accuracy 0.9731`."""
        entry = self.entries[self.winner]
        options = " ".join(f"{k}={_shown(v)}" for k, v in (entry.get("overrides") or {}).items())
        named = f" ({options})" if options else ""
        score = self.score_name()
        line = f"best: model {self.winner}{named}: {score} {_metric(self.score(self.winner), score)}"
        test = self._value(entry, f"test_{self.metric}")
        return line + (f", test {self.metric} {test:.4f}" if test is not None else "")


def _option(entry, key):
    return (entry.get("overrides") or {}).get(key)


def option_text(value):
    """An option's value as text: hidden widths as the command line writes them, "none" for none."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _shown(value, form=".4g"):
    """A value in the printed table: numbers short, "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, form)
    return option_text(value)


def _metric(value, column):
    """A metric in the printed table: scores to 4 decimals (as the `test:` line), losses to 4
    significant digits (good fits differ in the fifth decimal), "-" for none."""
    return _shown(value, ".4g" if column.endswith("loss") else ".4f")


def _cell(value):
    """A value in the CSV: numbers in full (the shortest text that reads back the same),
    an empty cell for none."""
    return "" if value is None else value if isinstance(value, (int, float)) else option_text(value)


def finish(cfg, doc):
    """Rank 0 at the end of training: --results, and for a sweep that completed, the
    leaderboard and its `best:` line (not with --quiet)."""
    board = Leaderboard(doc)
    if cfg.results:
        board.write_csv(cfg.results)
    if "sweep" in doc and doc.get("status") == "complete" and not cfg.quiet:
        for line in board.lines():
            log.info(line)
