"""bench/run.py's `search` section (issue 23's acceptance): a random search over 27 sampled MLPs
at N=2, every model trained every epoch (`--search grid`) against successive halving
(`--search halving`), and scikit-learn's HalvingRandomSearchCV on one process.

    .venv/bin/python bench/run.py --only search

The full search runs once (it takes minutes), halving before and after it (the machine's load
drifts), all in the same invocation: on a shared machine read the ratios. --quick changes
nothing: the acceptance is about this size (about 8 minutes on 2 cores).
"""
import csv
import json
import os
import re
import time
import warnings

import h5py
import numpy as np

import harness
from harness import progress, sh, synth, table, target

N = 2
ROWS, TEST_ROWS, FEATURES, CLASSES = 400_000, 40_000, 100, 10
SUBSAMPLE = 40_000          # scikit-learn's problem: the first training rows of the same file
VALIDATION = 0.1            # a sweep's default --validation-fraction; scikit-learn holds out the same share
EPOCHS, ETA, RUNG = 9, 3, 1     # halving's rungs end at epochs 1, 3 and 9: 27 models, then 9, then 3
TRIALS, SEED = 27, 1
LR = (1e-5, 1e-1)           # four decades below 1: lr 1 diverged on synth's data, and one diverging model ends a sweep
TEACHER_WIDTH, TEMPERATURE, GAIN = 32, 0.5, 3.0     # the teacher network (see teacher)
HIDDEN = ((32,), (128,), (64, 64))
BATCH = (64, 256)
SPACE = ["--sweep", f"lr=loguniform({LR[0]:g},{LR[1]:g})",
         "--sweep", "hidden=choice(" + " | ".join(",".join(map(str, h)) for h in HIDDEN) + ")",
         "--sweep", "batch-size=choice(" + " ".join(map(str, BATCH)) + ")", "--trials", TRIALS, "--sweep-seed", SEED]
SEARCH = ["--model", "mlp", "--epochs", EPOCHS, "--select", "val_accuracy", "--validation-fraction", VALIDATION,
          *SPACE]
SMALL_REPEAT = 3            # the 40k comparison takes seconds: best of 3 each, alternating
HALVING = ["--search", "halving", "--halving-factor", ETA, "--rung-epochs", RUNG]


class Search:
    """One mpidml search: its metrics, the wall time of the whole command (launch to exit),
    its stdout (the leaderboard) and the first row of its --results CSV."""

    def __init__(self, args, path, tag, extra):
        out, results = (os.path.join(harness.WORK, f"search-{tag}.{ext}") for ext in ("json", "csv"))
        t0 = time.perf_counter()
        proc = sh([args.mpiexec, "-n", N, harness.PY, "-m", "mpidml", "--data", path, *SEARCH, *extra,
                   "--metrics-json", out, "--results", results])
        self.wall = time.perf_counter() - t0
        self.stdout = proc.stdout
        with open(out) as f:
            self.doc = json.load(f)
        with open(results, newline="") as f:
            self.csv_first = next(csv.DictReader(f))
        self.best = self.doc["best"]
        progress(f"search {tag}: {self.wall:.1f} s, {len(self.doc['sweep'])} models, {self.epoch_units()} "
                 f"epoch-units, winner model {self.best} ({self.options(self.best)}) val accuracy "
                 f"{self.val('accuracy'):.4f}")

    def epoch_units(self):
        """Epochs trained, summed over the models: the work the search did."""
        return sum(entry["epochs"] for entry in self.doc["sweep"])

    def val(self, key, index=None):
        entry = self.doc if index is None else self.doc["sweep"][index]
        return entry["validation"][key]

    def options(self, index):
        return options(self.doc["sweep"][index]["overrides"])

    def named(self):
        """The winner as each output names it: metrics `best`, the leaderboard's first row,
        its `best:` line and the CSV's first row."""
        lines = self.stdout.splitlines()
        head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "model"])
        said = re.search(r"^best: model (\d+)", self.stdout, re.M)
        return {"metrics best": self.best, "leaderboard": int(lines[head + 1].split()[1]),
                "best: line": int(said.group(1)), "CSV": int(self.csv_first["model"])}


