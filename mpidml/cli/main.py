"""Command line: parse options, build a configuration, dispatch, and end every rank cleanly.

Errors: every rank parses the same command line, so a bad option fails on all of them
at once and only rank 0 prints it. Errors found in the data are agreed by all ranks
(comm.Group.agree) before anyone reports them. Anything that fails on one rank alone
(a stall, a bug) prints from that rank and calls MPI_Abort, so no rank is left waiting
in a collective (mpidml/runtime/abort.py); when every rank fails alike (Ctrl-C, which the launcher
forwards to all, or a bug), rank 0 alone reports it; signals: mpidml/runtime/guard.py. Exit codes:
0 ok, 1 internal error, 2 bad usage or input, 3 diverged, 4 a peer rank stalled, 75 stopped
by --checkpoint-signal (SIGTERM, SIGUSR1, SIGUSR2, SIGHUP) with a checkpoint written (batch
scripts requeue), 130 interrupted.
"""
import argparse
import functools
import logging
import os
import sys

from .. import __version__
from ..config import TrainConfig
from ..errors import STOPPED, MpidmlError, Stopped, UsageError
from ..files.progress import quiet_stdout, setup_logging
from ..runtime.abort import abort, leave_it_to_rank_0
from ..runtime.guard import Interrupted, installed
from ..training import options
from ..training.options import TOGGLE, OptionValueError, declare_train_options, did_you_mean, make_config

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


class _ArgparseGroups:
    """argparse under options.py's declarations: every train option defaults to SUPPRESS
    (absent from the namespace unless given, so that make_config knows what was given), its
    converter's OptionValueError shown as argparse shows a bad value."""

    def __init__(self, parser):
        self.parser = parser

    def add_argument_group(self, title):
        return _ArgparseGroup(self.parser.add_argument_group(title))


class _ArgparseGroup:
    def __init__(self, group):
        self.group = group

    def add_argument(self, *flags, type=None, action=None, **kwargs):
        if action == TOGGLE:
            action = argparse.BooleanOptionalAction
        if type is not None:
            kwargs["type"] = for_argparse(type)
        if action is not None:
            kwargs["action"] = action
        self.group.add_argument(*flags, default=S, **kwargs)


def for_argparse(convert):
    """`convert` for argparse's type=: its OptionValueError becomes argparse's message."""
    @functools.wraps(convert)
    def parse(text):
        try:
            return convert(text)
        except OptionValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


positive_int, nonneg_int, seed_value, path_name = map(for_argparse, (options.positive_int, options.nonneg_int,
                                                                     options.seed_value, options.path_name))


def nonneg_float(upper=None):
    return for_argparse(options.nonneg_float(upper))


def add_common(p):
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="BLAS threads per rank (default 1, or MPIDML_THREADS)")


