"""Collectives under a deadline that name the ranks that stopped taking part.

Every collective mpidml runs is non-blocking and waited for through the scheduler. While
it waits, a rank wakes every `heartbeat` seconds to answer liveness pings. When a wait
passes `--stall-timeout`, the rank pings every other rank and gives them `GRACE` seconds
to answer: any rank that is itself waiting in a collective answers at once; a rank that
never arrived (stuck in its own work, hung, stopped) or died does not. The lowest rank
that answers reports the silent ranks by number and ends the job; the others end quietly.
Nothing is sent while things go well, so the mechanism costs one wake-up per heartbeat.

Pings are found with Iprobe(MPI_ANY_SOURCE) and then received from the rank that sent them,
never with a receive posted for MPI_ANY_SOURCE: with the mpich wheel (ch4, its shared-memory
module beside UCX) such a receive that matches a message the network has already delivered
takes the message and never completes. Two ranks pinging a third over the network at the
same moment (every rank that waits diagnoses at once) then lost the second ping, and the
healthy third rank was named with the stopped one.
"""
import json
import time
from collections import defaultdict

import numpy as np
from mpi4py import MPI

from ..errors import DivergedError, MpidmlError, StallError, UsageError
from .abort import release_node_segment
from .scheduler import Scheduler, Wait

PING_TAG, PONG_TAG, PROGRESS_TAG, ARRIVED_TAG = 21, 22, 23, 24
GRACE = 2.0


def wait_for_start(comm, req, timeout, what):
    """Wait for a start-up collective on `comm` (no Group yet, so no pings) for at most
    `timeout` seconds (None: for ever). A rank that never reaches it (it runs another
    program in an MPMD launch, or mpidml was called on some ranks only) left the others
    waiting for ever; now they raise StallError. Every other rank tells rank 0 that it has
    arrived (an empty message), so rank 0 names the ranks that did not. The later a
    waiting rank, the later it gives up, so that the lowest one reports and ends the job
    before the others add their lines."""
    rank, size = comm.Get_rank(), comm.Get_size()
    empty = np.empty(0, np.uint8)
    if rank == 0:
        arrivals = [comm.Irecv(empty, source=r, tag=ARRIVED_TAG) for r in range(1, size)]
    else:
        arrivals = [comm.Isend(empty, dest=0, tag=ARRIVED_TAG)]
    deadline = None if timeout is None else time.monotonic() + timeout + 0.2 * min(rank, 10)
    while not req.Test():
        if deadline is not None and time.monotonic() > deadline:
            missing = [r for r, a in enumerate(arrivals, 1) if not a.Test()] if rank == 0 else []
            who = ", ".join(f"rank {r}" for r in missing) or "not every rank"
            raise StallError(f"{what}: {who} did not arrive within {timeout:g} s (--stall-timeout): a rank "
                             "that runs another program (an MPMD launch) or does not call mpidml")
        time.sleep(0.001)
    MPI.Request.Waitall(arrivals)           # every rank is here: its message has come or comes now


def drive(gen, name="main"):
    """Run one generator task to completion on a fresh scheduler; return its result."""
    sched = Scheduler()
    task = sched.spawn(gen, name)
    sched.run()
    return task.result


