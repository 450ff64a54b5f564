"""Command line: parse options, build a configuration, dispatch, and end every rank cleanly.

Errors: every rank parses the same command line, so a bad option fails on all of them
at once and only rank 0 prints it. Errors found in the data are agreed by all ranks
(comm.Group.agree) before anyone reports them. Anything that fails on one rank alone
(a stall, a bug) prints from that rank and calls MPI_Abort, so no rank is left waiting
in a collective (mpidml/abort.py); when every rank fails alike (Ctrl-C, which the launcher
forwards to all, or a bug), rank 0 alone reports it; signals: mpidml/guard.py. Exit codes:
0 ok, 1 internal error, 2 bad usage or input, 3 diverged, 4 a peer rank stalled, 75 stopped
by --checkpoint-signal (SIGTERM, SIGUSR1, SIGUSR2, SIGHUP) with a checkpoint written (batch
scripts requeue), 130 interrupted.
"""
import argparse
import logging
import math
import os
import sys

from .. import __version__
from ..config import ON_FAILURE, TrainConfig, bundled_dataset
from ..data.partition import PARTITION_MODES
from ..errors import STOPPED, MpidmlError, Stopped, UsageError
from ..files.progress import quiet_stdout, setup_logging
from ..learn.cadence import AUTO
from ..runtime.abort import abort, leave_it_to_rank_0
from ..runtime.guard import Interrupted, installed
from ..training import sweep
from ..training.sweep import SEARCHES, SELECTIONS

log = logging.getLogger("mpidml")
SUBCOMMANDS = ("train", "evaluate", "predict", "data", "info", "plot", "results")


S = argparse.SUPPRESS


class _Formatter(argparse.HelpFormatter):
    """Shows each option's default, unless its help says it already or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, S)) or not action.option_strings:
            return text
        return text + " (default %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing and exiting; --help shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(message, agreed=True)   # every rank parses the same command line


LARGEST = 2 ** 62          # counts and sizes beyond it overflow numpy's int64 arithmetic
# every float option feeds arithmetic (epochs x steps, megabytes x 2**20, rates x gradients)
# that a value near float's range overflows; none means anything sensible beyond this
LARGEST_FLOAT = 1e9


def _whole(text, least):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a whole number, got {text!r}") from None
    if v < least:
        raise argparse.ArgumentTypeError(f"must be {'positive' if least else 'at least 0'}, got {v}")
    if v > LARGEST:
        raise argparse.ArgumentTypeError(f"must be at most 2**62, got {text}")
    return v


def _positive_int(text):
    return _whole(text, 1)


def _sync_every(text):
    """--sync-every: a count of steps, or auto (cadence.py chooses it)."""
    return AUTO if text.strip().lower() == AUTO else _positive_int(text)


def _nonneg_int(text):
    return _whole(text, 0)


def _stall_timeout(text):
    """0 (never) or at least a second: below, healthy ranks are accused between heartbeats."""
    v = _nonneg_float()(text)
    if 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be 0 (never) or at least 1 second, got {text}")
    return v


def _seed(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a whole number, got {text!r}") from None
    if not 0 <= v < 2 ** 63:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**63-1, got {v}")
    return v


def _number(text):
    """A float within LARGEST_FLOAT of 0 (NaN and infinities are left to the callers' checks)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number, got {text!r}") from None
    if math.isfinite(v) and abs(v) > LARGEST_FLOAT:
        raise argparse.ArgumentTypeError(f"must be at most {LARGEST_FLOAT:g}, got {text}")
    return v


def _positive_float(text):
    v = _number(text)
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def _nonneg_float(upper=None):
    def parse(text):
        v = _number(text)
        if not math.isfinite(v) or v < 0 or (upper is not None and v >= upper):
            bound = f" and below {upper:g}" if upper is not None else ""
            raise argparse.ArgumentTypeError(f"must be a finite number >= 0{bound}, got {text}")
        return v
    return parse


def _hidden(text):
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden expects widths like 128,64, got {text!r}") from None
    if any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"--hidden widths must be positive, got {text!r}")
    return widths


