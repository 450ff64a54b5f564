"""Model files: HDF5, no pickle, written atomically, enough to evaluate, predict and resume.

Layout: datasets `params` (the flat buffer), `optimizer_state` (the optimizer's full
[w | m | v] buffer), `classes`, `mean`/`std` (feature standardization) and
`y_mean`/`y_std` (regression targets); attributes `format`, `format_version`, `kind`,
`task`, `head`, `sizes`, `activation`, `dtype`, `epoch`, `step`, `seed`, `ranks`,
`label_kind`, `config`, `history`, `data`, `stopped_at`, `early_stopped`, `series`,
`halving` and `cadence` (JSON). Attributes are parsed strictly (JSON and numbers), never
evaluated, and every field that evaluate, predict or --resume reads is checked on load
(_ATTRIBUTES, _CONFIG, _array_problem): a hand-edited file is `corrupt model file
(...)`, not an internal error. Files are written atomically (files/outputs.py).
"""
import json
import logging
import math
import os
import re
import stat

import h5py
import numpy as np

from ..data.partition import PARTITION_MODES
from ..errors import UsageError
from ..files.outputs import (
    atomic_write,
    atomic_write_bytes,
    check_output,
    create_h5,
    not_regular,
    same_file,
    unlink_if_there,
)
from .optim import SLOTS

log = logging.getLogger("mpidml")

FORMAT, VERSION = "mpidml-model", 1


def _is_count(v, least=0):
    """A JSON whole number (not a bool) of at least `least`."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _choice(*values):
    return lambda v: isinstance(v, str) and v in values


def _optional(check):
    return lambda v: v is None or check(v)


def _list_of(check):
    return lambda v: isinstance(v, list) and all(map(check, v))


def _object(fields):
    """A JSON object with exactly these {key: check} entries."""
    return lambda v: isinstance(v, dict) and set(v) == set(fields) and all(c(v[k]) for k, c in fields.items())


def _text(v):
    return isinstance(v, str)


def _cadence(v):
    """One choice of --sync-every auto (cadence.Cadence.as_dict), as --resume goes on with it."""
    return (isinstance(v, dict) and _is_count(v.get("every"), 1) and _is_count(v.get("epoch"), 0)
            and (v.get("merge_after") is None or _is_count(v["merge_after"], 1) and v["merge_after"] <= v["every"])
            and all(_number(v.get(k)) and v[k] >= 0 for k in ("step_ms", "average_ms"))
            and (v.get("round_cost_ms") is None or _number(v["round_cost_ms"])) and _text(v.get("why")))


# a model file's attributes that evaluate, predict and --resume read: what each must be. Those
# not listed (seed, ranks, rng, features, best_epoch) are a record for people, read by nothing.
_ATTRIBUTES = {
    "kind": (_choice("linear", "logistic", "softmax", "mlp"), "one of linear, logistic, softmax, mlp"),
    "task": (_choice("classification", "regression"), "classification or regression"),
    "head": (_choice("softmax", "sigmoid", "identity"), "one of softmax, sigmoid, identity"),
    "sizes": (lambda v: _list_of(lambda s: _is_count(s, 1))(v) and len(v) >= 2, "a list of 2 or more layer widths"),
    "activation": (_choice("relu", "tanh"), "relu or tanh"),
    "dtype": (_choice("float32", "float64"), "float32 or float64"),
    "epoch": (_is_count, "a count"),
    "step": (_is_count, "a count"),
    "label_kind": (_optional(_choice("int", "str")), "int, str or null"),
    "config": (lambda v: isinstance(v, dict), "a JSON object"),
    "history": (_list_of(lambda e: isinstance(e, dict)), "a list of JSON objects"),
    "data": (_optional(_object({"path": _text, "x": _text, "y": _text, "rows": _is_count, "features": _is_count,
                                "classes": _optional(_list_of(lambda c: _is_count(c, -2 ** 63) or _text(c))),
                                "fingerprint": _text})),
             "null or the data's identity (path, x, y, rows, features, classes, fingerprint)"),
    "stopped_at": (_optional(lambda v: isinstance(v, dict)), "null or a JSON object (see _stop_problem)"),
    "early_stopped": (_optional(lambda v: _is_count(v, 1)), "null or the epoch early stopping ended"),
    "series": (_optional(_text), "a checkpoint series (text)"),
    "cadence": (_optional(_list_of(_cadence)), "null or the choices of --sync-every auto (cadence.Cadence)"),
    "halving": (_optional(_object({"rung": _is_count, "halved": _optional(_is_count),
                                   "decisions": _list_of(lambda d: isinstance(d, dict))})),
                "null or the model's place in a halving search (rung, halved, decisions)"),
}
# the entries of its config that --resume reads (provenance.MODEL_OPTIONS not stored as
# attributes, and the run's --epochs)
_CONFIG = {
    "optimizer": (_choice(*SLOTS), "one of " + ", ".join(SLOTS)),
    "standardize": (lambda v: isinstance(v, bool), "true or false"),
    "test_fraction": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "partition_seed": (lambda v: _is_count(v) and v < 2 ** 63, "a seed (0 to 2**63-1)"),
    "partition": (_choice(*PARTITION_MODES), " or ".join(PARTITION_MODES)),
    "block_rows": (_optional(_is_count), "a count"),
    "validation_fraction": (_optional(lambda v: _number(v) and 0 <= v < 1), "null or a number in [0, 1)"),
    "epochs": (_is_count, "a count"),
}
_REQUIRED = ("kind", "task", "head", "sizes", "activation", "dtype", "epoch")


def _attribute_problem(attrs):
    """What in a model file's attributes no model could have written, or None."""
    missing = next((key for key in _REQUIRED if key not in attrs), None)
    if missing:
        return f"attribute {missing} is missing"
    for table, where in ((_ATTRIBUTES, attrs), (_CONFIG, attrs.get("config", {}))):
        for key, (check, what) in table.items():
            if key in where and not check(where[key]):
                name = f"attribute {key}" if table is _ATTRIBUTES else f"config {key}"
                return f"{name} is {_shown(where[key])}, not {what}"
    early = attrs.get("early_stopped")
    if early is not None and early > attrs["epoch"]:
        return f"attribute early_stopped is epoch {early}, after the file's epoch {attrs['epoch']}"
    return _stop_problem(attrs["stopped_at"], attrs["epoch"]) if attrs.get("stopped_at") else None


