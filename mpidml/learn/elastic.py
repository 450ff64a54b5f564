"""Going on without a lost rank (--on-failure continue, under an MPI with ULFM: ft.py).

In data-parallel training every survivor already holds the model, so a lost rank costs
only its local steps since the last average and the rows it held. Every phase (setup,
training, each recovery, the report, the last writes) ends with `settle`, ULFM's
fault-tolerant agreement on whether every survivor completed it: a collective can complete
on some ranks and fail on others, and no survivor may go on to the next phase while
another recovers. When training did not complete everywhere, `Elastic.recover`:
  1. revokes every communicator of the job and shrinks it to the survivors (ft.shrink),
     with a new Group and one fork per model on the result;
  2. agrees, model by model, on one state to go on from: the leading survivor (the one
     furthest on: finished, epochs recorded, steps into the epoch) gives the history and
     scores; the weights are the survivors' own states averaged, weighted by their rows
     (each kept its state whole: averages run out of place, aggregate.Averager);
  3. deals the lost ranks' rows (training, validation and test, as file rows: Holdings)
     to the survivors in balanced runs, which each reads from the file itself;
  4. gives each model a Segment: the rest of the epoch on this rank, its own rows not yet
     trained on in this epoch and its share of the lost rows, so the epoch still sees every
     row (the lost rank's rows of this epoch are trained on again, whole).
The new rank 0 takes over the progress lines and every output. Below --min-ranks, with
--on-failure stop, or when the rows cannot be read again (the Python API's own arrays),
the survivors stop instead at the agreed state, checkpointed as after a stop signal
(exit 75, for batch scripts to requeue). A rank lost before training (while the data is
distributed) makes the survivors start again from the start-up at their new size.
"""
import dataclasses
import logging
import os
import signal
import sys
import time

import numpy as np
from mpi4py import MPI

from ..data.distribute import plan_for, read_file_rows
from ..data.partition import balanced_sizes, rows_of, slabs, validation_draw
from ..errors import RanksLost, UsageError
from ..runtime import ft
from ..runtime.comm import Group, drive

log = logging.getLogger("mpidml")


@dataclasses.dataclass
class Segment:
    """Where a model goes on within `epoch` after a lost rank: this rank's minibatch order
    for the rest of the epoch, every rank's count of rows in it (the global batch sizes),
    and this rank's loss sum and rows trained so far in the epoch."""
    epoch: int
    order: np.ndarray
    counts: list
    running: tuple


@dataclasses.dataclass
class Failure:
    """One lost rank, as the metrics document records it (`failures`)."""
    rank: int               # in MPI_COMM_WORLD, as mpirun names it
    host: str
    epoch: int = 0          # the epoch (from 1) in which it was lost; 0: before training
    step: int = 0           # steps into that epoch of the survivor furthest on
    ranks_after: int = 0
    recovery_s: float = 0.0     # from this rank's noticing to training again
    resumed_at: float = 0.0     # when (Unix time): with the time of the death, the whole gap

    def line(self, when=None, going_on=True):
        when = when or f"in epoch {self.epoch} (the furthest rank after step {self.step})"
        ranks = f"{self.ranks_after} rank{'s' * (self.ranks_after != 1)}"
        if not going_on:
            return f"mpidml: warning: lost rank {self.rank} (host {self.host}) {when}; {ranks} left"
        return f"mpidml: warning: lost rank {self.rank} (host {self.host}) {when}; {ranks} go on " \
               f"(recovered in {self.recovery_s:.2f} s)"


@dataclasses.dataclass
class Rows:
    """File rows in the order of a rank's arrays: training, validation and test (the test
    rows are the test dataset's, or the training dataset's where the test set is a split)."""
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @staticmethod
    def concat(rows):
        return Rows(*(np.concatenate([getattr(r, k) for r in rows]) if rows else np.empty(0, np.int64)
                      for k in ("train", "val", "test")))


def expand(ranges):
    """A plan's (file_start, length, offset) ranges as the file rows they hold, in order."""
    if not len(ranges):
        return np.empty(0, np.int64)
    return np.concatenate([np.arange(s, s + n, dtype=np.int64) for s, n, _ in ranges])