def _signals(text):
    from ..runtime.stop import parse_signals
    try:
        parse_signals(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _size(text):
    """--memory-limit: auto, or a size with a unit (stream.parse_size)."""
    from ..data.stream import parse_size
    try:
        parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _path(text):
    """A file or directory name: an empty one would silently mean none, or the bundled data."""
    if not text:
        raise argparse.ArgumentTypeError("expects a path, got ''")
    return text




def add_train_options(p):
    """Every train option; defaults live in TrainConfig (shown in --help)."""
    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--data", type=_path, default=S, metavar="PATH",
                   help="HDF5 file (default: the bundled digits dataset)")
    g.add_argument("--x-dataset", default=S, metavar="NAME",
                   help="features dataset, e.g. /features, or pandas columns /df:a,b (default: /train/X or /X; "
                        "with --y-dataset alone: AnnData's /X, the rest of a pandas frame)")
    g.add_argument("--y-dataset", default=S, metavar="NAME",
                   help="labels dataset, e.g. obs/cell_type (AnnData) or /df:label (pandas column) "
                        "(default: /train/y or /y)")
    g.add_argument("--test-fraction", type=_nonneg_float(1.0), default=S, metavar="F",
                   help=f"held-out share when the file has no /test (default {d.test_fraction})")
    g.add_argument("--distribute", choices=("scatter", "read"), default=S,
                   help="rank 0 streams partitions to the ranks, or each rank reads its own rows (default scatter)")
    g.add_argument("--partition", choices=PARTITION_MODES, default=S,
                   help="rows to ranks: seeded permutation of row blocks, or contiguous runs (default blocks)")
    g.add_argument("--block-rows", type=_positive_int, default=S, metavar="R",
                   help="rows per partition block (default: about 1/1024 of the rows, whole HDF5 chunks)")
    g.add_argument("--partition-seed", type=_seed, default=S, metavar="S",
                   help="seed of the block permutation and test split (default 0)")
    g.add_argument("--chunk-mb", type=_positive_float, default=S, metavar="MB",
                   help=f"a reading rank's buffer when rows are passed on: two windows, one read while the other "
                        f"is sent (default {d.chunk_mb:g})")
    g.add_argument("--stream", action=argparse.BooleanOptionalAction, default=S,
                   help="leave the rows in the file: every rank reads its rows chunk by chunk while it trains "
                        "(default: only where a rank's rows would take more than half of --memory-limit)")
    g.add_argument("--memory-limit", type=_size, default=S, metavar="SIZE",
                   help="the memory each rank may use, e.g. 4G or 512M (default auto: its host's memory, "
                        "or cgroup or address-space limit, shared by the host's ranks)")
    g.add_argument("--stream-chunk-mb", type=_positive_float, default=S, metavar="MB",
                   help="a streamed chunk's size; two per model are held (default 64, less where "
                        "--memory-limit asks)")
    g.add_argument("--stage-dir", type=_path, default=S, metavar="DIR",
                   help="node-local scratch (e.g. $TMPDIR): rank 0 sends every rank its rows once into a "
                        "file there, which it streams from every epoch (for files the other ranks cannot "
                        "read); removed at the end, reused by --resume; implies --stream")
    g.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=S,
                   help="scale features (and regression targets) by global mean/std (default on)")
    g.add_argument("--dtype", choices=("float32", "float64"), default=S,
                   help="data and parameter precision (default float32: half the memory and traffic)")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=("auto", "linear", "logistic", "softmax", "mlp"), default=S,
                   help="auto: linear for float targets, logistic for 2 classes, softmax for more")
    g.add_argument("--hidden", type=_hidden, default=S, metavar="W1,W2", help="MLP hidden widths (default 128)")
    g.add_argument("--activation", choices=("relu", "tanh"), default=S, help="MLP activation (default relu)")
    g = p.add_argument_group("optimization (per rank)")
    g.add_argument("--epochs", type=_positive_int, default=S, metavar="E",
                   help="passes over the data (default 10, more for small data so that every rank takes "
                        "at least 300 steps, at most 100 epochs; when resuming, the saved run's)")
    g.add_argument("--batch-size", type=_positive_int, default=S, metavar="B",
                   help=f"minibatch rows per rank (default {d.batch_size})")
    g.add_argument("--lr", type=_nonneg_float(), default=S, metavar="LR", help=f"learning rate (default {d.lr})")
    g.add_argument("--l2", type=_nonneg_float(), default=S, metavar="L",
                   help=f"L2 penalty on weights (default {d.l2})")
    g.add_argument("--optimizer", choices=("sgd", "momentum", "adam"), default=S, help="default momentum")
    g.add_argument("--momentum", type=_nonneg_float(1.0), default=S, metavar="MU", help="default 0.9")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=S, help="Nesterov momentum")
    g.add_argument("--schedule", choices=("constant", "step", "cosine"), default=S, help="learning-rate schedule")
    g.add_argument("--warmup-epochs", type=_nonneg_float(), default=S, metavar="E",
                   help="linear learning-rate warmup")
    g.add_argument("--step-epochs", type=_positive_int, default=S, metavar="E",
                   help="step schedule: multiply by --gamma every E epochs")
    g.add_argument("--gamma", type=_nonneg_float(), default=S, help="step schedule factor (default 0.1)")
    g.add_argument("--clip-norm", type=_nonneg_float(), default=S, metavar="C",
                   help="clip the gradient's global norm to C (0: off)")
    g.add_argument("--seed", type=_seed, default=S, help="same seed and same ranks give bit-identical results")
    g = p.add_argument_group("aggregation")
    g.add_argument("--sync", choices=("average", "gradients"), default=S,
                   help="average: model averaging every K steps (local SGD); gradients: Allreduce every step")
    g.add_argument("--sync-every", type=_sync_every, default=S, metavar="K",
                   help=f"local steps between averagings, or auto: chosen (and whether and how far to overlap, "
                        f"unless --overlap/--no-overlap says) from measured step and average times "
                        f"(default {d.sync_every})")
    g.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=S,
                   help="run the averaging as a non-blocking collective behind the next steps")
    g.add_argument("--merge-after", type=_positive_int, default=S, metavar="D",
                   help="with --overlap: merge each average D steps after it started, at most K (default K/2, "
                        "at least 1: "
                        "fewer steps stay closer to blocking averaging, more hide more communication)")
    g.add_argument("--stall-timeout", type=_stall_timeout, default=S, metavar="S",
                   help="end the job when a collective waits longer than S seconds, naming the ranks that "
                        f"stopped (0: never; default {d.stall_timeout:g})")
    g.add_argument("--on-failure", choices=ON_FAILURE, default=S,
                   help="when a rank is lost: continue with the others, or stop, checkpointed, exit 75; both need "
                        "Open MPI's mpirun --with-ft ulfm (continue is the default there); under MPICH the launcher "
                        "ends the job")
    g.add_argument("--min-ranks", type=_positive_int, default=S, metavar="M",
                   help="with --on-failure continue: stop (checkpointed, exit 75) when fewer than M ranks are left "
                        "(default 1)")
    g.add_argument("--wait", choices=("auto", "spin", "nap"), default=S,
                   help="how a rank waits for a collective: spin (keep polling MPI for up to 0.2 s, then nap; "
                        "fastest with a core per rank), nap (poll 2 ms, then sleep; for more ranks than cores), "
                        "auto: spin where every rank on the host has a core of its own (default)")
    g = p.add_argument_group("sweeps, validation, early stopping")
    g.add_argument("--sweep", action="append", default=S, metavar='"KEY=V1 V2"',
                   help="train one model per point of the grid at once, on the same partitions (repeatable: the "
                        "grid is the product); keys: lr, l2, optimizer, momentum, hidden, activation, sync-every, "
                        "batch-size, schedule, warmup-epochs, clip-norm, seed. Values separated by spaces: "
                        '--sweep "hidden=128 256,128". Or a sampled axis (--trials points): '
                        '"lr=loguniform(1e-4,1e-1)", uniform(A,B) (lr, l2, momentum, warmup-epochs, clip-norm), '
                        "int(A,B) (sync-every, batch-size, seed: whole numbers A to B, both included), "
                        'choice(V1 V2 ...) (any key; values separated by spaces or |: "hidden=choice(64 128,64)")')
    g.add_argument("--validation-fraction", type=_nonneg_float(1.0), default=S, metavar="F",
                   help="training rows held out to choose the best model and to stop early (default 0.1 in a "
                        "sweep, else 0)")
    g.add_argument("--early-stopping", type=_positive_int, default=S, metavar="P",
                   help="stop a model after P epochs without a better validation loss and keep its best weights")
    g.add_argument("--save-dir", type=_path, default=S, metavar="DIR",
                   help="in a sweep: every model's file as DIR/model-NNN.h5 (--save: the best model)")
    g.add_argument("--trials", type=_positive_int, default=S, metavar="N",
                   help="points sampled from a sweep's sampled axes (loguniform, uniform, int, choice), each "
                        f"crossed with its grid axes (default {sweep.DEFAULT_TRIALS})")
    g.add_argument("--sweep-seed", type=_seed, default=S, metavar="S",
                   help="the seed the sweep's points are sampled with (default 0): the same points at any "
                        "rank count")
    g.add_argument("--search", choices=SEARCHES, default=S,
                   help="grid: every model trains every epoch; halving: successive halving, after each rung "
                        "only the best 1/ETA of the models go on (default grid)")
    g.add_argument("--halving-factor", type=_positive_int, default=S, metavar="ETA",
                   help="halving keeps the best 1/ETA of the models at each rung (default 3, at least 2)")
    g.add_argument("--rung-epochs", type=_positive_int, default=S, metavar="R",
                   help="halving: the first rung's epochs; each next rung trains ETA times as many (default 1)")
    g.add_argument("--select", choices=SELECTIONS, default=S,
                   help="the validation metric that ranks the models and keeps the best weights (default val_loss)")
    g.add_argument("--results", type=_path, default=S, metavar="CSV",
                   help="one row per model of a sweep (of a single run: one row), best first by --select; "
                        "pandas reads it as it is")
    g = p.add_argument_group("output")
    g.add_argument("--save", type=_path, default=S, metavar="PATH", help="model file (HDF5), resumable")
    g.add_argument("--checkpoint-every", type=_positive_int, default=S, metavar="E",
                   help="rewrite --save atomically every E epochs")
    g.add_argument("--keep-checkpoints", type=_positive_int, default=S, metavar="K",
                   help="also keep the last K epoch checkpoints beside --save, as STEM.epoch0007.h5 "
                        "(with --checkpoint-every, default every epoch)")
    g.add_argument("--resume", type=_path, default=S, metavar="PATH",
                   help="continue from a model file up to --epochs in total (model options come from the file; "
                        "epochs, lr, schedule, batch size, sync and ranks may change; other data is refused)")
    g.add_argument("--checkpoint-signal", type=_signals, default=S, metavar="SIGS",
                   help=f"signals that stop every rank at the next synchronisation step, write --save and exit "
                        f"{STOPPED} for the batch script to requeue (default {d.checkpoint_signal}; none: off)")
    g.add_argument("--metrics-json", type=_path, default=S, metavar="PATH",
                   help="rank 0 writes the metrics document here")
    g.add_argument("--trace", type=_path, default=S, metavar="PATH",
                   help="Chrome trace JSON of every rank's tasks (Perfetto)")
    g.add_argument("--quiet", action="store_true", default=S, help="nothing but warnings and errors")
    g.add_argument("--verbose", action="store_true", default=S,
                   help="every epoch line (beyond 10 epochs: the first, the last and one a second)")
    g.add_argument("--progress-bar", action="store_true", default=S,
                   help="live bar within each epoch on rank 0 (automatic when its output reaches a terminal, "
                        "also through MPICH's mpiexec)")
    g.add_argument("--config", type=_path, metavar="TOML",
                   help="options from a TOML file (keys as options, with _ or -)")


