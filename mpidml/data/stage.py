"""Each rank's rows copied once into a file of its own in node-local scratch (--stage-dir).

Without a shared file system only rank 0 can read --data. Rank 0 then reads the file
window by window, as data.distribute's scatter does, and sends every rank its partition
rows and its test rows; each rank writes them into its own HDF5 file in the directory
(contiguous /train/X, /train/y and /test/X, /test/y, labels as class indices) and streams
from that file every epoch (stream.StreamedPart). Memory stays bounded: BUFFERS windows on
rank 0, BUFFERS messages on each receiver. Receivers check the values as they land
(NaN/inf, naming the row of --data) and every rank agrees on the verdict before anything
trains; a copy that failed (bad values, a full disk) is removed.

A staged file's name and its `mpidml_stage` attribute carry its key: the data's identity
(provenance.DataIdentity, with the file's size and time of modification), a hash of the
rank's rows, the rank count, dtype and classes. It is written under a temporary name and
renamed once complete and on disk, so a file under the final name is whole. A rank that
finds one of its key keeps it (--resume after a stop): rank 0 sends rows only to the ranks
that lack theirs. The run removes the files when it completes (StreamedPart.close); a
stopped run keeps them.
"""
import contextlib
import hashlib
import json
import logging
import os
import re
import stat

import h5py
import numpy as np

from ..errors import UsageError
from ..files.outputs import create_h5, fsync_path, release, temporary
from . import distribute as datamod
from .partition import slabs
from .provenance import DataIdentity
from .stream import RowSet, StreamedPart

log = logging.getLogger("mpidml")
FORMAT, VERSION = "mpidml-stage", 1
KEY_ATTRIBUTE = "mpidml_stage"
TAG = 31            # messages: tags 31, 32 (X, y) carry partition rows, 33, 34 test rows
GROUPS = ("/train", "/test")
BUFFERS = datamod.BUFFERS


def stage(group, info, plan, directory, dtype, chunk_bytes, meter=datamod.Unseen):
    """Generator: this rank's StreamedPart over its staged copy in `directory` (made where
    missing), sent by rank 0 where the rank has no complete copy of its own. `info`, `plan`:
    the data's (distribute.describe, distribute.plan_for); `meter`: makes what shows rank 0's
    progress (distribute.Unseen)."""
    source = yield from group.on_root(lambda: source_identity(info), "stage")
    copy = Copy(info, plan, group.rank, group.size, directory, dtype, source)
    err, found = None, False
    try:
        found = copy.find()
    except UsageError as e:
        err = e
    yield from group.agree(err, "stage")
    lacking = np.zeros(group.size, np.int64)
    lacking[group.rank] = not found
    yield from group.allreduce(lacking, "stage")
    if group.rank == 0 and not lacking.all():
        log.info(f"mpidml: --stage-dir {directory}: {group.size - int(lacking.sum())} of {group.size} ranks "
                 "reuse the rows they staged before")
    err = None
    if lacking.any():
        err = yield from _copy(group, copy, lacking, meter)
    part = None
    try:
        part = copy.open(chunk_bytes) if err is None else None
    except UsageError as e:
        err = e
    try:
        yield from group.agree(err, "stage")
    except BaseException:
        if part is not None:
            part.close()
        raise
    return part


def source_identity(info):
    """Rank 0: what the staged rows are copies of, as JSON: the data's identity and its
    file's size and time of modification (a file rewritten in place is staged anew)."""
    try:
        st = os.stat(info["path"])
    except OSError as e:
        raise UsageError(f"{info['path']}: cannot read the file ({e.strerror})") from None
    identity = info.get("identity") or DataIdentity.of(info).as_dict()
    return dict(identity, size=st.st_size, mtime_ns=st.st_mtime_ns)


