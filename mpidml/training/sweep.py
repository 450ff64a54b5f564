"""Hyperparameter sweeps: `--sweep "KEY=V1 V2 ..."` (repeatable) or a `[sweep]` table in
`--config`; one model per point, trained at once in one job (job.Job) on the same partitions.

An axis is a grid axis (its values, every one a model) or a sampled one
(`lr=loguniform(1e-4,1e-1)`, `uniform(a,b)`, `int(a,b)`, `choice(v1 v2 ...)`). Without a
sampled axis the models are the grid's product; with one, `--trials N` points are drawn
and each is crossed with the grid, as Ray Tune's num_samples repeats its grid. The draws
come from numpy's default_rng(--sweep-seed) alone, trial after trial and axis after axis
in the order given, so every rank (at any rank count, and a --resume) computes the same
points without a word to the others, and a larger --trials keeps a smaller one's points
first. `points` is the one place that lists the models.
"""
import dataclasses
import functools
import itertools
import math
import re

import numpy as np

from ..errors import UsageError

SEARCHES = ("grid", "halving")                                      # --search
SELECTIONS = ("val_loss", "val_accuracy", "val_f1", "val_r2")       # --select

# the options a model of a sweep may vary; the rest (data, partitions, outputs, the sync
# method, standardization) the models share
KEYS = ("lr", "l2", "optimizer", "momentum", "hidden", "activation", "sync_every", "batch_size", "schedule",
        "warmup_epochs", "clip_norm", "seed")
REALS = ("lr", "l2", "momentum", "warmup_epochs", "clip_norm")      # numbers: uniform, loguniform
WHOLES = ("sync_every", "batch_size", "seed")                       # counts: int
DEFAULT_TRIALS = 10
MAX_MODELS = 100_000        # a --trials typo (1e9 points) would take every rank's memory


@dataclasses.dataclass(frozen=True)
class Distribution:
    keys: tuple             # the options it samples
    signature: str          # how it is written, for messages: (A,B)
    problem: object         # converted arguments -> what is wrong with them in words, or None
    draw: object            # (numpy Generator, converted arguments) -> one value


def _pair(check, what):
    """The problem of a two-number distribution's arguments: not two, or `check(a, b)` false."""
    return lambda args: "takes two numbers" if len(args) != 2 else None if check(*args) else what


def _loguniform(rng, args):
    low, high = args
    return min(max(math.exp(rng.uniform(math.log(low), math.log(high))), low), high)   # exp may round past


DISTRIBUTIONS = {
    "uniform": Distribution(REALS, "(A,B)", _pair(lambda a, b: a < b, "needs A < B"),
                            lambda rng, args: float(rng.uniform(*args))),
    "loguniform": Distribution(REALS, "(A,B)", _pair(lambda a, b: 0 < a < b, "needs 0 < A < B"), _loguniform),
    "int": Distribution(WHOLES, "(A,B)", _pair(lambda a, b: a <= b, "needs whole numbers A <= B (both included)"),
                        lambda rng, args: int(rng.integers(args[0], args[1], endpoint=True))),
    "choice": Distribution(KEYS, "(V1 V2 ...)",
                           lambda args: None if len(args) >= 2 else "takes two values or more, separated by spaces "
                                                                    "or | (a comma belongs to hidden's widths)",
                           lambda rng, args: args[int(rng.integers(len(args)))]),
}


class Sampled(str):
    """A sampled axis. It is its text, `loguniform(0.0001, 0.1)` (what the config in the
    metrics and model files records, JSON as it is, and what parses back to it), and carries
    the distribution's name and its arguments as the option converts them."""

    def __new__(cls, kind, args):
        separator = " | " if kind == "choice" else ", "
        self = super().__new__(cls, f"{kind}({separator.join(map(value_text, args))})")
        self.kind, self.args = kind, tuple(args)
        return self

    def draw(self, rng):
        return DISTRIBUTIONS[self.kind].draw(rng, self.args)


def value_text(value):
    """One value as the command line writes it (hidden's widths: 128,64, or none)."""
    return (",".join(map(str, value)) or "none") if isinstance(value, tuple) else str(value)


def axis_text(values):
    """An axis's values as the command line writes them."""
    return values if isinstance(values, Sampled) else " ".join(map(value_text, values))


def parse(texts, convert, origin="--sweep"):
    """Axes from "lr=0.1 0.01" or "lr=loguniform(1e-4,1e-1)" strings; `convert(key, text,
    origin)` checks each value as the option itself would."""
    axes = []
    for text in texts:
        key, sep, values = text.partition("=")
        sampled = "(" in values or ")" in values
        axes.append(axis(key, values if sampled else values.split() if sep else [], convert, f"{origin} {text!r}"))
    return tuple(axes)


