"""The train options below both faces: their declarations, the checks of every value, and
the TrainConfig they make, from defaults < --config file < MPIDML_* environment < the
command line or the Python API's keywords (`make_config`).

The command line (cli/main.py) builds its argparse parser from `declare_train_options`;
the Python API (api.py) calls `make_config` with keywords and never loads argparse. A
value is checked the same way wherever it comes from: each option's converter raises
OptionValueError, which the command line shows as argparse does and make_config as a
UsageError naming where the value came from.
"""
import dataclasses
import math
import os

from ..config import ON_FAILURE, TrainConfig, bundled_dataset
from ..data.partition import PARTITION_MODES
from ..data.stream import parse_size
from ..errors import STOPPED, UsageError
from ..learn.cadence import AUTO
from ..runtime.stop import parse_signals
from . import sweep
from .sweep import SEARCHES, SELECTIONS

TOGGLE = "toggle"           # an option with a --no- form (argparse's BooleanOptionalAction)


class OptionValueError(ValueError):
    """A value an option's converter refuses; the message says why."""


LARGEST = 2 ** 62          # counts and sizes beyond it overflow numpy's int64 arithmetic
# every float option feeds arithmetic (epochs x steps, megabytes x 2**20, rates x gradients)
# that a value near float's range overflows; none means anything sensible beyond this
LARGEST_FLOAT = 1e9


def whole(text, least):
    try:
        v = int(text)
    except ValueError:
        raise OptionValueError(f"expects a whole number, got {text!r}") from None
    if v < least:
        raise OptionValueError(f"must be {'positive' if least else 'at least 0'}, got {v}")
    if v > LARGEST:
        raise OptionValueError(f"must be at most 2**62, got {text}")
    return v


def positive_int(text):
    return whole(text, 1)


def sync_every_value(text):
    """--sync-every: a count of steps, or auto (cadence.py chooses it)."""
    return AUTO if text.strip().lower() == AUTO else positive_int(text)


def nonneg_int(text):
    return whole(text, 0)


def stall_timeout(text):
    """0 (never) or at least a second: below, healthy ranks are accused between heartbeats."""
    v = nonneg_float()(text)
    if 0 < v < 1:
        raise OptionValueError(f"must be 0 (never) or at least 1 second, got {text}")
    return v


def seed_value(text):
    try:
        v = int(text)
    except ValueError:
        raise OptionValueError(f"expects a whole number, got {text!r}") from None
    if not 0 <= v < 2 ** 63:
        raise OptionValueError(f"must be between 0 and 2**63-1, got {v}")
    return v


def number(text):
    """A float within LARGEST_FLOAT of 0 (NaN and infinities are left to the callers' checks)."""
    try:
        v = float(text)
    except ValueError:
        raise OptionValueError(f"expects a number, got {text!r}") from None
    if math.isfinite(v) and abs(v) > LARGEST_FLOAT:
        raise OptionValueError(f"must be at most {LARGEST_FLOAT:g}, got {text}")
    return v


def positive_float(text):
    v = number(text)
    if not math.isfinite(v) or v <= 0:
        raise OptionValueError(f"must be a positive number, got {text}")
    return v


def nonneg_float(upper=None):
    def parse(text):
        v = number(text)
        if not math.isfinite(v) or v < 0 or (upper is not None and v >= upper):
            bound = f" and below {upper:g}" if upper is not None else ""
            raise OptionValueError(f"must be a finite number >= 0{bound}, got {text}")
        return v
    return parse


def hidden_widths(text):
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise OptionValueError(f"--hidden expects widths like 128,64, got {text!r}") from None
    if any(w <= 0 for w in widths):
        raise OptionValueError(f"--hidden widths must be positive, got {text!r}")
    return widths


def _accepted_by(parse, doc):
    """A converter that keeps the text where `parse` accepts it (its ValueError says why not)."""
    def convert(text):
        try:
            parse(text)
        except ValueError as e:
            raise OptionValueError(str(e)) from None
        return text
    convert.__doc__ = doc
    return convert


signal_names = _accepted_by(parse_signals, "--checkpoint-signal: signal names, or none (stop.parse_signals)")
memory_size = _accepted_by(parse_size, "--memory-limit: auto, or a size with a unit (stream.parse_size)")