def add_common(p):
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="BLAS threads per rank (default 1, or MPIDML_THREADS)")


def build_parser():
    top = Parser(prog="mpidml", description="Data-parallel training on HDF5 data with MPI. "
                 "Run as: mpiexec -n N python -m mpidml [train] [OPTIONS]")
    top.add_argument("--version", action="version", version=f"mpidml {__version__}")
    sub = top.add_subparsers(dest="command", parser_class=Parser)
    p = sub.add_parser("train", help="train a model (the default command)",
                       description="Train on an HDF5 file across the MPI ranks; defaults in parentheses.")
    add_train_options(p)
    add_common(p)
    p = sub.add_parser("evaluate", help="test metrics of a saved model")
    p.add_argument("--model", type=_path, required=True, metavar="M.h5")
    p.add_argument("--data", type=_path, required=True, metavar="F.h5")
    p.add_argument("--metrics-json", type=_path, metavar="PATH")
    p.add_argument("--x-dataset", metavar="NAME", help="rows to score (default /test/X, /X or /train/X)")
    p.add_argument("--y-dataset", metavar="NAME", help="their labels (default /test/y, /y or /train/y)")
    add_common(p)
    p = sub.add_parser("predict", help="predictions of a saved model for every row")
    p.add_argument("--model", type=_path, required=True, metavar="M.h5")
    p.add_argument("--data", type=_path, required=True, metavar="F.h5")
    p.add_argument("--out", type=_path, required=True, metavar="P.h5",
                   help="the predictions, as HDF5 (.h5, .hdf5) or CSV (.csv) by the extension")
    p.add_argument("--x-dataset", metavar="NAME", help="rows to predict (default /test/X, /X or /train/X)")
    add_common(p)
    p = sub.add_parser("data", help="synth, convert or inspect data files")
    dsub = p.add_subparsers(dest="data_command", parser_class=Parser, required=True)
    q = dsub.add_parser("synth", help="synthetic float32 data in the default layout")
    q.add_argument("--samples", type=_positive_int, default=10000, help="rows of /train")
    q.add_argument("--features", type=_positive_int, default=20, help="columns of X")
    q.add_argument("--classes", type=_nonneg_int, default=2, help="0: regression")
    q.add_argument("--test-samples", type=_nonneg_int, default=0, help="rows of a /test set (default none)")
    q.add_argument("--noise", type=_nonneg_float(), default=1.0, help="spread of each class")
    q.add_argument("--kind", choices=("blobs", "nonlinear"), default="blobs",
                   help="blobs: Gaussian classes (linear); nonlinear: classes no linear model separates")
    q.add_argument("--sorted", action="store_true", help="store rows sorted by label")
    q.add_argument("--chunk-rows", type=_nonneg_int, default=None,
                   help="rows per HDF5 chunk (default: about 1 MB; 0: contiguous layout, uncompressed only)")
    q.add_argument("--compression", choices=("none", "gzip", "lzf"), default="none", help="HDF5 filter")
    q.add_argument("--seed", type=_seed, default=0, help="same seed, same file")
    q.add_argument("--out", type=_path, required=True, metavar="F.h5", help="the file to write")
    q = dsub.add_parser("convert", help="CSV (with header), NPY, NPZ or Parquet to the default layout")
    q.add_argument("src", type=_path,
                   help="a .csv/.tsv/.txt, .npy, .npz or .parquet file (Parquet needs mpidml[parquet])")
    q.add_argument("dst", type=_path)
    q.add_argument("--label", metavar="COLUMN",
                   help="label column (default: the one named label, class, target, y ... in any case, or the last)")
    q.add_argument("--label-type", choices=("auto", "class", "float"), default="auto",
                   help="auto (the default): the column's type decides: integers and text are classes, floats "
                   "are targets to fit (regression)")
    q.add_argument("--features", metavar="A,B,C", help="feature columns (default: every column but the label)")
    q.add_argument("--drop", metavar="A,B", help="columns that are no features (ids, leaks)")
    q.add_argument("--dropna", action="store_true",
                   help="drop rows with a missing value (default: refused, naming the first)")
    q.add_argument("--test-fraction", type=_nonneg_float(1.0), default=0.0, metavar="F",
                   help="rows held out as /test, drawn with --seed (default 0: none)")
    q.add_argument("--stratify", action="store_true", help="hold out each class in proportion")
    q.add_argument("--seed", type=_seed, help="seed of the test split (default 0)")
    q.add_argument("--delimiter", metavar="CHAR", help="CSV field separator, or tab (default: sniffed among , ; tab |)")
    q = dsub.add_parser("inspect", help="datasets, shapes, dtypes, chunking, class counts")
    q.add_argument("path", type=_path)
    p = sub.add_parser("info", help="versions, MPI library, ranks, BLAS threads")
    add_common(p)
    p = sub.add_parser("plot", help="curves and per-rank time breakdown from a metrics JSON")
    p.add_argument("metrics", type=_path)
    p.add_argument("-o", "--out", type=_path, required=True)
    p = sub.add_parser("results", help="a sweep's leaderboard from its metrics JSON (and its --results CSV)")
    p.add_argument("metrics", type=_path)
    p.add_argument("-o", "--out", type=_path, metavar="CSV", help="also write one row per model, best first")
    return top