def options(overrides):
    """A model's sampled options, short."""
    hidden = overrides.get("hidden", overrides.get("hidden_layer_sizes"))
    batch = overrides.get("batch_size")
    lr = overrides.get("lr", overrides.get("learning_rate_init"))
    return f"lr {lr:.2g}, hidden {','.join(map(str, hidden))}, batch {batch}"


def teacher(name):
    """A held-out style problem where capacity and step size both matter, yet learning curves
    are smooth: 10 classes drawn from the softmax of a random 100-32-10 tanh network (the
    teacher, its layers' gain GAIN) at temperature TEMPERATURE (Gumbel noise on its logits), so
    no model beats the teacher's own accuracy (0.80) and a linear one stays well below it
    (about 0.6). Same seed, same file."""
    path = os.path.join(harness.WORK, name)
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(SEED)
    W1 = rng.standard_normal((FEATURES, TEACHER_WIDTH)) * GAIN / np.sqrt(FEATURES)
    W2 = rng.standard_normal((TEACHER_WIDTH, CLASSES)) * GAIN / np.sqrt(TEACHER_WIDTH)
    with h5py.File(path + ".tmp", "w") as f:
        for group, rows in (("train", ROWS), ("test", TEST_ROWS)):
            X = rng.standard_normal((rows, FEATURES)).astype(np.float32)
            logits = np.tanh(X @ W1) @ W2
            f[f"{group}/X"] = X
            f[f"{group}/y"] = np.argmax(logits + TEMPERATURE * rng.gumbel(size=logits.shape), axis=1)
    os.replace(path + ".tmp", path)
    return path


def subsample(path):
    """The first SUBSAMPLE training rows of `path` and all its test rows, as a file of its own."""
    out = os.path.join(harness.WORK, "search-subsample.h5")
    with h5py.File(path) as f, h5py.File(out, "w") as g:
        for name, rows in (("train/X", SUBSAMPLE), ("train/y", SUBSAMPLE), ("test/X", None), ("test/y", None)):
            g[name] = f[name][:rows]
    return out


# -- the cases ----------------------------------------------------------------------------
def spread(grid):
    """The validation accuracies of the full search, best first, and the noise of one: the
    standard error of an accuracy near the best on this many validation rows."""
    scores = sorted((entry["validation"]["accuracy"] for entry in grid.doc["sweep"]), reverse=True)
    best, rows = scores[0], grid.doc["data"]["validation_samples"]
    noise = np.sqrt(best * (1 - best) / rows)
    return scores, noise


def same_points(args, grid):
    """The same --trials and --sweep-seed at 1 and 3 ranks (one epoch on a tiny file) draw the
    points the 2-rank search drew: each model's `overrides` in the metrics, in order."""
    tiny = synth("search-tiny.h5", "--samples", 3000, "--features", 10, "--classes", 3, "--seed", SEED)
    drawn = {N: [entry["overrides"] for entry in grid.doc["sweep"]]}
    for n in (1, 3):
        doc = harness.mpidml(n, ["--data", tiny, "--model", "mlp", "--epochs", 1, *SPACE], args.mpiexec, quiet=True)
        drawn[n] = [entry["overrides"] for entry in doc["sweep"]]
    same = all(points == drawn[N] for points in drawn.values())
    progress(f"search: the sampled points at 1, 2, 3 ranks are {'identical' if same else 'NOT identical'}")
    return same


def small_comparison(args, path):
    """mpidml's halving at N=2 and scikit-learn's on one process, on the subsample `path`:
    the best (least wall time) of SMALL_REPEAT runs of each, one after the other."""
    subs, skls = [], []
    for _ in range(SMALL_REPEAT):
        subs.append(Search(args, path, "subsample-halving", HALVING))
        skls.append(sklearn_halving(path))
    skl = min(skls, key=lambda r: r["wall"]) if isinstance(skls[0], dict) else skls[0]
    return min(subs, key=lambda s: s.wall), skl


