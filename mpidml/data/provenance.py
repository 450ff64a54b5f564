"""What a model was trained on and with, so that `--resume` refuses other data and model
options that contradict the file, instead of silently continuing the wrong model.

A batch job resubmitted with `DATA=run2.h5` (same shape, other rows) used to resume the
model trained on run.h5. The model file now carries the data's identity: its path, shapes,
classes and a fingerprint, a hash of the datasets' shapes and dtypes and of 64 rows sampled
evenly through X and y (a few chunk reads, however large the file: cheap, and any file
written anew with other data differs in it).
"""
import dataclasses
import hashlib

import numpy as np

from ..errors import UsageError
from . import formats
from .h5 import open_h5

SAMPLED_ROWS = 64

# options that define which rows are test, validation and training rows: a resumed run that
# split otherwise would test on rows it trained on. block_rows is recorded as used (the
# default follows the file's HDF5 chunking, so a re-chunked copy would split otherwise);
# validation rows are drawn per rank with partition_seed.
SPLIT_OPTIONS = ("test_fraction", "partition", "block_rows", "partition_seed", "validation_fraction")
# saved values that, besides a missing one, mean "a file from before the option was
# recorded": block_rows 0 was the default then (the chunking's size, not recorded);
# validation_fraction 0 is recorded (no validation rows: validation asked for on resume
# would score rows the model trained on)
UNRECORDED = {"block_rows": (0,)}
# options that define the model or the rows it trains on: a resumed run takes them from the
# file; given on the command line (or config, environment) they must agree with it
MODEL_OPTIONS = ("model", "hidden", "activation", "dtype", "optimizer", "standardize", *SPLIT_OPTIONS)
# everything else may change on resume: epochs, lr and its schedule, batch size, sync policy,
# ranks, outputs, waits and timeouts


@dataclasses.dataclass
class DataIdentity:
    path: str
    x: str
    y: str
    rows: int
    features: int
    classes: list
    fingerprint: str

    @classmethod
    def of(cls, info):
        """The identity of the training file `data.distribute.describe` returned `info` for."""
        return cls(info["path"], info["x"], info["y"], info["rows"], info["features"], info["classes"],
                   fingerprint(info["path"], info["x"], info["y"]))

    def as_dict(self):
        return dataclasses.asdict(self)

    def differences(self, other):
        """How `other` (this run's data) differs from this (the model's), in words."""
        out = []
        if (self.rows, self.features) != (other.rows, other.features):
            out.append(f"{self.rows} x {self.features} rows x features, now {other.rows} x {other.features}")
        if self.classes != other.classes:
            out.append(f"classes {_short(self.classes)}, now {_short(other.classes)}")
        if not out and self.fingerprint != other.fingerprint:
            out.append(f"same shape but other rows (fingerprint {self.fingerprint[:12]}, "
                       f"now {other.fingerprint[:12]})")
        return out


def fingerprint(path, x, y):
    """sha256 of X's and y's shapes and dtypes and of SAMPLED_ROWS rows spread evenly."""
    digest = hashlib.sha256()
    with open_h5(path) as f:
        for name, ds in ((x, formats.features(f, path, x, y)), (y, formats.labels(f, path, y))):
            n = ds.shape[0]
            rows = np.unique(np.linspace(0, n - 1, min(n, SAMPLED_ROWS)).astype(np.int64)) if n else []
            digest.update(f"{ds.shape} {ds.dtype.str}".encode())
            if len(rows):
                try:
                    sample = ds[rows]
                except (OSError, KeyError, ValueError) as e:     # a file changed or broken meanwhile
                    raise UsageError(f"{path}: dataset {name} cannot be read ({str(e)[:120]})") from None
                digest.update(np.ascontiguousarray(sample).tobytes())
    return digest.hexdigest()


def _short(classes, shown=6):
    if classes is None:
        return "none (regression)"
    text = ", ".join(map(str, classes[:shown]))
    return f"[{text}{', ...' if len(classes) > shown else ''}] ({len(classes)})"


def check_data(model_path, saved, now):
    """UsageError when this run's data is not what the resumed model was trained on."""
    if saved is None:           # a file from before provenance: nothing to compare with
        return
    saved = DataIdentity(**saved)
    diffs = saved.differences(now)
    if diffs:
        raise UsageError(f"--resume {model_path} was trained on {saved.path}:{saved.x}; --data {now.path}:{now.x} "
                         f"differs: {'; '.join(diffs)}")


def adopt_model_options(cfg, model_path, saved_config, keys=MODEL_OPTIONS):
    """The resumed file's options `keys`, into `cfg`: those not given are taken from the file,
    those given must agree with it. Returns {option: value} taken, for the other ranks."""
    taken = {}
    for key in keys:
        saved, now = saved_config.get(key), getattr(cfg, key)
        if saved is None or saved in UNRECORDED.get(key, ()):
            continue            # a file from before it was recorded: nothing to compare with
        if key == "hidden":
            saved, now = list(saved), list(now)
        if key in cfg.given:
            if now != saved and not (key == "model" and now == "auto"):
                flag = "--" + key.replace("_", "-")
                raise UsageError(f"--resume {model_path} was trained with {flag} {_option(saved)}, this run asks "
                                 f"for {flag} {_option(now)}; model and data-split options must match the file "
                                 "(epochs, lr, schedule, batch size, sync and ranks may change)")
        elif now != saved:
            taken[key] = saved
    apply_options(cfg, taken)
    return taken


def apply_options(cfg, taken):
    """Options adopted from a model file ({option: JSON value}) into `cfg`: rank 0's
    adopt_model_options, then every other rank with what it broadcast."""
    for key, value in taken.items():
        setattr(cfg, key, tuple(value) if key == "hidden" else value)


def _option(value):
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value) if value != "" else "(default)"