def path_name(text):
    """A file or directory name: an empty one would silently mean none, or the bundled data."""
    if not text:
        raise OptionValueError("expects a path, got ''")
    return text


def declare_train_options(p):
    """Every train option; defaults live in TrainConfig (shown in --help)."""
    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--data", type=path_name, metavar="PATH",
                   help="HDF5 file (default: the bundled digits dataset)")
    g.add_argument("--x-dataset", metavar="NAME",
                   help="features dataset, e.g. /features, or pandas columns /df:a,b (default: /train/X or /X; "
                        "with --y-dataset alone: AnnData's /X, the rest of a pandas frame)")
    g.add_argument("--y-dataset", metavar="NAME",
                   help="labels dataset, e.g. obs/cell_type (AnnData) or /df:label (pandas column) "
                        "(default: /train/y or /y)")
    g.add_argument("--test-fraction", type=nonneg_float(1.0), metavar="F",
                   help=f"held-out share when the file has no /test (default {d.test_fraction})")
    g.add_argument("--distribute", choices=("scatter", "read"),
                   help="rank 0 streams partitions to the ranks, or each rank reads its own rows (default scatter)")
    g.add_argument("--partition", choices=PARTITION_MODES,
                   help="rows to ranks: seeded permutation of row blocks, or contiguous runs (default blocks)")
    g.add_argument("--block-rows", type=positive_int, metavar="R",
                   help="rows per partition block (default: about 1/1024 of the rows, whole HDF5 chunks)")
    g.add_argument("--partition-seed", type=seed_value, metavar="S",
                   help="seed of the block permutation and test split (default 0)")
    g.add_argument("--chunk-mb", type=positive_float, metavar="MB",
                   help=f"a reading rank's buffer when rows are passed on: two windows, one read while the other "
                        f"is sent (default {d.chunk_mb:g})")
    g.add_argument("--stream", action=TOGGLE,
                   help="leave the rows in the file: every rank reads its rows chunk by chunk while it trains "
                        "(default: only where a rank's rows would take more than half of --memory-limit)")
    g.add_argument("--memory-limit", type=memory_size, metavar="SIZE",
                   help="the memory each rank may use, e.g. 4G or 512M (default auto: its host's memory, "
                        "or cgroup or address-space limit, shared by the host's ranks)")
    g.add_argument("--stream-chunk-mb", type=positive_float, metavar="MB",
                   help="a streamed chunk's size; two per model are held (default 64, less where "
                        "--memory-limit asks)")
    g.add_argument("--stage-dir", type=path_name, metavar="DIR",
                   help="node-local scratch (e.g. $TMPDIR): rank 0 sends every rank its rows once into a "
                        "file there, which it streams from every epoch (for files the other ranks cannot "
                        "read); removed at the end, reused by --resume; implies --stream")
    g.add_argument("--standardize", action=TOGGLE,
                   help="scale features (and regression targets) by global mean/std (default on)")
    g.add_argument("--dtype", choices=("float32", "float64"),
                   help="data and parameter precision (default float32: half the memory and traffic)")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=("auto", "linear", "logistic", "softmax", "mlp"),
                   help="auto: linear for float targets, logistic for 2 classes, softmax for more")
    g.add_argument("--hidden", type=hidden_widths, metavar="W1,W2", help="MLP hidden widths (default 128)")
    g.add_argument("--activation", choices=("relu", "tanh"), help="MLP activation (default relu)")
    g = p.add_argument_group("optimization (per rank)")
    g.add_argument("--epochs", type=positive_int, metavar="E",
                   help="passes over the data (default 10, more for small data so that every rank takes "
                        "at least 300 steps, at most 100 epochs; when resuming, the saved run's)")
    g.add_argument("--batch-size", type=positive_int, metavar="B",
                   help=f"minibatch rows per rank (default {d.batch_size})")
    g.add_argument("--lr", type=nonneg_float(), metavar="LR", help=f"learning rate (default {d.lr})")
    g.add_argument("--l2", type=nonneg_float(), metavar="L",
                   help=f"L2 penalty on weights (default {d.l2})")
    g.add_argument("--optimizer", choices=("sgd", "momentum", "adam"), help="default momentum")
    g.add_argument("--momentum", type=nonneg_float(1.0), metavar="MU", help="default 0.9")
    g.add_argument("--nesterov", action=TOGGLE, help="Nesterov momentum")
    g.add_argument("--schedule", choices=("constant", "step", "cosine"), help="learning-rate schedule")
    g.add_argument("--warmup-epochs", type=nonneg_float(), metavar="E",
                   help="linear learning-rate warmup")
    g.add_argument("--step-epochs", type=positive_int, metavar="E",
                   help="step schedule: multiply by --gamma every E epochs")
    g.add_argument("--gamma", type=nonneg_float(), help="step schedule factor (default 0.1)")
    g.add_argument("--clip-norm", type=nonneg_float(), metavar="C",
                   help="clip the gradient's global norm to C (0: off)")
    g.add_argument("--seed", type=seed_value, help="same seed and same ranks give bit-identical results")
    g = p.add_argument_group("aggregation")
    g.add_argument("--sync", choices=("average", "gradients"),
                   help="average: model averaging every K steps (local SGD); gradients: Allreduce every step")
    g.add_argument("--sync-every", type=sync_every_value, metavar="K",
                   help=f"local steps between averagings, or auto: chosen (and whether and how far to overlap, "
                        f"unless --overlap/--no-overlap says) from measured step and average times "
                        f"(default {d.sync_every})")
    g.add_argument("--overlap", action=TOGGLE,
                   help="run the averaging as a non-blocking collective behind the next steps")
    g.add_argument("--merge-after", type=positive_int, metavar="D",
                   help="with --overlap: merge each average D steps after it started, at most K (default K/2, "
                        "at least 1: "
                        "fewer steps stay closer to blocking averaging, more hide more communication)")
    g.add_argument("--stall-timeout", type=stall_timeout, metavar="S",
                   help="end the job when a collective waits longer than S seconds, naming the ranks that "
                        f"stopped (0: never; default {d.stall_timeout:g})")
    g.add_argument("--on-failure", choices=ON_FAILURE,
                   help="when a rank is lost: continue with the others, or stop, checkpointed, exit 75; both need "
                        "Open MPI's mpirun --with-ft ulfm (continue is the default there); under MPICH the launcher "
                        "ends the job")
    g.add_argument("--min-ranks", type=positive_int, metavar="M",
                   help="with --on-failure continue: stop (checkpointed, exit 75) when fewer than M ranks are left "
                        "(default 1)")
    g.add_argument("--wait", choices=("auto", "spin", "nap"),
                   help="how a rank waits for a collective: spin (keep polling MPI for up to 0.2 s, then nap; "
                        "fastest with a core per rank), nap (poll 2 ms, then sleep; for more ranks than cores), "
                        "auto: spin where every rank on the host has a core of its own (default)")
    g = p.add_argument_group("sweeps, validation, early stopping")
    g.add_argument("--sweep", action="append", metavar='"KEY=V1 V2"',
                   help="train one model per point of the grid at once, on the same partitions (repeatable: the "
                        "grid is the product); keys: lr, l2, optimizer, momentum, hidden, activation, sync-every, "
                        "batch-size, schedule, warmup-epochs, clip-norm, seed. Values separated by spaces: "
                        '--sweep "hidden=128 256,128". Or a sampled axis (--trials points): '
                        '"lr=loguniform(1e-4,1e-1)", uniform(A,B) (lr, l2, momentum, warmup-epochs, clip-norm), '
                        "int(A,B) (sync-every, batch-size, seed: whole numbers A to B, both included), "
                        'choice(V1 V2 ...) (any key; values separated by spaces or |: "hidden=choice(64 128,64)")')
    g.add_argument("--validation-fraction", type=nonneg_float(1.0), metavar="F",
                   help="training rows held out to choose the best model and to stop early (default 0.1 in a "
                        "sweep, else 0)")
    g.add_argument("--early-stopping", type=positive_int, metavar="P",
                   help="stop a model after P epochs without a better validation loss and keep its best weights")
    g.add_argument("--save-dir", type=path_name, metavar="DIR",
                   help="in a sweep: every model's file as DIR/model-NNN.h5 (--save: the best model)")
    g.add_argument("--trials", type=positive_int, metavar="N",
                   help="points sampled from a sweep's sampled axes (loguniform, uniform, int, choice), each "
                        f"crossed with its grid axes (default {sweep.DEFAULT_TRIALS})")
    g.add_argument("--sweep-seed", type=seed_value, metavar="S",
                   help="the seed the sweep's points are sampled with (default 0): the same points at any "
                        "rank count")
    g.add_argument("--search", choices=SEARCHES,
                   help="grid: every model trains every epoch; halving: successive halving, after each rung "
                        "only the best 1/ETA of the models go on (default grid)")
    g.add_argument("--halving-factor", type=positive_int, metavar="ETA",
                   help="halving keeps the best 1/ETA of the models at each rung (default 3, at least 2)")
    g.add_argument("--rung-epochs", type=positive_int, metavar="R",
                   help="halving: the first rung's epochs; each next rung trains ETA times as many (default 1)")
    g.add_argument("--select", choices=SELECTIONS,
                   help="the validation metric that ranks the models and keeps the best weights (default val_loss)")
    g.add_argument("--results", type=path_name, metavar="CSV",
                   help="one row per model of a sweep (of a single run: one row), best first by --select; "
                        "pandas reads it as it is")
    g = p.add_argument_group("output")
    g.add_argument("--save", type=path_name, metavar="PATH", help="model file (HDF5), resumable")
    g.add_argument("--checkpoint-every", type=positive_int, metavar="E",
                   help="rewrite --save atomically every E epochs")
    g.add_argument("--keep-checkpoints", type=positive_int, metavar="K",
                   help="also keep the last K epoch checkpoints beside --save, as STEM.epoch0007.h5 "
                        "(with --checkpoint-every, default every epoch)")
    g.add_argument("--resume", type=path_name, metavar="PATH",
                   help="continue from a model file up to --epochs in total (model options come from the file; "
                        "epochs, lr, schedule, batch size, sync and ranks may change; other data is refused)")
    g.add_argument("--checkpoint-signal", type=signal_names, metavar="SIGS",
                   help=f"signals that stop every rank at the next synchronisation step, write --save and exit "
                        f"{STOPPED} for the batch script to requeue (default {d.checkpoint_signal}; none: off)")
    g.add_argument("--metrics-json", type=path_name, metavar="PATH",
                   help="rank 0 writes the metrics document here")
    g.add_argument("--trace", type=path_name, metavar="PATH",
                   help="Chrome trace JSON of every rank's tasks (Perfetto)")
    g.add_argument("--quiet", action="store_true", help="nothing but warnings and errors")
    g.add_argument("--verbose", action="store_true",
                   help="every epoch line (beyond 10 epochs: the first, the last and one a second)")
    g.add_argument("--progress-bar", action="store_true",
                   help="live bar within each epoch on rank 0 (automatic when its output reaches a terminal, "
                        "also through MPICH's mpiexec)")
    g.add_argument("--config", type=path_name, metavar="TOML",
                   help="options from a TOML file (keys as options, with _ or -)")