def parse(argv):
    parser = build_parser()
    if list(argv) in (["-h"], ["--help"]):      # the commands, then every train option
        parser.print_help()
        sys.stdout.write("\nWith no command, mpidml trains; its options (mpidml train --help):\n\n")
        parser._subparsers._group_actions[0].choices["train"].print_help()
        raise SystemExit(0)
    _launcher_options(argv)
    if not argv or argv[0].startswith("-") and argv[0] != "--version":
        argv = ["train", *argv]
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = parser._subparsers._group_actions[0].choices.get(argv[0], parser)
        if getattr(args, "data_command", None):
            command = command._subparsers._group_actions[0].choices[args.data_command]
        options = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
        hint = _did_you_mean(unknown[0].split("=")[0], options) if unknown[0].startswith("--") else ""
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}{hint}", agreed=True)
    return args


LAUNCHER_OPTIONS = ("-n", "-np", "--np", "-N", "-ppn", "--ppn", "-hosts", "--hosts", "-host", "--host")


def _launcher_options(argv):
    """`mpidml -n 2 ...` (mpiexec forgotten): say where -n goes rather than that it is unknown."""
    for i, arg in enumerate(argv):
        if arg in LAUNCHER_OPTIONS:
            rest = " ".join(argv[:i] + argv[i + 2:])
            raise UsageError(f"{arg} is an mpiexec option: mpiexec {' '.join(argv[i:i + 2])} python -m mpidml "
                             f"{rest}".rstrip(), agreed=True)