def check_directory(directory):
    """--stage-dir made as `mkdir -p` would, a directory this rank may write in."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"--stage-dir {directory}: not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--stage-dir {directory}: cannot create the directory ({e.strerror})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--stage-dir {directory}: cannot write in the directory (permission denied)")


def write_error(directory, name, e):
    """The UsageError for an OSError (or h5py's RuntimeError) writing staged file `name`: its errno in words (HDF5's
    own text spans lines of driver internals; its errno is in there: `errno = 28`)."""
    found = re.search(r"errno = (\d+)", str(e))
    code = getattr(e, "errno", None) or (int(found.group(1)) if found else None)
    reason = os.strerror(code) if code else str(e).split("\n")[0][:200]
    return UsageError(f"--stage-dir {directory}: cannot write {name} ({reason})")


class Copy:
    """This rank's staged copy: its rows of each dataset pair (`jobs`, data.Job: index 0 the
    partition, 1 the test rows, if any), its key, name and path."""

    def __init__(self, info, plan, rank, size, directory, dtype, source):
        self.info, self.plan, self.rank, self.size = info, plan, rank, size
        self.directory = directory
        self.dtype = np.dtype(dtype)
        self.ydtype = self.dtype if info["task"] == "regression" else np.dtype(np.int32)
        self.jobs = _jobs(info, plan, size)
        self.sizes = [[int(r[:, 1].sum()) for r in job.ranges] for job in self.jobs]     # per job, per rank
        self.rows = [sizes[rank] for sizes in self.sizes]
        self.key = json.dumps({"format": FORMAT, "version": VERSION, "source": source, "test": info["test"],
                               "rows": self._rows_hash(), "rank": rank, "ranks": size, "dtype": self.dtype.str,
                               "features": info["features"], "task": info["task"], "classes": info["classes"]},
                              sort_keys=True)
        self.name = f"mpidml-{hashlib.sha256(self.key.encode()).hexdigest()[:16]}-rank{rank}-of-{size}.h5"
        self.path = os.path.join(os.path.abspath(directory), self.name)

    def _rows_hash(self):
        digest = hashlib.sha256()
        for job in self.jobs:
            digest.update(f"{job.x} {job.y} {job.rows}".encode())
            digest.update(np.ascontiguousarray(job.ranges[self.rank][:, :2], np.int64).tobytes())
        return digest.hexdigest()

    def passes(self):
        """The jobs' indices by the dataset they read (split test rows travel with the
        partition's: one pass over the file)."""
        by_dataset = {}
        for j, job in enumerate(self.jobs):
            by_dataset.setdefault(job.x, []).append(j)
        return list(by_dataset.values())

    def find(self):
        """Whether a complete copy of this key is there already (the directory made first)."""
        check_directory(self.directory)
        if os.path.realpath(self.path) == os.path.realpath(self.info["path"]):
            raise UsageError(f"--stage-dir {self.directory}: its staged file {self.name} would replace --data")
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return False
        except OSError as e:
            raise UsageError(f"--stage-dir {self.directory}: cannot read {self.name} ({e.strerror})") from None
        if not stat.S_ISREG(mode):
            raise UsageError(f"--stage-dir {self.directory}: {self.name} is there and not a regular file; remove it")
        return self.complete()

    def complete(self):
        """Whether the file at `path` holds this key and all its rows: every dataset of the
        shape and dtype expected, contiguous, and within the file (not cut short)."""
        try:
            size = os.path.getsize(self.path)
            with h5py.File(self.path, "r", locking=False) as f:
                if f.attrs.get(KEY_ATTRIBUTE) != self.key:
                    return False
                return all(_whole(f.get(name), shape, dtype, size) for name, shape, dtype in self.datasets())
        except (OSError, RuntimeError, KeyError, ValueError):
            return False

    def datasets(self):
        """(name, shape, dtype) of every dataset of the copy."""
        d = self.info["features"]
        return [(f"{g}/{v}", (n, d) if v == "X" else (n,), self.dtype if v == "X" else self.ydtype)
                for g, n in zip(GROUPS, self.rows) for v in ("X", "y")]

    def staged_info(self):
        """The staged file's description, as data.distribute.describe gives one for a file."""
        info, classes = self.info, self.info["classes"]
        test = None
        if len(self.rows) > 1:
            test = {"x": "/test/X", "y": "/test/y", "rows": self.rows[1], "source": "dataset"}
        return {"path": self.path, "x": "/train/X", "y": "/train/y", "rows": self.rows[0],
                "features": info["features"], "file_dtype": self.dtype.str, "task": info["task"],
                "classes": None if classes is None else list(range(len(classes))),
                "label_kind": None if classes is None else "int", "test": test,
                "window_rows": info["window_rows"], "block_rows": info["block_rows"],
                "partition_seed": info["partition_seed"], "partition": info["partition"],
                "compression": None, "chunk_rows": None, "chunk_bytes": None}

    def open(self, chunk_bytes):
        """The StreamedPart over the staged file, which it removes when the run completes."""
        info = self.staged_info()
        train = RowSet(("/train/X", "/train/y", self.rows[0]), _all_rows(self.rows[0]))
        test = test_sizes = None
        if info["test"]:
            test = RowSet(("/test/X", "/test/y", self.rows[1]), _all_rows(self.rows[1]))
            test_sizes = self.sizes[1]
        part = StreamedPart(info, train, self.plan.sizes, test, test_sizes, self.dtype, chunk_bytes)
        part.staged = self.path
        return part


