"""--sync-every auto: how often a model averages, and whether the average hides behind
training, chosen from what a step and an average cost on this run's ranks and link.

The right K spans two orders of magnitude: an average of a 227 KB state takes 0.05 ms in
shared memory, 2 ms over 1 Gbit/s and 15-20 ms over 100 Mbit/s, against a step of about
0.75 ms (bench "network"). A user cannot guess it, so the model measures it before its
first step, on its own communicator:

  step     a few dry steps (forward, backward, optimizer) on a copy of the state and a
           random batch: the model does not move, so the seed still fixes the minibatches;
  average  blocking Allreduces of a scratch buffer the state's size, after one that lines
           the ranks up (what an average costs, not how late a rank came);
  overlap  one overlapped round on the scratch buffer, hidden behind D dry steps that let
           MPI progress it between layers (as training does): what it costs the training,
           the time it still blocks (copies and merge included) and what its D steps took
           beyond steps timed just before without it (moving the bytes takes the kernel's
           and MPI's time from computing: on a fast link a round blocks 0.15 ms, yet costs
           0.3-0.5 ms).
           D doubles until a round costs under TARGET_SHARE of its K = 2D steps.

Every rank measures, the slowest measurement decides (one Allreduce of MAX), so every
rank computes the same choice. Blocking averaging wins where it keeps ranks waiting under
TARGET_SHARE of the time with K <= BLOCKING_UP_TO (no staleness, no copies: shared memory
and fast links); otherwise overlap with K = 2D where that averages more often than
blocking could, or, both at the bound, costs less than a blocking average (slow links;
D = K/2 kept the accuracy of blocking, see aggregate.py).
K never passes MAX_EVERY: the accuracy bound (bench "network" reports each K's accuracy).

At every epoch's end the model compares the step and average times of that epoch with
the ones it chose from; where either moved by DRIFT or more (another job took the cores,
the link slowed, a rank was lost), it measures and chooses again before the next epoch.
Each choice is printed once, recorded in the metrics and in the model file, and
`--resume` starts from the last one; a run that chose once is reproducible bit for bit
by giving its choice: --sync-every K --no-overlap, or --sync-every K --overlap
--merge-after D.
"""
import dataclasses
import time

import numpy as np
from mpi4py import MPI

AUTO = "auto"
TARGET_SHARE = 0.02     # of a round's time, its average may cost the training this share
BLOCKING_UP_TO = 16     # blocking averaging, where it meets the target with K up to this
MAX_EVERY = 256         # the accuracy bound on K
HIDE = 1.5              # first overlapped probe: D steps take this many times an average
PROBE_STEPS = 8         # dry steps timed (after one that warms the caches)
PROBE_AVERAGES = 2      # blocking averages timed (the least: the first of a size sets its path up)
PROBE_ROUNDS = 1        # overlapped rounds probed at each D (measuring costs D steps of training)
DRIFT = 2.0             # measured anew when the step or the average time moves this factor


@dataclasses.dataclass
class Cadence:
    """One choice: average every `every` steps, blocking (`merge_after` None) or overlapped
    and merged `merge_after` steps later, from the times measured; from `epoch` on."""
    every: int
    merge_after: int | None = None
    epoch: int = 0
    step_ms: float = 0.0
    average_ms: float = 0.0
    round_cost_ms: float | None = None     # what an overlapped round cost the training, where one was probed
    why: str = ""
    took_ms: float = 0.0            # what measuring cost (the training waited for it)

    @property
    def overlap(self):
        return self.merge_after is not None

    def as_dict(self):
        return {**dataclasses.asdict(self), "overlap": self.overlap}

    @classmethod
    def from_dict(cls, d):
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    def describe(self):
        how = (f"overlapped, merged {self.merge_after} steps later" if self.overlap else "blocking")
        measured = [f"a step {self.step_ms:.3g} ms, an average {self.average_ms:.3g} ms"] if self.step_ms else []
        if self.round_cost_ms is not None:
            measured[-1] += f", an overlapped round cost {self.round_cost_ms:.3g} ms"
        return f"averaging every {self.every} steps, {how} ({'; '.join([*measured, self.why])})"