def _did_you_mean(word, names):
    """ "; did you mean --hidden?" for a mistyped `word` among `names`, else "". """
    import difflib
    close = difflib.get_close_matches(word, sorted(names), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _key(name):
    return name.replace("-", "_")


def load_toml(path):
    import stat
    import tomllib
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):      # a FIFO nobody writes would block for ever
            raise UsageError(f"--config {path}: not a regular file")
    except OSError:
        pass                                             # open() below names the problem
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {path}: not valid TOML ({e})") from None


# where a setting came from, lowest precedence first: a later level overrides an earlier
CONFIG_FILE, ENVIRONMENT, PYTHON, COMMAND_LINE = range(4)


def make_config(args, environ=os.environ, options=None, origin=""):
    """TrainConfig from defaults < --config file < MPIDML_* environment < command line.

    `options`: Python values keyed like the options (mpidml.train's keywords, an
    estimator's parameters; None means the default), checked as --config values are,
    in the command line's place; `origin` starts their error messages."""
    cfg = TrainConfig()
    fields = TrainConfig.fields()
    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    actions = {a.dest: a for a in train_parser._actions}

    def convert(key, value, origin):
        """A TOML or environment value through the same checks as the command line."""
        action = actions[key]
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if key == "hidden" and isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if isinstance(getattr(cfg, key), bool):
            if isinstance(value, bool):
                return value
            if str(value).lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise UsageError(f"{origin}: expects true or false, got {value!r}")
            return str(value).lower() in ("1", "true", "yes", "on")
        if not isinstance(value, str) and action.type in (None, _path):    # TOML gave a number, list, table
            raise UsageError(f"{origin}: expects a string, got {type(value).__name__} {value!r}")
        if action.type is not None:
            try:
                return action.type(str(value))
            except argparse.ArgumentTypeError as e:
                raise UsageError(f"{origin}: {e}") from None
            except ValueError:
                raise UsageError(f"{origin}: invalid value {value!r}") from None
        if action.choices and value not in action.choices:
            raise UsageError(f"{origin}: {key} must be one of {', '.join(action.choices)}, got {value!r}")
        return value

    given = {}          # option -> (precedence, where its value came from, in words)

    def apply(table, where, level):
        """A table of values (a --config file's, `options`) into cfg; returns its sweep grid."""
        table = {k: v for k, v in table.items() if v is not None}
        grid = table.pop("sweep", None)
        axes = None
        if grid is not None:
            if not isinstance(grid, dict) or not all(isinstance(v, (list, tuple, str)) for v in grid.values()):
                raise UsageError(f"{where}[sweep] must be a table of lists (lr = [0.1, 0.01]) or of distributions "
                                 '(lr = "loguniform(1e-4, 1e-1)")')
            axes = tuple(sweep.axis(k, v, convert, f"{where}[sweep] {k}") for k, v in grid.items())
        for key, value in table.items():
            k = _key(key)
            if k not in fields or k not in actions:
                raise UsageError(f"{where}unknown option {key!r}{_did_you_mean(k, fields)}")
            setattr(cfg, k, convert(k, value, f"{where}{key}"))
            given[k] = (level, f"{where}{key} = {value!r}")
        return axes and (axes, level, f"{where}[sweep]")

    grid = {}           # swept option -> (values, precedence, where): per axis, the highest wins

    def sweep_from(found):
        """A source's axes into the grid: an axis it sweeps replaces a lower source's sweep of
        that option (as a value does), the lower source's other axes stay."""
        if found:
            axes, level, where = found
            sweep.check(axes)
            grid.update({key: (values, level, where) for key, values in axes})

    if getattr(args, "config", None):
        sweep_from(apply(load_toml(args.config), f"--config {args.config}: ", CONFIG_FILE))
    for k in fields:
        env = "MPIDML_" + k.upper()
        if env in environ and k == "sweep":
            texts = [t for t in environ[env].split(";") if t.strip()]       # axes: "lr=0.1 0.01; l2=0 1e-4"
            sweep_from((sweep.parse(texts, convert, env), ENVIRONMENT, env))
        elif env in environ and k in actions:
            setattr(cfg, k, convert(k, environ[env], env))
            given[k] = (ENVIRONMENT, f"{env}={environ[env]}")
    if options:
        sweep_from(apply(options, origin, PYTHON))
    for k, v in vars(args).items():
        if k == "sweep":
            sweep_from((sweep.parse(v, convert), COMMAND_LINE, "--sweep"))
        elif k in fields:
            setattr(cfg, k, v)
            given[k] = (COMMAND_LINE, f"--{k.replace('_', '-')} {_option_text(v)}")
    _check_swept_alone(grid, given)
    axes = tuple((key, values) for key, (values, _, _) in grid.items())
    cfg.given = frozenset(given)
    cfg.config_file = getattr(args, "config", None) or ""
    cfg.sweep = axes
    _check_sweep(cfg)
    if not cfg.data:
        cfg.data = bundled_dataset()
    cfg.hidden = tuple(cfg.hidden)
    if cfg.checkpoint_every and not (cfg.save or cfg.save_dir):
        raise UsageError("--checkpoint-every needs --save PATH (the file it rewrites)")
    if cfg.keep_checkpoints:
        if not cfg.save:
            raise UsageError("--keep-checkpoints needs --save PATH (the checkpoints are kept beside it)")
        cfg.checkpoint_every = cfg.checkpoint_every or 1
    hidden_given = "hidden" in vars(args) or (options or {}).get("hidden") is not None
    if cfg.model != "mlp" and hidden_given and not (cfg.resume and "model" not in cfg.given):
        raise UsageError(f"--hidden applies to --model mlp, not --model {cfg.model}")
    if cfg.merge_after and not cfg.overlap:
        raise UsageError("--merge-after applies to --overlap (a blocking average merges at once)")
    if cfg.sync_every == AUTO:
        _check_auto(cfg)
    elif cfg.overlap:             # the effective D is what the metrics and the model file record
        from ..learn.aggregate import default_merge_after
        cfg.merge_after = cfg.merge_after or default_merge_after(cfg.sync_every)
    if cfg.sync_every != AUTO and cfg.merge_after > cfg.sync_every:
        raise UsageError(f"--merge-after {cfg.merge_after} must be at most --sync-every {cfg.sync_every}: "
                         "a round merges before the next one starts")
    if cfg.sync == "gradients" and cfg.overlap:
        raise UsageError("--overlap applies to --sync average (gradient Allreduce runs every step)")
    return cfg