class Holdings:
    """Which file rows every rank holds: the same on every rank, a pure function of the plan
    the data was distributed by (data.distribute, Partition.hold_out) and of the ranks
    lost since. Rank r holds pieces[r]: the plan's rows of an original rank (an int, computed
    when needed: a lost rank's rows only) and Rows dealt to it since."""

    def __init__(self, info, size, validation_fraction, seed):
        self.info, self.fraction, self.seed = info, validation_fraction, seed
        self.plan = plan_for(info, size)
        test = info["test"]
        self.test = (self.plan.test if test and test["source"] == "split" else
                     slabs(test["rows"], size)[0] if test else [np.empty((0, 3), np.int64)] * size)
        self.pieces = [[q] for q in range(size)]

    def rows_of(self, rank):
        return Rows.concat([self._original(p) if isinstance(p, int) else p for p in self.pieces[rank]])

    def _original(self, q):
        """Original rank q's rows, its validation rows drawn as Partition.hold_out drew them."""
        rows = expand(self.plan.ranges[q])
        n = len(rows)
        val = np.empty(0, np.int64)
        if self.fraction:
            held = rows_of(validation_draw(self.plan.sizes, self.fraction, self.seed, q)[1])
            keep = np.ones(n, bool)
            keep[held] = False
            rows, val = rows[keep], rows[held]
        return Rows(rows, val, expand(self.test[q]))

    def deal(self, lost):
        """Deal the `lost` ranks' rows to the others in balanced runs (each sorted, so it
        reads in few runs); returns each survivor's new Rows, in the new rank order."""
        gone = Rows.concat([self.rows_of(r) for r in lost])
        alive = [r for r in range(len(self.pieces)) if r not in lost]
        shares = []
        for k in ("train", "val", "test"):
            rows = getattr(gone, k)
            bounds = np.concatenate([[0], np.cumsum(balanced_sizes(len(rows), len(alive)))])
            shares.append([np.sort(rows[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
        dealt = [Rows(*parts) for parts in zip(*shares)]
        self.pieces = [self.pieces[r] + [d] for r, d in zip(alive, dealt)]
        return dealt


class Elastic:
    """The job's answer to a lost rank (see the module docstring)."""

    def __init__(self, job):
        self.job = job
        self.ability = ft.fault_tolerance()
        self.active = self.ability.available
        cfg = job.cfg
        self.policy = cfg.on_failure or ("continue" if self.active else "stop")
        cfg.on_failure = self.policy            # the metrics and model files say which
        self.failures = []
        self.redealt = False        # the partitions are no longer the plan's (Job.partitioning)
        self.holdings = None
        self.dealt = []             # Rows dealt to this rank, not read yet
        group = job.group
        self.comm = group.comm      # the communicator the next shrink starts from
        self.world = MPI.Group.Translate_ranks(group.comm.Get_group(), list(range(group.size)),
                                               MPI.COMM_WORLD.Get_group())
        self.hosts = ["?"] * group.size
        self.death = planned_death(int(self.world[group.rank]), MPI.COMM_WORLD.Get_size())

    def check(self):
        """Rank 0, before any work: --min-ranks fits the job; continuing is possible here."""
        cfg, size = self.job.cfg, self.job.group.size
        if cfg.min_ranks > size:
            raise UsageError(f"--min-ranks {cfg.min_ranks} is more than the {size} ranks of this job")
        if cfg.on_failure == "continue" and not self.active:
            log.warning(f"mpidml: warning: --on-failure continue: {self.ability.why}")

    def track(self, layout):
        """After distribution: every rank's host, and the rows it holds (file data only:
        the Python API's arrays cannot be read again)."""
        self.hosts = [None] * self.job.group.size
        for host in layout.hosts:
            for r in host.ranks:
                self.hosts[r] = host.name
        job = self.job
        if self.active and job.source is None and not job.streaming:
            self.holdings = Holdings(job.info, job.group.size, job.cfg.validation_fraction, job.cfg.partition_seed)

    # -- losing ranks ---------------------------------------------------------------
    # -- phases: every survivor ends each one knowing whether all did ----------------
    def attempt(self, work, *args):
        """`work(*args)` as (True, its result), or (False, None) when a lost rank (or a
        revoke) broke it."""
        try:
            return True, work(*args)
        except MPI.Exception as e:
            if not (self.active and ft.is_failure(e)):
                raise
            return False, None

    def settle(self, ok):
        """The end of a phase (setup, training, a recovery, the report): True when every
        survivor completed it, False when any met a lost rank. A collective can complete on
        some ranks and fail on others, so without this one survivor went on to the next
        phase's collectives while another shrank: ULFM's Agree (fault tolerant, the same
        answer everywhere) decides. A rank that failed revokes first, so that none stays
        waiting in a collective of the phase."""
        if not self.active:
            return ok
        if not ok:
            self._revoke()
        try:
            return bool(self.comm.Agree(int(ok)))
        except MPI.Exception as e:
            if not ft.is_failure(e):
                raise
            return False

    def _revoke(self):
        job = self.job
        ft.revoke([self.comm, job.group.comm, job.group.notes] + [m.group.comm for m in job.models])

    def regroup(self):
        """Shrink until a new Group of the survivors stands and every survivor knows it
        (another rank may die meanwhile); the job and its models move to it. Returns the
        Failures (to complete)."""
        lost_now = []
        while True:
            self._revoke()
            try:
                new, lost = ft.shrink(self.comm)
            except MPI.Exception as e:
                if not ft.is_failure(e):
                    raise
                continue
            lost_now += [Failure(int(self.world[r]), self.hosts[r] or "?") for r in lost]
            self.world = [w for r, w in enumerate(self.world) if r not in lost]
            self.hosts = [h for r, h in enumerate(self.hosts) if r not in lost]
            if self.holdings is not None:
                self.dealt.append(self.holdings.deal(lost)[new.Get_rank()])
            old, self.comm = self.comm, new
            if old is not self.job.group.comm:      # the first one is the group's: _move frees it
                ft.free(old)
            if self.settle(self.attempt(self._move, new)[0]):
                return lost_now

    def _move(self, comm):
        """The job's group and every model's fork on `comm`, their time in collectives kept;
        the old ones (revoked) freed."""
        job, old = self.job, self.job.group
        for g in [old] + [m.group for m in job.models]:
            g._pongs = []           # answers on a revoked communicator: never to complete
            ft.free(g.comm if g.owns_comm else None, g.notes if g.owns_notes else None)
            g.owns_comm = g.owns_notes = False
        group = Group(comm, old.stall_timeout, old.tracer)
        group.comm_s_by_label = old.comm_s_by_label
        job.group = group
        spent = [model.group.comm_s_by_label for model in job.models]
        job.fork_models()
        for model, seconds in zip(job.models, spent):
            model.group.comm_s_by_label = seconds
        if group.rank == 0 and old.rank != 0:
            job.report.take_over()

    def setup(self):
        """The job's setup, again without the ranks lost meanwhile (the survivors start over
        at their size), or RanksLost when they may not go on."""
        job = self.job
        while not self.settle(self.attempt(drive, job.setup(), "setup")[0]):
            self._lost_in_setup()

    def _lost_in_setup(self):
        t0 = time.perf_counter()
        self._revoke()
        self.job.close()            # setup opens its rows again
        self.job.models = []        # ranks may have built them or not: none to fork on the new group
        failures = self.regroup()
        self.dealt = []
        stop = self.policy == "stop" or self.job.group.size < self.job.cfg.min_ranks
        self._record(failures, 0, 0, t0, "before training", going_on=not stop)
        if stop:
            raise RanksLost(f"{self._lost_words(failures)} before training: {self._why_stop()} (exit "
                            f"{RanksLost.code})", agreed=True)

    def retry(self, make, label):
        """drive(make()) on the job's group, again on the survivors' after a lost rank (for
        the collectives after training: the report, the trace)."""
        while True:
            ok, value = self.attempt(drive, make(), label)
            if self.settle(ok):
                return value
            t0 = time.perf_counter()
            self._record(self.regroup(), self._epochs_done(), 0, t0, "after training")

    def finish(self):
        """After rank 0's last writes (the model files, the metrics): when rank 0 was lost
        meanwhile, they may be incomplete, and the survivors say so with RanksLost (exit 75);
        a rank lost after rank 0 had written everything is only recorded."""
        if self.settle(True):
            return
        t0, rank0 = time.perf_counter(), self.world[0]
        failures = self.regroup()
        self._record(failures, self._epochs_done(), 0, t0, "after training", going_on=False)
        if any(f.rank == rank0 for f in failures):
            raise RanksLost(f"lost rank {rank0} while it wrote the outputs: they may be incomplete; the last "
                            f"checkpoint stands (exit {RanksLost.code})", agreed=True)

    def _epochs_done(self):
        return max((len(m.history) for m in self.job.models), default=0)

    def recover(self):
        """During training, after a phase that a lost rank broke: regroup, agree on each
        model's state, take the lost rows over and give each model its Segment; or stop every
        model at the agreed state (see the module docstring)."""
        t0 = time.perf_counter()
        failures = self.regroup()
        fresh = self.job.part.local_rows            # the rows from here on are the lost ranks'
        while True:
            ok, out = self.attempt(self._agree_and_deal, fresh, len(self.failures) + len(failures))
            if self.settle(ok):
                break
            failures += self.regroup()
        where, segments, unreadable = out["where"], out["segments"], out["unreadable"]
        epoch, step = self._front(where)
        when = None if where else "after training"      # every model had finished somewhere
        go_on = segments is not None
        self.redealt = self.redealt or go_on
        if go_on:
            for model, segment in segments.items():
                model.segment = segment
        else:
            self._stop(where, failures, unreadable)
        self._record(failures, epoch or self._epochs_done(), step, t0, when, going_on=go_on)

    def _agree_and_deal(self, fresh, failures):
        """The recovery's collectives: the models' agreed states, then (going on) the lost
        rows read and each model's Segment. A lost rank's rows that cannot be read here stop
        the survivors, checkpointed (a UsageError agreed by all, kept as the cause)."""
        where = drive(self._agree_all(), "recover")
        if not self._go_on():
            return {"where": where, "segments": None, "unreadable": None}
        try:
            drive(self._take_rows(), "recover")
        except UsageError as e:
            return {"where": where, "segments": None, "unreadable": str(e)}
        segments = drive(self._segments(where, fresh, failures), "recover")
        return {"where": where, "segments": segments, "unreadable": None}

    def _go_on(self):
        return (self.policy == "continue" and self.job.group.size >= self.job.cfg.min_ranks
                and self.holdings is not None)

    def _why_stop(self):
        cfg, size = self.job.cfg, self.job.group.size
        if self.policy == "stop":
            return "--on-failure stop"
        if size < cfg.min_ranks:
            return f"{size} ranks left, fewer than --min-ranks {cfg.min_ranks}"
        if self.job.streaming:
            return "a streamed run does not take a lost rank's rows over"
        return "the rows of a lost rank cannot be read again (arrays given in Python)"

    @staticmethod
    def _lost_words(failures):
        return "lost " + ", ".join(f"rank {f.rank} ({f.host})" for f in failures)

    def _record(self, failures, epoch, step, t0, when=None, going_on=True):
        seconds = time.perf_counter() - t0
        for f in failures:
            f.epoch, f.step, f.ranks_after, f.recovery_s = epoch, step, self.job.group.size, seconds
            f.resumed_at = time.time()
            if self.job.group.rank == 0:
                log.warning(f.line(when, going_on))
        self.failures += failures

    # -- agreeing ---------------------------------------------------------------------
    def _agree_all(self):
        """Generator: the agreed state of every model still training somewhere; returns
        {model: (agreed epoch, this rank's own rows left in it or None, running loss, leader's
        step)}. One table of every model's position on every rank first: models that none has
        started, or that all have finished, need nothing more (a sweep of a thousand models
        resent every finished one's state on every loss)."""
        g, models = self.job.group, self.job.models
        table = np.zeros((len(models), g.size, 6), np.int64)
        for i, m in enumerate(models):
            table[i, g.rank] = (m.started, m.finished, len(m.history), m.epoch, m.done, m.opt.t)
        yield from g.allreduce(table, "recover")
        rows = np.array([self.job.part.local_rows], np.float64)
        yield from g.allreduce(rows, "recover")
        where = {}
        for model, mine in zip(models, table):
            if mine[:, 0].any() and not mine[:, 1].all():
                agreed = yield from self._agree(model, mine, rows[0])
                if agreed is not None:
                    where[model] = agreed
        return where

    def _agree(self, model, mine, total_rows):
        """Generator: one model's agreed state (see _agree_all), `mine` its positions on every
        rank, `total_rows` the survivors' training rows."""
        g = self.job.group
        leader = max(range(g.size), key=lambda r: (*mine[r, 1:5], -r))
        meta = yield from g.bcast_json(model.position() if g.rank == leader else None, leader, "recover")
        if g.rank != leader:
            model.adopt(meta)
        model.opt.t = int(mine[:, 5].max())
        if meta["best"] is not None:
            yield from g.bcast(model.best[2], leader, "recover")
        epochs = len(model.history)
        if mine[leader, 1] or epochs >= model.cfg.epochs or model.stopped_early:
            yield from g.bcast(model.opt.state, leader, "recover")      # it is done: the leader's final model
            if not model.finished:
                model.finish_as_agreed()
            return None
        mean = model.opt.state * model.dtype.type(self.job.part.local_rows / total_rows)
        yield from g.allreduce(mean, "recover")
        model.opt.state[...] = mean
        own = None
        if model.epoch == epochs and model.epoch_order is not None and not self.job.streaming:   # the rest of it
            own = model.epoch_order[model.done * model.cfg.batch_size:]
        return epochs, own, model.running if own is not None else (0.0, 0), int(mine[leader, 4])

    def _front(self, where):
        """The epoch (from 1) and step the furthest model had reached, for the record."""
        if not where:
            return 0, 0
        epoch, _, _, step = max(where.values(), key=lambda w: (w[0], w[3]))
        return epoch + 1, step

    def _take_rows(self):
        """Generator: read the rows dealt to this rank, scaled as the job's, and append them;
        every rank learns of a read error (UsageError, agreed)."""
        job, part = self.job, self.job.part
        err = None
        for rows in self.dealt:
            got = {}
            for key, test in (("train", False), ("val", False), ("test", True)):
                if not len(getattr(rows, key)):         # none (no validation, no test set): nothing to read
                    continue
                X, y, e = read_file_rows(job.info, getattr(rows, key), job.dtype, test)
                err = err or e
                job.scaling.apply(X)
                if key == "train":                      # scoring takes targets in the data's units
                    job.scaling.apply_targets(y)
                got[key] = (X, y)
            if "train" in got:
                part.X, part.y = (np.concatenate([a, b]) for a, b in zip((part.X, part.y), got["train"]))
            if "val" in got:
                part.val_X, part.val_y = (np.concatenate([a, b]) for a, b in zip((part.val_X, part.val_y), got["val"]))
            if "test" in got:
                part.test_X, part.test_y = (np.concatenate([a, b])
                                            for a, b in zip((part.test_X, part.test_y), got["test"]))
        self.dealt = []
        yield from job.group.agree(err, "recover")
        g = job.group
        counts = np.zeros((3, g.size), np.int64)
        counts[:, g.rank] = (len(part.y), 0 if part.val_y is None else len(part.val_y),
                             0 if part.test_y is None else len(part.test_y))
        yield from g.allreduce(counts, "recover")
        part.sizes, part.val_sizes, test_sizes = (c.tolist() for c in counts)
        if part.test_X is not None:
            part.test_sizes = test_sizes

    def _segments(self, where, fresh, failures):
        """Generator: each model's Segment: its own rows left in the epoch (all of them for
        a rank that had not begun it) and the rows dealt since `fresh`, shuffled."""
        g, n = self.job.group, len(self.job.part.y)
        segments = {}
        for model, (epoch, own, running, _) in where.items():
            seed = model.cfg.seed
            if own is None:
                order = np.random.default_rng([seed, g.rank, epoch]).permutation(n)
            else:
                order = np.concatenate([own, np.arange(fresh, n)])
                order = order[np.random.default_rng([seed, g.rank, epoch, failures]).permutation(len(order))]
            counts = np.zeros(g.size, np.int64)
            counts[g.rank] = len(order)
            yield from g.allreduce(counts, "recover")
            segments[model] = Segment(epoch, order, counts.tolist(), tuple(running))
        return segments

    def _stop(self, where, failures, unreadable=None):
        """Stop every model that was training at the agreed state, at the start of its epoch
        (the weights keep the steps taken in it), as a stop signal would; the job trains no more."""
        cause = f"{self._lost_words(failures)}; {unreadable or self._why_stop()}"
        for model, (epoch, *_rest) in where.items():
            model.stop_as_agreed(epoch, cause)
        self.job.halted = cause

    def document(self):
        return [dataclasses.asdict(f) for f in self.failures]


def planned_death(world_rank, world_size, environ=os.environ):
    """MPIDML_KILL=R@E:S[,...]: rank R of MPI_COMM_WORLD kills itself (SIGKILL) in epoch E
    (from 1) once S steps of it are applied (R@0:0: before the data is distributed): a fault
    injected at an exact point, for the tests and the benchmark of recovery. Returns
    (E - 1, S) for this rank, or None."""
    text = environ.get("MPIDML_KILL", "").strip()
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            rank, when = item.split("@")
            epoch, step = when.split(":")
            rank, epoch, step = int(rank), int(epoch), int(step)
            valid = 0 <= rank < world_size and ((epoch, step) == (0, 0) or (epoch >= 1 and step >= 1))
        except ValueError:
            valid = False
        if not valid:
            raise UsageError(f"MPIDML_KILL: expected RANK@EPOCH:STEP[,...] with a rank of the {world_size}, an "
                             f"epoch and a step from 1 (or RANK@0:0: before the data is distributed), got {item!r}",
                             agreed=True)
        if rank == world_rank:
            return epoch - 1, step
    return None


def die(epoch, step):
    """The death MPIDML_KILL planned: say when, then SIGKILL (no handler, no clean-up)."""
    sys.stderr.flush()
    os.write(ft.real_stderr(), f"mpidml: MPIDML_KILL: rank {MPI.COMM_WORLD.Get_rank()} dies in epoch {epoch + 1} "
                               f"after step {step} at {time.time():.6f}\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