def sklearn_halving(path):
    """scikit-learn's HalvingRandomSearchCV over the same kind of space on one process (the
    epochs, max_iter, as its resource), on `path`'s rows standardized by their own moments.
    Returns a dict of its figures, or the reason it could not run."""
    try:
        from scipy.stats import loguniform
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.experimental import enable_halving_search_cv  # noqa: F401 (makes the next import work)
        from sklearn.model_selection import HalvingRandomSearchCV, ShuffleSplit
        from sklearn.neural_network import MLPClassifier
    except ImportError as e:
        return f"skipped: {e}"
    with h5py.File(path) as f:
        X, y, TX, Ty = (f[name][...] for name in ("train/X", "train/y", "test/X", "test/y"))
    mean, std = X.mean(0), X.std(0)
    X, TX = (X - mean) / std, (TX - mean) / std
    mlp = MLPClassifier(solver="sgd", momentum=0.9, nesterovs_momentum=False, random_state=SEED)
    space = {"learning_rate_init": loguniform(*LR), "hidden_layer_sizes": list(HIDDEN), "batch_size": list(BATCH)}
    search = HalvingRandomSearchCV(mlp, space, n_candidates=TRIALS, factor=ETA, resource="max_iter",
                                   min_resources=RUNG, max_resources=EPOCHS, scoring="accuracy", refit=True,
                                   cv=ShuffleSplit(n_splits=1, test_size=VALIDATION, random_state=SEED),
                                   random_state=SEED)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)     # max_iter is the resource: it stops on purpose
        search.fit(X, y)
    wall = time.perf_counter() - t0
    units = int(sum(np.asarray(search.n_candidates_) * np.asarray(search.n_resources_)))
    result = {"wall": wall, "refit": search.refit_time_, "units": units, "models": search.n_candidates_[0],
              "rungs": list(zip(search.n_candidates_, search.n_resources_)), "val": search.best_score_,
              "test": search.best_estimator_.score(TX, Ty), "options": options(search.best_params_)}
    progress(f"search: scikit-learn HalvingRandomSearchCV {wall:.1f} s, best_score_ {result['val']:.4f}, test "
             f"{result['test']:.4f} ({result['options']})")
    return result


# -- the report ---------------------------------------------------------------------------
def row(what, data, search, grid, wall=None, wall_s=None):
    """A table row of an mpidml search; `wall`, `wall_s`: where it ran more than once, the mean."""
    doc, full = search.doc, data == f"{ROWS // 1000}k"
    wall, wall_s = wall or search.wall, wall_s or doc["timing"]["wall_s"]
    gap = (grid.val("accuracy") - search.val("accuracy")) * 100
    return [what, data, N, len(doc["sweep"]), search.epoch_units(), f"{wall:.1f}", f"{wall_s:.1f}",
            f"{wall / grid.wall:.2f}" if full else "", f"{search.best} ({search.options(search.best)})",
            f"{search.val('accuracy'):.4f}", f"{search.val('loss'):.4f}", f"{doc['test']['accuracy']:.4f}",
            f"{gap:+.2f}" if full else ""]


def sklearn_row(skl):
    return [f"scikit-learn HalvingRandomSearchCV (MLPClassifier, sgd), best of {SMALL_REPEAT}",
            f"{SUBSAMPLE // 1000}k", "1 process", skl["models"], skl["units"], f"{skl['wall']:.1f}", "", "",
            skl["options"], f"{skl['val']:.4f}", "", f"{skl['test']:.4f}", ""]


def agreement(name, search):
    named = search.named()
    said = ", ".join(f"{k} {v}" for k, v in named.items())
    return target(f"{name}: {said}", len(set(named.values())) == 1,
                  f"search: {name} winner named alike by metrics, leaderboard and CSV")