def _check_auto(cfg):
    """--sync-every auto chooses K and D together, for model averaging."""
    if cfg.sync == "gradients":
        raise UsageError("--sync-every auto applies to --sync average (a gradient Allreduce runs every step)")
    if cfg.merge_after:
        raise UsageError("--merge-after comes with a fixed --sync-every K: --sync-every auto chooses D with K")


def _option_text(value):
    """An option's value as the command line writes it."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _check_swept_alone(grid, given):
    """A swept option set alone too, at the sweep's precedence or above (`--lr 0.5` beside
    `--sweep "lr=0.1 0.2"`), would be silently replaced by the sweep's values: refused.
    One set below it (a --config file's lr under a command-line sweep) is simply overridden."""
    for key, (values, level, where) in grid.items():
        if key in given and given[key][0] >= level:
            raise UsageError(f"{given[key][1]} contradicts {where} {key.replace('_', '-')}="
                             f"{sweep.axis_text(values)}: a swept option takes the sweep's values; "
                             "give one of them")


def _check_search(cfg):
    """--search halving and its options: a sweep, validation rows to rank on, ETA >= 2."""
    if cfg.search != "halving":
        for key in ("halving_factor", "rung_epochs"):
            if key in cfg.given:
                raise UsageError(f"--{key.replace('_', '-')} applies to --search halving")
        return
    if not cfg.sweep:
        raise UsageError("--search halving needs a sweep (--sweep KEY=...) of models to choose from")
    if not cfg.validation_fraction:
        raise UsageError("--search halving ranks models on validation rows: --validation-fraction F (F > 0)")
    if cfg.halving_factor < 2:
        raise UsageError(f"--halving-factor {cfg.halving_factor}: must be at least 2 (the best 1/ETA go on)")


def _check_sweep(cfg):
    """The sweep's and validation's option combinations (the effective fraction recorded)."""
    if cfg.validation_fraction is None:
        cfg.validation_fraction = 0.1 if cfg.sweep else 0.0
    if cfg.early_stopping and not cfg.validation_fraction:
        raise UsageError("--early-stopping needs validation rows: --validation-fraction F (F > 0)")
    if cfg.save_dir and not cfg.sweep:
        raise UsageError("--save-dir applies to --sweep (a single run writes --save)")
    _check_search(cfg)
    if cfg.stage_dir:
        if "stream" in cfg.given and not cfg.stream:
            raise UsageError("--stage-dir streams from the staged copy: it contradicts --no-stream")
        if "$" in cfg.stage_dir or cfg.stage_dir.startswith("~"):
            raise UsageError(f"--stage-dir {cfg.stage_dir}: a variable or ~ that no shell expanded; give the path "
                             "(in a batch script: --stage-dir \"$TMPDIR\")")
        cfg.stream = True           # the effective options say that it streams
    _check_trials(cfg)
    if not cfg.sweep:
        return
    if cfg.keep_checkpoints:
        raise UsageError("--keep-checkpoints applies to a single run; a sweep keeps each model's last "
                         "checkpoint in --save-dir")
    if cfg.checkpoint_every and not cfg.save_dir:
        raise UsageError("--checkpoint-every in a sweep needs --save-dir DIR (every model's checkpoint)")
    swept = {k for k, _ in cfg.sweep}
    if "hidden" in swept or "activation" in swept:
        if cfg.model != "mlp":
            raise UsageError(f"--sweep of {'hidden' if 'hidden' in swept else 'activation'} needs --model mlp")
    values = dict(cfg.sweep).get("sync_every")
    if values is not None and not isinstance(values, sweep.Sampled) and AUTO in values:
        _check_auto(cfg)            # the models that choose their own
        values = [v for v in values if v != AUTO]
    if values and cfg.overlap and cfg.merge_after:
        every = sweep.smallest(values)
        if cfg.merge_after > every:
            raise UsageError(f"--merge-after {cfg.merge_after} exceeds a swept --sync-every {every}")


def _check_trials(cfg):
    """--trials counts sampled points: without a sampled axis it would mean nothing. The
    effective count (the default where an axis is sampled) is what the metrics record."""
    if not sweep.is_sampled(cfg.sweep):
        if cfg.trials:
            raise UsageError("--trials applies to a sweep with a sampled axis (loguniform, uniform, int, choice), "
                             'e.g. --sweep "lr=loguniform(1e-4,1e-1)"')
        return
    cfg.trials = cfg.trials or sweep.DEFAULT_TRIALS
    models = sweep.count(cfg.sweep, cfg.trials)
    if models > sweep.MAX_MODELS:
        raise UsageError(f"--trials {cfg.trials} makes {models} models, more than {sweep.MAX_MODELS} in one job")


def run_command(args, comm):
    if args.command == "train":
        try:
            cfg = make_config(args)
        except UsageError as e:
            e.agreed = True                      # same options, same verdict on every rank
            raise
        setup_logging(comm.rank, cfg.quiet)
        from ..runtime import ft
        from ..training import session
        if ft.fault_tolerance().available:
            ft.quiet_libnbc()
        session.run(cfg, comm)
        return 0
    setup_logging(comm.rank)
    from ..runtime.comm import Group
    from ..training.session import report
    from . import tools
    group = Group(comm)
    try:
        return tools.run(args, group, report)
    finally:
        group.close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    guard = installed()
    try:
        try:
            return _run(argv, comm, rank, guard)
        except BaseException:
            if guard:
                guard.disarm()               # reporting it: a signal now changes nothing
            raise
    except Stopped as e:                     # every rank stopped together, checkpointed
        if getattr(e, "reporter", rank == 0):
            sys.stderr.write(f"mpidml: {e}\n")
        return e.code
    except MpidmlError as e:
        if e.agreed and not getattr(e, "reporter", rank == 0):     # rank 0, or the one after a lost rank 0
            return e.code
        if getattr(e, "silent", False):      # another rank reports this one
            abort(comm, e.code)
        _fatal(str(e), e.code, comm, alone=not e.agreed, debug=debug, everywhere=e.everywhere)
        return e.code
    except KeyboardInterrupt as e:       # Ctrl-C, or guard.Interrupted
        code, message = (e.code, e.message) if isinstance(e, Interrupted) else (130, "interrupted")
        _fatal(message if rank == 0 else f"rank {rank}: {message}", code, comm, alone=True, debug=debug,
               everywhere=True)
        return code
    except BrokenPipeError:              # `mpidml info | head`: the reader has what it wanted
        quiet_stdout()
        return 0
    except MemoryError:
        _fatal(f"rank {rank}: out of memory; use --stream (or a smaller --memory-limit), a smaller --batch-size, "
               "--hidden or --chunk-mb, or more ranks "
               "(less data per rank)", 2, comm, alone=True, debug=debug, everywhere=True)
        return 2
    except MPI.Exception as e:
        from ..runtime.ft import lost_ranks
        lost = lost_ranks(comm)
        if lost:
            ranks = ", ".join(f"rank {r}" for r in lost)
            _fatal(f"lost {ranks} while the job started (nothing trained yet); start it again (exit {STOPPED})",
                   STOPPED, comm, alone=True, debug=debug)
            return STOPPED
        _fatal(f"rank {rank}: internal error: {type(e).__name__}: {e}", 1, comm, alone=True, debug=debug,
               everywhere=True)
        return 1
    except Exception as e:
        _fatal(f"rank {rank}: internal error: {type(e).__name__}: {e}", 1, comm, alone=True, debug=debug,
               everywhere=True)
        return 1
    finally:
        if guard:
            guard.finish()


def _run(argv, comm, rank, guard):
    """The command `argv`, once every rank runs the same; its exit code."""
    if guard:
        guard.arm()                          # raises for a signal that came during start-up
    agree_command_line(comm, argv)
    try:
        if rank != 0:                     # --help and --version print once
            sys.stdout = open(os.devnull, "w")
        args = parse(argv)
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        if rank != 0:
            sys.stdout.close()
            sys.stdout = sys.__stdout__
    if args.command is None:
        args = parse(["train"])
    check_environment()
    return run_command(args, comm) or 0


def check_environment(environ=os.environ):
    """MPIDML_THREADS checked as --threads is: pin_blas_threads, which reads it before numpy
    loads, can only skip a bad value (the train options' variables are checked in make_config)."""
    text = environ.get("MPIDML_THREADS")
    if text is not None:
        try:
            _positive_int(text)
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"MPIDML_THREADS: {e}", agreed=True) from None


