"""Model averaging across ranks, weighted by partition size, blocking or overlapped.

The averaged buffer is the optimizer's whole state [w | m | v], so weights and moments
stay consistent across ranks (see optim.py).

Blocking: state <- sum_r (n_r / n) state_r, with one in-place Allreduce.

Overlapped (Overlap Local-SGD, Wang et al. 2020; Heat's DASO delayed merge): at a sync
point the rank snapshots its state, starts a non-blocking Allreduce of the weighted
snapshot in the communicator task, and keeps training. At the next sync point (K local
steps later) it waits for that reduction and merges:

    w <- avg(snapshot) + (w - snapshot)

so the K steps taken meanwhile are kept on top of the global average. The average is
therefore one round (K steps) stale, in exchange for K steps of computation behind
which the collective, and the waiting for slower peers, can hide. The merge happens at
a fixed step, not whenever the request happens to finish, so runs stay bit-identical.
MPI libraries without a progress thread (the mpich wheel) advance the collective only
inside MPI calls, so the round starts at the sync point itself and, while it is in
flight, the trainer lets MPI progress it between layers.
Use it when ranks wait on each other (imbalance, noisy nodes, frequent averaging) or the
network offloads collectives; with one rank per core it removes blocked time but cannot
make the transfer itself free.
"""
import numpy as np
from mpi4py import MPI

from .scheduler import Event


class Averager:
    def __init__(self, group, state, weight, overlap):
        self.group, self.state, self.weight, self.overlap = group, state, weight, overlap
        self.snap = np.empty_like(state) if overlap else None
        self.buf = np.empty_like(state) if overlap else None
        self.requested, self.done = Event(), Event()
        self.in_flight = self.stopping = False

    def blocking(self):
        """Generator: average the state now."""
        self.state *= self.weight
        yield from self.group.allreduce(self.state, "average")

    def start(self):
        """Snapshot the state, start the Iallreduce of its weighted copy right away, and
        hand the request to the communicator task to see it through."""
        np.copyto(self.snap, self.state)
        np.multiply(self.state, self.weight, out=self.buf)
        self.handle = self.group.start(lambda: self.group.comm.Iallreduce(MPI.IN_PLACE, self.buf, MPI.SUM),
                                       "average (overlapped)")
        self.in_flight = True
        self.done.clear()
        self.requested.set()

    def finish(self):
        """Generator: wait for the round in flight (if any) and merge it; returns the
        global average it merged (the same on every rank), or None."""
        if not self.in_flight:
            return None
        if not self.done.is_set:
            yield self.done
        self.state += self.buf
        self.state -= self.snap
        self.in_flight = False
        return self.buf

    def communicator(self):
        """Task: run each requested averaging collective while training goes on."""
        while True:
            yield self.requested
            self.requested.clear()
            if self.stopping:
                return
            yield from self.group.complete(self.handle)
            self.done.set()

    def stop(self):
        self.stopping = True
        self.requested.set()
