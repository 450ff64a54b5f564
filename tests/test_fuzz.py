"""Fuzz: hostile files and options through the command line, at 1 and 3 ranks (issue 15).

Every case must end with an exit code of the contract (0, 2, 3 or 4; a case may name the
one code the contract gives it) and, when it fails, with exactly one `mpidml: error:` line
on stderr (warnings aside), no traceback, no MPICH "BAD TERMINATION" banner, within 30 s.
Option values, MPIDML_* variables and TOML files are judged in-process first (parse and
make_config, what a launch runs first on every rank): a refusal must be one UsageError
line; a value they accept, where it matters, is then launched on a small file, since it
must also run or fail cleanly later. At 3 ranks every case is launched.

Cases come from a seed (MPIDML_FUZZ_SEED, default 15) and each case's name, so one case
reproduces alone: the assertion message gives the seed, the command line and the files'
folder. MPIDML_FUZZ_DEEP=1 adds the cases of DEEP_ONLY (about twice the launches; the
default set fits ~90 s on two cores). Ranks run under a 4 GiB address-space limit (a huge
allocation is then a prompt MemoryError, not a machine's worth of memory) and end 60 s after
they start, so a hang cannot leave ranks behind on a shared machine. Known failures are in
KNOWN: strict xfails, so that a fix shows up as XPASS and its mark must go.
`pytest -m "not fuzz"` leaves this file out.

Issue 20 added the surfaces of the second round: sweeps (random and odd grids, bad values,
settings a sweep would drop), resume of files with options changed, edited or cut short,
--keep-checkpoints beside another run's files (which must survive, byte for byte), the
issue's reproducers (--config as an output, a closed stdout, MPIDML_THREADS=abc, ...), a
full disk (a 1 MiB tmpfs mounted in a private mount namespace with `unshare -m`, skipped
where that is not permitted: exit 2, one line, nothing left there), signals to mpiexec or
to its whole process group at a seeded moment (test_signal: 75, 130 or 128 + N, one line,
no banner, no temporary left), and the Python API in a user's script (tests/fuzz_api.py,
ranks that must agree). Those families run DEFAULT_20 by default and everything deep.
"""
import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib

import h5py
import numpy as np
import pytest
from conftest import MPIEXEC, ROOT, mpiexec

from mpidml.cli.main import parse
from mpidml.errors import UsageError
from mpidml.training.options import make_config

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(120)]

SEED = int(os.environ.get("MPIDML_FUZZ_SEED", "15"))
DEEP = os.environ.get("MPIDML_FUZZ_DEEP", "") not in ("", "0")
LIMIT_S = 30
OK_CODES = {0, 2, 3, 4}
WRAPPER = """\
import resource, signal, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
signal.alarm(60)                     # no rank outlives a timed-out launch for long
from mpidml.__main__ import entry
sys.exit(entry())
"""


@dataclasses.dataclass
class Case:
    name: str
    build: object            # launch cases: (tmp, rng, assets) -> (argv, what); option cases: argv or environment
    ranks: tuple = (1,)
    expect: int = None       # the one exit code the contract gives this input, where it gives one
    what: str = ""
    run: bool = True         # option cases: launch a value the in-process check accepts
    limit: float = LIMIT_S
    check: object = None     # (proc, tmp) -> what else is wrong, in words (files destroyed, left behind)
    around: object = None    # (command, tmp) -> the command that runs it (a full disk, a closed stdout)


def case_rng(name):
    """The case's own generator: the same values whatever else runs."""
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


# -- judging a launch ------------------------------------------------------------------------
def problems(rc, out, err, elapsed, expect=None, limit=LIMIT_S):
    """What is wrong with one launch's outcome, in words (empty: nothing)."""
    found = []
    if rc not in OK_CODES:
        found.append(f"exit {rc}, not one of {sorted(OK_CODES)}")
    elif expect is not None and rc != expect:
        found.append(f"exit {rc}, the contract says {expect}")
    errors = [ln for ln in err.splitlines() if ln.startswith("mpidml: error:")]
    if rc != 0 and len(errors) != 1:
        found.append(f"{len(errors)} 'mpidml: error:' lines on stderr, not 1")
    if rc == 0 and errors:
        found.append("exit 0 with an error line")
    for needle in ("Traceback", "BAD TERMINATION"):
        if needle in out or needle in err:
            found.append(f"{needle!r} in the output")
    if elapsed >= limit:
        found.append(f"took {elapsed:.1f} s")
    return found


def report(c, n, tmp, argv, found, proc=None, elapsed=None):
    shown = " ".join(str(a) for a in argv)
    text = (f"fuzz case {c.name} at {n} rank(s), seed {SEED}: {c.what}\n"
            f"  reproduce: MPIDML_FUZZ_SEED={SEED} MPIDML_FUZZ_DEEP={int(DEEP)} pytest tests/test_fuzz.py "
            f"-k '{c.name}-n{n}'  (files in {tmp})\n"
            f"  $ mpiexec -n {n} python -m mpidml {shown}\n  wrong: {'; '.join(found)}\n")
    if proc is not None:
        text += f"  exit {proc.returncode} after {elapsed:.1f} s\n  stdout: {proc.stdout[-1500:]}\n" \
                f"  stderr: {proc.stderr[-3000:]}"
    return text


def launch(c, n, tmp, argv, env=None):
    wrapper = tmp / "fuzz_entry.py"
    wrapper.write_text(WRAPPER)
    cmd = [MPIEXEC, "-n", str(n), sys.executable, str(wrapper), *map(str, argv)]
    if c.around:
        cmd = c.around(cmd, tmp)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=c.limit + 5, cwd=ROOT,
                              env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    except subprocess.TimeoutExpired as e:
        raise AssertionError(report(c, n, tmp, argv, [f"no end after {c.limit + 5:g} s"]) +
                             f"\n{e.stdout}\n{e.stderr}"[:3000]) from None
    elapsed = time.monotonic() - t0
    found = problems(proc.returncode, proc.stdout, proc.stderr, elapsed, c.expect, c.limit)
    if c.check:
        found += c.check(proc, tmp)
    assert not found, report(c, n, tmp, argv, found, proc, elapsed)


# -- hostile HDF5 files ------------------------------------------------------------------------
class Group:
    """A group where the layout expects a dataset."""


def write(path, items):
    """items: (name, value) pairs; a value is an array, a Group, a link, a VirtualLayout, or a
    dict of create_dataset arguments."""
    with h5py.File(path, "w") as f:
        for name, value in items:
            if isinstance(value, Group):
                f.require_group(name)
            elif isinstance(value, (h5py.SoftLink, h5py.ExternalLink)):
                f[name] = value
            elif isinstance(value, h5py.VirtualLayout):
                f.create_virtual_dataset(name, value, fillvalue=0)
            elif isinstance(value, dict):
                f.create_dataset(name, **value)
            else:
                f[name] = value
    return path


def xy(rng, n=48, d=4, k=3):
    """A small, easy classification set with every class present."""
    y = rng.permutation(np.arange(n) % k)
    X = (rng.standard_normal((n, d)) + 3 * np.eye(k, d)[y]).astype(np.float32)
    return X, y


def planted(rng, a, value):
    """A copy of the float array `a` with `value` at a random place."""
    a = np.array(a)
    a[tuple(int(rng.integers(s)) for s in a.shape)] = value
    return a


def text_file(path):
    path.write_text("plain text\n")
    return str(path)


CASES = []


def case(name, ranks=(1,), expect=None, limit=LIMIT_S):
    def register(build):
        CASES.append(Case(name, build, ranks, expect, limit=limit))
        return build
    return register


def train_file(name, items, *extra, ranks=(1,), expect=None):
    """Train on the file that `items(rng, tmp)` -> ((name, value) pairs, what) describes."""
    def build(tmp, rng, assets):
        made, what = items(rng, tmp)
        path = write(tmp / "data.h5", made)
        return ["--quiet", "--data", path, "--epochs", "1", *extra], what
    CASES.append(Case(name, build, ranks, expect))


def flat(change):
    """The flat /X, /y layout from xy(), changed: change(rng, X, y, tmp) -> (items, what)."""
    def items(rng, tmp):
        X, y = xy(rng)
        return change(rng, X, y, tmp)
    return items


def split(change):
    """The /train, /test layout (48 + 16 rows), changed: change(rng, {name: value}, tmp) -> (dict, what)."""
    def items(rng, tmp):
        X, y = xy(rng, n=64)
        made, what = change(rng, {"train/X": X[:48], "train/y": y[:48], "test/X": X[48:], "test/y": y[48:]}, tmp)
        return list(made.items()), what
    return items


def edit(**changes):
    """A split() change: datasets set (a value or fn(rng, base)) or removed (None); `__` is `/`."""
    def change(rng, base, tmp):
        for key, value in changes.items():
            key = key.replace("__", "/")
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value(rng, base) if callable(value) else value
        return base, ", ".join(f"{k.replace('__', '/')} {'removed' if v is None else 'changed'}"
                               for k, v in changes.items())
    return change


def vds(missing):
    """/X a virtual dataset over two source files, those in `missing` (0, 1) absent."""
    def items(rng, tmp):
        X, y = xy(rng)
        layout = h5py.VirtualLayout(shape=X.shape, dtype=X.dtype)
        halves = [(tmp / "a.h5", X[:24]), (tmp / "b.h5", X[24:])]
        for i, (path, part) in enumerate(halves):
            if i not in missing:
                write(path, [("X", part)])
            layout[i * 24:(i + 1) * 24] = h5py.VirtualSource(str(path), "X", shape=part.shape)
        return [("X", layout), ("y", y)], f"/X virtual over a.h5 and b.h5, missing {sorted(missing)}"
    return items


# X of the wrong shape or dtype, or values no training can use
train_file("x_1d", flat(lambda r, X, y, t: ([("X", X[:, 0]), ("y", y)], "X (48,)")), ranks=(1, 3), expect=2)
train_file("x_3d", flat(lambda r, X, y, t: ([("X", X.reshape(48, 2, 2)), ("y", y)], "X (48,2,2)")), expect=2)
train_file("x_scalar", flat(lambda r, X, y, t: ([("X", np.float32(1)), ("y", y)], "X a scalar")), expect=2)
train_file("x_bytes", flat(lambda r, X, y, t: ([("X", X.astype("S8")), ("y", y)], "X fixed strings")),
           ranks=(3,), expect=2)
train_file("x_vlen_str", flat(lambda r, X, y, t: (
    [("X", np.array([[str(v) for v in row] for row in X], dtype=h5py.string_dtype())), ("y", y)],
    "X variable-length strings")), expect=2)
train_file("x_complex", flat(lambda r, X, y, t: ([("X", X.astype(np.complex64)), ("y", y)], "X complex64")),
           ranks=(1, 3), expect=2)
train_file("x_bool", flat(lambda r, X, y, t: ([("X", X > 0), ("y", y)], "X bool")))
train_file("x_compound", flat(lambda r, X, y, t: (      # a table: its numeric fields are the features
    [("X", np.rec.fromarrays([X[:, 0], X[:, 1]], names="a,b")), ("y", y)], "X compound (a, b)")))
train_file("x_refs", flat(lambda r, X, y, t: (
    [("y", y), ("X", {"shape": (48, 4), "dtype": h5py.ref_dtype})], "X of object references")), expect=2)
train_file("x_float16", flat(lambda r, X, y, t: ([("X", X.astype(np.float16)), ("y", y)], "X float16")))
train_file("x_big_endian", flat(lambda r, X, y, t: ([("X", X.astype(">f8")), ("y", y)], "X >f8")))
train_file("x_uint64_huge", flat(lambda r, X, y, t: (
    [("X", (X > 0).astype(np.uint64) * np.uint64(2 ** 64 - 1)), ("y", y)], "X uint64 0 or 2**64-1")))
train_file("x_int8", flat(lambda r, X, y, t: ([("X", (X * 30).astype(np.int8)), ("y", y)], "X int8")))
for _name, _value, _ranks in (("nan", np.nan, (1, 3)), ("inf", np.inf, (1,)), ("neginf", -np.inf, (3,))):
    train_file(f"x_{_name}", lambda rng, tmp, v=_value: (lambda X, y: (
        [("X", planted(rng, X, v)), ("y", y)], f"X with one {v}"))(*xy(rng)), ranks=_ranks, expect=2)
train_file("x_nan_all", flat(lambda r, X, y, t: ([("X", np.full_like(X, np.nan)), ("y", y)], "X all NaN")),
           expect=2)
train_file("x_1e20", flat(lambda r, X, y, t: ([("X", X * np.float32(1e20)), ("y", y)], "X float32 ~1e20")))
train_file("x_float64_max", flat(lambda r, X, y, t: (
    [("X", X.astype(np.float64) * 1e307), ("y", y)], "X float64 ~1e307 (inf as float32)")), ranks=(3,))
train_file("x_float64_max_dtype64", flat(lambda r, X, y, t: (
    [("X", X.astype(np.float64) * 1e307), ("y", y)], "X float64 ~1e307, --dtype float64")), "--dtype", "float64")
train_file("x_subnormal", flat(lambda r, X, y, t: ([("X", X * np.float32(1e-42)), ("y", y)], "X subnormal")))
train_file("x_constant", flat(lambda r, X, y, t: ([("X", np.zeros_like(X)), ("y", y)], "X all zeros")))
train_file("x_fill_nan", flat(lambda r, X, y, t: (
    [("X", {"shape": (48, 4), "dtype": "f4", "chunks": (8, 4), "fillvalue": np.nan}), ("y", y)],
    "X chunked, never written, fill value NaN")), ranks=(3,), expect=2)


