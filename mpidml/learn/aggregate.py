"""Model averaging across ranks, weighted by partition size, blocking or overlapped.

The averaged buffer is the optimizer's whole state [w | m | v], so weights and moments
stay consistent across ranks (see optim.py).

Blocking: state <- sum_r (n_r / n) state_r, with one in-place Allreduce.

Overlapped: at a sync point the rank snapshots its state, starts a non-blocking
Allreduce of the weighted snapshot and keeps training. D steps later (`--merge-after`,
K/2 by default) it waits for that reduction and merges what averaging changed in the
snapshot, delta = avg(snapshot) - snapshot, into the state it has since moved on to:

    w <- w + delta_w                    (the D local steps are kept on top of the average)
    m <- m + mu^D delta_m               (each moment: its delta decayed as the D steps
    v <- v + beta2^D delta_v             decayed the moment itself; Optimizer.absorb)

Why this, among the published ways of hiding the average:
- Merging the moments' whole delta, m <- avg(m_snap) + (m - m_snap), as the first
  version did, adds back the part of the old moment that the D steps had already
  forgotten (mu^16 = 0.19): ranks' moments were pushed apart, and at 8 ranks momentum SGD
  lost 9 points of accuracy for an epoch (0.807 -> 0.723), Adam at lr 0.05 lost 14.
  With the decayed delta the merge is exact for the moments' linear recurrence.
- Merging a round only at the next sync point (D = K) makes the consensus a full round
  stale: every round's steps start from where the average stood K steps earlier plus the
  rank's own last round. Momentum SGD coped; Adam at lr 0.05 ended 5 points below
  blocking averaging. D = K/2 halves the staleness and ended within 0.1 point of blocking
  for both (N=8, the issue's 1M-row case; D = K/4 as well). The collective still hides
  behind D steps of computation, far longer than it takes (0.05-0.25 ms against ~0.5 ms
  a step).
- Overlap Local-SGD (Wang et al. 2020) pulls each rank towards an anchor model, the
  stale average, kept with a slow momentum: it trades progress for stability with two
  more hyperparameters (pull strength, slow momentum) and a second model per rank.
  PostLocalSGD (PyTorch) does not overlap at all. Heat's DASO sends the parameters every
  `global_skips` batches and receives them `batches_to_wait` batches later (at most a
  quarter of the skips), blending the stale average into the local model: D here plays
  its `batches_to_wait`, without its schedule of skips. The delayed merge above has
  no hyperparameter beyond D, needs no extra memory but the snapshot, and stays
  bit-identical for the same seed and N: the merge happens at a fixed step, not whenever
  the request happens to finish.

MPI libraries without a progress thread (the mpich wheel) advance the collective only
inside MPI calls, so the round starts at the sync point itself and, while it is in
flight, the trainer lets MPI progress it between layers. Every epoch ends with a
blocking average, so the model tested and saved is the global one.
"""
import time

import numpy as np
from mpi4py import MPI

from ..runtime.scheduler import Event

FREE_STEPS = 16     # probe_round: steps timed without a round, to compare the steps beside it with