def _stop_problem(at, epoch):
    """What is wrong with `stopped_at` (see trainer.Model._stop) of a file at `epoch`, or None."""
    for key in ("epoch", "step", "steps", "batch_size", "ranks"):
        if not _is_count(at.get(key), 1 if key in ("batch_size", "ranks") else 0):
            return f"attribute stopped_at has {key} {_shown(at.get(key))}, not a count"
    if at["epoch"] != epoch:
        return f"attribute stopped_at has epoch {at['epoch']}, the file's epoch is {epoch}"
    if at["step"] > at["steps"]:
        return f"attribute stopped_at has step {at['step']} of {at['steps']}"
    # a stop signal's name, or (the survivors of a lost rank stopped: elastic.py) its cause
    if not isinstance(at.get("partition"), list) or not isinstance(at.get("signal") or at.get("cause"), str):
        return "attribute stopped_at has no partition list or signal name"
    loss = at.get("loss")
    pair = _list_of(_number)
    if at["step"] and not (isinstance(loss, list) and len(loss) == at["ranks"]
                           and all(pair(p) and len(p) == 2 for p in loss)):
        return f"attribute stopped_at has no loss pair for each of its {at['ranks']} ranks"
    return None


def _shown(v):
    text = json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _classes(stored, label_kind):
    """The stored classes as the model's labels: text for label_kind "str", else integers."""
    if stored is None:
        return None
    if stored.ndim != 1 or (len(stored) > 1 and not np.all(stored[1:] > stored[:-1])):
        raise ValueError("classes are not a sorted list without repeats")
    if label_kind == "str":
        if stored.dtype.kind not in "SO":
            raise ValueError(f"classes do not match label_kind {label_kind!r}")
        return [c.decode() for c in stored]
    if stored.dtype.kind not in "iub":
        raise ValueError(f"classes do not match label_kind {label_kind!r}")
    return [int(c) for c in stored]


def _array_problem(model, net):
    """What in a model file's arrays contradicts its network, or None."""
    if model.params.dtype.kind != "f" or model.params.shape != (net.size,):
        return f"params is {model.params.dtype} of shape {model.params.shape}, expected ({net.size},) floats"
    problem = _kind_problem(model, net) or _state_problem(model, net)
    if problem:
        return problem
    outputs = net.sizes[-1]
    if model.task == "classification":
        k = len(model.classes or [])
        if k != (2 if net.head == "sigmoid" else outputs) or k < 2:
            return f"{k} classes for a {net.head} head of {outputs} outputs"
    elif net.head != "identity" or model.classes is not None:
        return f"a regression model with a {net.head} head" + (" and classes" if model.classes is not None else "")
    for name, size in (("mean", net.sizes[0]), ("std", net.sizes[0]), ("y_mean", 1), ("y_std", 1)):
        v = getattr(model, name)
        if v is None:
            continue
        v = np.asarray(v)
        if v.dtype.kind not in "fiu" or v.size != size or not np.all(np.isfinite(v)):
            return f"{name} is not {size} finite numbers"
        if name.endswith("std") and not np.all(v > 0):
            return f"{name} has a value <= 0"
    for a, b in (("mean", "std"), ("y_mean", "y_std")):
        if (getattr(model, a) is None) != (getattr(model, b) is None):
            return f"{a} and {b} go together, the file has one of them"
    if model.y_mean is not None and model.task != "regression":
        return "a classifier with target statistics y_mean, y_std"
    return None