def pow2_at_least(x):
    """The smallest power of two >= x (at least 1)."""
    return 1 << max(0, int(np.ceil(np.log2(max(x, 1.0)))))


def blocking_every(step_s, average_s, max_every=MAX_EVERY):
    """The smallest power-of-two K at which a blocking average every K steps keeps ranks
    waiting at most TARGET_SHARE of the time: avg / (K step + avg) <= share."""
    if average_s <= 0:
        return 1
    need = average_s * (1 - TARGET_SHARE) / (TARGET_SHARE * max(step_s, 1e-9))
    return min(pow2_at_least(need), max_every)


def first_merge_after(step_s, average_s, max_every=MAX_EVERY):
    """The first D to probe: D steps take HIDE times an average."""
    return min(pow2_at_least(HIDE * average_s / max(step_s, 1e-9)), max(1, max_every // 2))


def hidden(round_cost_s, every, step_s):
    """True when an overlapped round that costs `round_cost_s` meets the target at K = every."""
    return round_cost_s <= TARGET_SHARE * every * step_s


class Tuner:
    """Chooses and revises one model's Cadence; `averager` applies it (aggregate.Averager).
    `overlap`: True or False where the user said --overlap / --no-overlap, None: ours to choose.
    `dry_step()` makes a training step that moves nothing (trainer.Model._dry_step)."""

    def __init__(self, averager, dry_step, overlap=None, max_every=MAX_EVERY, announce=None):
        self.averager, self.group = averager, averager.group
        self.dry_step = dry_step        # () -> step(poll=None): a training step that moves nothing
        self.may_overlap = overlap is not False
        self.must_overlap = overlap is True
        self.max_every = max_every
        self.announce = announce or (lambda cadence: None)
        self.choices = []
        self.baseline = None        # (step, average) seconds in the first epoch after the last choice
        self.clock = time.perf_counter

    @property
    def cadence(self):
        return self.choices[-1] if self.choices else None

    def resume(self, choices):
        """Go on with the choices a file `--resume` read, the last one in force."""
        self.choices = list(choices)
        self.averager.set_cadence(self.cadence.every, self.cadence.merge_after)

    def record(self):
        """The choices and the review's baseline (JSON): what the same model's next tuner
        takes (its next rung), and what survivors of a lost rank agree on (elastic.py), so
        that every rank goes on with the same cadence and judges drift alike."""
        return {"choices": [c.as_dict() for c in self.choices], "baseline": self.baseline}

    def restore(self, record):
        """Take `record` (see record)."""
        self.choices = [Cadence.from_dict(c) for c in record["choices"]]
        self.baseline = None if record["baseline"] is None else tuple(record["baseline"])
        if self.choices:
            self.averager.set_cadence(self.cadence.every, self.cadence.merge_after)

    def choose(self, epoch, why="measured before the first step"):
        """Generator: measure (every rank), agree on the slowest, choose, apply, announce."""
        t0 = self.clock()
        if self.group.size == 1:
            cadence = Cadence(self.max_every, None, epoch, why="one rank: nothing to average")
        else:
            dry_step = self.dry_step()
            step_s = self._time_steps(dry_step)
            average_s = yield from self._time_averages()
            (step_s, average_s), _ = yield from self._agree(largest=(step_s, average_s))
            cadence = yield from self._decide(dry_step, step_s, average_s, epoch, why)
        cadence.took_ms = (self.clock() - t0) * 1e3
        self.choices.append(cadence)
        self.baseline = None
        self.averager.set_cadence(cadence.every, cadence.merge_after)
        self.announce(cadence)

    def review(self, epoch, step_s, average_s):
        """Generator, at an epoch's end: this rank's step time in the epoch and its time in the
        epoch-end average. The first epoch after a choice sets the baseline (a real step
        gathers its minibatch too, which the dry one leaves out); where a later epoch's
        drifts from it by DRIFT or more, choose anew before `epoch`. The average's time
        counts from the rank that came last (the least over the ranks): the others' includes
        waiting for it; the step's from the slowest."""
        if self.group.size == 1 or self.cadence is None:
            return
        (step_s,), (average_s,) = yield from self._agree(largest=(step_s,), least=(average_s,))
        if self.baseline is None:
            self.baseline = (step_s, average_s)
            return
        moved = max(_ratio(step_s, self.baseline[0]), _ratio(average_s, self.baseline[1]))
        if moved >= DRIFT:
            yield from self.choose(epoch, f"measured again: a step took {step_s * 1e3:.3g} ms and an average "
                                          f"{average_s * 1e3:.3g} ms in epoch {epoch}, against "
                                          f"{self.baseline[0] * 1e3:.3g} and {self.baseline[1] * 1e3:.3g} before")

    # -- measuring ------------------------------------------------------------------------
    def _time_steps(self, dry_step):
        dry_step()
        times = []
        for _ in range(PROBE_STEPS):
            t0 = self.clock()
            dry_step()
            times.append(self.clock() - t0)
        return float(np.median(times))

    def _time_averages(self):
        """Generator: the least seconds of a blocking Allreduce of the state's size, each
        after a one-number Allreduce that lines the ranks up."""
        scratch, line = np.zeros_like(self.averager.state), np.zeros(1)
        times = []
        for _ in range(PROBE_AVERAGES):
            yield from self.group.allreduce(line, "cadence")
            t0 = self.clock()
            yield from self.group.allreduce(scratch, "cadence")
            times.append(self.clock() - t0)
        return min(times)

    def _agree(self, largest=(), least=()):
        """Generator: the largest over the ranks of each of `largest`, the least of `least`
        (one Allreduce of MAX): the same numbers on every rank."""
        buf = np.array([*largest, *(-x for x in least)], np.float64)
        yield from self.group.allreduce(buf, "cadence", MPI.MAX)
        return tuple(float(x) for x in buf[:len(largest)]), tuple(-float(x) for x in buf[len(largest):])

    def _probe(self, d, dry_step):
        """Generator: what an overlapped round behind d dry steps costs the training: the
        time it blocks, and what its steps took beyond d steps without it (the kernel's
        network work and MPI's progress calls take cores from computing: a fast link's round
        blocks 0.15 ms yet cost 0.3-0.5 ms); the least of PROBE_ROUNDS, the largest over the
        ranks (noise only ever adds to it)."""
        costs = []
        for _ in range(PROBE_ROUNDS):
            blocked, lost = yield from self.averager.probe_round(d, dry_step)
            costs.append(blocked + max(0.0, lost))
        (cost_s,), _ = yield from self._agree(largest=(min(costs),))
        return cost_s

    def _decide(self, dry_step, step_s, average_s, epoch, why):
        """Generator: blocking where it meets the target within BLOCKING_UP_TO, else the
        overlapped D whose probed round meets it at K = 2D, where that averages more often
        than blocking can (or, both at the bound, costs less)."""
        ms = dict(epoch=epoch, step_ms=step_s * 1e3, average_ms=average_s * 1e3)
        k_blocking = blocking_every(step_s, average_s, self.max_every)
        if not self.may_overlap or (k_blocking <= BLOCKING_UP_TO and not self.must_overlap):
            return Cadence(k_blocking, None, why=why, **ms)
        d = first_merge_after(step_s, average_s, self.max_every)
        while True:
            cost_s = yield from self._probe(d, dry_step)
            every = min(2 * d, self.max_every)
            if hidden(cost_s, every, step_s) or every >= self.max_every:
                break
            d *= 2
        pays = every < k_blocking or (every == k_blocking and cost_s < average_s)
        if not pays and not self.must_overlap:
            return Cadence(k_blocking, None, round_cost_ms=cost_s * 1e3, why=why + "; overlap does not pay here",
                           **ms)
        return Cadence(every, min(d, every), round_cost_ms=cost_s * 1e3, why=why, **ms)


def _ratio(a, b):
    """How many times a and b differ (>= 1); inf where one is zero and the other not."""
    lo, hi = sorted((abs(a), abs(b)))
    if hi == 0:
        return 1.0
    return hi / lo if lo > 0 else float("inf")