def _jobs(info, plan, size):
    """The dataset pairs and each rank's rows of them (data.Job, no arrays): the partition,
    then the test rows (rows of the training datasets, or a slab of the test datasets)."""
    jobs = [datamod.Job(info["x"], info["y"], info["rows"], plan.ranges, None, None, TAG)]
    test = info["test"]
    if test and test["source"] == "split":
        jobs.append(datamod.Job(info["x"], info["y"], info["rows"], plan.test, None, None, TAG + 2))
    elif test:
        ranges = slabs(test["rows"], size)[0]
        jobs.append(datamod.Job(test["x"], test["y"], test["rows"], ranges, None, None, TAG + 2))
    return jobs


def _all_rows(n):
    """The runs of a RowSet of the whole of an n-row dataset."""
    return [[0, n]] if n else np.empty((0, 2), np.int64)


def _whole(ds, shape, dtype, file_size):
    """Whether `ds` is a contiguous dataset of `shape` and `dtype` whose bytes are all in
    the file (a file cut short keeps its metadata but loses rows)."""
    if not isinstance(ds, h5py.Dataset) or ds.shape != shape or ds.dtype != dtype or ds.chunks:
        return False
    if not ds.size:
        return True
    offset = ds.id.get_offset()
    return offset is not None and offset + ds.id.get_storage_size() <= file_size


class Writer:
    """A rank's staged copy being written: a temporary file next to the final name, HDF5
    written through (outputs.create_h5: a full disk fails the write that met it, not a
    later close), renamed once complete and on disk. The first error is kept (`error`) and
    the file removed: the rank still receives every message rank 0 sends it."""

    def __init__(self, copy):
        self.copy, self.error, self.tmp, self.sets = copy, None, None, {}
        self.stack = contextlib.ExitStack()
        try:
            self.tmp = temporary(copy.path, copy.directory)      # the umask's mode, as every output
            f = self.stack.enter_context(create_h5(self.tmp))
            f.attrs[KEY_ATTRIBUTE] = copy.key
            for name, shape, dtype in copy.datasets():
                self.sets[name] = f.create_dataset(name, shape, dtype)
        except UsageError as e:                 # the temporary could not be made
            self.fail(e.__cause__ or e)
        except OSError as e:
            self.fail(e)

    def write(self, j, rows, X, Y):
        """Job `j`'s local rows `rows` (a slice): features X, labels Y."""
        if self.error:
            return
        try:
            self.sets[f"{GROUPS[j]}/X"][rows] = X
            self.sets[f"{GROUPS[j]}/y"][rows] = Y
        except (OSError, RuntimeError) as e:
            self.fail(e)

    def fail(self, e):
        """Keep the error (an OSError in words), remove the file."""
        self.error = self.error or write_error(self.copy.directory, self.copy.name, e)
        self.abandon()

    def finish(self):
        """Close the file and put it on disk; returns the error, or None."""
        if self.error is None:
            try:
                self.stack.close()
                fsync_path(self.tmp)
            except OSError as e:
                self.fail(e)
        return self.error

    def commit(self):
        """Rename the finished file to its final name; returns the error, or None."""
        try:
            os.replace(self.tmp, self.copy.path)
            release(self.tmp)
            fsync_path(os.path.dirname(self.copy.path))
        except OSError as e:
            self.fail(e)
        return self.error

    def abandon(self):
        """Close and remove the temporary file (a failed or interrupted copy)."""
        with contextlib.suppress(OSError, RuntimeError):
            self.stack.close()
        if self.tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
            release(self.tmp)
            self.tmp = None