def agree_command_line(comm, argv, environ=os.environ):
    """Every rank must run the same command: an MPMD launch or an environment that differs
    per rank would otherwise leave ranks waiting in collectives the others never start.
    One Allgather of a digest of the command line, the MPIDML_* variables and the working
    directory; on a difference rank 0 names it, and every rank exits 2."""
    import hashlib
    import json

    import numpy as np
    from mpi4py import MPI

    from ..runtime.comm import wait_for_start
    if comm.Get_size() == 1:
        return
    mine = {"argv": list(argv), "env": {k: v for k, v in environ.items() if k.startswith("MPIDML_")
                                        and k != "MPIDML_TEST_TAG"},
            "cwd": os.getcwd()}
    text = json.dumps(mine, sort_keys=True).encode()
    digests = np.zeros((comm.Get_size(), 32), np.uint8)
    req = comm.Iallgather(np.frombuffer(hashlib.sha256(text).digest(), np.uint8), digests)
    wait_for_start(comm, req, _startup_timeout(argv, environ), "start-up")
    differ = np.flatnonzero((digests != digests[0]).any(axis=1))
    if not len(differ):
        return
    first = int(differ[0])                   # rank 0 learns what rank `first` runs, to name it
    if comm.Get_rank() == first:
        comm.Send(np.frombuffer(text, np.uint8), dest=0, tag=31)
    if comm.Get_rank() == 0:
        status = MPI.Status()
        comm.Probe(first, 31, status)
        buf = np.empty(status.Get_count(), np.uint8)
        comm.Recv(buf, first, 31)
        raise UsageError(f"ranks run different commands: {_difference(mine, json.loads(buf.tobytes()), first)} "
                         f"({len(differ)} of {comm.Get_size()} ranks differ from rank 0)", agreed=True)
    raise UsageError("ranks run different commands", agreed=True)