def measure(args):
    path = teacher("search-teacher.h5")
    first = Search(args, path, "halving-1", HALVING)
    grid = Search(args, path, "grid", [])
    second = Search(args, path, "halving-2", HALVING)      # after the grid too: the load drifts
    same = same_points(args, grid)
    sub, skl = small_comparison(args, subsample(path))

    wall = (first.wall + second.wall) / 2
    wall_s = (first.doc["timing"]["wall_s"] + second.doc["timing"]["wall_s"]) / 2
    halving = f"mpidml --search halving (ETA {ETA}, --rung-epochs {RUNG})"
    rows = [row("mpidml --search grid (every model, every epoch)", f"{ROWS // 1000}k", grid, grid),
            row(halving + ", mean of 2 runs", f"{ROWS // 1000}k", first, grid, wall, wall_s),
            row(f"{halving}, best of {SMALL_REPEAT}", f"{SUBSAMPLE // 1000}k", sub, grid)]
    rows += [sklearn_row(skl)] if isinstance(skl, dict) else []
    text = problem_note(grid, first) + "\n\n"
    text += table(["search", "training rows", "ranks", "models", "epoch-units", "wall (s)", "wall_s (s)",
                   "x grid wall", "winner (its options)", "val accuracy", "val loss", "test accuracy",
                   "grid best - val accuracy (points)"], rows)
    text += "\n\n" + acceptance(grid, first, second, wall)
    text += ("\n\nThe same sampled points at any rank count: the same space, "
             f"`--trials {TRIALS} --sweep-seed {SEED}`, one epoch on a tiny file at 1 and 3 ranks against the "
             "2-rank search above, each model's `overrides` in the metrics: "
             + target("identical" if same else "different", same, "search: sampled points at 1, 2, 3 ranks") + ".")
    text += ("\n\nThe winner as the metrics (`best`), the leaderboard (its first row and `best:` line) and the "
             "`--results` CSV (its first row) name it: "
             + "; ".join(agreement(name, s) for name, s in (("grid", grid), ("halving", first),
                                                            ("halving on the subsample", sub))) + ".")
    text += "\n\n" + sklearn_note(skl, sub)
    return "Search: successive halving against the full search", text


def problem_note(grid, halving):
    rungs = ", ".join(map(str, halving.doc["halving"]["rungs"]))
    kept = " then ".join(str(len(d["kept"])) for d in halving.doc["halving"]["decisions"])
    return (f"A held-out style problem of bench/sections/search.py's own: {ROWS // 1000}k x {FEATURES} Gaussian "
            f"features, 10 classes drawn from the softmax of a random {FEATURES}-{TEACHER_WIDTH}-{CLASSES} tanh "
            f"network at temperature {TEMPERATURE} (`synth`'s blobs are Gaussian classes of one spread, which a linear "
            "boundary separates best; its `--kind nonlinear` plateaus for epochs before a few models break out, "
            f"which halving's first rungs cannot see), {VALIDATION:.0%} of the training rows held out for validation "
            f"({grid.doc['data']['validation_samples']:,} rows), {TEST_ROWS // 1000}k test rows. {TRIALS} MLPs "
            f"sampled by `--trials {TRIALS} --sweep-seed {SEED}` from lr loguniform({LR[0]:g}, {LR[1]:g}) x "
            "hidden choice(32 | 128 | 64,64) x batch size choice(64 256) (per rank), momentum SGD, "
            f"`--select val_accuracy`, {EPOCHS} epochs, N={N} on this 2-core shared VM (other jobs may run "
            f"beside). Halving's rungs end at epochs {rungs} and keep {kept} models; it ran before and after "
            "the full search, which ran once (minutes). Wall: the whole command, launch to exit; wall_s: the "
            "metrics' `timing.wall_s`. Epoch-units: epochs trained, summed over the models. Winner: the "
            "metrics' `best`, a model index (the same index is the same sampled point in every run on 400k rows).")