def build_parser():
    top = Parser(prog="mpidml", description="Data-parallel training on HDF5 data with MPI. "
                 "Run as: mpiexec -n N python -m mpidml [train] [OPTIONS]")
    top.add_argument("--version", action="version", version=f"mpidml {__version__}")
    sub = top.add_subparsers(dest="command", parser_class=Parser)
    p = sub.add_parser("train", help="train a model (the default command)",
                       description="Train on an HDF5 file across the MPI ranks; defaults in parentheses.")
    declare_train_options(_ArgparseGroups(p))
    add_common(p)
    p = sub.add_parser("evaluate", help="test metrics of a saved model")
    p.add_argument("--model", type=path_name, required=True, metavar="M.h5")
    p.add_argument("--data", type=path_name, required=True, metavar="F.h5")
    p.add_argument("--metrics-json", type=path_name, metavar="PATH")
    p.add_argument("--x-dataset", metavar="NAME", help="rows to score (default /test/X, /X or /train/X)")
    p.add_argument("--y-dataset", metavar="NAME", help="their labels (default /test/y, /y or /train/y)")
    add_common(p)
    p = sub.add_parser("predict", help="predictions of a saved model for every row")
    p.add_argument("--model", type=path_name, required=True, metavar="M.h5")
    p.add_argument("--data", type=path_name, required=True, metavar="F.h5")
    p.add_argument("--out", type=path_name, required=True, metavar="P.h5",
                   help="the predictions, as HDF5 (.h5, .hdf5) or CSV (.csv) by the extension")
    p.add_argument("--x-dataset", metavar="NAME", help="rows to predict (default /test/X, /X or /train/X)")
    add_common(p)
    p = sub.add_parser("data", help="synth, convert or inspect data files")
    dsub = p.add_subparsers(dest="data_command", parser_class=Parser, required=True)
    q = dsub.add_parser("synth", help="synthetic float32 data in the default layout")
    q.add_argument("--samples", type=positive_int, default=10000, help="rows of /train")
    q.add_argument("--features", type=positive_int, default=20, help="columns of X")
    q.add_argument("--classes", type=nonneg_int, default=2, help="0: regression")
    q.add_argument("--test-samples", type=nonneg_int, default=0, help="rows of a /test set (default none)")
    q.add_argument("--noise", type=nonneg_float(), default=1.0, help="spread of each class")
    q.add_argument("--kind", choices=("blobs", "nonlinear"), default="blobs",
                   help="blobs: Gaussian classes (linear); nonlinear: classes no linear model separates")
    q.add_argument("--sorted", action="store_true", help="store rows sorted by label")
    q.add_argument("--chunk-rows", type=nonneg_int, default=None,
                   help="rows per HDF5 chunk (default: about 1 MB; 0: contiguous layout, uncompressed only)")
    q.add_argument("--compression", choices=("none", "gzip", "lzf"), default="none", help="HDF5 filter")
    q.add_argument("--seed", type=seed_value, default=0, help="same seed, same file")
    q.add_argument("--out", type=path_name, required=True, metavar="F.h5", help="the file to write")
    q = dsub.add_parser("convert", help="CSV (with header), NPY, NPZ or Parquet to the default layout")
    q.add_argument("src", type=path_name,
                   help="a .csv/.tsv/.txt, .npy, .npz or .parquet file (Parquet needs mpidml[parquet])")
    q.add_argument("dst", type=path_name)
    q.add_argument("--label", metavar="COLUMN",
                   help="label column (default: the one named label, class, target, y ... in any case, or the last)")
    q.add_argument("--label-type", choices=("auto", "class", "float"), default="auto",
                   help="auto (the default): the column's type decides: integers and text are classes, floats "
                   "are targets to fit (regression)")
    q.add_argument("--features", metavar="A,B,C", help="feature columns (default: every column but the label)")
    q.add_argument("--drop", metavar="A,B", help="columns that are no features (ids, leaks)")
    q.add_argument("--dropna", action="store_true",
                   help="drop rows with a missing value (default: refused, naming the first)")
    q.add_argument("--test-fraction", type=nonneg_float(1.0), default=0.0, metavar="F",
                   help="rows held out as /test, drawn with --seed (default 0: none)")
    q.add_argument("--stratify", action="store_true", help="hold out each class in proportion")
    q.add_argument("--seed", type=seed_value, help="seed of the test split (default 0)")
    q.add_argument("--delimiter", metavar="CHAR", help="CSV field separator, or tab (default: sniffed among , ; tab |)")
    q = dsub.add_parser("inspect", help="datasets, shapes, dtypes, chunking, class counts")
    q.add_argument("path", type=path_name)
    p = sub.add_parser("info", help="versions, MPI library, ranks, BLAS threads")
    add_common(p)
    p = sub.add_parser("plot", help="curves and per-rank time breakdown from a metrics JSON")
    p.add_argument("metrics", type=path_name)
    p.add_argument("-o", "--out", type=path_name, required=True)
    p = sub.add_parser("results", help="a sweep's leaderboard from its metrics JSON (and its --results CSV)")
    p.add_argument("metrics", type=path_name)
    p.add_argument("-o", "--out", type=path_name, metavar="CSV", help="also write one row per model, best first")
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
        hint = did_you_mean(unknown[0].split("=")[0], options) if unknown[0].startswith("--") else ""
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
            positive_int(text)
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
        seconds = TrainConfig.stall_timeout if text is None else options.stall_timeout(text)
    except OptionValueError:
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
