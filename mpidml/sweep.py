"""Hyperparameter sweeps: `--sweep "KEY=V1 V2 ..."` (repeatable) or a `[sweep]` table in
`--config`; the grid is the product of all of them, one model per point, trained at once
in one job (job.Job) on the same partitions.
"""
import itertools

from .errors import UsageError

SEARCHES = ("grid", "halving")                                      # --search
SELECTIONS = ("val_loss", "val_accuracy", "val_f1", "val_r2")       # --select

# the options a model of a sweep may vary; the rest (data, partitions, outputs, the sync
# method, standardization) the models share
KEYS = ("lr", "l2", "optimizer", "momentum", "hidden", "activation", "sync_every", "batch_size", "schedule",
        "warmup_epochs", "clip_norm", "seed")


def parse(texts, convert, origin="--sweep"):
    """[("lr", (0.1, 0.01)), ...] from "lr=0.1 0.01" strings; `convert(key, text, origin)`
    checks each value as the option itself would."""
    axes = []
    for text in texts:
        key, sep, values = text.partition("=")
        axes.append(axis(key, values.split() if sep else [], convert, f"{origin} {text!r}"))
    return tuple(axes)


def axis(key, values, convert, origin):
    """One axis of the grid: the option key (underscored) and its converted values."""
    name = key.strip().replace("-", "_")
    if name not in KEYS:
        raise UsageError(f"{origin}: cannot sweep {key.strip()!r}; sweepable: "
                         f"{', '.join(k.replace('_', '-') for k in KEYS)}")
    if not values:
        raise UsageError(f"{origin}: no values; write KEY=V1 V2 ..., e.g. --sweep \"lr=0.1 0.01\"")
    converted = tuple(convert(name, v, origin) for v in values)
    if len(set(converted)) != len(converted):
        raise UsageError(f"{origin}: a value appears twice")
    return name, converted


def check(axes):
    names = [k for k, _ in axes]
    twice = {k for k in names if names.count(k) > 1}
    if twice:
        raise UsageError(f"--sweep: {', '.join(sorted(twice))} swept twice; give all its values in one --sweep")


def expand(axes):
    """Every point of the grid as {key: value}: [{}] without a sweep (one model)."""
    names = [k for k, _ in axes]
    return [dict(zip(names, point)) for point in itertools.product(*(v for _, v in axes))]