def default_merge_after(every):
    """D when --merge-after is not given: half a round, at least one step."""
    return max(1, every // 2)


class Averager:
    """The averaging schedule of one model: every `every` local steps, blocking, or (with
    `merge_after` D, 0 for the default) overlapped and merged D steps later. `may_overlap`:
    the schedule may turn overlapped later (set_cadence; --sync-every auto)."""

    def __init__(self, group, state, weight, every=1, merge_after=None, optimizer=None, keep_state=False,
                 may_overlap=False):
        self.group, self.state, self.weight = group, state, weight
        self.set_cadence(every, merge_after)
        self.optimizer = optimizer      # merges the delta through its update rule (Optimizer.absorb)
        # keep_state: average out of place, so that a collective a lost rank broke leaves this
        # rank's state whole for the survivors to go on from (elastic.py); one copy per average
        self.keep_state = keep_state
        self.may_overlap = may_overlap or self.overlap
        self.snap = np.empty_like(state) if self.may_overlap else None
        self.buf = np.empty_like(state) if self.may_overlap or keep_state else None
        self.requested, self.done = Event(), Event()
        self.in_flight = self.stopping = False
        self.merge_at = -1
        self.blocking_s = 0.0       # the last blocking average, start to end (cadence.Tuner.review)
        self.clock = time.perf_counter

    def set_cadence(self, every, merge_after=None):
        """Average every `every` steps from the next step on, overlapped and merged
        `merge_after` steps later (0: the default), or blocking (None); between rounds."""
        self.overlap = merge_after is not None
        self.every, self.merge_after = every, merge_after or default_merge_after(every)

    def after_step(self, s, last, check):
        """Generator: the averaging due after local step `s` of an epoch whose last step is
        `last` (its end has an average of its own, `end_epoch`). `check` sees each global
        average, which is the same on every rank."""
        if self.in_flight and s == self.merge_at:
            yield from self.finish(check)
        if (s + 1) % self.every or s == last:
            return
        if self.overlap:
            yield from self.finish(check)       # still in flight only when D = K
            if s + self.merge_after >= last:    # it would merge at or after the epoch's last step, whose
                return                          # full average comes first: it would only hold it up
            self.start()
            self.merge_at = s + self.merge_after
        else:
            yield from self.blocking()
            check(self.state)

    def end_epoch(self):
        """Generator: merge the round in flight, then average in full, so that every rank
        holds the global model at the epoch's end."""
        yield from self.finish()
        yield from self.blocking()

    def blocking(self):
        """Generator: average the state now."""
        t0 = self.clock()
        if not self.keep_state:
            self.state *= self.weight
            yield from self.group.allreduce(self.state, "average")
        else:
            np.multiply(self.state, self.weight, out=self.buf)
            yield from self.group.allreduce(self.buf, "average")
            self.state[...] = self.buf
        self.blocking_s = self.clock() - t0

    def probe_round(self, steps, dry_step):
        """Generator: (seconds blocked, seconds the steps lost) of an overlapped round behind
        `steps` calls of `dry_step(poll)` (which let MPI progress it between layers, as
        training does): blocked counts its copies, merge and final wait; lost, what those
        steps took beyond steps just before without a round (up to FREE_STEPS, scaled):
        moving the bytes takes the kernel's network work and MPI's progress calls from
        computing; timed side by side, a load on the machine weighs on both. On scratch
        copies, so the state stays as it was (cadence.Tuner; never with a round in flight)."""
        free = min(steps, FREE_STEPS)
        t0 = self.clock()
        for _ in range(free):
            dry_step()
        t1 = self.clock()
        np.copyto(self.snap, self.state)
        np.multiply(self.state, self.weight, out=self.buf)
        handle = self.group.start(lambda: self.group.comm.Iallreduce(MPI.IN_PLACE, self.buf, MPI.SUM), "cadence")
        t2 = self.clock()
        for _ in range(steps):
            dry_step(self.group.poke)
        t3 = self.clock()
        yield from self.group.complete(handle)
        self.buf -= self.snap
        return t2 - t1 + self.clock() - t3, t3 - t2 - (t1 - t0) * steps / free

    def start(self):
        """Snapshot the state, start the Iallreduce of its weighted copy right away, and
        hand the request to the communicator task to see it through."""
        np.copyto(self.snap, self.state)
        if self.optimizer is not None:
            self.optimizer.mark()
        np.multiply(self.state, self.weight, out=self.buf)
        self.handle = self.group.start(lambda: self.group.comm.Iallreduce(MPI.IN_PLACE, self.buf, MPI.SUM),
                                       "average (overlapped)")
        self.in_flight = True
        self.done.clear()
        self.requested.set()

    def finish(self, check=None):
        """Generator: wait for the round in flight (if any) and merge it; `check` first sees
        the global average (the same on every rank, unlike the merged state)."""
        if not self.in_flight:
            return
        if not self.done.is_set:
            yield self.done
        self.in_flight = False
        if check is not None:
            check(self.buf)
        self.buf -= self.snap                   # what averaging changed in the snapshot
        if self.optimizer is None:
            self.state += self.buf
        else:
            self.optimizer.absorb(self.buf)

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