@case("x_gzip_chunk_corrupt", ranks=(1, 3), expect=2)
def _(tmp, rng, assets):
    X, y = xy(rng, n=480)
    path = write(tmp / "data.h5", [("X", {"data": X, "chunks": (48, 4), "compression": "gzip"}), ("y", y)])
    with h5py.File(path, "r") as f:
        info = f["X"].id.get_chunk_info(int(rng.integers(10)))
    with open(path, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(rng.integers(0, 256, info.size, dtype=np.uint8).tobytes())
    return ["--quiet", "--data", path, "--epochs", "1"], f"the gzip chunk at byte {info.byte_offset} overwritten"


# y of the wrong shape or dtype, or labels no model can use
train_file("y_2d", flat(lambda r, X, y, t: ([("X", X), ("y", np.stack([y, y], 1))], "y (48,2)")), ranks=(1, 3),
           expect=2)
train_file("y_2d_column", flat(lambda r, X, y, t: ([("X", X), ("y", y[:, None])], "y (48,1)")))
train_file("y_3d", flat(lambda r, X, y, t: ([("X", X), ("y", y.reshape(48, 1, 1))], "y (48,1,1)")), expect=2)
train_file("y_scalar", flat(lambda r, X, y, t: ([("X", X), ("y", np.int64(1))], "y a scalar")), expect=2)
train_file("y_bytes", flat(lambda r, X, y, t: ([("X", X), ("y", np.array([b"cat", b"dog", b"emu"])[y])],
                                               "y fixed strings")), ranks=(1, 3))
train_file("y_vlen_str", flat(lambda r, X, y, t: (
    [("X", X), ("y", np.array(["cat", "dog", "\u00e9meu"], dtype=object)[y].astype(h5py.string_dtype()))],
    "y variable-length UTF-8 strings")))
train_file("y_empty_strings", flat(lambda r, X, y, t: ([("X", X), ("y", np.array([b""] * 48))],
                                                       "y all empty strings")), expect=2)
train_file("y_some_empty_strings", flat(lambda r, X, y, t: (
    [("X", X), ("y", np.array([b"", b"a", b"b"])[y])], "y a third empty strings")), ranks=(1, 3))
train_file("y_uint64_huge", flat(lambda r, X, y, t: (
    [("X", X), ("y", np.uint64(2 ** 64 - 3) + y.astype(np.uint64))], "y uint64 2**64-3 .. 2**64-1")), ranks=(1, 3))
train_file("y_int64_extremes", flat(lambda r, X, y, t: (
    [("X", X), ("y", np.array([-2 ** 63, 0, 2 ** 63 - 1], np.int64)[y])], "y int64 min, 0, max")))
train_file("y_negative", flat(lambda r, X, y, t: ([("X", X), ("y", y - 1)], "y -1, 0, 1")))
for _model, _ranks, _expect in (("softmax", (1, 3), 2), ("logistic", (1,), 2), ("mlp", (1,), None)):
    train_file(f"y_fraction_{_model}", lambda rng, tmp: (lambda X, y: (
        [("X", X), ("y", (y % 2) + 0.5)], "y 0.5, 1.5"))(*xy(rng)), "--model", _model, ranks=_ranks, expect=_expect)
train_file("y_integral_float_softmax", flat(lambda r, X, y, t: (
    [("X", X), ("y", y.astype(np.float64))], "y 0.0, 1.0, 2.0")), "--model", "softmax")
for _name, _value, _model, _ranks in (("nan", np.nan, "auto", (1, 3)), ("nan", np.nan, "softmax", (1,)),
                                      ("inf", np.inf, "auto", (1,)), ("neginf", -np.inf, "softmax", (3,))):
    train_file(f"y_{_name}_{_model}", lambda rng, tmp, v=_value: (lambda X, y: (
        [("X", X), ("y", planted(rng, y.astype(np.float64), v))], f"y with one {v}"))(*xy(rng)),
        "--model", _model, ranks=_ranks, expect=2)
train_file("y_complex", flat(lambda r, X, y, t: ([("X", X), ("y", y.astype(np.complex128))], "y complex")),
           expect=2)
train_file("y_bool", flat(lambda r, X, y, t: ([("X", X), ("y", y > 0)], "y bool")))
train_file("y_single_class", flat(lambda r, X, y, t: ([("X", X), ("y", np.zeros_like(y))], "y all 0")),
           ranks=(1, 3), expect=2)
train_file("y_every_row_a_class", flat(lambda r, X, y, t: ([("X", X), ("y", np.arange(48))],
                                                           "48 classes, one row each")))
train_file("y_compound", flat(lambda r, X, y, t: (
    [("X", X), ("y", np.rec.fromarrays([y, y], names="a,b"))], "y compound (a, b)")), expect=2)
train_file("y_refs", flat(lambda r, X, y, t: (
    [("X", X), ("y", {"shape": (48,), "dtype": h5py.ref_dtype})], "y of (null) object references")), expect=2)
train_file("y_vlen_int", flat(lambda r, X, y, t: (
    [("X", X), ("y", {"shape": (48,), "dtype": h5py.vlen_dtype(np.int64)})], "y variable-length int arrays")),
    expect=2)
train_file("y_strings_linear", flat(lambda r, X, y, t: ([("X", X), ("y", np.array([b"a", b"b", b"c"])[y])],
                                                        "y strings, --model linear")), "--model", "linear", expect=2)
train_file("y_float_huge", flat(lambda r, X, y, t: ([("X", X), ("y", y * 1e300 + 1.5)], "y floats ~1e300")),
           ranks=(1, 3))
train_file("y_float32_max", flat(lambda r, X, y, t: (
    [("X", X), ("y", np.full(48, np.finfo(np.float32).max, np.float32) * (y % 2))], "y float32 0 or max")))

# row counts
train_file("zero_rows", lambda r, t: ([("X", np.zeros((0, 4), np.float32)), ("y", np.zeros(0, int))], "0 rows"),
           ranks=(1, 3), expect=2)
train_file("zero_features", lambda r, t: ([("X", np.zeros((48, 0), np.float32)), ("y", np.arange(48) % 2)],
                                          "48 x 0"), expect=2)
train_file("one_row", lambda r, t: ([("X", np.ones((1, 4), np.float32)), ("y", np.array([1]))], "1 row"),
           ranks=(1, 3), expect=2)
train_file("two_rows_no_split", lambda r, t: (
    [("X", r.standard_normal((2, 4)).astype("f4")), ("y", np.array([0, 1]))], "2 rows, --test-fraction 0"),
    "--test-fraction", "0", ranks=(3,), expect=2)
train_file("three_rows", lambda r, t: ([("X", r.standard_normal((3, 4)).astype("f4")), ("y", np.array([0, 1, 0]))],
                                       "3 rows"), ranks=(3,))
train_file("mismatched_rows", flat(lambda r, X, y, t: ([("X", X), ("y", y[:int(r.integers(1, 48))])],
                                                       "y shorter than X")), ranks=(1, 3), expect=2)
train_file("mismatched_rows_longer_y", flat(lambda r, X, y, t: ([("X", X[:40]), ("y", y)], "X 40, y 48")),
           expect=2)

# the /test set
train_file("split_ok", split(edit()), ranks=(3,))
train_file("test_one_row", split(edit(test__X=lambda r, b: b["test/X"][:1], test__y=lambda r, b: b["test/y"][:1])),
           ranks=(1, 3))
train_file("test_two_rows", split(edit(test__X=lambda r, b: b["test/X"][:2], test__y=lambda r, b: b["test/y"][:2])),
           ranks=(3,))
train_file("test_zero_rows", split(edit(test__X=np.zeros((0, 4), np.float32), test__y=np.zeros(0, int))),
           ranks=(1, 3))
train_file("test_rows_mismatch", split(edit(test__y=lambda r, b: b["test/y"][:-1])), expect=2)
train_file("test_features_mismatch", split(edit(test__X=lambda r, b: b["test/X"][:, :3])), ranks=(3,), expect=2)
train_file("test_unseen_labels", split(edit(test__y=lambda r, b: np.where(b["test/y"] == 0, 7, b["test/y"]))),
           ranks=(1, 3), expect=2)
train_file("test_string_labels", split(edit(test__y=lambda r, b: np.array([b"a", b"b", b"c"])[b["test/y"]])),
           expect=2)
train_file("test_float_labels", split(edit(test__y=lambda r, b: b["test/y"] + 0.5)), expect=2)
train_file("test_x_nan", split(edit(test__X=lambda r, b: planted(r, b["test/X"], np.nan))), ranks=(1, 3), expect=2)
train_file("test_x_1d", split(edit(test__X=lambda r, b: b["test/X"][:, 0])), expect=2)
train_file("test_y_missing", split(edit(test__y=None)), expect=2)
train_file("test_x_missing", split(edit(test__X=None)), expect=2)
train_file("train_y_missing", split(edit(train__y=None)), ranks=(3,), expect=2)
train_file("test_only", split(edit(train__X=None, train__y=None)), expect=2)

# groups where datasets belong, and datasets where groups belong
train_file("x_is_group", flat(lambda r, X, y, t: ([("X", Group()), ("y", y)], "/X a group")), ranks=(1, 3),
           expect=2)
train_file("y_is_group", flat(lambda r, X, y, t: ([("X", X), ("y", Group())], "/y a group")), expect=2)
train_file("train_x_is_group", lambda r, t: ([("train/X/inner", np.zeros(3)), ("train/y", np.arange(48) % 2)],
                                             "/train/X a group"), expect=2)
train_file("train_is_dataset", lambda r, t: ([("train", np.zeros((48, 4)))], "/train a dataset"), expect=2)
train_file("test_is_dataset", split(lambda r, b, t: (
    {k: v for k, v in b.items() if not k.startswith("test")} | {"test": np.zeros((16, 4))}, "/test a dataset")),
    ranks=(1, 3), expect=2)
train_file("empty_hdf5", lambda r, t: ([], "no datasets at all"), expect=2)
train_file("only_y", flat(lambda r, X, y, t: ([("y", y)], "/y only")), expect=2)
train_file("only_x", flat(lambda r, X, y, t: ([("X", X)], "/X only")), expect=2)

# links and virtual datasets
train_file("soft_dangling_x", flat(lambda r, X, y, t: ([("X", h5py.SoftLink("/nowhere")), ("y", y)],
                                                       "/X -> /nowhere")), ranks=(1, 3), expect=2)
train_file("soft_dangling_test_y", split(lambda r, b, t: (b | {"test/y": h5py.SoftLink("/gone")},
                                                          "/test/y -> /gone")), expect=2)
train_file("soft_link_loop", flat(lambda r, X, y, t: ([("X", h5py.SoftLink("/X")), ("y", y)], "/X -> /X")),
           expect=2)
train_file("soft_link_ok", flat(lambda r, X, y, t: ([("features", X), ("X", h5py.SoftLink("/features")),
                                                     ("y", y)], "/X -> /features")))
train_file("external_missing_file", flat(lambda r, X, y, t: (
    [("X", h5py.ExternalLink(str(t / "gone.h5"), "/X")), ("y", y)], "/X -> gone.h5:/X")), ranks=(1, 3), expect=2)
train_file("external_missing_dataset", flat(lambda r, X, y, t: (
    [("X", h5py.ExternalLink(str(write(t / "other.h5", [("Z", X)])), "/X")), ("y", y)],
    "/X -> other.h5:/X, which has no /X")), expect=2)
train_file("external_not_hdf5", flat(lambda r, X, y, t: (
    [("X", h5py.ExternalLink(text_file(t / "text.h5"), "/X")), ("y", y)], "/X -> a text file")), expect=2)
train_file("external_ok", flat(lambda r, X, y, t: (
    [("X", h5py.ExternalLink(str(write(t / "other.h5", [("X", X)])), "/X")), ("y", y)], "/X -> other.h5:/X")),
    ranks=(3,))
train_file("external_self_loop", flat(lambda r, X, y, t: (
    [("X", h5py.ExternalLink(str(t / "data.h5"), "/X")), ("y", y)], "/X -> data.h5:/X (itself)")), expect=2)
train_file("vds_missing_sources", vds({0, 1}), ranks=(1, 3), expect=2)
train_file("vds_one_source_missing", vds({1}), expect=2)
train_file("vds_ok", vds(set()))


# whole files that are not what they claim
def real_file(tmp, rng, rows=2000):
    X, y = xy(rng, n=rows, d=8)
    return write(tmp / "real.h5", [("train/X", {"data": X, "chunks": (250, 8), "compression": "gzip"}),
                                   ("train/y", y), ("test/X", X[:100]), ("test/y", y[:100])])


def cut(where):
    def build(tmp, rng, assets):
        data = real_file(tmp, rng).read_bytes()
        at = where(rng, len(data))
        path = tmp / "cut.h5"
        path.write_bytes(data[:at])
        return ["--quiet", "--data", path, "--epochs", "1"], f"the first {at} of {len(data)} bytes of a real file"
    return build


for _name, _where, _ranks in (("head", lambda r, n: int(r.integers(8, 512)), (1,)),
                              ("half", lambda r, n: n // 2, (1, 3)),
                              ("last_byte", lambda r, n: n - 1, (1,)),
                              ("random", lambda r, n: int(r.integers(512, n)), (1, 3))):
    CASES.append(Case(f"truncated_{_name}", cut(_where), _ranks, 2))


def corrupt(count):
    def build(tmp, rng, assets):
        data = bytearray(real_file(tmp, rng).read_bytes())
        spots = sorted(int(v) for v in rng.integers(0, len(data), count))
        for at in spots:
            data[at] = int(rng.integers(256))
        path = tmp / "corrupt.h5"
        path.write_bytes(bytes(data))
        return ["--quiet", "--data", path, "--epochs", "1"], f"bytes {spots[:12]}... of a real file replaced"
    return build


for _name, _count, _ranks in (("few", 8, (1,)), ("many", 400, (1, 3)), ("storm", 4000, (1,))):
    CASES.append(Case(f"corrupt_{_name}", corrupt(_count), _ranks))


def raw_file(name, content, ranks=(1,), expect=2):
    def build(tmp, rng, assets):
        path = tmp / name
        path.write_bytes(content(rng, tmp))
        return ["--quiet", "--data", path, "--epochs", "1"], f"{path.stat().st_size} bytes"
    CASES.append(Case(f"file_{name.replace('.', '_')}", build, ranks, expect))


raw_file("empty.h5", lambda r, t: b"", ranks=(1, 3))
raw_file("text.h5", lambda r, t: b"X,y\n1,0\n2,1\n")
raw_file("random.h5", lambda r, t: r.integers(0, 256, int(r.integers(1, 1 << 16)), dtype=np.uint8).tobytes())
raw_file("signature_only.h5", lambda r, t: b"\x89HDF\r\n\x1a\n" + bytes(int(r.integers(0, 64))), ranks=(1, 3))
raw_file("zeroed_superblock.h5", lambda r, t: bytes(16) + real_file(t, r).read_bytes()[16:])
raw_file("nul_bytes.h5", lambda r, t: bytes(4096))


@case("file_fifo", expect=2)
def _(tmp, rng, assets):
    os.mkfifo(tmp / "fifo.h5")
    return ["--quiet", "--data", tmp / "fifo.h5", "--epochs", "1"], "a FIFO nobody writes"


@case("data_is_directory", expect=2)
def _(tmp, rng, assets):
    return ["--quiet", "--data", tmp], "a directory"


@case("data_missing", ranks=(3,), expect=2)
def _(tmp, rng, assets):
    return ["--quiet", "--data", tmp / "missing.h5"], "no such file"


@case("data_is_a_model", expect=2)
def _(tmp, rng, assets):
    return ["--quiet", "--data", assets["model"], "--epochs", "1"], "a model file as --data"


@case("data_named_datasets", ranks=(1, 3))
def _(tmp, rng, assets):
    X, y = xy(rng)
    path = write(tmp / "named.h5", [("features", X), ("labels/v", y)])
    return ["--quiet", "--data", path, "--epochs", "1", "--x-dataset", "/features", "--y-dataset", "/labels/v"], ""


for _name, _x_ds, _y_ds in (("x_dataset_missing", "/nope", "/y"), ("x_dataset_root", "/", "/y"),
                            ("y_dataset_dot", "/X", "."), ("x_dataset_alone", "/X", None),
                            ("y_dataset_alone", None, "/y"), ("x_dataset_inside_dataset", "/X/inner", "/y"),
                            ("x_y_same_dataset", "/X", "/X")):
    def _build(tmp, rng, assets, x=_x_ds, y=_y_ds):
        opts = (["--x-dataset", x] if x else []) + (["--y-dataset", y] if y else [])
        return ["--quiet", "--data", assets["data"], "--epochs", "1", *opts], " ".join(opts)
    CASES.append(Case(_name, _build, (1,), 2))


# -- bad model files, and the data evaluate and predict are given ------------------------------
def model_edit(change, what, ranks=(1,), expect=2):
    """A copy of the trained model changed by change(f, rng), f the open file."""
    def make(tmp, rng, assets):
        path = shutil.copy(assets["model"], tmp / "model.h5")
        with h5py.File(path, "a") as f:
            change(f, rng)
        return path
    return make, what, ranks, expect


def set_attr(key, value):
    def change(f, rng):
        if value is None:
            del f.attrs[key]
        else:
            f.attrs[key] = value
    return change


def set_dataset(key, value):
    """Replace (a value, or fn(old, rng)) or remove (None) a dataset."""
    def change(f, rng):
        old = f[key][()] if key in f else None
        if key in f:
            del f[key]
        if value is not None:
            f[key] = value(old, rng) if callable(value) else value
    return change


def raw_model(content, what, ranks=(1,), expect=2):
    def make(tmp, rng, assets):
        path = tmp / "model.h5"
        path.write_bytes(content(rng, assets))
        return path
    return make, what, ranks, expect


BAD_MODELS = {
    "random_bytes": raw_model(lambda r, a: r.integers(0, 256, int(r.integers(1, 4096)), dtype=np.uint8).tobytes(),
                              "random bytes", ranks=(1, 3)),
    "empty": raw_model(lambda r, a: b"", "an empty file"),
    "truncated": raw_model(lambda r, a: a["model"].read_bytes()[:int(r.integers(64, a["model"].stat().st_size))],
                           "the model cut short"),
    "data_file": raw_model(lambda r, a: a["data"].read_bytes(), "a data file as the model"),
    "no_params": model_edit(set_dataset("params", None), "dataset params removed"),
    "params_group": model_edit(lambda f, r: (set_dataset("params", None)(f, r), f.create_group("params")),
                               "params a group"),
    "params_nan": model_edit(set_dataset("params", lambda old, r: planted(r, old, np.nan)), "a NaN parameter"),
    "params_short": model_edit(set_dataset("params", lambda old, r: old[:-1]), "one parameter short"),
    "params_2d": model_edit(set_dataset("params", lambda old, r: old[None, :]), "params (1, n)"),
    "params_strings": model_edit(set_dataset("params", lambda old, r: old.astype("S4")), "params strings"),
    "no_kind": model_edit(set_attr("kind", None), "attribute kind removed", ranks=(1, 3)),
    "no_sizes": model_edit(set_attr("sizes", None), "attribute sizes removed"),
    "no_classes": model_edit(set_dataset("classes", None), "dataset classes removed", expect=None),
    "no_mean": model_edit(set_dataset("mean", None), "dataset mean removed", expect=None),
    "no_format": model_edit(set_attr("format", None), "attribute format removed"),
    "format_version_2": model_edit(set_attr("format_version", 2), "format_version 2"),
    "sizes_not_json": model_edit(set_attr("sizes", "[4,"), "sizes '[4,'"),
    "sizes_string": model_edit(set_attr("sizes", '"abc"'), "sizes a JSON string"),
    "sizes_negative": model_edit(set_attr("sizes", "[4, -3]"), "sizes [4, -3]"),
    "sizes_one": model_edit(set_attr("sizes", "[4]"), "sizes [4]"),
    "sizes_huge": model_edit(set_attr("sizes", "[10000000, 10000000]"), "sizes [1e7, 1e7]", ranks=(1, 3)),
    "sizes_floats": model_edit(set_attr("sizes", "[4.5, 3]"), "sizes [4.5, 3]"),
    "dtype_float16": model_edit(set_attr("dtype", '"float16"'), "dtype float16", expect=None),
    "dtype_bogus": model_edit(set_attr("dtype", '"quaternion"'), "dtype quaternion"),
    "head_bogus": model_edit(set_attr("head", '"svm"'), "head svm"),
    "activation_bogus": model_edit(set_attr("activation", '"sigmoid"'), "activation sigmoid"),
    "task_bogus": model_edit(set_attr("task", '"clustering"'), "task clustering"),
    "task_regression": model_edit(set_attr("task", '"regression"'), "task regression on a softmax", expect=None),
    "epoch_word": model_edit(set_attr("epoch", '"ten"'), "epoch 'ten'", expect=None),
    "config_list": model_edit(set_attr("config", "[1, 2]"), "config a JSON list", expect=None),
    "label_kind_str": model_edit(set_attr("label_kind", '"str"'), "label_kind str over int classes"),
    "classes_short": model_edit(set_dataset("classes", lambda old, r: old[:-1]), "one class short"),
    "classes_strings": model_edit(set_dataset("classes", lambda old, r: old.astype("S3")), "classes as strings",
                                  expect=None),
    "mean_short": model_edit(set_dataset("mean", lambda old, r: old[:-1]), "mean one short"),
    "std_zero": model_edit(set_dataset("std", lambda old, r: np.zeros_like(old)), "std all zero", expect=None),
    "std_nan": model_edit(set_dataset("std", lambda old, r: planted(r, old, np.nan)), "a NaN std"),
}
PREDICT_MODELS = ["random_bytes", "truncated", "no_params", "no_kind", "sizes_huge", "mean_short", "classes_short",
                  "std_nan", "head_bogus", "label_kind_str"]
RESUME_MODELS = ["random_bytes", "data_file", "no_params", "sizes_not_json", "config_list", "epoch_word",
                 "sizes_huge"]


def with_model(command, model, what, data="data"):
    def build(tmp, rng, assets):
        path = model(tmp, rng, assets)
        if command == "evaluate":
            return ["evaluate", "--model", path, "--data", assets[data]], what
        if command == "predict":
            return ["predict", "--model", path, "--data", assets[data], "--out", tmp / "p.h5"], what
        return ["--quiet", "--data", assets[data], "--epochs", "2", "--resume", path], what
    return build


for _name, (_make, _what, _ranks, _expect) in BAD_MODELS.items():
    CASES.append(Case(f"evaluate_model_{_name}", with_model("evaluate", _make, _what), _ranks, _expect))
for _name in PREDICT_MODELS:
    _make, _what, _ranks, _expect = BAD_MODELS[_name]
    CASES.append(Case(f"predict_model_{_name}", with_model("predict", _make, _what),
                      (1, 3) if _name in ("no_kind", "std_nan") else (1,), _expect))
for _name in RESUME_MODELS:
    _make, _what, _ranks, _expect = BAD_MODELS[_name]
    CASES.append(Case(f"resume_model_{_name}", with_model("resume", _make, _what),
                      (3,) if _name == "no_params" else (1,), _expect))


def on_data(command, items):
    """`command` (evaluate or predict) of the trained model on the file items(rng, tmp) describes."""
    def build(tmp, rng, assets):
        made, what = items(rng, tmp)
        path = write(tmp / "data.h5", made)
        out = ["--out", tmp / "p.h5"] if command == "predict" else []
        return [command, "--model", assets["model"], "--data", path, *out], what
    return build


for _name, _items, _ranks, _expect in (
        ("features_mismatch", flat(lambda r, X, y, t: ([("X", X[:, :3]), ("y", y)], "3 features")), (1, 3), 2),
        ("x_nan", flat(lambda r, X, y, t: ([("X", planted(r, X, np.nan)), ("y", y)], "a NaN")), (1, 3), 2),
        ("x_1d", flat(lambda r, X, y, t: ([("X", X[:, 0]), ("y", y)], "X (48,)")), (1,), 2),
        ("x_group", flat(lambda r, X, y, t: ([("X", Group()), ("y", y)], "/X a group")), (1,), 2),
        ("x_dangling", flat(lambda r, X, y, t: ([("X", h5py.SoftLink("/gone")), ("y", y)], "/X -> /gone")), (1,), 2),
        ("zero_rows", lambda r, t: ([("X", np.zeros((0, 4), np.float32)), ("y", np.zeros(0, int))], "0 rows"),
         (1, 3), None),
        ("one_row", lambda r, t: ([("X", np.ones((1, 4), np.float32)), ("y", np.array([1]))], "1 row"), (1, 3), None),
        ("two_rows", lambda r, t: ([("X", np.ones((2, 4), np.float32)), ("y", np.array([1, 0]))], "2 rows"), (3,),
         None),
        ("test_one_row", split(edit(test__X=lambda r, b: b["test/X"][:1], test__y=lambda r, b: b["test/y"][:1])),
         (1, 3), None),
        ("vds_missing", vds({0, 1}), (1,), 2)):
    CASES.append(Case(f"predict_data_{_name}", on_data("predict", _items), _ranks, _expect))
    CASES.append(Case(f"evaluate_data_{_name}", on_data("evaluate", _items), (1,), _expect))
for _name, _items in (
        ("labels_unseen", flat(lambda r, X, y, t: ([("X", X), ("y", np.where(y == 0, 9, y))], "label 9"))),
        ("labels_fraction", flat(lambda r, X, y, t: ([("X", X), ("y", y + 0.5)], "labels 0.5, 1.5, 2.5"))),
        ("labels_strings", flat(lambda r, X, y, t: ([("X", X), ("y", np.array([b"a", b"b", b"c"])[y])],
                                                    "string labels for an int model"))),
        ("labels_nan", flat(lambda r, X, y, t: ([("X", X), ("y", planted(r, y.astype(float), np.nan))],
                                                "a NaN label"))),
        ("labels_2d", flat(lambda r, X, y, t: ([("X", X), ("y", np.stack([y, y], 1))], "y (48,2)"))),
        ("labels_missing", flat(lambda r, X, y, t: ([("X", X)], "no /y"))),
        ("labels_short", flat(lambda r, X, y, t: ([("X", X), ("y", y[:-5])], "y 5 short"))),
        ("labels_uint64_huge", flat(lambda r, X, y, t: (
            [("X", X), ("y", y.astype(np.uint64) + np.uint64(2 ** 63))], "labels 2**63 + class")))):
    CASES.append(Case(f"evaluate_data_{_name}", on_data("evaluate", _items), (1,), 2))


def command(name, argv, ranks=(1,), expect=None):
    """A case whose command line argv(tmp, rng, assets) -> (argv, what) builds."""
    CASES.append(Case(name, argv, ranks, expect))


command("evaluate_model_missing", lambda t, r, a: (["evaluate", "--model", t / "no.h5", "--data", a["data"]], ""),
        expect=2)
command("evaluate_model_directory", lambda t, r, a: (["evaluate", "--model", t, "--data", a["data"]], ""), expect=2)
command("evaluate_regression_on_classes", lambda t, r, a: (
    ["evaluate", "--model", a["regression_model"], "--data", a["data"]], "a regression model on class labels"))
command("evaluate_metrics_json_directory", lambda t, r, a: (
    ["evaluate", "--model", a["model"], "--data", a["data"], "--metrics-json", t], ""), expect=2)
command("predict_out_missing_dir", lambda t, r, a: (
    ["predict", "--model", a["model"], "--data", a["data"], "--out", t / "no" / "p.h5"], ""), (1, 3), 2)
command("predict_out_directory", lambda t, r, a: (
    ["predict", "--model", a["model"], "--data", a["data"], "--out", t], ""), expect=2)
command("predict_out_is_model", lambda t, r, a: (
    ["predict", "--model", shutil.copy(a["model"], t / "m.h5"), "--data", a["data"], "--out", t / "m.h5"],
    "--out names the model"), expect=2)
command("predict_x_dataset_missing", lambda t, r, a: (
    ["predict", "--model", a["model"], "--data", a["data"], "--out", t / "p.h5", "--x-dataset", "/nope"], ""),
    expect=2)
command("predict_x_dataset_labels", lambda t, r, a: (
    ["predict", "--model", a["model"], "--data", a["data"], "--out", t / "p.h5", "--x-dataset", "/y"], ""), expect=2)
command("save_is_data", lambda t, r, a: (
    ["--quiet", "--epochs", "1", "--data", shutil.copy(a["data"], t / "d.h5"), "--save", t / "d.h5"], ""), expect=2)
command("metrics_is_data", lambda t, r, a: (
    ["--quiet", "--epochs", "1", "--data", shutil.copy(a["data"], t / "d.h5"), "--metrics-json", t / "d.h5"], ""),
    (3,), 2)
command("save_is_directory", lambda t, r, a: (["--quiet", "--epochs", "1", "--data", a["data"], "--save", t], ""),
        expect=2)
command("resume_other_features", lambda t, r, a: (
    ["--quiet", "--data", write(t / "d5.h5", [("X", np.hstack([xy(r)[0], np.ones((48, 1), "f4")])), ("y", xy(r)[1])]),
     "--resume", a["model"], "--epochs", "2"], "a 4-feature model on 5 features"), (1, 3), 2)
command("resume_other_classes", lambda t, r, a: (
    ["--quiet", "--data", write(t / "d2.h5", [("X", xy(r)[0]), ("y", xy(r)[1] % 2)]), "--resume", a["model"],
     "--epochs", "2"], "a 3-class model on 2-class data"), expect=2)


@case("config_fifo", expect=2, limit=10)
def _(tmp, rng, assets):
    os.mkfifo(tmp / "run.toml")
    return ["--quiet", "--data", assets["data"], "--config", tmp / "run.toml"], "--config a FIFO nobody writes"


# -- data inspect and plot -------------------------------------------------------------------
for _name, _items in (("dangling", flat(lambda r, X, y, t: ([("X", h5py.SoftLink("/gone")), ("y", y)], "/X -> /gone"))),
                      ("external_missing", flat(lambda r, X, y, t: (
                          [("X", h5py.ExternalLink(str(t / "gone.h5"), "/X")), ("y", y)], "/X -> gone.h5"))),
                      ("vds_missing", vds({0, 1})),
                      ("refs", flat(lambda r, X, y, t: (
                          [("X", X), ("y", {"shape": (48,), "dtype": h5py.ref_dtype})], "y object references"))),
                      ("vlen_int_labels", flat(lambda r, X, y, t: (
                          [("X", X), ("y", {"shape": (48,), "dtype": h5py.vlen_dtype(np.int64)})], "y vlen ints"))),
                      ("compound", flat(lambda r, X, y, t: (
                          [("X", np.rec.fromarrays([X[:, 0], X[:, 1]], names="a,b")), ("y", y)], "X compound"))),
                      ("scalars", lambda r, t: ([("X", np.float32(1)), ("y", np.int64(1))], "scalars")),
                      ("strings", flat(lambda r, X, y, t: ([("X", X.astype("S8")), ("y", y.astype("S1"))],
                                                           "strings"))),
                      ("nan_labels", flat(lambda r, X, y, t: ([("X", X), ("y", y + np.nan)], "NaN labels"))),
                      ("groups", lambda r, t: ([("train/X", Group()), ("train/y", Group())], "groups only")),
                      ("empty_hdf5", lambda r, t: ([], "no datasets"))):
    def _build(tmp, rng, assets, items=_items):
        made, what = items(rng, tmp)
        return ["data", "inspect", write(tmp / "data.h5", made)], what
    CASES.append(Case(f"inspect_{_name}", _build, (1, 3) if _name in ("dangling", "refs") else (1,)))
for _name, _content in (("random", lambda r, a: r.integers(0, 256, 3000, dtype=np.uint8).tobytes()),
                        ("empty", lambda r, a: b""),
                        ("truncated", lambda r, a: a["data"].read_bytes()[:int(r.integers(64, 4096))]),
                        ("model", lambda r, a: a["model"].read_bytes())):
    def _build(tmp, rng, assets, content=_content):
        path = tmp / "f.h5"
        path.write_bytes(content(rng, assets))
        return ["data", "inspect", path], ""
    CASES.append(Case(f"inspect_file_{_name}", _build, (1,), None if _name == "model" else 2))
command("inspect_directory", lambda t, r, a: (["data", "inspect", t], ""), expect=2)
command("inspect_missing", lambda t, r, a: (["data", "inspect", t / "no.h5"], ""), expect=2)

for _name, _content, _expect in (
        ("random", lambda r, a: r.integers(0, 256, 600, dtype=np.uint8).tobytes(), 2),
        ("empty", lambda r, a: b"", 2), ("list", lambda r, a: b"[]", 2), ("object", lambda r, a: b"{}", 2),
        ("history_strings", lambda r, a: b'{"history": ["a", "b"]}', 2),
        ("nan", lambda r, a: b'{"history": [{"epoch": NaN, "train_loss": Infinity}]}', None),
        ("deep", lambda r, a: b"[" * 100000 + b"]" * 100000, 2),
        ("model_file", lambda r, a: a["model"].read_bytes(), 2)):
    def _build(tmp, rng, assets, content=_content):
        path = tmp / "metrics.json"
        path.write_bytes(content(rng, assets))
        return ["plot", path, "-o", tmp / "p.png"], ""
    CASES.append(Case(f"plot_{_name}", _build, (3,) if _name == "nan" else (1,), _expect))
command("plot_unknown_extension", lambda t, r, a: (["plot", a["metrics"], "-o", t / "p.xyz"], ""), expect=2)
command("plot_out_missing_dir", lambda t, r, a: (["plot", a["metrics"], "-o", t / "no" / "p.png"], ""), expect=2)
command("plot_missing", lambda t, r, a: (["plot", t / "no.json", "-o", t / "p.png"], ""), expect=2)


# -- issue 20: sweeps, resume, the reproducers ---------------------------------------------
FIRST_20 = len(CASES)       # the cases from here on, with DISK_CASES, SIGNAL_CASES and API_CASES: issue 20's


def before(tmp, *paths):
    """Copies of files as they are now, for `unchanged` to compare with after the launch."""
    for path in paths:
        shutil.copyfile(path, tmp / f"{os.path.basename(path)}.before")
    return paths


def unchanged(*names, must_exist=True):
    """A check: the files `names` (in the case's folder) hold the bytes `before` saw."""
    def check(proc, tmp):
        found = []
        for name in names:
            path = tmp / name
            if not path.exists():
                found += [f"{name} is gone"] if must_exist else []
            elif not path.is_file() or path.read_bytes() != (tmp / f"{os.path.basename(name)}.before").read_bytes():
                found.append(f"{name} was changed")
        return found
    return check


def checks(*fns):
    return lambda proc, tmp: [problem for fn in fns for problem in fn(proc, tmp)]


def not_silent(option, word):
    """A check for a setting the run cannot honour: refused (exit 2) or warned about, naming it."""
    def check(proc, tmp):
        said = [ln for ln in proc.stderr.splitlines() if ln.startswith("mpidml:") and word in ln]
        ok = said and proc.returncode in (0, 2)
        return [] if ok else [f"{option} dropped without a word (exit {proc.returncode})"]
    return check


def sweep_entries(count):
    """A check: the metrics document has one sweep entry per point of the grid."""
    def check(proc, tmp):
        if proc.returncode:
            return []
        got = len(json.loads((tmp / "m.json").read_text()).get("sweep", []))
        return [] if got == count else [f"{got} sweep entries for a grid of {count}"]
    return check


def launch_case(name, build, ranks=(1,), expect=None, check=None, around=None, limit=LIMIT_S):
    CASES.append(Case(name, build, ranks, expect, limit=limit, check=check, around=around))


def small(assets, *argv):
    return ["--quiet", "--data", assets["data"], "--epochs", "1", *argv]


SWEEPABLE = {   # key -> fn(rng) drawing one value the option accepts
    "lr": lambda r: f"{10 ** r.uniform(-4, 0):.3g}", "l2": lambda r: f"{10 ** r.uniform(-6, -1):.2g}",
    "optimizer": lambda r: r.choice(["sgd", "momentum", "adam"]), "momentum": lambda r: f"{r.uniform(0, 0.99):.2f}",
    "batch-size": lambda r: str(int(r.integers(1, 80))), "sync-every": lambda r: str(int(r.integers(1, 9))),
    "schedule": lambda r: r.choice(["constant", "step", "cosine"]), "seed": lambda r: str(int(r.integers(0, 2 ** 63))),
    "warmup-epochs": lambda r: f"{r.uniform(0, 3):.2f}", "clip-norm": lambda r: f"{r.uniform(0, 5):.2f}",
}


def random_grid(tmp, rng, assets):
    """One to three sweepable keys, one to four distinct values each, in a random order."""
    keys = rng.choice(sorted(SWEEPABLE), int(rng.integers(1, 4)), replace=False)
    axes = {k: sorted({SWEEPABLE[k](rng) for _ in range(int(rng.integers(1, 5)))}) for k in keys}
    argv = [a for k, vs in axes.items() for a in ("--sweep", f"{k}={' '.join(vs)}")]
    size = int(np.prod([len(v) for v in axes.values()]))
    return small(assets, *argv, "--metrics-json", tmp / "m.json"), f"a grid of {size}"


for _i, _ranks in enumerate(((1,), (3,), (1,), (1, 3))):
    launch_case(f"sweep_random_grid_{_i}", random_grid, _ranks, 0)
launch_case("sweep_odd_grid", lambda t, r, a: (small(a, "--sweep", "lr=0.1 0.01", "--sweep", "l2=0 1e-4 1e-3",
                                                     "--metrics-json", t / "m.json"), "2 x 3 models"),
            (1, 3), 0, check=sweep_entries(6))
for _name, _sweep, _extra in (
        ("values_empty", ["lr="], []), ("no_equals", ["lr"], []), ("key_empty", ["=1 2"], []),
        ("value_twice", ["lr=0.1 0.1"], []), ("key_twice", ["lr=0.1", "lr=0.2"], []),
        ("key_unknown", ["colour=1 2"], []),
        ("lr_negative", ["lr=-1 0.1"], []), ("lr_nan", ["lr=nan 0.1"], []), ("lr_inf", ["lr=inf"], []),
        ("batch_huge", [f"batch-size={10 ** 30} 8"], []), ("hidden_huge", [f"hidden={10 ** 12} 4"], ["--model", "mlp"]),
        ("hidden_without_mlp", ["hidden=4 8"], ["--model", "softmax"]), ("seed_negative", ["seed=-1 2"], []),
        ("optimizer_unknown", ["optimizer=sgd rmsprop"], []),
        ("sync_every_zero", ["sync-every=0 1"], [])):
    launch_case(f"sweep_{_name}", lambda t, r, a, s=_sweep, e=_extra: (
        small(a, *[x for v in s for x in ("--sweep", v)], *e), f"--sweep {s}"), expect=2)
launch_case("sweep_huge_grid", lambda t, r, a: (small(a, "--sweep", "seed=" + " ".join(
    map(str, sorted(set(r.integers(0, 2 ** 62, 2100).tolist())))), "--test-fraction", "0.5"), "2100 models"))
launch_case("sweep_with_lr", lambda t, r, a: (small(a, "--lr", "0.5", "--sweep", "lr=0.1 0.01"),
                                              "--lr beside --sweep lr=..."), check=not_silent("--lr", "--lr"))
launch_case("sweep_validation_zero", lambda t, r, a: (small(a, "--sweep", "lr=0.1 0.01", "--validation-fraction", "0"),
                                                      "a sweep chooses with no validation rows"),
            check=not_silent("--validation-fraction 0", "validation"))
launch_case("sweep_validation_tiny", lambda t, r, a: (
    small(a, "--sweep", "lr=0.1 0.01", "--validation-fraction", "1e-9"), "a sweep chooses on 0 rows"), expect=2)
launch_case("sweep_early_stopping_huge", lambda t, r, a: (
    small(a, "--sweep", "lr=0.1 0.01", "--early-stopping", str(10 ** 30), "--validation-fraction", "0.2"), ""))
launch_case("sweep_save_dir_is_data", lambda t, r, a: (
    small(a, "--sweep", "lr=0.1 0.01", "--save-dir", before(t, shutil.copy(a["data"], t / "d.h5"))[0]), ""),
    expect=2, check=unchanged("d.h5"))
launch_case("sweep_save_dir_is_fifo", lambda t, r, a: (
    small(a, "--sweep", "lr=0.1 0.01", "--save-dir", (os.mkfifo(t / "fifo"), t / "fifo")[1]), ""), expect=2)
launch_case("sweep_save_dir_without_sweep", lambda t, r, a: (small(a, "--save-dir", t / "sd"), ""), expect=2)
launch_case("sweep_save_dir_nested", lambda t, r, a: (
    small(a, "--sweep", "lr=0.1 0.01", "--save-dir", t / "a" / "b" / "c"), ""), (3,), 0)
launch_case("sweep_save_dir_holds_data", lambda t, r, a: (
    small(a, "--sweep", "lr=0.1 0.01", "--save-dir", t, "--data",
          before(t, shutil.copy(a["data"], t / "model-000.h5"))[0]), "--data is --save-dir/model-000.h5"),
    expect=2, check=unchanged("model-000.h5"))
launch_case("validation_fraction_tiny", lambda t, r, a: (small(a, "--validation-fraction", "1e-9"),
                                                         "the issue's reproducer: 0 validation rows"), expect=2)
launch_case("early_stopping_validation_tiny", lambda t, r, a: (
    small(a, "--validation-fraction", "1e-9", "--early-stopping", "1", "--epochs", "3"), ""), expect=2)


# the reproducers, literally
def config_file(tmp, text="epochs = 1\n"):
    (tmp / "run.toml").write_text(text)
    return before(tmp, tmp / "run.toml")[0]


launch_case("config_is_metrics_json", lambda t, r, a: (
    ["--quiet", "--data", a["data"], "--config", config_file(t), "--metrics-json", t / "run.toml"],
    "--config run.toml --metrics-json run.toml"), (1, 3), 2, check=unchanged("run.toml"))
for _name, _opt in (("save", "--save"), ("trace", "--trace")):
    launch_case(f"config_is_{_name}", lambda t, r, a, o=_opt: (
        ["--quiet", "--data", a["data"], "--config", config_file(t), o, t / "run.toml"],
        f"--config run.toml {o} run.toml"),
        expect=2, check=unchanged("run.toml"))
launch_case("config_is_sweep_metrics", lambda t, r, a: (
    ["--quiet", "--data", a["data"], "--config", config_file(t, 'sweep = ["lr=0.1 0.01"]\nepochs = 1\n'),
     "--metrics-json", t / "run.toml"], "a sweep from --config, its metrics over it"), expect=2,
    check=unchanged("run.toml"))
launch_case("env_sweep", lambda t, r, a: (small(a, "--metrics-json", t / "m.json"), "MPIDML_SWEEP='lr=0.1 0.01'"),
            around=lambda cmd, tmp: ["env", "MPIDML_SWEEP=lr=0.1 0.01", *cmd], check=lambda proc, tmp: (
                sweep_entries(2) if (tmp / "m.json").is_file() and "sweep" in json.loads((tmp / "m.json").read_text())
                else not_silent("MPIDML_SWEEP", "MPIDML_SWEEP"))(proc, tmp))


def closed_stdout(cmd, tmp):
    """`python -m mpidml ... >&-`: one process, its stdout closed, as a shell leaves it."""
    return ["sh", "-c", 'exec "$@" >&-', "sh", *cmd[3:]]


launch_case("stdout_closed", lambda t, r, a: (["--data", a["data"], "--epochs", "2"], "stdout closed (>&-)"),
            around=closed_stdout)
launch_case("stdout_closed_quiet", lambda t, r, a: (small(a), "stdout closed (>&-), --quiet"), around=closed_stdout)


# resume of a file with options changed, hand-edited or cut short
def resumed(key, *argv, what=""):
    """--resume a copy of a saved model (assets[key]); the copy must be untouched when refused."""
    def build(tmp, rng, assets):
        path = shutil.copy(assets[key], tmp / "r.h5")
        before(tmp, path)
        return ["--quiet", "--data", assets["data"], "--epochs", "2", "--resume", path, *argv], what
    return build


def untouched_when_refused(name):
    def check(proc, tmp):
        return unchanged(name)(proc, tmp) if proc.returncode else []
    return check


for _name, _key, _argv, _ranks, _expect in (
        ("block_rows", "split_model", ["--block-rows", "16"], (1, 3), 2),
        ("validation_fraction", "split_model", ["--validation-fraction", "0.5"], (1, 3), 2),
        ("validation_fraction_zero", "split_model", ["--validation-fraction", "0"], (1,), 2),
        ("validation_fraction_added", "model", ["--validation-fraction", "0.25"], (1,), 2),
        ("partition_seed", "split_model", ["--partition-seed", "5"], (1,), 2),
        ("test_fraction", "split_model", ["--test-fraction", "0.4"], (1,), 2),
        ("same_options", "split_model", ["--block-rows", "8", "--validation-fraction", "0.25"], (1, 3), 0),
        ("other_ranks", "model", [], (3,), 0),
        ("early_stopping", "split_model", ["--early-stopping", "1"], (1,), None),
        ("sweep", "model", ["--sweep", "lr=0.1 0.01"], (1,), 2),
        ("save_over_resume_keeping", "model", ["--save", "{tmp}/r.h5", "--checkpoint-every", "1",
                                                "--keep-checkpoints", "1"], (1,), 0)):
    launch_case(f"resume_{_name}", lambda t, r, a, k=_key, v=_argv: resumed(
        k, *[x.replace("{tmp}", str(t)) for x in v], what=" ".join(v))(t, r, a), _ranks, _expect,
        check=untouched_when_refused("r.h5") if _expect != 0 else None)


def edited(change, what):
    """--resume a copy of the trained model that change(f, rng) edited, as a user by hand."""
    def build(tmp, rng, assets):
        path = shutil.copy(assets["model"], tmp / "r.h5")
        with h5py.File(path, "a") as f:
            change(f, rng)
        before(tmp, path)
        return ["--quiet", "--data", assets["data"], "--epochs", "2", "--resume", path], what
    return build


def set_config(key, value):
    def change(f, rng):
        config = json.loads(f.attrs["config"])
        config[key] = value
        f.attrs["config"] = json.dumps(config)
    return change


for _name, _change, _what, _expect in (
        ("stopped_at_string", set_attr("stopped_at", '"garbage"'), "stopped_at a JSON string", 2),
        ("stopped_at_huge_step", set_attr("stopped_at", json.dumps({"epoch": 1, "step": 10 ** 9, "loss": [[0.1]]})),
         "stopped_at step 1e9", 2),
        ("stopped_at_no_ranks", set_attr("stopped_at", json.dumps({"epoch": 0, "step": 3})), "stopped_at partial", 2),
        ("stopped_at_list", set_attr("stopped_at", "[1, 2]"), "stopped_at a list", 2),
        ("optimizer_unknown", set_config("optimizer", "rmsprop"), "config optimizer rmsprop", 2),
        ("optimizer_number", set_config("optimizer", 3), "config optimizer 3", 2),
        ("optimizer_state_nan", set_dataset("optimizer_state", lambda old, r: planted(r, old, np.nan)),
         "a NaN in optimizer_state", None),
        ("optimizer_state_strings", set_dataset("optimizer_state", lambda old, r: old.astype("S8")),
         "optimizer_state strings", None),
        ("optimizer_state_short", set_dataset("optimizer_state", lambda old, r: old[:3]), "optimizer_state short",
         None),
        ("rng_short", set_attr("rng", "[1]"), "rng [1]", None),
        ("history_object", set_attr("history", "{}"), "history {}", 2),
        ("epoch_huge", set_attr("epoch", str(10 ** 30)), "epoch 1e30", None)):
    launch_case(f"resume_edited_{_name}", edited(_change, _what), expect=_expect,
                check=untouched_when_refused("r.h5"))


def truncated_model(tmp, rng, assets):
    data = assets["model"].read_bytes()
    at = int(rng.integers(64, len(data)))
    (tmp / "r.h5").write_bytes(data[:at])
    before(tmp, tmp / "r.h5")
    return ["--quiet", "--data", assets["data"], "--epochs", "2", "--resume", tmp / "r.h5", "--save", tmp / "r.h5"], \
        f"the first {at} of {len(data)} bytes of a model, also --save"


launch_case("resume_truncated", truncated_model, (1, 3), 2, check=unchanged("r.h5"))


def foreign_checkpoints(tmp, rng, assets):
    """Checkpoints of another run (and an unrelated file) matching this run's STEM.epochNNNN.h5."""
    run = tmp / "run"
    run.mkdir()
    for epoch in (4, 5):
        shutil.copy(assets["model"], run / f"m.epoch{epoch:04d}.h5")
    (run / "m.epoch9999.h5").write_bytes(rng.integers(0, 256, 100, dtype=np.uint8).tobytes())
    before(tmp, *(run / f"m.epoch{e:04d}.h5" for e in (4, 5, 9999)))
    return small(assets, "--epochs", "3", "--save", run / "m.h5", "--checkpoint-every", "1",
                 "--keep-checkpoints", "2"), "epochs 4, 5 and 9999 of another run in the directory"


def own_checkpoints(*epochs):
    def check(proc, tmp):
        return [f"this run's m.epoch{e:04d}.h5 is missing" for e in epochs
                if not (tmp / "run" / f"m.epoch{e:04d}.h5").is_file()]
    return check


launch_case("keep_checkpoints_foreign_files", foreign_checkpoints, (1,), 0, check=checks(
    unchanged(*(f"run/m.epoch{e:04d}.h5" for e in (4, 5, 9999))), own_checkpoints(2, 3)))
launch_case("keep_checkpoints_name_is_directory", lambda t, r, a: (
    (t / "run" / "m.epoch0002.h5").mkdir(parents=True) or
    small(a, "--epochs", "3", "--save", t / "run" / "m.h5", "--checkpoint-every", "1", "--keep-checkpoints", "2"),
    "m.epoch0002.h5 a directory"), expect=2)
launch_case("keep_checkpoints_name_is_data", lambda t, r, a: (
    small(a, "--epochs", "3", "--data", before(t, shutil.copy(a["data"], t / "m.epoch0002.h5"))[0],
          "--save", t / "m.h5", "--checkpoint-every", "1", "--keep-checkpoints", "2"),
    "--data is m.epoch0002.h5"), expect=2, check=unchanged("m.epoch0002.h5"))


# -- a full disk: a 1 MiB tmpfs in a private mount namespace ---------------------------------------
@functools.cache
def can_mount():
    """Whether this user may mount a tmpfs in a private mount namespace (root, or a user namespace)."""
    probe = f"/tmp/fuzz-mount-probe-{os.getpid()}"
    os.makedirs(probe, exist_ok=True)
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        os.rmdir(probe)


def full_disk(fill):
    """Run the command with tmp/full a 1 MiB tmpfs seen by this job alone (filled up first where
    `fill`); what is left there afterwards goes to tmp/full.listing."""
    def around(cmd, tmp):
        (tmp / "full").mkdir(exist_ok=True)
        script = ('D=$1; shift; mount -t tmpfs -o size=1m tmpfs "$D" || exit 99; ' +
                  ('head -c 2000000 /dev/zero > "$D/.fill" 2>/dev/null; ' if fill else '') +
                  '"$@"; rc=$?; find "$D" -mindepth 1 ! -type d -printf "%P\\n" > "$D.listing"; exit $rc')
        return ["unshare", "-m", "sh", "-c", script, "sh", str(tmp / "full"), *cmd]
    return around


def nothing_left(proc, tmp):
    """No output, complete or half-written, and no temporary is left on the full disk (a
    directory --save-dir created, empty, may stay, as mkdir -p's would)."""
    listing = tmp / "full.listing"
    left = sorted(set(listing.read_text().split()) - {".fill"}) if listing.exists() else ["(no listing)"]
    return [f"left on the full disk: {left}"] if left else []


DISK_CASES = []


def disk_case(name, build, ranks=(1,), fill=False):
    DISK_CASES.append(Case(name, build, ranks, 2, check=nothing_left, around=full_disk(fill)))


def big_csv(tmp, rng):
    rows = rng.standard_normal((60000, 8)).round(4)
    path = tmp / "big.csv"
    np.savetxt(path, np.hstack([rows, rng.integers(0, 3, (60000, 1))]), delimiter=",", fmt="%g",
               header="a,b,c,d,e,f,g,h,label", comments="")
    return path


for _fill in (False, True):
    _tag = "_filled" if _fill else ""
    disk_case(f"disk_synth_out{_tag}", lambda t, r, a: (
        ["data", "synth", "--samples", "60000", "--features", "10", "--out", t / "full" / "s.h5"], "2.4 MB"),
        (1, 3) if not _fill else (1,), _fill)
    disk_case(f"disk_convert{_tag}", lambda t, r, a: (["data", "convert", big_csv(t, r), t / "full" / "c.h5"],
                                                      "60000 rows"), fill=_fill)
    disk_case(f"disk_save{_tag}", lambda t, r, a: (small(a, "--model", "mlp", "--hidden", "512,512", "--save",
                                                         t / "full" / "m.h5"), "a 2 MB model"), fill=_fill)
    disk_case(f"disk_save_dir{_tag}", lambda t, r, a: (
        small(a, "--model", "mlp", "--sweep", "hidden=512,256 256,256", "--save-dir", t / "full" / "models"),
        "two models of 0.5-1 MB"), (3,) if not _fill else (1,), _fill)
disk_case("disk_metrics_json_filled", lambda t, r, a: (small(a, "--metrics-json", t / "full" / "m.json"), ""),
          (1, 3), True)
disk_case("disk_checkpoint_every_filled", lambda t, r, a: (
    small(a, "--epochs", "3", "--save", t / "full" / "m.h5", "--checkpoint-every", "1", "--keep-checkpoints", "2"),
    ""), fill=True)
disk_case("disk_trace_filled", lambda t, r, a: (small(a, "--trace", t / "full" / "t.json"), ""), fill=True)
disk_case("disk_predict_out_filled", lambda t, r, a: (
    ["predict", "--model", a["model"], "--data", a["data"], "--out", t / "full" / "p.h5"], ""), fill=True)
disk_case("disk_evaluate_metrics_filled", lambda t, r, a: (
    ["evaluate", "--model", a["model"], "--data", a["data"], "--metrics-json", t / "full" / "e.json"], ""), fill=True)


# -- signals: to mpiexec, or to its whole process group as a terminal sends them -------------------
SIGNAL_CASES = []
CAUGHT = {"TERM": {75, 143}, "USR1": {75, 138}, "INT": {130}}     # --checkpoint-signal's, and Ctrl-C


def signal_case(name, sig, to, when, ranks=(1,), twice=False):
    """`when`: early (in the first 0.3 s: start-up), any (0.3-4 s: start-up or training, as the
    machine's load has it) or training (0-0.5 s after the first epoch line); `twice`: the same
    signal again 50-300 ms later."""
    SIGNAL_CASES.append(Case(name, (sig, to, when, twice), ranks))


for _sig in ("TERM", "INT", "USR1", "USR2", "HUP"):
    for _to in ("mpiexec", "group"):
        for _when, _twice in (("early", False), ("any", False), ("training", False), ("training", True)):
            signal_case(f"signal_{_sig.lower()}_{_to}_{_when}{'_twice' if _twice else ''}", _sig, _to, _when, (1, 3),
                        _twice)


def temporaries_left(out, killed):
    """The temporaries left in `out`. Where mpiexec itself died of the signal (MPICH's dies of
    HUP and USR2), it killed its ranks outright (SIGKILL), so a rank mid-write could not remove
    its own: then the next write into the folder, by a new process, must remove it, once the
    killed writers are gone (reaped: up to a few seconds)."""
    def left():
        return sorted(p.name for p in out.iterdir() if p.name.startswith(".mpidml-"))
    deadline = time.monotonic() + 5
    while killed and left() and time.monotonic() < deadline:
        subprocess.run([sys.executable, "-c", "import sys; from mpidml.files.outputs import atomic_write_bytes; "
                        "atomic_write_bytes(sys.argv[1], b'')", str(out / "next")], check=True, timeout=30)
        time.sleep(0.2)
    return left()


def signal_outcome(sig, rc, out, err):
    """What is wrong with the end of a signalled run. A caught signal: its code (75 stopped with a
    checkpoint, 130 Ctrl-C, or 128 + N) and one line. Another: ended by it (128 + N; mpiexec
    itself killed by it, -N, has no one left to print), at most one line. Never a banner or a
    traceback (temporaries: see temporaries_left)."""
    number = getattr(signal, "SIG" + sig)
    codes = CAUGHT.get(sig, {75, 128 + number, -number})
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("mpidml: warning:")]
    found = [] if rc in codes else [f"exit {rc}, not one of {sorted(codes)}"]
    if len(lines) != 1 and not (rc == -number and len(lines) < 2):
        found.append(f"{len(lines)} lines on stderr, not 1")
    found += [f"{needle!r} in the output" for needle in ("Traceback", "BAD TERMINATION") if needle in out + err]
    return found


# -- the Python API: hostile parameters and arrays, ranks that disagree (tests/fuzz_api.py) --------
API_CASES = [Case(f"api_{name}", name, ranks, expect) for name, ranks, expect in (
    ("uint64_labels_huge", (1, 3), None), ("uint64_labels_max", (1,), None), ("int64_labels_extremes", (1,), None),
    ("float_labels_above_2_53", (1,), None), ("nan_row", (1,), 2), ("nan_row_on_rank_1", (3,), 2),
    ("inf_row", (1,), 2), ("nan_label", (1,), 2), ("nan_target", (1,), 2), ("zero_rows", (1, 3), 2),
    ("zero_rows_on_rank_2", (3,), None), ("x_1d", (1,), 2), ("x_3d", (1,), 2), ("x_strings", (1,), None),
    ("x_complex", (1,), 2), ("lengths_differ", (1,), 2), ("features_differ_on_rank_2", (3,), 2),
    ("classes_differ_by_rank", (3,), 0), ("regressor_on_strings", (1,), 2), ("partial_fit_unknown_class", (1,), 2),
    ("train_unknown_keyword", (1,), 2), ("train_nan_lr", (1,), 2), ("epochs_zero", (1,), None),
    ("epochs_negative", (1,), 2), ("epochs_fraction", (1,), 2), ("epochs_string", (1,), None),
    ("epochs_bool", (1,), 2), ("lr_nan", (1, 3), 2), ("lr_negative", (1,), 2), ("lr_string", (1,), 2),
    ("hidden_zero", (1,), None), ("hidden_string", (1,), 2), ("hidden_huge", (1, 3), None), ("batch_huge", (1,), 2),
    ("model_unknown", (1,), 2), ("optimizer_unknown", (1,), 2), ("seed_negative", (1,), 2), ("seed_2_70", (1,), 2),
    ("stall_timeout_nan", (1,), 2), ("warmup_huge", (1,), None), ("validation_tiny", (1,), 2),
    ("validation_one", (1,), 2), ("lr_on_rank_1", (3,), 2), ("model_on_rank_1", (3,), 2),
    ("epochs_on_rank_1", (3,), 2), ("seed_on_rank_1", (3,), 2), ("fit_on_rank_0_only", (3,), 4))]
FUZZ_API = os.path.join(ROOT, "tests", "fuzz_api.py")


# -- option values, MPIDML_* variables, TOML files: in-process first -----------------------------
OPTIONS = []


def opt(name, *argv, run=False, expect=None, ranks=(1,)):
    """argv: options for train on the small file (one epoch unless they say), or a whole command
    line starting with the command; {tmp} is the case's folder. run: launch it if accepted."""
    OPTIONS.append(Case(f"option_{name}", list(argv), ranks, expect, run=run))


HUGE = str(10 ** 30)
opt("epochs_zero", "--epochs", "0", ranks=(1, 3))
opt("epochs_negative", "--epochs", "-3")
opt("epochs_fraction", "--epochs", "1.5")
opt("epochs_word", "--epochs", "ten")
opt("epochs_empty", "--epochs", "")
opt("epochs_exponent", "--epochs", "1e3")
opt("epochs_huge", "--epochs", HUGE)               # accepted; a long run is what was asked
opt("epochs_unicode_digit", "--epochs", "\u0661", run=True)
opt("epochs_no_value", "--epochs")
opt("batch_zero", "--batch-size", "0")
opt("batch_negative", "--batch-size", "-1")
opt("batch_word", "--batch-size", "x")
opt("batch_huge", "--batch-size", HUGE, run=True, ranks=(1, 3))
opt("batch_int64_max", "--batch-size", str(2 ** 63 - 1), run=True)
opt("batch_2_64", "--batch-size", str(2 ** 64), run=True)
opt("lr_negative", "--lr", "-1")
opt("lr_nan", "--lr", "nan")
opt("lr_inf", "--lr", "inf")
opt("lr_word", "--lr", "fast")
opt("lr_empty", "--lr", "")
opt("lr_1e300", "--lr", "1e300", "--no-standardize", run=True, ranks=(1, 3))
opt("lr_zero", "--lr", "0", run=True)
opt("lr_denormal", "--lr", "1e-320")
opt("lr_hex", "--lr", "0x1p-4")
opt("hidden_zero", "--model", "mlp", "--hidden", "0", run=True)
opt("hidden_negative", "--model", "mlp", "--hidden", "-1")
opt("hidden_words", "--model", "mlp", "--hidden", "a,b")
opt("hidden_empty_width", "--model", "mlp", "--hidden", "10,,5")
opt("hidden_trailing_comma", "--model", "mlp", "--hidden", "4,")
opt("hidden_exponent", "--model", "mlp", "--hidden", "1e3")
opt("hidden_huge", "--model", "mlp", "--hidden", str(10 ** 12), run=True, ranks=(1, 3))
opt("hidden_wide_pair", "--model", "mlp", "--hidden", "100000,100000", run=True)
opt("hidden_deep_narrow", "--model", "mlp", "--hidden", ",".join(["1"] * 40), run=True)
opt("hidden_space", "--model", "mlp", "--hidden", " ")
opt("hidden_without_mlp", "--hidden", "8")
opt("sync_every_zero", "--sync-every", "0")
opt("sync_every_negative", "--sync-every", "-2")
opt("sync_every_huge", "--sync-every", str(10 ** 18), run=True)
opt("sync_every_2_63", "--sync-every", str(2 ** 63), run=True, ranks=(1, 3))
opt("chunk_mb_zero", "--chunk-mb", "0")
opt("chunk_mb_negative", "--chunk-mb", "-1")
opt("chunk_mb_nan", "--chunk-mb", "nan")
opt("chunk_mb_inf", "--chunk-mb", "inf")
opt("chunk_mb_word", "--chunk-mb", "big")
opt("chunk_mb_tiny", "--chunk-mb", "1e-9", run=True, ranks=(1, 3))
opt("chunk_mb_1e_300", "--chunk-mb", "1e-300", run=True)
opt("chunk_mb_huge", "--chunk-mb", "1e12", run=True)
opt("test_fraction_one", "--test-fraction", "1")
opt("test_fraction_above_one", "--test-fraction", "1.5")
opt("test_fraction_negative", "--test-fraction", "-0.1")
opt("test_fraction_nan", "--test-fraction", "nan")
opt("test_fraction_almost_one", "--test-fraction", "0.999", run=True, expect=2)
opt("test_fraction_tiny", "--test-fraction", "1e-9", run=True, expect=2)
opt("test_fraction_zero", "--test-fraction", "0", run=True)
opt("seed_negative", "--seed", "-1", ranks=(1, 3))
opt("seed_2_63", "--seed", str(2 ** 63))
opt("seed_max", "--seed", str(2 ** 63 - 1), run=True)
opt("seed_word", "--seed", "lucky")
opt("seed_fraction", "--seed", "1.5")
opt("merge_after_without_overlap", "--merge-after", "2")
opt("merge_after_above_sync_every", "--overlap", "--sync-every", "4", "--merge-after", "5")
opt("merge_after_zero", "--overlap", "--merge-after", "0")
opt("merge_after_negative", "--overlap", "--merge-after", "-1")
opt("merge_after_word", "--overlap", "--merge-after", "soon")
opt("merge_after_equal", "--overlap", "--sync-every", "1", "--merge-after", "1", run=True, ranks=(3,))
opt("stall_timeout_zero", "--stall-timeout", "0")
opt("stall_timeout_negative", "--stall-timeout", "-5")
opt("stall_timeout_nan", "--stall-timeout", "nan")
opt("stall_timeout_tiny", "--stall-timeout", "1e-9", run=True, ranks=(3,))
opt("momentum_one", "--momentum", "1")
opt("momentum_negative", "--momentum", "-0.5")
opt("l2_inf", "--l2", "inf")
opt("l2_huge", "--l2", "1e300", run=True)
opt("gamma_nan", "--gamma", "nan")
opt("warmup_huge", "--warmup-epochs", "1e308", run=True)
opt("warmup_huge_steps", "--warmup-epochs", "1e308", "--batch-size", "8", "--epochs", "2", run=True)
opt("validation_fraction_one", "--validation-fraction", "1")
opt("validation_fraction_nan", "--validation-fraction", "nan")
opt("validation_fraction_almost_one", "--validation-fraction", "0.999", run=True, expect=2)
opt("early_stopping_zero", "--validation-fraction", "0.2", "--early-stopping", "0")
opt("early_stopping_without_validation", "--early-stopping", "2", run=True, expect=2)
opt("sweep_empty", "--sweep", "")
opt("sweep_spaces", "--sweep", "   ")
opt("clip_norm_negative", "--clip-norm", "-1")
opt("clip_norm_tiny", "--clip-norm", "1e-300", run=True)
opt("block_rows_zero", "--block-rows", "0")
opt("block_rows_huge", "--block-rows", str(10 ** 15), run=True)
opt("partition_seed_negative", "--partition-seed", "-1")
opt("step_epochs_zero", "--schedule", "step", "--step-epochs", "0")
opt("threads_zero", "--threads", "0")
opt("threads_huge", "--threads", str(10 ** 6), run=True, ranks=(1, 3))
opt("checkpoint_signal_bogus", "--checkpoint-signal", "FOO")
opt("checkpoint_signal_kill", "--checkpoint-signal", "KILL")
opt("checkpoint_signal_empty", "--checkpoint-signal", "", run=True)
opt("checkpoint_every_negative", "--checkpoint-every", "-1")
opt("keep_checkpoints_negative", "--keep-checkpoints", "-2")
opt("model_unknown", "--model", "svm")
opt("optimizer_unknown", "--optimizer", "rmsprop")
opt("dtype_float16", "--dtype", "float16")
opt("distribute_unknown", "--distribute", "bcast")
opt("activation_unknown", "--activation", "sigmoid")
opt("wait_unknown", "--wait", "forever")
opt("unknown_option", "--frobnicate", ranks=(1, 3))
opt("unknown_short", "-z")
opt("stray_positional", "banana")
opt("train_twice", "train", "train")
opt("double_dash", "--", "--epochs", "1")
opt("equals_twice", "--epochs=1=2")
opt("upper_case_option", "--EPOCHS", "1")
opt("em_dash", "\u2014epochs", "1")
opt("no_quiet", "--no-quiet")
opt("lr_equals_empty", "--lr=")
opt("overlap_with_gradients", "--overlap", "--sync", "gradients")
opt("checkpoint_without_save", "--checkpoint-every", "1")
opt("keep_checkpoints_without_save", "--keep-checkpoints", "2")
opt("data_empty", "--data", "", run=True, expect=2, ranks=(1, 3))
opt("save_empty", "--save", "", run=True, expect=2)
opt("metrics_empty", "--metrics-json", "", run=True, expect=2)
opt("config_empty", "--config", "", run=True, expect=2)
opt("resume_missing", "--resume", "{tmp}/missing.h5", run=True, expect=2)
opt("both_standardize_flags", "--standardize", "--no-standardize")
opt("logistic_on_3_classes", "--model", "logistic", run=True, expect=2, ranks=(3,))
opt("linear_on_classes", "--model", "linear", run=True)
opt("command_typo", "trian")
opt("data_without_subcommand", "data")
opt("data_unknown_subcommand", "data", "frobnicate")
opt("evaluate_without_options", "evaluate")
opt("info_unknown_option", "info", "--epochs", "1")
for _name, _opts, _run, _ranks in (
        ("samples_zero", ["--samples", "0"], False, (1,)), ("samples_negative", ["--samples", "-1"], False, (1,)),
        ("features_zero", ["--features", "0"], False, (1,)), ("classes_word", ["--classes", "two"], False, (1,)),
        ("noise_nan", ["--noise", "nan"], False, (1,)), ("seed_negative", ["--seed", "-1"], False, (1,)),
        ("features_huge", ["--features", str(10 ** 9)], True, (3,)), ("classes_one", ["--classes", "1"], True, (1,)),
        ("classes_negative", ["--classes", "-1"], True, (1,)),
        ("classes_huge", ["--classes", str(10 ** 15)], True, (1,)),
        ("test_samples_negative", ["--test-samples", "-5"], True, (1,)),
        ("chunk_rows_negative", ["--chunk-rows", "-1"], True, (1,)),
        ("chunk_rows_zero_gzip", ["--chunk-rows", "0", "--compression", "gzip"], True, (1,)),
        ("chunk_rows_huge", ["--chunk-rows", str(10 ** 12)], True, (1,)),
        ("nonlinear_two_features", ["--kind", "nonlinear", "--features", "2"], True, (1,)),
        ("more_classes_than_rows", ["--samples", "3", "--classes", "10"], True, (1,)),
        ("out_missing_dir", ["--out", "{tmp}/no/s.h5"], True, (1,)), ("out_directory", ["--out", "{tmp}"], True, (1,))):
    _out = [] if "--out" in _opts else ["--out", "{tmp}/s.h5"]
    _samples = [] if "--samples" in _opts else ["--samples", "64"]
    opt(f"synth_{_name}", "data", "synth", *_samples, *_opts, *_out, run=_run, ranks=_ranks)

ENVIRONMENT = [("epochs_word", {"MPIDML_EPOCHS": "abc"}), ("lr_nan", {"MPIDML_LR": "nan"}),
               ("overlap_maybe", {"MPIDML_OVERLAP": "maybe"}), ("hidden_words", {"MPIDML_HIDDEN": "a"}),
               ("seed_negative", {"MPIDML_SEED": "-1"}), ("model_unknown", {"MPIDML_MODEL": "svm"}),
               ("sync_every_zero", {"MPIDML_SYNC_EVERY": "0"}), ("data_empty", {"MPIDML_DATA": ""}),
               ("batch_huge", {"MPIDML_BATCH_SIZE": HUGE}), ("quiet_empty", {"MPIDML_QUIET": ""}),
               ("threads_word", {"MPIDML_THREADS": "abc"}), ("threads_zero", {"MPIDML_THREADS": "0"})]
ENVIRONMENT_EXPECT = {"data_empty": 2, "threads_word": 2, "threads_zero": 2}
for _name, _env in ENVIRONMENT:
    OPTIONS.append(Case(f"env_{_name}", _env, (1,), ENVIRONMENT_EXPECT.get(_name)))

TOML = [
    ("epochs_string", 'epochs = "3"'), ("epochs_float", "epochs = 3.5"), ("epochs_bool", "epochs = true"),
    ("epochs_list", "epochs = [1]"), ("epochs_table", "epochs = {a = 1}"), ("epochs_date", "epochs = 1979-05-27"),
    ("epochs_huge", "epochs = 9223372036854775807"), ("lr_string", 'lr = "fast"'), ("lr_nan", "lr = nan"),
    ("lr_inf", "lr = inf"), ("lr_bool", "lr = false"), ("hidden_string", 'model = "mlp"\nhidden = "a"'),
    ("hidden_mixed", 'model = "mlp"\nhidden = [1, "x"]'), ("hidden_nested", 'model = "mlp"\nhidden = [[1]]'),
    ("hidden_table", 'model = "mlp"\nhidden = {}'), ("hidden_empty_list", 'model = "mlp"\nhidden = []'),
    ("hidden_zero", 'model = "mlp"\nhidden = [0]'), ("hidden_fraction", 'model = "mlp"\nhidden = [1.5]'),
    ("model_number", "model = 3"), ("model_list", 'model = ["mlp"]'), ("data_number", "data = 1"),
    ("data_list", "data = []"), ("data_empty", 'data = ""'), ("overlap_word", 'overlap = "maybe"'),
    ("overlap_number", "overlap = 2"), ("seed_negative", "seed = -1"), ("seed_float", "seed = 1.0"),
    ("unknown_key", "colour = 1"), ("table", "[train]\nepochs = 1"), ("dotted_key", "a.b = 1"),
    ("invalid", "epochs = ["), ("quiet_string", 'quiet = "no"'), ("signal_number", "checkpoint_signal = 15"),
    ("stall_timeout_string_inf", 'stall_timeout = "inf"'), ("merge_after_without_overlap", "merge_after = 3"),
    ("config_key", 'config = "other.toml"'), ("duplicate_key", "epochs = 1\nepochs = 2"),
    ("empty", ""), ("dashes_and_underscores", "batch-size = 8\nbatch_size = 16"),
]
TOML_BYTES = [("binary", lambda r: r.integers(0, 256, 512, dtype=np.uint8).tobytes()),
              ("utf16", lambda r: "epochs = 1\n".encode("utf-16")),
              ("utf8_bom", lambda r: b"\xef\xbb\xbfepochs = 1\n"), ("nul", lambda r: b"epochs = 1\0\n")]
TOML_RANKS = {"hidden_mixed": (1, 3), "table": (3,), "data_empty": (1, 3)}
TOML_EXPECT = {"data_empty": 2}
TOML_RUN = {"data_empty", "hidden_empty_list", "dashes_and_underscores"}     # launched when accepted
TOMLS = [Case(f"toml_{name}", text.encode() + b"\n", TOML_RANKS.get(name, (1,)), TOML_EXPECT.get(name),
              run=name in TOML_RUN) for name, text in TOML] + \
        [Case(f"toml_{name}", content, (1,), run=False) for name, content in TOML_BYTES]


def in_process(argv, environ):
    """What a launch does first, on every rank: (None, args) or (its UsageError, None). Any
    other exception escapes: an internal error (exit 1) in the real command."""
    try:
        args = parse(argv)
        if args.command == "train":
            return None, make_config(args, environ=environ)
        return None, args
    except UsageError as e:
        return e, None
    except SystemExit as e:        # --help, --version
        return (None, None) if not e.code else (e, None)


def small_run(argv, assets, tmp):
    """A train option on the small file (one epoch unless it says otherwise); a command line as it is."""
    argv = [a.replace("{tmp}", str(tmp)) for a in argv]
    if argv and not argv[0].startswith("-"):
        return argv
    epochs = [] if any(a.startswith("--epochs") for a in argv) else ["--epochs", "1"]
    data = [] if "--data" in argv else ["--data", str(assets["data"])]
    return ["--quiet", *data, *epochs, *argv]


def judge_in_process(c, n, argv, environ, tmp):
    """A refusal must be one UsageError line (exit 2, the contract's code for bad usage). A value
    accepted (where c.run) and every case at 3 ranks are then launched."""
    try:
        err, _ = in_process(argv, environ)
    except Exception as e:        # noqa: BLE001 - any other exception is the finding
        raise AssertionError(report(c, 1, tmp, argv, [f"in-process {type(e).__name__}: {e}"])) from e
    if err is not None:
        text = str(err)
        assert text.strip() and "\n" not in text, report(c, n, tmp, argv, [f"error message {text!r} is not one line"])
        assert c.expect in (None, 2), report(c, n, tmp, argv, [f"refused (exit 2), the contract says {c.expect}"])
    if n > 1 or (err is None and c.run):
        launch(c, n, tmp, argv, env=environ)


# -- the default set, and the known failures ------------------------------------------------------
# Names (every rank) or ids (NAME-nN) that run only with MPIDML_FUZZ_DEEP=1: the same causes
# as a default case, or what passes alike at another rank count.
DEEP_ONLY = {
    "x_3d", "x_scalar", "x_bytes", "x_vlen_str", "x_bool", "x_compound", "x_float16", "x_big_endian", "x_int8",
    "x_inf", "x_nan_all", "x_float64_max_dtype64", "x_subnormal", "x_constant", "x_gzip_chunk_corrupt-n1",
    "y_2d_column", "y_3d", "y_scalar", "y_bytes-n1", "y_some_empty_strings-n3", "y_int64_extremes", "y_negative",
    "y_fraction_softmax-n1", "y_fraction_logistic", "y_integral_float_softmax", "y_nan_auto-n3", "y_nan_softmax",
    "y_inf_auto", "y_bool", "y_single_class-n1", "y_every_row_a_class", "y_compound", "y_vlen_int",
    "y_float_huge-n3", "y_float32_max", "zero_features", "two_rows_no_split", "mismatched_rows-n3",
    "mismatched_rows_longer_y", "split_ok", "test_two_rows", "test_zero_rows-n3", "test_rows_mismatch",
    "test_unseen_labels-n3", "test_x_nan-n1", "test_x_1d", "test_x_missing", "train_y_missing", "test_only",
    "x_is_group-n3", "y_is_group", "train_is_dataset", "test_is_dataset-n1", "only_y", "only_x",
    "soft_dangling_test_y", "soft_link_ok", "external_missing_file-n1", "external_not_hdf5", "external_ok",
    "external_self_loop", "vds_missing_sources-n3", "vds_one_source_missing", "vds_ok", "truncated_half-n1",
    "truncated_last_byte", "corrupt_few", "corrupt_many-n3", "corrupt_storm",
    "file_empty_h5-n3", "file_random_h5", "file_zeroed_superblock_h5", "file_nul_bytes_h5",
    "file_fifo", "data_is_directory", "data_named_datasets-n1", "x_dataset_root", "x_dataset_alone",
    "y_dataset_alone", "x_dataset_inside_dataset", "x_y_same_dataset",
    "evaluate_model_random_bytes-n1", "evaluate_model_empty", "evaluate_model_params_group",
    "evaluate_model_params_nan", "evaluate_model_params_short", "evaluate_model_params_2d", "evaluate_model_no_kind-n3",
    "evaluate_model_no_sizes", "evaluate_model_no_mean", "evaluate_model_no_format",
    "evaluate_model_format_version_2", "evaluate_model_sizes_string", "evaluate_model_sizes_negative",
    "evaluate_model_sizes_one", "evaluate_model_sizes_floats",
    "evaluate_model_dtype_float16", "evaluate_model_dtype_bogus", "evaluate_model_head_bogus",
    "evaluate_model_activation_bogus", "evaluate_model_epoch_word", "evaluate_model_config_list",
    "evaluate_model_classes_short", "evaluate_model_classes_strings", "evaluate_model_std_zero",
    "predict_model_random_bytes", "predict_model_truncated", "predict_model_no_params", "predict_model_no_kind-n1",
    "predict_model_sizes_huge", "predict_model_mean_short", "predict_model_std_nan-n1", "predict_model_label_kind_str",
    "resume_model_data_file", "resume_model_sizes_not_json", "resume_model_sizes_huge",
    "evaluate_data_x_nan", "predict_data_x_nan-n1", "predict_data_x_1d",
    "evaluate_data_x_1d", "evaluate_data_x_group", "predict_data_x_dangling", "predict_data_zero_rows-n3",
    "predict_data_one_row-n1", "evaluate_data_one_row", "predict_data_two_rows", "evaluate_data_two_rows",
    "predict_data_test_one_row-n1", "evaluate_data_test_one_row", "evaluate_data_vds_missing",
    "evaluate_data_labels_strings", "evaluate_data_labels_missing", "evaluate_data_labels_short",
    "evaluate_model_missing", "predict_out_missing_dir-n1", "predict_out_directory", "predict_x_dataset_missing",
    "resume_other_features-n3", "inspect_external_missing", "inspect_refs-n1",
    "inspect_compound", "inspect_scalars", "inspect_strings", "inspect_nan_labels", "inspect_empty_hdf5",
    "inspect_file_empty", "inspect_file_model", "inspect_directory", "inspect_missing", "plot_empty", "plot_list",
    "plot_object", "plot_model_file", "plot_missing",
    "option_batch_2_64", "option_lr_zero", "option_hidden_deep_narrow", "option_sync_every_huge",
    "option_chunk_mb_1e_300", "option_chunk_mb_huge", "option_seed_max", "option_l2_huge", "option_clip_norm_tiny",
    "option_checkpoint_signal_empty", "option_synth_classes_negative", "option_synth_chunk_rows_zero_gzip",
    "option_synth_chunk_rows_huge", "option_synth_more_classes_than_rows", "option_synth_test_samples_negative",
    "option_synth_nonlinear_two_features", "option_metrics_empty", "option_config_empty",
    "x_complex-n3", "x_neginf", "y_neginf_softmax", "test_features_mismatch", "file_signature_only_h5",
    "evaluate_model_sizes_huge", "predict_data_features_mismatch", "inspect_dangling", "plot_nan", "config_fifo",
    "test_float_labels", "test_y_missing", "file_text_h5", "predict_model_head_bogus", "evaluate_data_labels_nan",
    "evaluate_model_directory", "inspect_groups", "inspect_file_truncated", "plot_random", "plot_deep",
    "option_epochs_unicode_digit", "option_batch_int64_max", "option_hidden_zero", "option_test_fraction_zero",
    "option_warmup_huge", "option_block_rows_huge", "option_synth_out_missing_dir", "option_epochs_zero-n3",
    "option_hidden_huge-n3", "option_sync_every_2_63-n3", "option_seed_negative-n3", "option_threads_huge-n3",
    "toml_table-n3", "toml_data_empty-n3", "truncated_random",
}

# Issue 20's families (sweeps, resume, a full disk, signals, the API) run by default only these
# ids (a few launches, about a minute on two cores); MPIDML_FUZZ_DEEP=1 runs every one.
DEFAULT_20 = {
    "sweep_odd_grid-n3", "sweep_random_grid_0-n1", "sweep_values_empty-n1", "sweep_huge_grid-n1", "sweep_with_lr-n1",
    "sweep_validation_zero-n1", "validation_fraction_tiny-n1", "config_is_metrics_json-n1", "stdout_closed-n1",
    "resume_block_rows-n1", "resume_validation_fraction-n3", "resume_truncated-n1",
    "resume_edited_stopped_at_string-n1", "resume_edited_optimizer_unknown-n1", "keep_checkpoints_foreign_files-n1",
    "keep_checkpoints_name_is_directory-n1", "disk_synth_out-n1", "disk_convert-n1", "disk_save-n1",
    "disk_save_dir-n3", "disk_metrics_json_filled-n1", "signal_int_group_early-n3", "signal_int_group_training-n3",
    "signal_term_group_early-n1", "signal_usr1_group_training-n3", "api_uint64_labels_huge-n1",
    "api_lr_on_rank_1-n3", "api_nan_row_on_rank_1-n3",
}
DEEP_ONLY |= {f"{c.name}-n{n}" for c in [*CASES[FIRST_20:], *DISK_CASES, *SIGNAL_CASES, *API_CASES]
              for n in c.ranks} - DEFAULT_20
DEEP_ONLY |= {"option_validation_fraction_almost_one", "option_early_stopping_without_validation", "env_threads_zero"}

# Failing today, by case name (or NAME-nN) -> the cause: strict xfails, so that a fix shows up
# as XPASS and its mark must go. Issue 20's 60-odd known failures are all fixed: none is left.
KNOWN = {}
RACY = set()        # ids (NAME-nN) of known failures that fail in some runs only: a plain xfail


def params(cases, in_process=False):
    """The cases' (case, ranks) parameters with their xfail marks. `in_process`: a case of
    DEEP_ONLY by name is still judged in-process, only its launch is left out."""
    for c in cases:
        for n in c.ranks:
            cid = f"{c.name}-n{n}"
            if not DEEP and (c.name in DEEP_ONLY or cid in DEEP_ONLY):
                if not (in_process and n == 1 and c.name in DEEP_ONLY):
                    continue
                yield pytest.param(dataclasses.replace(c, run=False), n, id=cid)   # KNOWN are launch failures
                continue
            reason = KNOWN.get(cid, KNOWN.get(c.name))
            marks = [pytest.mark.xfail(strict=cid not in RACY, reason=reason)] if reason else []
            yield pytest.param(c, n, id=cid, marks=marks)


# -- the tests ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A small good file, a model trained on it (and a regression one), its metrics."""
    tmp = tmp_path_factory.mktemp("fuzz_assets")
    rng = np.random.default_rng(SEED)
    X, y = xy(rng)
    data = write(tmp / "data.h5", [("X", X), ("y", y)])
    reg = write(tmp / "reg.h5", [("X", X), ("y", X @ rng.standard_normal(4))])
    mpiexec(1, ["--quiet", "--data", data, "--epochs", "1", "--save", tmp / "model.h5", "--metrics-json",
                tmp / "metrics.json"], timeout=60, check=0)
    mpiexec(1, ["--quiet", "--data", reg, "--epochs", "1", "--save", tmp / "reg_model.h5"], timeout=60, check=0)
    mpiexec(1, ["--quiet", "--data", data, "--epochs", "1", "--save", tmp / "split_model.h5", "--block-rows", "8",
                "--validation-fraction", "0.25"], timeout=60, check=0)
    X, y = xy(rng, n=6000, d=16)
    return {"data": data, "model": tmp / "model.h5", "regression_model": tmp / "reg_model.h5",
            "metrics": tmp / "metrics.json", "split_model": tmp / "split_model.h5",
            "long": write(tmp / "long.h5", [("X", X), ("y", y)])}


@pytest.mark.parametrize("c,n", list(params(CASES)))
def test_launch(c, n, tmp_path, assets):
    """A hostile file (or model, metrics file, output path) through the command line."""
    argv, what = c.build(tmp_path, case_rng(c.name), assets)
    launch(dataclasses.replace(c, what=what), n, tmp_path, argv)


@pytest.mark.parametrize("c,n", list(params(OPTIONS, in_process=True)))
def test_option(c, n, tmp_path, assets):
    """An option value or a MPIDML_* variable: refused in one line, or run."""
    if isinstance(c.build, dict):                        # the environment
        c = dataclasses.replace(c, what=f"environment {c.build}")
        judge_in_process(c, n, small_run([], assets, tmp_path), c.build, tmp_path)
    else:
        c = dataclasses.replace(c, what=" ".join(c.build))
        judge_in_process(c, n, small_run(c.build, assets, tmp_path), {}, tmp_path)


@pytest.mark.parametrize("c,n", list(params(TOMLS, in_process=True)))
def test_toml(c, n, tmp_path, assets):
    """A --config file of wrong types or shapes: refused in one line, or run."""
    path = tmp_path / "run.toml"
    path.write_bytes(c.build if isinstance(c.build, bytes) else c.build(case_rng(c.name)))
    c = dataclasses.replace(c, what=f"--config holding {path.read_bytes()[:200]!r}")
    judge_in_process(c, n, small_run(["--config", str(path)], assets, tmp_path), {}, tmp_path)


@pytest.mark.parametrize("c,n", list(params(DISK_CASES)))
def test_disk_full(c, n, tmp_path, assets):
    """An output on a full disk (a 1 MiB tmpfs mounted for this job alone): exit 2, one line,
    nothing left there (no segfault, no half-written file, no temporary)."""
    if not can_mount():
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (unshare -m, mount)")
    argv, what = c.build(tmp_path, case_rng(c.name), assets)
    launch(dataclasses.replace(c, what=what), n, tmp_path, argv)


def first_epoch(proc):
    """Wait for the run's first epoch line (its end, if it never comes: ranks end within 60 s)."""
    for line in proc.stdout:
        if line.startswith("epoch"):
            return


@pytest.mark.parametrize("c,n", list(params(SIGNAL_CASES)))
def test_signal(c, n, tmp_path, assets):
    """A signal at a seeded moment to a long run that checkpoints every epoch: sent to mpiexec, or
    to its process group (start_new_session: mpiexec leads it) as a terminal sends Ctrl-C."""
    sig, to, when, twice = c.build
    rng = case_rng(c.name)
    delay = {"early": rng.uniform(0, 0.3), "any": rng.uniform(0.3, 4), "training": rng.uniform(0, 0.5)}[when]
    again = rng.uniform(0.05, 0.3) if twice else None
    out = tmp_path / "out"
    out.mkdir()
    wrapper = tmp_path / "fuzz_entry.py"
    wrapper.write_text(WRAPPER)
    argv = ["--data", assets["long"], "--model", "mlp", "--hidden", "32", "--epochs", "1000", "--save", out / "m.h5",
            "--checkpoint-every", "1", "--metrics-json", out / "m.json"]
    proc = subprocess.Popen([MPIEXEC, "-n", str(n), sys.executable, str(wrapper), *map(str, argv)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    t0 = time.monotonic()
    send = (lambda: os.killpg(proc.pid, getattr(signal, "SIG" + sig))) if to == "group" else \
        (lambda: proc.send_signal(getattr(signal, "SIG" + sig)))
    what = f"SIG{sig} to {to} {delay:.2f} s after {'the first epoch' if when == 'training' else 'the start'}" + \
        (f", again {again:.2f} s later" if twice else "")
    try:
        if when == "training":
            first_epoch(proc)
        time.sleep(delay)
        send()
        if twice:
            time.sleep(again)
            if proc.poll() is None:
                send()
        stdout, stderr = proc.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        stdout, stderr = "", ""
        found = [f"no end {LIMIT_S} s after the signal"]
    else:
        found = signal_outcome(sig, proc.returncode, stdout, stderr)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # whatever of this job's group is left
        except OSError:
            pass
        proc.communicate()
    found += [f"temporary {name} left" for name in temporaries_left(out, proc.returncode < 0)]
    c = dataclasses.replace(c, what=what)
    assert not found, report(c, n, tmp_path, argv, found) + f"  exit {proc.returncode} after " \
        f"{time.monotonic() - t0:.1f} s\n  stdout: {stdout[-1500:]}\n  stderr: {stderr[-3000:]}"


@pytest.mark.parametrize("c,n", list(params(API_CASES)))
def test_api(c, n, tmp_path):
    """A hostile use of mpidml.Classifier/Regressor/train in a user's script (tests/fuzz_api.py) on
    n ranks: it ends as the command line ends, with every rank agreeing."""
    c = dataclasses.replace(c, what=f"tests/fuzz_api.py {c.build}")
    t0 = time.monotonic()
    try:
        proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, FUZZ_API, c.build, str(tmp_path), str(SEED)],
                              capture_output=True, text=True, timeout=c.limit + 5, cwd=ROOT,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired:
        raise AssertionError(report(c, n, tmp_path, [c.build], [f"no end after {c.limit + 5:g} s"])) from None
    elapsed = time.monotonic() - t0
    found = problems(proc.returncode, proc.stdout, proc.stderr, elapsed, c.expect, c.limit)
    outcomes = [(tmp_path / f"outcome.{r}").read_text().strip() if (tmp_path / f"outcome.{r}").exists() else "none"
                for r in range(n)]
    callers = outcomes[:1] if c.build == "fit_on_rank_0_only" else outcomes     # the others never call fit
    if proc.returncode in OK_CODES and set(callers) != {str(proc.returncode)}:
        found.append(f"the ranks ended differently: {outcomes}")
    assert not found, report(c, n, tmp_path, [c.build], found, proc, elapsed)


def test_case_names_are_unique_and_marks_name_cases():
    every = [*CASES, *OPTIONS, *TOMLS, *DISK_CASES, *SIGNAL_CASES, *API_CASES]
    names = [c.name for c in every]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
    ids = {f"{c.name}-n{n}" for c in every for n in c.ranks} | set(names)
    assert not (set(KNOWN) | DEEP_ONLY) - ids, sorted((set(KNOWN) | DEEP_ONLY) - ids)
