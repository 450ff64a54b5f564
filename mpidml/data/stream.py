"""Rows that stay in the file: each rank reads its partition a chunk at a time (--stream).

A rank whose rows would not fit its memory (`--memory-limit`, see `MemoryBudget`) keeps
none of them: its training rows are cut into chunks of consecutive partition rows, and
each epoch visits the chunks in a seeded order and the rows of each chunk in a seeded
order (`EpochPlan`). A reader thread fills one of two chunk buffers while training takes
its minibatches from the other (`Stream`): reads run as `preadv` straight into the buffer
(rows.py), which releases the interpreter, so reading overlaps training (filtered data
goes through HDF5, which holds it). Test and validation rows are scored chunk by chunk, and the standardization
statistics come from one pass over the rows at setup, which also checks every value.

The order is a pure function of (seed, rank, epoch, chunk rows): a run stopped within an
epoch resumes at the same minibatch. With one chunk covering the partition it is the
in-memory order itself (trainer.Model.prefetch), so the two give the same model.
"""
import contextlib
import dataclasses
import os
import re
import resource
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.random import default_rng

from ..errors import UsageError
from . import distribute as datamod
from .partition import slabs, validation_draw

CHUNK_MB = 64           # a chunk's default size; two per stream
STREAM_SHARE = 0.5      # stream when a rank's rows would take more than this share of its memory limit
BUFFER_SHARE = 0.25     # the streams' chunk buffers together take at most this share of it
MIN_LIMIT = 1 << 20     # --memory-limit below this is a missing unit, not a limit
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text):
    """Bytes from `512M`, `4G`, `1.5GiB`, `4GB` (powers of 1024) or a plain byte count; None for `auto`."""
    if text in (None, "", "auto"):
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 512M, 4G or auto)")
    size = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not np.isfinite(size) or size < 1:
        raise ValueError(f"{text!r} is not a size of at least one byte")
    return int(size)


def mb(nbytes):
    """Bytes in words: `1.5 GB`, `64 MB`."""
    return f"{nbytes / (1 << 30):.3g} GB" if nbytes >= 1 << 30 else f"{nbytes / (1 << 20):.3g} MB"


