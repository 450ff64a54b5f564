"""`mpidml plot METRICS.json -o OUT.png`: learning curves and per-rank time breakdown.

matplotlib is an optional extra (`pip install mpidml[plot]`).
"""
import json

from .errors import UsageError


def plot(metrics_path, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plot needs matplotlib: pip install 'mpidml[plot]'") from None
    try:
        with open(metrics_path) as f:
            doc = json.load(f)
        history = doc["history"]
    except FileNotFoundError:
        raise UsageError(f"{metrics_path}: no such file") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{metrics_path}: not an mpidml metrics file ({e})") from None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    epochs = [h["epoch"] for h in history]
    ax = axes[0]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    if history and "test_loss" in history[0]:
        ax.plot(epochs, [h["test_loss"] for h in history], "s-", label="test loss")
    ax.set_xlabel("epoch"), ax.set_ylabel("loss"), ax.legend(), ax.set_title("loss")
    ax = axes[1]
    key = next((k for k in ("test_accuracy", "test_r2") if history and k in history[0]), None)
    if key:
        ax.plot(epochs, [h[key] for h in history], "o-", color="tab:green")
        ax.set_ylabel(key.replace("_", " "))
    ax.set_xlabel("epoch"), ax.set_title("test metric")
    ax = axes[2]
    per_rank = doc.get("timing", {}).get("per_rank", {})
    if per_rank:
        ranks = list(range(len(per_rank["compute_s"])))
        compute, comm, wait = per_rank["compute_s"], per_rank["comm_s"], per_rank["comm_wait_s"]
        ax.bar(ranks, compute, label="compute")
        ax.bar(ranks, wait, bottom=compute, label="waiting (blocked)")
        ax.plot(ranks, comm, "k_", markersize=30, label="collectives in flight")
        ax.set_xticks(ranks)
        ax.legend()
    ax.set_xlabel("rank"), ax.set_ylabel("seconds"), ax.set_title("time per rank")
    fig.suptitle(f"mpidml: {doc.get('model')} on {doc.get('ranks')} ranks")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
