"""`mpidml plot METRICS.json -o OUT.png`: learning curves and per-rank time breakdown; for a
sweep, also validation score against each swept option (a row of panels below).

matplotlib is an optional extra (`pip install mpidml[plot]`).
"""
import json
import os

from ..errors import UsageError
from ..files.outputs import atomic_write, check_output
from ..learn import leaderboard

PANELS_PER_ROW = 4          # score-by-option panels side by side
GRID = 12                   # columns of the figure's grid: 3 panels above, 1 to 4 below, each an equal share
LOG_SPAN = 100              # an option whose values span this factor or more is drawn on a log axis


def plot(metrics_path, out):
    check_output(out, "-o", (("metrics", metrics_path),))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plot needs matplotlib: pip install 'mpidml[plot]'") from None
    doc = load(metrics_path)
    board = leaderboard.Leaderboard(doc) if doc.get("sweep") else None
    options = board.differ if board else []
    rows = 1 + -(-len(options) // PANELS_PER_ROW)
    fig = plt.figure(figsize=(15, 4 * rows))
    grid = fig.add_gridspec(rows, GRID)
    axes = [fig.add_subplot(grid[0, i * GRID // 3:(i + 1) * GRID // 3]) for i in range(3)]
    kinds = fig.canvas.get_supported_filetypes()
    ext = os.path.splitext(out)[1].lower().lstrip(".")
    if ext not in kinds:
        raise UsageError(f"-o {out}: unknown image type {'.' + ext if ext else '(no extension)'}; "
                         f"use one of {', '.join('.' + k for k in sorted(kinds))}")
    if doc.get("sweep"):
        _sweep_curves(axes[0], axes[1], doc["sweep"], doc.get("best", 0))
    else:
        _curves(axes[0], axes[1], doc["history"])
    _per_rank(axes[2], doc.get("timing", {}).get("per_rank", {}))
    width = GRID // max(1, min(len(options), PANELS_PER_ROW))
    for i, key in enumerate(options):
        row, column = divmod(i, PANELS_PER_ROW)
        _score_by_option(fig.add_subplot(grid[1 + row, column * width:(column + 1) * width]), board, key)
    fig.suptitle(f"mpidml: {doc.get('model')} on {doc.get('ranks')} ranks")
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format=ext, dpi=100))     # the temporary's name has no type


def load(path):
    """The metrics document, checked for what the plot reads: one line naming what is wrong."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a metrics file") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror})") from None
    except (ValueError, RecursionError) as e:
        raise UsageError(f"{path}: not JSON ({str(e)[:100]})") from None
    problem = _problem(doc)
    if problem:
        raise UsageError(f"{path}: not an mpidml metrics file ({problem})")
    return doc


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _problem(doc):
    """What in `doc` the plot cannot draw, or None."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    history = doc.get("history")
    if not isinstance(history, list):
        return "no history list"
    for i, h in enumerate(history):
        if not isinstance(h, dict) or not all(_number(h.get(k)) for k in ("epoch", "train_loss")):
            return f"history entry {i} lacks a numeric epoch and train_loss"
        if any(k in h and not _number(h[k]) for k in ("test_loss", "test_accuracy", "test_r2")):
            return f"history entry {i} has a test metric that is not a number"
    sweep = doc.get("sweep")
    if sweep is not None:
        if not isinstance(sweep, list) or not all(isinstance(e, dict) and isinstance(e.get("history"), list)
                                                  for e in sweep):
            return "sweep is not a list of models with a history"
        for i, entry in enumerate(sweep):
            if not all(isinstance(h, dict) and _number(h.get("epoch")) and _number(h.get("train_loss"))
                       for h in entry["history"]):
                return f"sweep model {i}: a history entry lacks a numeric epoch and train_loss"
        if sweep and not (isinstance(doc.get("best"), int) and 0 <= doc["best"] < len(sweep)):
            return "best is not the index of a sweep model"
        problem = leaderboard.problem(doc)
        if problem:
            return problem
    timing = doc.get("timing", {})
    per_rank = timing.get("per_rank", {}) if isinstance(timing, dict) else None
    if not isinstance(per_rank, dict):
        return "timing.per_rank is not an object"
    if per_rank:
        series = [per_rank.get(k) for k in ("compute_s", "comm_s", "comm_wait_s")]
        if not all(isinstance(v, list) and all(map(_number, v)) for v in series) or len({len(v) for v in series}) != 1:
            return "timing.per_rank needs lists of numbers compute_s, comm_s, comm_wait_s, one per rank"
    return None


def _curves(loss_ax, metric_ax, history):
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    if history and all("test_loss" in h for h in history):
        loss_ax.plot(epochs, [h["test_loss"] for h in history], "s-", label="test loss")
    loss_ax.set_xlabel("epoch"), loss_ax.set_ylabel("loss"), loss_ax.legend(), loss_ax.set_title("loss")
    key = next((k for k in ("test_accuracy", "test_r2") if history and all(k in h for h in history)), None)
    if key:
        metric_ax.plot(epochs, [h[key] for h in history], "o-", color="tab:green")
        metric_ax.set_ylabel(key.replace("_", " "))
    metric_ax.set_xlabel("epoch"), metric_ax.set_title("test metric")


def _sweep_curves(loss_ax, metric_ax, sweep, best):
    """Every model of a sweep: validation (else test) curves, the chosen model drawn bold."""
    for i, entry in enumerate(sweep):
        history = entry["history"]
        epochs = [h["epoch"] for h in history]
        bold = i == best
        label = " ".join(f"{k}={v}" for k, v in (entry.get("overrides") or {}).items()) or f"model {i}"
        style = {"linewidth": 2.5 if bold else 1.0, "alpha": 1.0 if bold else 0.5,
                 "label": f"{label} (best)" if bold else label, "zorder": 3 if bold else 2}
        loss_key = next((k for k in ("val_loss", "test_loss") if history and all(k in h for h in history)),
                        "train_loss")
        loss_ax.plot(epochs, [h[loss_key] for h in history], "-", **style)
        key = next((k for k in ("val_accuracy", "val_r2", "test_accuracy", "test_r2")
                    if history and all(k in h for h in history)), None)
        if key:
            metric_ax.plot(epochs, [h[key] for h in history], "-", **style)
            metric_ax.set_ylabel(key.replace("_", " "))
    loss_ax.set_xlabel("epoch"), loss_ax.set_ylabel("loss"), loss_ax.set_title(f"{len(sweep)} models: loss")
    metric_ax.set_xlabel("epoch"), metric_ax.set_title("metric (validation where held out)")
    metric_ax.legend(fontsize="small")


def _per_rank(ax, per_rank):
    if per_rank:
        ranks = list(range(len(per_rank["compute_s"])))
        compute, comm, wait = per_rank["compute_s"], per_rank["comm_s"], per_rank["comm_wait_s"]
        ax.bar(ranks, compute, label="compute")
        ax.bar(ranks, wait, bottom=compute, label="waiting (blocked)")
        ax.plot(ranks, comm, "k_", markersize=30, label="collectives in flight")
        ax.set_xticks(ranks)
        ax.legend()
    ax.set_xlabel("rank"), ax.set_ylabel("seconds"), ax.set_title("time per rank")


def _score_by_option(ax, board, key):
    """Each model's ranking score (validation, else final training loss) against its value
    of the swept option `key`, the winner starred. Numbers on a numeric axis, logarithmic
    where they span LOG_SPAN or more (a learning rate over decades; losses alike); other
    values (optimizer, hidden widths) as categories in the sweep's order."""
    scored = [i for i in range(len(board.entries)) if board.score(i) is not None]
    values = [(board.entries[i].get("overrides") or {}).get(key) for i in scored]
    numeric = all(_number(v) for v in values)
    if numeric:
        xs = values
        if min(xs) > 0 and max(xs) >= LOG_SPAN * min(xs):
            ax.set_xscale("log")
    else:
        names = list(dict.fromkeys(leaderboard.option_text(v) for v in values))
        xs = [names.index(leaderboard.option_text(v)) for v in values]
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.5, len(names) - 0.5)
    ys = [board.score(i) for i in scored]
    if board.score_name().endswith("loss") and ys and min(ys) > 0 and max(ys) >= LOG_SPAN * min(ys):
        ax.set_yscale("log")            # good and bad models' losses decades apart
    ax.scatter(xs, ys, alpha=0.7, label="models")
    if board.winner in scored:
        at = scored.index(board.winner)
        ax.scatter([xs[at]], [ys[at]], marker="*", s=250, color="tab:red", zorder=3,
                   label=f"best (model {board.winner})")
    ax.set_xlabel(key.replace("_", "-")), ax.set_ylabel(board.score_name())
    ax.set_title(f"{board.score_name()} by {key.replace('_', '-')}"), ax.legend(fontsize="small")