@dataclasses.dataclass(frozen=True)
class Declared:
    """One train option as declare_train_options declares it: what make_config checks."""
    dest: str
    type: object = None         # the converter, or None for text
    choices: tuple = None
    action: str = None


class _Recorder:
    """Records declare_train_options' declarations (the argparse calls' shape, no argparse)."""

    def __init__(self):
        self.options = {}

    def add_argument_group(self, title):
        return self

    def add_argument(self, *flags, type=None, choices=None, action=None, dest=None, **_):
        dest = dest or next(f for f in flags if f.startswith("--"))[2:].replace("-", "_")
        self.options[dest] = Declared(dest, type, tuple(choices) if choices else None, action)


def _declared():
    recorder = _Recorder()
    declare_train_options(recorder)
    return recorder.options


def did_you_mean(word, names):
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
    actions = OPTIONS

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
        if not isinstance(value, str) and action.type in (None, path_name):    # TOML gave a number, list, table
            raise UsageError(f"{origin}: expects a string, got {type(value).__name__} {value!r}")
        if action.type is not None:
            try:
                return action.type(str(value))
            except OptionValueError as e:
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
                raise UsageError(f"{where}unknown option {key!r}{did_you_mean(k, fields)}")
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
    values = values.args if isinstance(values, sweep.Sampled) else values     # choice(auto 16) too
    if values is not None and AUTO in values:
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


OPTIONS = _declared()      # dest -> Declared: every train option, for make_config