# -- how much memory a rank may use ---------------------------------------------------------
def _read_number(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo(key, path="/proc/meminfo"):
    """A line of /proc/meminfo or /proc/self/status in bytes (None where missing)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rank_memory(ranks_here):
    """The memory this rank may use, in words too: its share of what its host has free
    (MemAvailable, or the cgroup's limit where smaller), shared by the host's ranks, and at
    most what its address-space rlimit (prlimit --as, ulimit -v) leaves unmapped."""
    host = [v for v in (_meminfo("MemAvailable"), _read_number("/sys/fs/cgroup/memory.max"),
                        _read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes")) if v and v < 1 << 60]
    share = min(host) // max(1, ranks_here) if host else 1 << 34
    said = f"auto: {mb(min(host)) if host else 'unknown'} available on its host / {ranks_here} ranks"
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        left = soft - (_meminfo("VmSize", "/proc/self/status") or 0)
        if left < share:
            share, said = max(left, 1 << 20), f"auto: its address-space limit {mb(soft)}, {mb(max(left, 0))} unmapped"
    return share, said


class MemoryBudget:
    """A rank's memory limit: --memory-limit, or (auto) rank_memory. `said`: where it came
    from, for the line that says streaming is on."""

    def __init__(self, option, ranks_here):
        self.used = 0           # what this rank uses already, where a limit was given
        given = parse_size(option)
        if given is not None:
            if given < MIN_LIMIT:
                raise UsageError(f"--memory-limit {option}: {given} bytes, below {mb(MIN_LIMIT)}; give a unit, "
                                 "e.g. 512M or 4G", everywhere=True)
            self.used = _meminfo("VmRSS", "/proc/self/status") or 0
            self.bytes, self.said = given, f"--memory-limit {option}"
        else:
            self.bytes, self.said = rank_memory(ranks_here)

    def chunk_bytes(self, streams, option_mb=0):
        """One chunk's bytes: --stream-chunk-mb, else CHUNK_MB, at most what keeps the
        `streams` streams' two buffers each within BUFFER_SHARE of the limit."""
        if option_mb:
            return int(option_mb * (1 << 20))
        return int(min(CHUNK_MB << 20, self.bytes * BUFFER_SHARE / (2 * max(1, streams))))


# -- rows in the file -------------------------------------------------------------------------
class RowSet:
    """Rows of one kind that this rank holds in a file (its partition, validation rows, test
    rows), in local order: `runs` (k, 2) of (file row, length), ascending; `datasets`: the
    (features, labels, rows in the file) they are rows of."""

    def __init__(self, datasets, runs):
        self.datasets = datasets
        self.runs = np.asarray(runs, np.int64).reshape(-1, 2)
        self.ends = np.cumsum(self.runs[:, 1])
        self.rows = int(self.ends[-1]) if len(self.runs) else 0

    def between(self, a, b):
        """The runs of local rows [a, b)."""
        begins = self.ends - self.runs[:, 1]
        i, j = np.searchsorted(self.ends, a, "right"), np.searchsorted(begins, b, "left")
        sub = self.runs[i:j].copy()
        if len(sub):
            cut = a - begins[i]
            sub[0] += (cut, -cut)
            sub[-1, 1] -= self.ends[j - 1] - b
        return sub

    def file_rows(self, local):
        """File rows of sorted local rows."""
        r = np.searchsorted(self.ends, local, "right")
        return self.runs[r, 0] + local - (self.ends[r] - self.runs[r, 1])

    def file_runs(self, local):
        """File runs (start, length) of sorted runs of local rows, a run split where it
        crosses from one of this set's runs into the next."""
        local = np.asarray(local, np.int64).reshape(-1, 2)
        first, last = local[:, 0], local[:, 0] + local[:, 1] - 1
        whole = np.searchsorted(self.ends, first, "right") == np.searchsorted(self.ends, last, "right")
        runs = np.stack([self.file_rows(first), local[:, 1]], axis=1)
        if whole.all():
            return runs
        return np.concatenate([runs[i:i + 1] if w else self.between(a, a + n)
                               for i, (w, (a, n)) in enumerate(zip(whole, local))])


class Reader:
    """The rank's file, opened once, and the one thread that reads chunks of it. The file
    must not change while it is streamed: every read first compares its size and time of
    modification with what they were when it was opened."""

    def __init__(self, info, dtype):
        self.info, self.dtype = info, np.dtype(dtype)
        self.classes = datamod.class_array(info)
        self.stack = contextlib.ExitStack()
        self.opened = self.stack.enter_context(datamod.open_for(info))
        self.sources = {}
        self.identity = self._identity()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="mpidml-reader")
        self.read_s = 0.0
        self.scaling = None         # set once the statistics are known
        self._cast = None           # its mean and std in the rows' dtype
        self.spare = []             # chunk buffers given back (Stream.close): touched once, reused

    def _identity(self):
        """The file as its open descriptor sees it (a file renamed or unlinked meanwhile is
        still the one opened)."""
        return datamod.file_identity(self.info["path"], self.opened[1] if isinstance(self.opened, tuple) else None)

    def _source(self, datasets):
        if datasets not in self.sources:
            job = datamod.Job(*datasets, None, None, None, None)
            self.sources[datasets] = datamod.Source(self.opened, self.info, job, self.dtype, self.classes)
        return self.sources[datasets]

    def submit(self, rows, a, b, X, Y, check=False, targets=False):
        """A Future of local rows [a, b) of the RowSet `rows` read into X, Y, standardized
        once the statistics are known (regression `targets` too: training rows'; scoring
        takes them in the data's units); `check`: for NaN/inf (the setup's pass checks every
        row; later passes only that the file is as it was)."""
        source = self._source(rows.datasets)       # on this thread: h5py opens the datasets here
        return self.pool.submit(self._read, source, rows, a, b, X, Y, check, targets)

    def _read(self, source, rows, a, b, X, Y, check, targets):
        t0 = time.perf_counter()
        if self._identity() != self.identity:
            raise UsageError(f"{self.info['path']}: the file changed while it was being streamed (its size or "
                             "modification or change time); a streamed run needs its data unchanged until it ends",
                             everywhere=True)       # every rank's next read finds it: reported once
        n = b - a
        err = source.fill(rows.between(a, b), X[:n], Y[:n], check=check)
        if err:
            raise err
        self.scale(X[:n], Y[:n] if targets else None)
        self.read_s += time.perf_counter() - t0
        return n

    def scale(self, X, y):
        """Standardize rows (and regression targets) in place, as the job does in memory:
        elementwise, so the same bits whatever rows come together."""
        s = self.scaling
        if s is None or s.mean is None:
            return
        if self._cast is None:
            self._cast = s.mean.astype(X.dtype), s.std.astype(X.dtype)
        X -= self._cast[0]
        X /= self._cast[1]
        if y is not None and self.info["task"] == "regression":
            s.apply_targets(y)

    def buffers(self, rows, features, ydtype):
        """Two chunk buffers (X, y), the spare ones when they fit."""
        got = self.spare.pop() if self.spare else None
        if got is None or got[0][0].shape != (rows, features) or got[1][0].dtype != ydtype:
            got = ([np.empty((rows, features), self.dtype) for _ in range(2)],
                   [np.empty(rows, ydtype) for _ in range(2)])
        return got

    def close(self):
        self.pool.shutdown(wait=True)
        self.stack.close()
        self.spare = []


# -- the partition --------------------------------------------------------------------------
@dataclasses.dataclass
class Streaming:
    """A job's decision to stream: the partition plan, one chunk's bytes, this rank's
    memory limit, and why (--stream, --stage-dir, auto)."""
    plan: object
    chunk_bytes: int
    limit: int
    why: str

    def document(self, part):
        """The metrics' data.stream entry (`staged`: the copy it read, removed when the run completed)."""
        return {"why": self.why, "chunk_rows": part.chunk_rows, "chunk_mb": self.chunk_bytes / (1 << 20),
                "memory_limit_mb": self.limit / (1 << 20), "staged": part.staged}


class StreamedPart:
    """A rank's rows left in a file: what data.distribute.Partition holds, as RowSets. `train`: the
    partition (validation rows among them, the `held` runs of local rows, skipped when
    training);
    `val`, `test`: RowSets or None; `info`: the file's (the data's, or its staged copy's)."""
    streamed = True

    def __init__(self, info, train, sizes, test, test_sizes, dtype, chunk_bytes):
        self.info, self.dtype = info, np.dtype(dtype)
        self.train, self.sizes = train, [int(v) for v in sizes]
        self.test, self.test_sizes = test, None if test_sizes is None else [int(v) for v in test_sizes]
        self.val, self.val_sizes = None, [0] * len(sizes)
        self._hold(np.empty((0, 2), np.int64))
        row_bytes = info["features"] * self.dtype.itemsize + 8
        largest = max(train.rows, test.rows if test is not None else 0)     # no buffer beyond the rows
        self.chunk_rows = max(1, min(int(chunk_bytes // row_bytes), largest))
        self.reader = Reader(info, dtype)
        self.staged = None          # the staged copy this reads (stage.py), removed at the end of the run

    @classmethod
    def of_plan(cls, info, plan, rank, size, dtype, chunk_bytes):
        """Rank `rank`'s rows of the data file, as `plan` (partition.Plan) deals them."""
        features = (info["x"], info["y"], info["rows"])
        train = RowSet(features, plan.ranges[rank][:, :2])
        test, test_sizes = None, None
        if info["test"]:
            if info["test"]["source"] == "split":
                ranges, test_sizes, datasets = plan.test, plan.test_sizes, features
            else:
                ranges, test_sizes = slabs(info["test"]["rows"], size)
                datasets = (info["test"]["x"], info["test"]["y"], info["test"]["rows"])
            test = RowSet(datasets, ranges[rank][:, :2])
        return cls(info, train, plan.sizes, test, test_sizes, dtype, chunk_bytes)

    def _hold(self, runs):
        """Held-out runs (start, length) of local rows, and where each starts and ends."""
        self.held = runs
        self.held_ends = runs[:, 0] + runs[:, 1]
        self.held_cum = np.concatenate([[0], np.cumsum(runs[:, 1])])        # held rows before each run

    @property
    def local_rows(self):
        return self.train.rows - int(self.held_cum[-1])

    def holds(self, kind):
        return getattr(self, kind) is not None

    def hold_out(self, fraction, seed, rank):
        """Validation rows as data.distribute.Partition.hold_out draws them, left in the file."""
        held_sizes, runs = validation_draw(self.sizes, fraction, seed, rank)
        if runs is None:
            return
        self._hold(runs)
        self.val = RowSet(self.train.datasets, self.train.file_runs(runs))
        self.val_sizes = held_sizes
        self.sizes = [n - h for n, h in zip(self.sizes, held_sizes)]

    def chunks(self):
        """Training chunks: (first, end) local rows of the partition, validation rows included."""
        C = self.chunk_rows
        return [(a, min(a + C, self.train.rows)) for a in range(0, self.train.rows, C)]

    def kept(self, a, b):
        """Buffer rows (0 = local row a) of the training rows among local rows [a, b)."""
        lo = int(np.searchsorted(self.held_ends, a, "right"))
        hi = int(np.searchsorted(self.held[:, 0], b, "left"))
        if lo >= hi:
            return None                             # all of them
        runs = self.held[lo:hi]
        edges = np.zeros(b - a + 1, np.int64)        # +1 where a held run starts, -1 where it ends
        np.add.at(edges, np.clip(runs[:, 0] - a, 0, b - a), 1)
        np.add.at(edges, np.clip(runs[:, 0] + runs[:, 1] - a, 0, b - a), -1)
        return np.flatnonzero(np.cumsum(edges[:-1]) == 0)

    def held_before(self, positions):
        """Held-out rows before each local row of `positions`."""
        if not len(self.held):
            return np.zeros(len(positions), np.int64)
        i = np.searchsorted(self.held[:, 0], positions, "right") - 1
        inside = np.where(i >= 0, np.minimum(positions - self.held[np.maximum(i, 0), 0],
                                             self.held[np.maximum(i, 0), 1]), 0)
        return np.where(i >= 0, self.held_cum[np.maximum(i, 0)], 0) + inside

    def kept_counts(self):
        bounds = np.array([a for a, _ in self.chunks()] + [self.train.rows], np.int64)
        return np.diff(bounds) - np.diff(self.held_before(bounds))

    def survey(self, group, stats, regression):
        """Generator: one pass over every row of this rank (partition and test rows): the
        values checked, and (`stats`) the training rows' Moments of features and targets
        fed in local order, as data.Moments in memory would see them. Every rank learns
        whether any failed (one line, exit 2)."""
        d = self.info["features"]
        mx, my = datamod.Moments(d), datamod.Moments(1)
        stream = Stream(self, check=True)

        def feed(X, Y, a, b):
            if stats:
                rows = self.kept(a, b)
                mx.add(X, rows)
                if regression:
                    my.add(Y.astype(np.float64), rows)
        err = None
        try:
            yield from stream.scan(self.train, feed)
            if self.test is not None:
                yield from stream.scan(self.test, lambda *_: None)
        except UsageError as e:
            err = e
        stream.close()
        yield from group.agree(err, "validate")
        return mx, my

    def close(self, complete=False):
        """Close the file and end the reader thread; `complete`: the run ended (not stopped
        for a resume), so a staged copy (`staged`, stage.py) is removed too."""
        self.reader.close()
        if complete and self.staged:
            with contextlib.suppress(OSError):
                os.unlink(self.staged)


# -- one consumer's chunks --------------------------------------------------------------------
class EpochPlan:
    """The order of one epoch's training rows: the chunks in a seeded order, the rows of
    each in a seeded order, drawn from one generator as training reaches them (so a
    partition of a billion rows never holds a billion-row permutation). One chunk: the
    order is rng.permutation(rows), the in-memory order."""

    def __init__(self, part, seed, rank, epoch):
        self.part, self.epoch = part, epoch
        self.rng = default_rng([seed, rank, epoch])
        spans = part.chunks()
        self.chunks = self.rng.permutation(len(spans)) if len(spans) > 1 else np.zeros(len(spans), np.int64)
        self.spans = [spans[c] for c in self.chunks]
        self.bounds = np.concatenate([[0], np.cumsum(part.kept_counts()[self.chunks])]).astype(np.int64)
        self.rows = int(self.bounds[-1])
        self.orders, self.drawn = {}, 0

    def order(self, visit):
        """Buffer rows of chunk `visit` (in visiting order) in training order."""
        while self.drawn <= visit:
            a, b = self.spans[self.drawn]
            kept = self.part.kept(a, b)
            perm = self.rng.permutation(b - a if kept is None else len(kept))
            self.orders[self.drawn] = perm if kept is None else kept[perm]
            self.orders.pop(self.drawn - 2, None)
            self.drawn += 1
        return self.orders[visit]

    def visit_of(self, position):
        return int(np.searchsorted(self.bounds, position, "right")) - 1


class Stream:
    """Two chunk buffers of a StreamedPart: while one is trained on (or scored), the reader
    thread fills the other with the chunk after it. A buffer keeps its chunk until it is
    needed for another, so a partition (and a test set) that fits in one chunk each is read
    once, not once an epoch."""

    def __init__(self, part, check=False):
        self.part, self.check = part, check
        ydtype = part.dtype if part.info["task"] == "regression" else np.int32
        self.X, self.Y = part.reader.buffers(part.chunk_rows, part.info["features"], np.dtype(ydtype))
        self.keys, self.futures = [None, None], [None, None]
        self.used, self.tick = [0, 0], 0
        self.at = None          # the chunk training takes rows from: (plan, slot, first, end, order)
        self.wait_s = 0.0

    def _fetch(self, key, rows, a, b, keep=None):
        """Generator: the slot that holds (or is reading) chunk `key`, local rows [a, b) of
        `rows`; a slot that has not got it starts reading it:
        the one other than `keep`, or the one used least recently. The thread must not
        write a buffer twice at once: a read in flight there is waited for first."""
        if key in self.keys:
            return self.keys.index(key)
        slot = 1 - keep if keep is not None else int(self.used[1] < self.used[0])
        if self.futures[slot] is not None and not self.futures[slot].done():
            yield self.futures[slot]
        self.keys[slot] = key
        self.futures[slot] = self.part.reader.submit(rows, a, b, self.X[slot], self.Y[slot], self.check,
                                                     rows is self.part.train)
        return slot

    def _ready(self, slot, training=True):
        """Generator: wait for `slot`'s read; raises its error. `wait_s` counts the waits of
        `training` (scoring's are the scorer's time)."""
        self.tick += 1
        self.used[slot] = self.tick
        future = self.futures[slot]
        if not future.done():
            t0 = time.perf_counter()
            yield future
            if training:
                self.wait_s += time.perf_counter() - t0
        try:
            future.result()
        except BaseException:
            self.keys[slot] = None
            raise

    def batch(self, plan, position, m, xb, yb):
        """Generator: the `m` training rows from `position` of the epoch's order into xb, yb."""
        done = 0
        while done < m:
            p = position + done
            at = self.at
            if at is None or at[0] is not plan or not at[2] <= p < at[3]:
                yield from self._enter(plan, plan.visit_of(p))
                at = self.at
            _, slot, first, end, order = at
            take = min(m - done, end - p)
            idx = order[p - first:p - first + take]
            np.take(self.X[slot], idx, axis=0, out=xb[done:done + take])
            np.take(self.Y[slot], idx, out=yb[done:done + take])
            done += take

    def _enter(self, plan, j):
        """Generator: training moves on to chunk `j` (in visiting order): wait for it, and
        start reading the one after it."""
        train = self.part.train
        slot = yield from self._fetch(("train", *plan.spans[j]), train, *plan.spans[j])
        yield from self._ready(slot)
        if j + 1 < len(plan.spans):
            yield from self._fetch(("train", *plan.spans[j + 1]), train, *plan.spans[j + 1], keep=slot)
        self.at = (plan, slot, int(plan.bounds[j]), int(plan.bounds[j + 1]), plan.order(j))

    def scan(self, rows, each):
        """Generator: every chunk of the RowSet `rows` in order, `each(X, Y, a, b)` for local
        rows [a, b), the next chunk read meanwhile."""
        C = self.part.chunk_rows
        spans = [(a, min(a + C, rows.rows)) for a in range(0, rows.rows, C)]
        self.at = None
        pinned = self._pinned()
        for i, (a, b) in enumerate(spans):
            slot = yield from self._fetch(("scan", id(rows), a), rows, a, b, pinned)
            yield from self._ready(slot, training=False)
            if i + 1 < len(spans) and pinned is None:
                yield from self._fetch(("scan", id(rows), spans[i + 1][0]), rows, *spans[i + 1], keep=slot)
            each(self.X[slot][:b - a], self.Y[slot][:b - a], a, b)

    def _pinned(self):
        """The slot holding a partition that is one chunk (scans use the other alone, so it
        is read once, not once an epoch), or None."""
        if len(self.part.chunks()) != 1:
            return None
        key = ("train", *self.part.chunks()[0])
        return self.keys.index(key) if key in self.keys else None

    def close(self):
        """Wait for reads in flight (the thread writes into these buffers), then give the
        buffers back for the next stream."""
        for f in self.futures:
            if f is not None:
                with contextlib.suppress(BaseException):
                    f.result()
        self.futures = [None, None]
        self.part.reader.spare.append((self.X, self.Y))