class Group:
    """The ranks of a job, with deadline-checked collectives (generators to `yield from`)."""

    def __init__(self, comm=MPI.COMM_WORLD, stall_timeout=None, tracer=None):
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.stall_timeout = stall_timeout or None
        self.comm, req = comm.Idup()               # the job's first collective: under the deadline too
        wait_for_start(comm, req, self.stall_timeout, "start-up")
        self.notes, req = comm.Idup()
        req.Wait()
        self.heartbeat = None if self.stall_timeout is None else min(0.5, self.stall_timeout / 4)
        self.tracer = tracer
        self.seq = 0
        self.comm_s_by_label = defaultdict(float)    # collective -> seconds from start to completion
        self.clock = time.perf_counter
        self._ping = np.zeros(1, np.int64)
        self._pong = np.zeros(1, np.int64)
        self._pongs = []
        self.owns_notes = self.owns_comm = True

    def fork(self, share=None):
        """A group of the same ranks on a communicator of its own, for one model of a sweep:
        its collectives then match across ranks whatever order the scheduler interleaves the
        models in. Liveness pings stay on this group's channel, so that a rank waiting in
        any model's collective answers them. `share`: a fork whose communicator this one
        takes over (MPI has about 2000): its user must have finished its collectives first."""
        other = Group.__new__(Group)
        other.__dict__.update(self.__dict__)
        other.comm = share.comm if share is not None else self.comm.Dup()
        other.comm_s_by_label = defaultdict(float)
        other._pongs = []
        other.owns_notes, other.owns_comm = False, share is None
        return other

    @property
    def comm_s(self):
        """Seconds in collectives, start to completion, all labels together."""
        return sum(self.comm_s_by_label.values())

    def close(self):
        """Complete the answers still in flight (MPI must not finalize with them pending)."""
        MPI.Request.Waitall(self._pongs)
        self._pongs = []

    def free(self):
        """Close, then release the communicators: a process that trains many times (the
        Python API's estimators) would otherwise run out of them (MPICH has about 2000)."""
        self.close()
        if self.owns_comm:
            self.comm.Free()
        if self.owns_notes:
            self.notes.Free()

    # -- the deadline mechanism ----------------------------------------------------
    def answer_pings(self):
        """Reply to every liveness ping that has arrived (see the module docstring for why a
        probe, and not a standing receive for any source)."""
        if self.size == 1:
            return
        status = MPI.Status()
        while self.notes.Iprobe(MPI.ANY_SOURCE, PING_TAG, status):
            source = status.Get_source()
            self.notes.Recv(self._ping, source, PING_TAG)      # there: a probed message
            self._pongs.append(self.notes.Isend(self._pong, dest=source, tag=PONG_TAG))
        self._pongs = [r for r in self._pongs if not r.Test()]

    def wait(self, req, label):
        """Generator: wait for `req`; past the stall timeout, name the silent ranks."""
        if self.stall_timeout is None:
            yield Wait(req, None, label)
            return
        deadline = self.clock() + self.stall_timeout
        while True:
            try:
                yield Wait(req, self.heartbeat, label)
                return
            except TimeoutError:
                self.answer_pings()
                if self.clock() > deadline:
                    self._diagnose(label)

    def start(self, start, label):
        """Start a non-blocking collective now (`start()` returns its request); returns the
        handle that `complete` waits on."""
        self.seq += 1
        return start(), label, self.clock()

    def complete(self, handle):
        """Generator: wait for a started collective under the stall deadline."""
        req, label, t0 = handle
        yield from self.wait(req, label)
        t1 = self.clock()
        self.comm_s_by_label[label] += t1 - t0
        if self.tracer:
            self.tracer.span("comm", label, t0, t1)

    def collective(self, start, label):
        """Generator: start a non-blocking collective and wait for it."""
        yield from self.complete(self.start(start, label))

    def poke(self):
        """Let MPI progress the collectives in flight (an Iprobe that matches nothing):
        without a progress thread they only advance inside MPI calls."""
        self.notes.Iprobe(MPI.ANY_SOURCE, PROGRESS_TAG)

    def _diagnose(self, label):
        """Ping everyone, collect answers for GRACE seconds, raise StallError naming the silent."""
        # the job ends whatever the answers: remove this node's segment now, before the
        # reporter's abort (GRACE from now on the first rank here) can end this rank
        release_node_segment()
        others = [r for r in range(self.size) if r != self.rank]
        bufs = [np.zeros(1, np.int64) for _ in others]
        pongs = [self.notes.Irecv(b, source=r, tag=PONG_TAG) for b, r in zip(bufs, others)]
        pings = [self.notes.Isend(np.full(1, self.seq, np.int64), dest=r, tag=PING_TAG) for r in others]
        end = self.clock() + GRACE
        while self.clock() < end and not all(p.Test() for p in pongs):
            self.answer_pings()
            time.sleep(0.01)
        silent = [r for r, p in zip(others, pongs) if not p.Test()]
        what = f"collective '{label}' (#{self.seq}) waited more than {self.stall_timeout:g} s (--stall-timeout)"
        if not silent:
            raise StallError(f"rank {self.rank}: {what}, yet every rank answers: ranks are out of step")
        live = [r for r in range(self.size) if r not in silent]
        names = ", ".join(f"rank {r}" for r in silent)
        err = StallError(f"{what}: {names} did not arrive or stopped responding")
        if self.rank != live[0]:
            # the lowest live rank reports; keep answering its pings, then end quietly
            end = self.clock() + GRACE
            while self.clock() < end:
                self.answer_pings()
                time.sleep(0.01)
            err.silent = True
        del pings
        raise err

    # -- collectives as generators ------------------------------------------------
    def allreduce(self, buf, label="allreduce", op=MPI.SUM):
        """In-place sum (or `op`) of a numpy buffer over all ranks."""
        yield from self.collective(lambda: self.comm.Iallreduce(MPI.IN_PLACE, buf, op), label)

    def bcast(self, buf, root=0, label="bcast"):
        yield from self.collective(lambda: self.comm.Ibcast(buf, root), label)

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

    def on_root(self, work, label):
        """Generator: `work()` on rank 0 alone; every rank then raises its UsageError (agreed)
        or returns its JSON-able result."""
        err = result = None
        if self.rank == 0:
            try:
                result = work()
            except UsageError as e:
                err = e
        yield from self.agree(err, label)
        return (yield from self.bcast_json(result, label=label))

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