def _startup_timeout(argv, environ):
    """--stall-timeout for the start-up agreement, before the options are parsed: from the
    command line or MPIDML_STALL_TIMEOUT (not yet --config), else the default; None: never."""
    text = environ.get("MPIDML_STALL_TIMEOUT")
    for i, arg in enumerate(argv):
        if arg == "--stall-timeout" and i + 1 < len(argv):
            text = argv[i + 1]
        elif arg.startswith("--stall-timeout="):
            text = arg.split("=", 1)[1]
    try:
        seconds = TrainConfig.stall_timeout if text is None else _stall_timeout(text)
    except argparse.ArgumentTypeError:
        seconds = TrainConfig.stall_timeout     # parsing reports the bad value
    return seconds or None


def _difference(ours, theirs, rank):
    """The first difference between rank 0's command and rank `rank`'s, in words."""
    if ours["argv"] != theirs["argv"]:
        a, b = ours["argv"], theirs["argv"]
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return (f"rank 0 has {' '.join(a[max(0, i - 1):i + 1]) or '(nothing)'!r} where rank {rank} has "
                f"{' '.join(b[max(0, i - 1):i + 1]) or '(nothing)'!r} in its command line")
    for key in sorted(set(ours["env"]) | set(theirs["env"])):
        if ours["env"].get(key) != theirs["env"].get(key):
            return (f"{key} is {ours['env'].get(key, '(unset)')!r} on rank 0, "
                    f"{theirs['env'].get(key, '(unset)')!r} on rank {rank}")
    return f"working directory {ours['cwd']} on rank 0, {theirs['cwd']} on rank {rank}"


def _fatal(message, code, comm, alone, debug, everywhere=False):
    """Print the one error line and, for a failure this rank met `alone` (not agreed by all
    ranks), end the job. `everywhere`: it may have reached every rank; rank 0 reports it."""
    if everywhere and comm.Get_size() > 1 and comm.Get_rank() != 0:
        leave_it_to_rank_0(comm.Get_rank())
    if debug:
        import traceback
        traceback.print_exc()
    sys.stderr.write(f"mpidml: error: {message}\n")
    sys.stderr.flush()
    if alone and comm.Get_size() > 1:
        abort(comm, code)
