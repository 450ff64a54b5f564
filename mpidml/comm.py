"""Collectives under a deadline that name the ranks that did not arrive.

Every collective mpidml runs is non-blocking and waited for through the scheduler with
`--stall-timeout` as deadline. To name the ranks that never arrived, each collective is
preceded by tiny arrival notes on a separate communicator: every rank tells rank 0, and
rank 0 tells every rank. When the deadline passes, rank 0 knows exactly who is missing;
another rank knows whether rank 0 is. The notes of a completed collective have all been
sent, so they are received right away and nothing piles up.
"""
import json
import time

import numpy as np
from mpi4py import MPI

from .errors import DivergedError, MpidmlError, StallError, UsageError
from .scheduler import Scheduler, Wait

NOTE_TAG = 7


def drive(gen, name="main"):
    """Run one generator task to completion on a fresh scheduler; return its result."""
    sched = Scheduler()
    task = sched.spawn(gen, name)
    sched.run()
    return task.result


class Group:
    """The ranks of a job, with deadline-checked collectives (generators to `yield from`)."""

    def __init__(self, comm=MPI.COMM_WORLD, stall_timeout=None, tracer=None):
        self.comm = comm.Dup()
        self.notes = comm.Dup()
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.stall_timeout = stall_timeout or None
        self.tracer = tracer
        self.seq = 0
        self.comm_s = 0.0
        self.clock = time.perf_counter

    def free(self):
        self.notes.Free()
        self.comm.Free()

    # -- the deadline mechanism ----------------------------------------------------
    def _announce(self):
        """Post this collective's arrival notes; returns (receive requests, sources, sends)."""
        seq = np.array([self.seq], np.int64)
        recv_bufs, recv_reqs, sources, sends = [], [], [], []
        if self.size == 1:
            return recv_reqs, sources, sends, recv_bufs
        if self.rank == 0:
            for r in range(1, self.size):
                buf = np.empty(1, np.int64)
                recv_bufs.append(buf)
                recv_reqs.append(self.notes.Irecv(buf, source=r, tag=NOTE_TAG))
                sources.append(r)
                sends.append(self.notes.Isend(seq, dest=r, tag=NOTE_TAG))
        else:
            buf = np.empty(1, np.int64)
            recv_bufs.append(buf)
            recv_reqs.append(self.notes.Irecv(buf, source=0, tag=NOTE_TAG))
            sources.append(0)
            sends.append(self.notes.Isend(seq, dest=0, tag=NOTE_TAG))
        return recv_reqs, sources, sends, (recv_bufs, seq)

    def collective(self, start, label):
        """Generator: start a non-blocking collective (`start()` returns its request) and
        wait for it under the stall deadline; raises StallError naming missing ranks."""
        self.seq += 1
        recv_reqs, sources, sends, keep = self._announce()
        t0 = self.clock()
        req = start()
        try:
            yield Wait(req, self.stall_timeout, label)
        except TimeoutError:
            self._diagnose(label, recv_reqs, sources)
        MPI.Request.Waitall(recv_reqs + sends)
        del keep
        t1 = self.clock()
        self.comm_s += t1 - t0
        if self.tracer:
            self.tracer.span("comm", label, t0, t1)

    def _diagnose(self, label, recv_reqs, sources):
        missing = [src for req, src in zip(recv_reqs, sources) if not req.Test()]
        what = f"collective '{label}' (#{self.seq}) waited more than {self.stall_timeout:g} s (--stall-timeout)"
        if self.rank == 0 and missing:
            ranks = ", ".join(f"rank {r}" for r in missing)
            raise StallError(f"{what}: {ranks} did not arrive")
        if self.rank != 0 and missing:
            raise StallError(f"{what}: rank 0 did not arrive")
        # Rank 0 is here and will name the missing ranks; give it time to end the job.
        time.sleep(min(10.0, self.stall_timeout))
        raise StallError(f"rank {self.rank}: {what}: a peer did not arrive")

    # -- collectives as generators ------------------------------------------------
    def allreduce(self, buf, label="allreduce", op=MPI.SUM):
        """In-place sum (or `op`) of a numpy buffer over all ranks."""
        yield from self.collective(lambda: self.comm.Iallreduce(MPI.IN_PLACE, buf, op), label)

    def bcast(self, buf, root=0, label="bcast"):
        yield from self.collective(lambda: self.comm.Ibcast(buf, root), label)

    def barrier(self, label="barrier"):
        yield from self.collective(self.comm.Ibarrier, label)

    def bcast_json(self, obj, root=0, label="bcast"):
        """Broadcast a JSON-able object from `root` (no pickle); returns it on every rank."""
        size = np.zeros(1, np.int64)
        data = b""
        if self.rank == root:
            data = json.dumps(obj).encode()
            size[0] = len(data)
        yield from self.bcast(size, root, label)
        buf = np.frombuffer(bytearray(data), np.uint8) if self.rank == root else np.empty(int(size[0]), np.uint8)
        yield from self.bcast(buf, root, label)
        return json.loads(buf.tobytes().decode())

    def gather_json(self, obj, root=0, label="gather"):
        """Gather one JSON-able object per rank to `root` (a list there, None elsewhere)."""
        data = np.frombuffer(bytearray(json.dumps(obj).encode()), np.uint8)
        sizes = np.zeros(self.size, np.int64)
        sizes[self.rank] = len(data)
        yield from self.allreduce(sizes, label)
        recv = None
        if self.rank == root:
            displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            recv = np.empty(int(sizes.sum()), np.uint8)
            spec = [recv, (sizes, displs), MPI.BYTE]
        else:
            spec = None
        yield from self.collective(lambda: self.comm.Igatherv(data, spec, root), label)
        if self.rank != root:
            return None
        return [json.loads(recv[o:o + s].tobytes().decode()) for o, s in zip(displs, sizes)]

    def agree(self, error, label="agree"):
        """Generator: every rank learns whether any rank failed; all raise the first error.

        `error` is this rank's MpidmlError or None. Returns normally when all are fine.
        """
        flags = np.zeros(self.size, np.int64)
        if error is not None:
            flags[self.rank] = error.code
        yield from self.allreduce(flags, label)
        bad = np.flatnonzero(flags)
        if len(bad) == 0:
            return
        first = int(bad[0])
        msg = yield from self.bcast_json(str(error) if self.rank == first else None, first, label)
        raise _error_for_code(int(flags[first]))(msg, agreed=True)


def _error_for_code(code):
    for cls in (UsageError, DivergedError, StallError):
        if cls.code == code:
            return cls
    return MpidmlError