def _kind_problem(model, net):
    """Whether the layers and head are the ones `kind` builds (the kind --resume trains)."""
    from .models import build
    outputs = net.sizes[-1]
    built = build(model.kind, net.sizes[0], outputs, net.sizes[1:-1], net.activation, net.dtype, model.task)
    if built.sizes != net.sizes or built.head != net.head:
        return f"kind {model.kind} has other layers than {net.sizes} ({net.head})"
    return None


def _state_problem(model, net):
    """The optimizer state must be the file's weights and its optimizer's moments: [w | m | v]."""
    state = model.optimizer_state
    if state is None:
        return None
    optimizer = model.attrs["config"].get("optimizer")
    slots = [SLOTS[optimizer]] if optimizer else sorted(set(SLOTS.values()))
    if state.dtype.kind != "f" or state.ndim != 1 or state.size not in [k * net.size for k in slots]:
        return (f"optimizer_state is {state.dtype} of shape {state.shape}, expected {' or '.join(map(str, slots))} "
                f"x {net.size} floats" + (f" ({optimizer})" if optimizer else ""))
    if not np.all(np.isfinite(state)):
        return "optimizer_state contains NaN or inf"
    if not np.array_equal(state[:net.size], model.params):
        return "optimizer_state does not begin with the weights params holds"
    return None


def new_series():
    """A new checkpoint series' id (see CheckpointSeries)."""
    import uuid
    return uuid.uuid4().hex


class CheckpointSeries:
    """`--keep-checkpoints K`: each epoch checkpoint (and the final model) also stays as
    `<stem>.epoch0007<ext>` beside the --save file, the last K of them. A copy is a hard link
    to the file just written (the next checkpoint replaces the --save name, not the linked
    file), or a copy where the file system has no hard links.

    Rotation counts and removes only this run's series: the numbered files whose attribute
    `series` is the --save file's. A run starts a new series, a resumed run continues its
    file's (training.saving.ModelOutputs.series_of). Without it, the highest numbers in the directory would win: an
    earlier, longer run's files (or anything named like them) outranked this run's, which
    were deleted. Numbers above the current epoch are not counted either: they are the
    series' earlier future, from before a resume from an older checkpoint. A name this run
    writes replaces an mpidml model file there (an earlier run's checkpoint of that epoch, as
    --save replaces an earlier model), never anything else."""

    def __init__(self, path, keep):
        self.path, self.keep = os.path.abspath(path), keep
        self.stem, self.ext = os.path.splitext(self.path)

    def name(self, epoch):
        return f"{self.stem}.epoch{epoch:04d}{self.ext}"

    def check(self, taken):
        """Before training (training.saving.check_outputs): epoch 1's name stands for every number's (the
        same directory, as long a name); none of the run's other files, `taken` ((option,
        path) pairs), may be named as a numbered checkpoint or be one under another name."""
        check_output(self.name(1), "--keep-checkpoints", taken)
        numbered = [p for _, p in self._numbered()]
        for option, path in taken:
            if path and (self._epoch_of(os.path.abspath(path)) is not None
                         or any(same_file(path, p) for p in numbered)):
                raise UsageError(f"{option} {path}: is named as a numbered checkpoint, which --keep-checkpoints "
                                 f"{self.keep} beside --save {self.path} may replace or remove")

    def add(self, epoch):
        """Keep the --save file as epoch `epoch`'s checkpoint; remove this series' files
        beyond the last K."""
        target = self.name(epoch)
        problem = _replace_problem(target)
        if problem:
            raise UsageError(f"--keep-checkpoints {target}: {problem}; nothing replaced")
        try:
            unlink_if_there(target)
            os.link(os.path.realpath(self.path), target)    # the file itself, not a symlinked --save
        except OSError:
            with open(self.path, "rb") as f:
                atomic_write_bytes(target, f.read())
        series = _series(os.path.realpath(self.path))      # a symlinked --save: its target's
        if not series:
            log.warning(f"mpidml: warning: --keep-checkpoints {self.keep}: {self.path} records no checkpoint "
                        "series; no earlier checkpoint removed")
            return
        ours = [p for number, p in self._numbered() if number <= epoch and _series(p) == series]
        for old in ours[:-self.keep]:
            try:
                os.unlink(old)
            except OSError:
                pass

    def _epoch_of(self, path):
        """The epoch number in a numbered checkpoint's name, or None for any other name."""
        m = re.fullmatch(re.escape(self.stem) + r"\.epoch(\d{4,})" + re.escape(self.ext), path)
        return int(m.group(1)) if m else None

    def _numbered(self):
        """(number, path) of every name on disk that looks like a numbered checkpoint, in order."""
        import glob
        found = ((self._epoch_of(p), p) for p in glob.glob(glob.escape(self.stem) + ".epoch*" + glob.escape(self.ext)))
        return sorted((n, p) for n, p in found if n is not None)