def _copy(group, copy, lacking, meter):
    """Generator: rank 0 sends every rank that `lacking` marks its rows, and each such rank
    writes them to a temporary file, renamed once every rank agrees that all went well.
    Returns the rename's error (the agreement that precedes it raises the others')."""
    writer = Writer(copy) if lacking[group.rank] else None
    try:
        err = writer.error if writer else None
        d = copy.info["features"]
        total = sum(sizes[r] for sizes in copy.sizes for r in np.flatnonzero(lacking))
        meter = meter("staging", total, d * copy.dtype.itemsize)
        for jobs in copy.passes():
            if group.rank == 0:
                verdict = yield from _send(group, copy, jobs, lacking, writer, meter)
            elif writer:
                verdict = yield from _receive(group, copy, jobs, writer)
            else:
                verdict = None
            err = err or verdict
        meter.close()
        if writer:
            err = err or writer.finish()
        yield from group.agree(err, "stage")
        return writer.commit() if writer else None
    except BaseException:
        if writer:
            writer.abandon()
        raise


def _send(group, copy, jobs, lacking, writer, meter):
    """Generator (rank 0): read the windows that hold rows of the ranks `lacking` marks, of
    the jobs `jobs` (one dataset), and send each rank its rows of a window as one message,
    through BUFFERS window buffers (the next window is read while the last one's sends
    drain); rows of its own go to its `writer`, checked. Every window is read and every
    message sent whatever fails, as the others wait for them; returns the first error."""
    info, first = copy.info, copy.jobs[jobs[0]]
    n, W = first.rows, info["window_rows"]
    # window by window; in each, the others' rows first, so they travel while this rank writes its own
    todo = sorted(((w, r == group.rank, j, r), rows, runs) for j in jobs for r in map(int, np.flatnonzero(lacking))
                  for w, rows, runs in datamod.windows(copy.jobs[j].ranges[r], W, n))
    with datamod.open_for(info) as opened:
        src = datamod.Source(opened, info, first, copy.dtype, datamod.class_array(info))

        def keep(j, rows, runs, xb, yb, err):
            verdict = src.fill(runs, xb, yb)
            if (err or verdict) is None:        # its copy holds checked rows only
                writer.write(j, rows, xb, yb)
            return verdict
        return (yield from datamod.pass_on(group, src, copy.jobs, todo, n, (copy.dtype, copy.ydtype), meter, keep,
                                           "stage"))


def _receive(group, copy, jobs, writer):
    """Generator: this rank's rows of the jobs `jobs` from rank 0, message by message in
    the order rank 0 sends them, a receive posted ahead into each of BUFFERS buffers; each
    message is checked (NaN/inf, naming the row of --data) and written as it lands. Every
    message is received whatever fails; returns the first error."""
    info, rank = copy.info, group.rank
    n, W = copy.jobs[jobs[0]].rows, info["window_rows"]
    messages = sorted(((w, j), rows, runs) for j in jobs
                      for w, rows, runs in datamod.windows(copy.jobs[j].ranges[rank], W, n))
    if not messages:
        return None
    largest = max(rows.stop - rows.start for _, rows, _ in messages)
    bufs = [(np.empty((largest, info["features"]), copy.dtype), np.empty(largest, copy.ydtype))
            for _ in range(BUFFERS)]

    def post(k):
        (_, j), rows, _ = messages[k]
        m, (xb, yb), tag = rows.stop - rows.start, bufs[k % BUFFERS], copy.jobs[j].tag
        return group.comm.Irecv(xb[:m], source=0, tag=tag), group.comm.Irecv(yb[:m], source=0, tag=tag + 1)

    posted = [post(k) for k in range(min(BUFFERS, len(messages)))]
    err = None
    for k, ((_, j), rows, runs) in enumerate(messages):
        for req in posted[k % BUFFERS]:
            yield from group.wait(req, "stage")
        m, (xb, yb) = rows.stop - rows.start, bufs[k % BUFFERS]
        err = err or datamod.nonfinite_error(xb[:m], runs, info["path"], copy.jobs[j].x, info["file_dtype"])
        if err is None:
            writer.write(j, rows, xb[:m], yb[:m])
        if k + BUFFERS < len(messages):
            posted[k % BUFFERS] = post(k + BUFFERS)
    return err