def acceptance(grid, first, second, wall):
    scores, noise = spread(grid)
    gap = (grid.val("accuracy") - first.val("accuracy")) * 100
    ratio = wall / grid.wall
    ratio_s = (first.doc["timing"]["wall_s"] + second.doc["timing"]["wall_s"]) / 2 / grid.doc["timing"]["wall_s"]
    kept = [d["kept"] for d in first.doc["halving"]["decisions"]]
    survived = [grid.best in k for k in kept]
    order = sorted(range(len(grid.doc["sweep"])), key=lambda i: (-grid.val("accuracy", i), i))
    again = second.best == first.best and second.val("accuracy") == first.val("accuracy")
    return ("Acceptance: halving's winner is "
            + target(f"{gap:.2f} points", gap <= 0.5, "search: halving winner below the grid best (points, <= 0.5)")
            + " below the full search's best validation accuracy (target <= 0.5), in "
            + target(f"{ratio:.2f}x", ratio <= 0.4, "search: halving wall / grid wall (target <= 0.4)")
            + f" its wall time (target <= 0.4; the two halving runs {first.wall:.1f} and {second.wall:.1f} s; by "
            f"wall_s {ratio_s:.2f}x), with {first.epoch_units()} epoch-units against {grid.epoch_units()} "
            f"({first.epoch_units() / grid.epoch_units():.2f}x). The full search's winner (model {grid.best}) "
            + ("survived every rung" if all(survived) else f"was stopped at rung {survived.index(False) + 1}")
            + f"; halving's winner (model {first.best}) is number {order.index(first.best) + 1} in the full "
            f"search's ranking. The second halving run chose {'the same model with the same' if again else 'a different model or'} "  # noqa: E501
            f"validation accuracy. Noise: the full search's validation accuracies run from {scores[-1]:.4f} to "
            f"{scores[0]:.4f} (median {np.median(scores):.4f}, second best {scores[1]:.4f}); an accuracy near the "
            f"best has a standard error of {noise * 100:.2f} points on {grid.doc['data']['validation_samples']:,} "
            "rows.")


def sklearn_note(skl, sub):
    if not isinstance(skl, dict):
        return f"scikit-learn's HalvingRandomSearchCV: {skl}."
    rungs = ", ".join(f"{n} at max_iter {r}" for n, r in skl["rungs"])
    return (f"scikit-learn {__import__('sklearn').__version__}: `HalvingRandomSearchCV(MLPClassifier(solver='sgd', "
            f"momentum=0.9), n_candidates={TRIALS}, factor={ETA}, resource='max_iter', min_resources={RUNG}, "
            f"max_resources={EPOCHS})` on the first {SUBSAMPLE:,} training rows (standardized; one "
            f"{VALIDATION:.0%} ShuffleSplit for validation, as mpidml holds out; the same test rows), lr "
            f"loguniform({LR[0]:g}, {LR[1]:g}) from scipy, the same hidden and batch choices, one process: "
            f"candidates {rungs}. Each rung trains its models from scratch for max_iter epochs (mpidml's go on from "
            f"where they were), and the winner is refit on all {SUBSAMPLE:,} rows ({skl['refit']:.1f} s of its "
            f"wall); val accuracy is its `best_score_`, test accuracy the refit winner's. mpidml's halving on the "
            f"same rows at N={N} (two processes against one): {sub.wall:.1f} s against "
            f"{skl['wall']:.1f} s ({sub.wall / skl['wall']:.2f}x; mpidml's launch and setup included), val "
            f"accuracy {sub.val('accuracy'):.4f} against {skl['val']:.4f}, test {sub.doc['test']['accuracy']:.4f} "
            f"against {skl['test']:.4f}. The two draw different points "
            "(different generators) and batch differently (mpidml's batch is per rank, averaged every 8 steps).")