def _series(path):
    """The checkpoint series of the model file at `path`: its attribute `series`, "" for a
    model file without one, None for anything else (opened only if a regular file: a FIFO
    would block)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                return None
            series = json.loads(f.attrs.get("series", '""'))
    except (OSError, ValueError, TypeError):          # not HDF5, unreadable, locked by a writer
        return None
    return series if isinstance(series, str) else None


def _replace_problem(path):
    """Why a numbered checkpoint may not be written at `path`, or None: only nothing, or an
    mpidml model file, is there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot write ({e.strerror})"
    if not stat.S_ISREG(mode):
        return not_regular(mode)
    if _series(path) is None:
        return "is not an mpidml model file"
    return None


class ModelFile:
    """Everything a saved model holds; `save`/`load` move it to and from HDF5."""

    def __init__(self, **fields):
        self.params = fields.pop("params")
        self.optimizer_state = fields.pop("optimizer_state", None)
        self.classes = fields.pop("classes", None)
        self.mean = fields.pop("mean", None)
        self.std = fields.pop("std", None)
        self.y_mean = fields.pop("y_mean", None)
        self.y_std = fields.pop("y_std", None)
        self.attrs = fields

    def __getattr__(self, name):
        try:
            return self.__dict__["attrs"][name]
        except KeyError:
            raise AttributeError(name) from None

    def save(self, path):
        def write(tmp):
            with create_h5(tmp) as f:
                f.attrs["format"], f.attrs["format_version"] = FORMAT, VERSION
                for key, value in self.attrs.items():
                    f.attrs[key] = json.dumps(value)
                f.create_dataset("params", data=self.params)
                for name in ("optimizer_state", "mean", "std", "y_mean", "y_std"):
                    value = getattr(self, name)
                    if value is not None:
                        f.create_dataset(name, data=np.asarray(value))
                if self.classes is not None:
                    data = self.classes
                    if self.attrs.get("label_kind") == "str":
                        data = np.array([c.encode() for c in data], "S")
                    f.create_dataset("classes", data=np.asarray(data))
        atomic_write(path, write)

    @classmethod
    def load(cls, path):
        from ..data.distribute import open_h5
        with open_h5(path) as f:
            if f.attrs.get("format") != FORMAT:
                raise UsageError(f"{path}: not an mpidml model file (attribute format is missing or wrong)")
            version = f.attrs.get("format_version")
            if version != VERSION:
                raise UsageError(f"{path}: model format version {version} is not supported (expected {VERSION})")
            try:
                attrs = {k: json.loads(v) for k, v in f.attrs.items() if k not in ("format", "format_version")}
                fields = {}
                for name in ("params", "optimizer_state", "mean", "std", "y_mean", "y_std", "classes"):
                    if name in f:
                        fields[name] = f[name][()]
            except Exception as e:
                raise UsageError(f"{path}: corrupt model file ({str(e)[:160]})") from e
        if "params" not in fields:
            raise UsageError(f"{path}: corrupt model file (dataset params is missing)")
        attrs.setdefault("config", {})
        problem = _attribute_problem(attrs)
        if problem:
            raise UsageError(f"{path}: corrupt model file ({problem})")
        try:
            fields["classes"] = _classes(fields.get("classes"), attrs.get("label_kind"))
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise UsageError(f"{path}: corrupt model file ({e})") from None
        model = cls(**fields, **attrs)
        if max(model.sizes) > model.params.size:        # each layer has at least as many parameters
            raise UsageError(f"{path}: corrupt model file (attribute sizes {_shown(model.sizes)} does not fit "
                             f"the {model.params.size} parameters in params)")
        net = model.net()
        problem = _array_problem(model, net)
        if problem:
            raise UsageError(f"{path}: corrupt model file ({problem})")
        if not np.all(np.isfinite(model.params)):
            raise UsageError(f"{path}: model parameters contain NaN or inf")
        model.params = model.params.astype(net.dtype)
        return model

    def model_options(self):
        """The options that define this model, as `--resume` compares them with a run's."""
        return dict(self.attrs.get("config", {}), model=self.kind, hidden=[int(h) for h in self.sizes[1:-1]],
                    activation=self.activation, dtype=self.dtype)

    def net(self):
        from .models import Net
        return Net(self.sizes, self.head, self.activation, self.dtype)

    def scaling(self):
        """The standardization the model was trained with (evaluate.Scaling)."""
        from .evaluate import Scaling
        return Scaling.from_arrays(self.mean, self.std, self.y_mean, self.y_std)