def axis(key, values, convert, origin):
    """One axis: the option key (underscored) and its converted values (a list: a grid axis)
    or its Sampled distribution (a text)."""
    name = key.strip().replace("-", "_")
    if name not in KEYS:
        raise UsageError(f"{origin}: cannot sweep {key.strip()!r}; sweepable: {_options(KEYS)}")
    if isinstance(values, str):
        return name, sampled(name, values, convert, origin)
    if not values:
        raise UsageError(f"{origin}: no values; write KEY=V1 V2 ..., e.g. --sweep \"lr=0.1 0.01\"")
    return name, _distinct(tuple(convert(name, v, origin) for v in values), origin)


def sampled(key, text, convert, origin):
    """The Sampled axis a text such as "loguniform(1e-4, 1e-1)" writes, its arguments
    checked by the option's own converter (lr >= 0, batch sizes positive, ...)."""
    match = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", text, re.DOTALL)
    if not match:
        raise UsageError(f"{origin}: a sampled axis is one distribution, NAME(ARGUMENTS), e.g. "
                         f"lr=loguniform(1e-4,1e-1); grid values are numbers or words separated by spaces")
    kind, inside = match.groups()
    if kind not in DISTRIBUTIONS:
        raise UsageError(f"{origin}: unknown distribution {kind!r}; known: {', '.join(DISTRIBUTIONS)}")
    distribution = DISTRIBUTIONS[kind]
    if key not in distribution.keys:
        fits = [k for k, d in DISTRIBUTIONS.items() if key in d.keys]
        raise UsageError(f"{origin}: {kind} samples {_options(distribution.keys)}; {key.replace('_', '-')} "
                         f"takes {', '.join(fits)}")
    if kind == "choice":
        words = [w for w in re.split(r"[\s|]+", inside) if w]
        if key != "hidden" and any("," in w for w in words):
            raise UsageError(f"{origin}: choice's values are separated by spaces or |, not commas: "
                             f"{kind}({' '.join(w for word in words for w in word.split(',') if w)})")
    else:
        words = [w.strip() for w in inside.split(",")]
    problem = "has an empty argument" if "" in words and words != [""] else None
    args = tuple(convert(key, w, origin) for w in words if w)
    problem = problem or distribution.problem(args)
    if problem:
        raise UsageError(f"{origin}: {kind}{distribution.signature} {problem}")
    if kind == "choice":
        _distinct(args, origin)
    return Sampled(kind, args)


def _distinct(values, origin):
    if len(set(values)) != len(values):
        raise UsageError(f"{origin}: a value appears twice")
    return values


def _options(keys):
    return ", ".join(k.replace("_", "-") for k in keys)


def check(axes):
    names = [k for k, _ in axes]
    twice = {k for k in names if names.count(k) > 1}
    if twice:
        raise UsageError(f"--sweep: {', '.join(sorted(twice))} swept twice; give all its values in one --sweep")


def is_sampled(axes):
    """Whether any axis is sampled (then the sweep has trials)."""
    return any(isinstance(values, Sampled) for _, values in axes)


def count(axes, trials):
    """The number of models: the grid's points, times the trials where an axis is sampled."""
    return math.prod(len(v) for _, v in axes if not isinstance(v, Sampled)) * (trials if is_sampled(axes) else 1)


def smallest(values):
    """The smallest value a numeric axis can give."""
    return min(values.args if isinstance(values, Sampled) else values)


def points(cfg):
    """Every model's overrides, {key: value} in the axes' order, in model order: [{}]
    without a sweep (one model). Trial after trial, each crossed with the grid. Drawn once
    per sweep (the job asks for them at every step of its setup), copied for each caller."""
    return [dict(p) for p in _points(cfg.sweep, cfg.trials, cfg.sweep_seed)]


@functools.lru_cache(maxsize=4)
def _points(axes, trials, seed):
    grid = [(k, v) for k, v in axes if not isinstance(v, Sampled)]
    drawn = [(k, v) for k, v in axes if isinstance(v, Sampled)]
    product = [dict(zip([k for k, _ in grid], p)) for p in itertools.product(*(v for _, v in grid))]
    if not drawn:
        return product
    rng = np.random.default_rng(seed)
    models = []
    for _ in range(trials or DEFAULT_TRIALS):
        trial = {k: distribution.draw(rng) for k, distribution in drawn}
        for point in product:
            values = {**trial, **point}
            models.append({k: values[k] for k, _ in axes})
    return models


def document(cfg):
    """The search as the metrics record it: how its points came to be (grid axes as lists,
    sampled ones as their text), the seed and trials None without a sampled axis."""
    trials = (cfg.trials or DEFAULT_TRIALS) if is_sampled(cfg.sweep) else None
    return {"kind": cfg.search, "models": count(cfg.sweep, trials), "trials": trials,
            "sweep_seed": None if trials is None else cfg.sweep_seed,
            "axes": {k: v if isinstance(v, Sampled) else [list(x) if isinstance(x, tuple) else x for x in v]
                     for k, v in cfg.sweep}}
