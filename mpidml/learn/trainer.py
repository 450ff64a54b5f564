"""One model's training on one rank: its network, optimizer state, averaging schedule,
minibatch order, validation, early stopping, history and stop point.

A run trains one model; a sweep trains several on the same partitions, each its own
tasks in the rank's scheduler (job.Job). Every model has a communicator of its own
(Group.fork), so that its collectives match across ranks whatever order the scheduler
interleaves the models in: while one model's average is in flight, another computes.
MPI has about 2000 communicators, so a larger sweep reuses them: a model given `share`
(the group of the model before it on that communicator) runs only after that one has
finished (job.Job._lane), so every rank starts the same collectives on each communicator
in the same order.

Each model trains inside its lane's task (`run`: minibatch steps on the local partition,
yielding after every step), with tasks of its own beside it:
  prefetch      the next epoch's minibatch order
and, with --overlap or --sync-every auto, its averager's communicator.
"""
import copy
import functools
import logging
import time

import numpy as np

from ..data.stream import EpochPlan, Stream
from ..errors import DivergedError
from ..runtime import ft
from ..runtime.scheduler import Event
from ..runtime.stop import StopVote
from .aggregate import Averager
from .cadence import AUTO, Tuner
from .elastic import die
from .evaluate import from_sums, partial_sums
from .leaderboard import selection_score
from .models import build
from .optim import Optimizer, schedule

log = logging.getLogger("mpidml")


class Model:
    """One model of the job: `cfg` is the job's configuration with this model's overrides."""

    def __init__(self, job, cfg, index=0, overrides=None):
        self.job, self.cfg, self.index, self.overrides = job, cfg, index, dict(overrides or {})
        self.group = None       # a communicator of its own: job.Job.fork_models
        self.dtype = job.dtype
        self.clock = time.perf_counter
        info = job.info
        kind = job.kind
        self.net = build(kind, info["features"], job.n_outputs, list(cfg.hidden), cfg.activation, self.dtype,
                         info["task"])
        self.opt = Optimizer(cfg.optimizer, self.net.size, self.dtype, cfg.lr, cfg.l2, self.net.weight_mask(),
                             cfg.momentum, cfg.nesterov, clip_norm=cfg.clip_norm)
        self.compute_s = self.eval_s = 0.0
        self.read_wait_s = 0.0      # streamed: time the trainer waited for a chunk
        self.stream = None
        self.samples = 0
        self.history = []
        self.start_epoch, self.start_step, self.start_loss = 0, 0, (0.0, 0)
        self.resumed_at = 0             # the epoch this job took it on at (--resume)
        self.epoch, self.step_index, self.step_total = 0, 0, 0
        self.running = (0.0, 0)         # this rank's loss sum and rows so far in the epoch (the bar)
        self.final = self.validation = None
        self.best = None                  # (validation score, epoch, state copy) of early stopping
        self.stopped_at = self.stopped_early = None
        self.started = self.finished = False    # started: this job trained it (or scored it, trained already)
        self.t_start = self.t_end = None
        self.sched = None
        self.segment = None             # Segment: where the survivors of a lost rank go on (elastic.py)
        self.epoch_order, self.done = None, 0   # this epoch's minibatch order, steps applied from it
        self.until = None           # successive halving: the epoch its rung ends at (job.Job._rung_targets)
        self.paused = False         # at a rung's end, waiting for the others and the verdict
        self.rung, self.halved = 0, None    # the rungs it passed; the epoch halving stopped it at
        self.diverged = None            # the epoch its training diverged in (a sweep goes on)
        self.averager = None            # its averaging schedule, from its first run on (_spawn)
        self.cadences = None            # --sync-every auto: the choices a resumed file recorded
        self.carried = None             # and the tuner's record the survivors of a lost rank agreed on
        self.tuner = None

    def describe(self):
        """The overrides in words, for progress lines: `lr=0.1 hidden=64`."""
        return " ".join(f"{k}={_value(v)}" for k, v in self.overrides.items()) or "model"

    # -- tasks -------------------------------------------------------------------------
    def run(self, sched, signals, late=False):
        """Generator: the model's training, as part of a task (a lane of job.Job), its other
        tasks spawned beside it. `late`: it waited for an earlier model's communicator, so a
        stop signal may have come meanwhile, which the earlier model's votes need not have
        seen: one vote first, and after a stop it never starts (its file and metrics say so;
        --resume starts it). On return every collective it started has completed."""
        self.paused = False
        self._spawn(sched, signals)
        if self.t_start is None:
            self.t_start = self.clock()
        lost = False        # a rank was lost: the survivors agree where it goes on (elastic.py)
        try:
            if late and (yield from self._vote_now()):
                yield from self._stop(self.start_epoch, self.start_step, list(self.start_loss))
                return
            self.started = True
            yield from self._train()
            if self.best is not None and self.stopped_at is None and not self.paused:
                self._restore_best()
        except DivergedError as e:
            if len(self.job.models) == 1:
                raise
            yield from self._drop(e)        # a sweep goes on without it
        except BaseException as e:
            lost = isinstance(e, GeneratorExit) or ft.is_failure(e)
            raise
        finally:
            self.t_end = self.clock()
            if not lost:
                self._rest() if self.paused else self._finish()

    def _spawn(self, sched, signals):
        """The stop vote, the averager and the tasks beside the training."""
        self.sched, self.vote = sched, StopVote(self.group, signals)
        self.orders, self.order_ready, self.order_taken = {}, Event(), Event()
        cfg, part = self.cfg, self.job.part
        self.stream = Stream(part) if part.streamed else None      # two chunk buffers of its own
        self.averager = self._averager() if cfg.sync == "average" else None
        tag = "" if len(self.job.models) == 1 else f" {self.index}"
        if self.averager is not None and self.averager.may_overlap:
            sched.spawn(self.averager.communicator(), "communicator" + tag)
        # the epoch a Segment goes on with (after a lost rank) has its order already
        sched.spawn(self.prefetch(self.start_epoch if self.segment is None else self.segment.epoch + 1),
                    "prefetch" + tag)

    def _averager(self):
        """Its averaging schedule; with --sync-every auto, and the tuner that chooses it
        (before the first step, where no resumed file recorded a choice)."""
        cfg, part = self.cfg, self.job.part
        weight = self.dtype.type(part.local_rows / self.job.n_total)
        auto = cfg.sync_every == AUTO
        said = cfg.overlap if "overlap" in cfg.given else None
        merge_after = cfg.merge_after if cfg.overlap and not auto else None
        averager = Averager(self.group, self.opt.state, weight, 1 if auto else cfg.sync_every, merge_after, self.opt,
                            keep_state=self.job.elastic.active, may_overlap=auto and said is not False)
        if auto:
            previous = self.carried or (self.tuner.record() if self.tuner is not None else None)  # a lost rank, a rung
            self.carried = None
            self.tuner = Tuner(averager, self._dry_step, overlap=said,
                               announce=functools.partial(self.job.report.cadence_chosen, self))
            if previous is not None:
                self.tuner.restore(previous)
            elif self.cadences:
                self.tuner.resume(self.cadences)
        return averager

    def _dry_step(self):
        """A training step that moves nothing, for the tuner to time: a copy of the optimizer
        on a random batch of the real shape (the seed's minibatches stay as they were);
        `step(poll)` takes the trainer's layer hook."""
        info, cfg = self.job.info, self.cfg
        rng = np.random.default_rng(cfg.seed)
        rows = min(cfg.batch_size, int(max(self.job.part.sizes)))
        X = rng.standard_normal((rows, info["features"])).astype(self.dtype)
        if info["task"] == "regression":
            y = rng.standard_normal(rows).astype(self.dtype)
        else:
            y = rng.integers(0, max(2, len(info["classes"])), rows).astype(np.int32)
        opt, grad = copy.deepcopy(self.opt), np.empty(self.net.size, self.dtype)

        def step(poll=None):
            self.net.loss_grad(opt.weights, X, y, grad, poll)
            opt.step(grad, cfg.lr)
        return step

    def prefetch(self, first):
        """Task: compute each epoch's minibatch order ahead of the trainer, until it finished
        (a model that stopped early computed every epoch's order left, without a yield); not
        the epoch a Segment goes on with."""
        part = self.job.part
        for epoch in range(first, self.until or self.cfg.epochs):
            if self.finished or self.paused:
                return
            if part.streamed:           # chunk by chunk, the same order where one chunk holds them all
                self.orders[epoch] = EpochPlan(part, self.cfg.seed, self.group.rank, epoch)
            else:
                rng = np.random.default_rng([self.cfg.seed, self.group.rank, epoch])
                self.orders[epoch] = rng.permutation(part.local_rows)
            self.order_ready.set()
            while epoch in self.orders and not (self.finished or self.paused):      # until the trainer took it
                yield self.order_taken
                self.order_taken.clear()

    def _vote_now(self):
        """Generator: True when every rank learns that one was signalled to stop: a vote
        started and read at once (the next one reads at the first synchronisation point)."""
        yield from self.vote.poll()
        return (yield from self.vote.poll())

    def _steps(self):
        """Minibatch steps per epoch on every rank: the largest partition's."""
        return -(-int(max(self.job.part.sizes)) // self.cfg.batch_size)

    def _train(self):
        """The local minibatch loop and the synchronisation policy."""
        if self.stopped_early or self.halved or self.start_epoch >= self.cfg.epochs:
            yield from self._score_as_resumed()     # trained already: the metrics of its weights
            return
        cfg, g, net, opt, part = self.cfg, self.group, self.net, self.opt, self.job.part
        B = cfg.batch_size
        sizes = np.array(part.sizes)
        steps = self._steps()
        lr_at = schedule(cfg.schedule, cfg.lr, steps * cfg.epochs, steps, int(cfg.warmup_epochs * steps),
                         cfg.step_epochs, cfg.gamma)
        gradients = cfg.sync == "gradients"
        averager = self.averager
        segment, self.segment = self.segment, None
        death = self.job.elastic.death         # MPIDML_KILL: a fault injected here (tests, benchmarks)
        largest = max(int(sizes.max()), max(segment.counts) if segment else 0)
        rows = min(B, largest)                      # a batch beyond the partition is the partition
        xb = np.empty((rows, self.job.info["features"]), self.dtype)
        yb = np.empty(rows, self.dtype if self.job.info["task"] == "regression" else np.int32)
        stream = self.stream
        grad = np.empty(net.size, self.dtype)
        w = opt.weights
        trace = self.job.tracer
        until = min(self.until or cfg.epochs, cfg.epochs)          # a halving rung ends before the last epoch
        if self.start_epoch >= until and segment is None:          # resumed at its rung's end: scored
            yield from self._score_as_resumed()                     # for the verdict and the records
        tuner = self.tuner
        if tuner is not None and tuner.cadence is None and (segment is not None or self.start_epoch < until):
            yield from tuner.choose(self.start_epoch)
        for epoch in range(self.start_epoch if segment is None else segment.epoch, until):
            self.epoch = epoch
            K = averager.every if averager is not None else cfg.sync_every     # auto: it changes between epochs
            t_epoch = self.clock()
            comm0, idle0, compute0 = g.comm_s, self.sched.idle_s, self.compute_s
            self.epoch_order = None
            resumed_pass = segment is not None and segment.epoch == epoch     # going on after a lost rank
            if resumed_pass:
                order, counts, first, (loss_sum, count) = segment.order, np.array(segment.counts), 0, segment.running
            else:
                if epoch not in self.orders:
                    yield self.order_ready
                order = self.orders.pop(epoch)
                self.order_ready.clear()
                self.order_taken.set()
                counts = sizes
                first = self.start_step if epoch == self.start_epoch else 0
                loss_sum, count = self.start_loss if first else (0.0, 0)
            # the steps of this pass, and the global batch size at each (all ranks know every count)
            last = self.step_total = -(-int(counts.max()) // B)
            per_rank = np.clip(counts[:, None] - np.arange(last)[None, :] * B, 0, B)
            global_batch = per_rank.sum(axis=0)
            lr_from = epoch * steps + max(0, steps - last)      # a shorter pass ends where the epoch does
            last -= 1
            self.epoch_order, self.done, self.running = order, first, (loss_sum, count)
            check_average = functools.partial(self._check_finite, epoch=epoch)
            for s in range(first, last + 1):
                self.step_index = s
                t0 = self.clock()
                if stream is None:
                    idx = order[s * B:(s + 1) * B]
                    m = len(idx)
                    if m:
                        np.take(part.X, idx, axis=0, out=xb[:m])
                        np.take(part.y, idx, out=yb[:m])
                else:
                    m = max(0, min(B, order.rows - s * B))
                    if m:
                        yield from stream.batch(order, s * B, m, xb, yb)
                        t0 = self.clock()       # waiting for a chunk is no computing
                if m:
                    # while an overlapped average is in flight, progress it between layers too
                    poll = g.poke if averager is not None and averager.in_flight else None
                    loss = net.loss_grad(w, xb[:m], yb[:m], grad, poll)
                    loss_sum += loss * m
                    count += m
                else:
                    grad[...] = 0
                lr = lr_at(lr_from + s)
                if gradients:
                    grad *= self.dtype.type(m / global_batch[s])
                    t1 = self.clock()
                    self.compute_s += t1 - t0
                    yield from g.allreduce(grad, "gradients")
                    t0 = self.clock()
                    opt.step(grad, lr)
                    if (s + 1) % K == 0:
                        self._check_finite(w, epoch)
                elif m:
                    opt.step(grad, lr)
                self.done, self.running = s + 1, (loss_sum, count)     # in the state: what a lost rank keeps
                if death == (epoch, s + 1):
                    die(epoch, s + 1)
                t1 = self.clock()
                self.compute_s += t1 - t0
                if trace:
                    trace.span(self._track("trainer"), "step", t0, t1)
                if not gradients:
                    yield from averager.after_step(s, last, check_average)
                yield
                if (s + 1) % K == 0 and s < last and (yield from self.vote.poll()):
                    if averager is not None and averager.overlap:
                        yield from averager.end_epoch()     # one global model to checkpoint
                    if resumed_pass:        # within a pass after a lost rank: --resume starts the epoch over
                        yield from self._stop(epoch, 0, None)
                    else:
                        yield from self._stop(epoch, s + 1, [loss_sum, count])
                    return
            # epoch end: a full synchronisation, so every rank holds the global model
            if not gradients:
                yield from averager.end_epoch()
            self._check_finite(w, epoch)
            red = np.array([loss_sum, count], np.float64)
            yield from g.allreduce(red, "epoch loss")
            self.samples += int(red[1])
            if not np.isfinite(red[0]):
                raise self._diverged(epoch)
            eval0 = self.eval_s
            test = (yield from self.score_rows("test")) if part.holds("test") else None
            val = (yield from self.score_rows("val")) if part.holds("val") else None
            wall = self.clock() - t_epoch
            self.epoch_order = None
            entry = self._record(epoch, red[0] / max(red[1], 1), test, val, wall, wall - (self.eval_s - eval0),
                                 red[1], g.comm_s - comm0, self.sched.idle_s - idle0, self.compute_s - compute0)
            self.job.epoch_done(self, entry)
            if val is not None and self._early_stop(epoch, val):
                break
            if tuner is not None and epoch + 1 < until:
                steps_taken = max(1, last + 1 - first)
                yield from tuner.review(epoch + 1, (self.compute_s - compute0) / steps_taken, averager.blocking_s)
            if epoch + 1 < until and (yield from self.vote.poll()):
                yield from self._stop(epoch + 1, 0, None)
                return
        else:
            self.paused = until < cfg.epochs        # the rung ended: halving decides whether it goes on
        yield from self.vote.close()

    def _track(self, name):
        return name if len(self.job.models) == 1 else f"{name} {self.index}"

    def _drop(self, error):
        """Generator: a sweep's model whose training diverged (every rank finds it at the same
        point: the sums and weights it checks are global) stops there; the others go on, as a
        search over decades of learning rates expects some to. Ranked last (leaderboard)."""
        self.paused = False
        yield from self.vote.close()
        self.diverged = self.epoch + 1
        self.validation = self.final = None
        if self.group.rank == 0:
            log.warning(f"mpidml: warning: {error}; the sweep goes on without it")

    def _rest(self):
        """At the end of a rung: its tasks end (the next rung spawns them anew), its
        training goes on from the next epoch if the halving keeps it."""
        self.start_epoch, self.start_step, self.start_loss = len(self.history), 0, (0.0, 0)
        self._end_tasks()

    def halt(self):
        """Successive halving stopped it at its rung's end (every rank at once): finished there,
        with its best weights where it kept them."""
        self.halved = len(self.history)
        if self.best is not None:
            self._restore_best()
        self.paused = False
        self._finish()

    def _finish(self):
        self.finished = True
        self._end_tasks()
        self.job.report.model_done(self)

    def _end_tasks(self):
        if self.stream is not None:
            self.stream.close()
            self.read_wait_s += self.stream.wait_s
            self.stream = None
        if self.sched is not None:
            self.order_taken.set()            # the prefetch task ends
            if self.averager is not None:
                self.averager.stop()

    # -- after a lost rank (elastic.py) ---------------------------------------------------
    def position(self):
        """What the survivors take from the one furthest on: its records (JSON)."""
        best = None if self.best is None else [self.best[0], self.best[1], self.best[3], self.best[4]]
        return {"history": self.history, "final": self.final, "validation": self.validation,
                "stopped_early": self.stopped_early, "stopped_at": self.stopped_at, "best": best,
                "best_epoch": getattr(self, "best_epoch", None),
                "cadence": None if self.tuner is None else self.tuner.record()}

    def adopt(self, position):
        """Take the records of `position`; the best state's buffer is broadcast after."""
        self.history, self.final, self.validation = position["history"], position["final"], position["validation"]
        self.stopped_early, self.stopped_at = position["stopped_early"], position["stopped_at"]
        if position["best_epoch"] is not None:
            self.best_epoch = position["best_epoch"]
        self.best = None
        if position["best"] is not None:
            score, epoch, test, val = position["best"]
            self.best = (tuple(score), epoch, np.empty_like(self.opt.state), test, val)
        self.carried = position["cadence"]          # auto's choices: every survivor the same ones (_averager)

    def finish_as_agreed(self):
        """The one furthest on had finished this model: so has this rank."""
        self.started = True
        self.t_end = self.clock()
        self._finish()

    def stop_as_agreed(self, epoch, cause):
        """Stopped at the start of `epoch` (its weights keep the steps taken in it), as a
        stop signal would have it, for `cause` (the survivors do not go on)."""
        self.stopped_at = self._stop_point(epoch, 0, cause=cause)
        self.started = True
        self.t_end = self.clock()
        self._finish()

    def _stop(self, epoch, step, partial_loss):
        """Generator: every rank stops at local step `step` of `epoch` (0: at its start),
        holding the global model; rank 0 keeps what the checkpoint needs to continue there."""
        yield from self.vote.close()
        losses = yield from self.group.gather_json(partial_loss, label="stop")
        self.stopped_at = self._stop_point(epoch, step, self.vote.signals.name, losses=losses if step else None)

    def _stop_point(self, epoch, step, signal=None, cause=None, losses=None):
        """Where the run stopped, as the model file records it (`stopped_at`; training.resume.Resumes._mid_epoch)."""
        return {"epoch": epoch, "step": step, "steps": self._steps(), "signal": signal, "cause": cause,
                "ranks": self.group.size, "batch_size": self.cfg.batch_size, "partition": self.job.partitioning(),
                "chunk_rows": self.job.chunk_rows(), "loss": losses}

    def _score_as_resumed(self):
        part = self.job.part
        if part.holds("test"):
            self.final = yield from self.score_rows("test")
        if part.holds("val"):
            self.validation = yield from self.score_rows("val")

    # -- validation and early stopping -------------------------------------------------
    def score(self, metrics):
        """Higher is better: the --select metric of these (validation) metrics."""
        return selection_score(self.cfg.select, metrics)

    def _early_stop(self, epoch, val):
        """Keep the best validation state (by --select); True when --early-stopping P epochs
        passed without a better one. The same on every rank: the validation sums are global."""
        patience = self.cfg.early_stopping
        if not patience:
            return False
        score = self.score(val)
        if self.best is None or score > self.best[0]:
            self.best = (score, epoch + 1, self.opt.state.copy(), self.final, val)
            return False
        if epoch + 1 - self.best[1] >= patience:
            self.stopped_early = epoch + 1
            return True
        return False

    def _restore_best(self):
        """Back to the state of the best validation loss (early stopping), and its metrics."""
        _, epoch, state, test, val = self.best
        self.opt.state[...] = state
        self.final, self.validation, self.best_epoch = test, val, epoch

    # -- records -----------------------------------------------------------------------
    def _record(self, epoch, train_loss, test, val, wall, train_wall, samples, comm_s, idle_s, compute_s):
        entry = {"epoch": epoch + 1, "train_loss": float(train_loss), "rows": int(samples)}
        key = "r2" if self.job.info["task"] == "regression" else "accuracy"
        if test is not None:
            entry["test_loss"], entry["test_" + key] = test["loss"], test[key]
            self.final = test
        if val is not None:
            entry["val_loss"], entry["val_" + key] = val["loss"], val[key]
            if "macro_f1" in val:
                entry["val_f1"] = val["macro_f1"]
            self.validation = val
        entry.update({"wall_s": wall, "samples_per_s": samples / train_wall if train_wall > 0 else 0.0,
                      "compute_s": compute_s, "comm_s": comm_s, "comm_wait_s": idle_s})
        self.history.append(entry)
        return entry

    def _diverged(self, epoch):
        return DivergedError(f"training diverged in epoch {epoch + 1}{self._which()}: non-finite loss or weights; "
                             f"try a smaller --lr (now {self.cfg.lr:g}), --clip-norm, or --standardize",
                             agreed=True)

    def _which(self):
        return f" (sweep model {self.index}: {self.describe()})" if len(self.job.models) > 1 else ""

    def _check_finite(self, w, epoch):
        # w must be identical on every rank (an average), so all ranks agree without messages;
        # |w| beyond ~1e19 overflows the float32 dot product, which is divergence all the same
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(np.dot(w, w))
        if not finite:
            raise self._diverged(epoch)

    def score_rows(self, kind):
        """Generator: metrics of the (global) model on the job's `kind` rows ("test", "val")."""
        part = self.job.part
        if not part.streamed:
            return (yield from self.evaluate(getattr(part, kind + "_X"), getattr(part, kind + "_y")))
        info = self.job.info
        k = len(info["classes"]) if info["classes"] else 0
        sums = []

        def add(X, y, a, b):
            sums.append(partial_sums(self.net, self.opt.weights, X, y, info["task"], k, self.job.scaling))
        t0 = self.clock()
        yield from self.stream.scan(getattr(part, kind), add)
        if not sums:        # no rows of this kind here: zeros of the sums' shape
            add(self.stream.X[0][:0], self.stream.Y[0][:0], 0, 0)
        return (yield from self.evaluate(sums=np.sum(sums, axis=0), t0=t0))

    def evaluate(self, X=None, y=None, sums=None, t0=None):
        """Generator: metrics of the (global) model on these rows (or their partial `sums`,
        scored since `t0`); every rank scores its share and one Allreduce of the partial sums
        gives the exact totals."""
        info = self.job.info
        k = len(info["classes"]) if info["classes"] else 0
        if sums is None:
            t0 = self.clock()
            sums = partial_sums(self.net, self.opt.weights, X, y, info["task"], k, self.job.scaling)
        t1 = self.clock()
        if self.job.tracer:
            self.job.tracer.span(self._track("trainer"), "evaluate", t0, t1)
        # the scoring alone: the sums' Allreduce waits while the other models of a sweep
        # compute, and the job subtracts every model's eval_s from its wall time (a sweep's
        # training time came out negative)
        self.eval_s += t1 - t0
        yield from self.group.allreduce(sums, "evaluate")
        return from_sums(sums, info["task"], k)

    def sync_record(self):
        """How it averaged: the metrics' `sync` (with --sync-every auto, every choice made)."""
        cfg, a = self.cfg, self.averager
        choices = self.tuner.choices if self.tuner is not None else self.cadences or []
        now = choices[-1] if choices else None
        if now is not None:
            every, merge_after = now.every, now.merge_after
        elif cfg.sync_every == AUTO:            # not chosen yet (a sweep's model that has not started)
            return {"mode": cfg.sync, "auto": True, "every": None, "overlap": None, "merge_after": None,
                    "choices": []}
        elif a is not None:
            every, merge_after = a.every, a.merge_after if a.overlap else None
        else:
            every, merge_after = cfg.sync_every, cfg.merge_after if cfg.overlap else None
        return {"mode": cfg.sync, "auto": cfg.sync_every == AUTO, "every": every, "overlap": merge_after is not None,
                "merge_after": merge_after, "choices": [c.as_dict() for c in choices]}

    def train_s(self):
        """This model's training loop, test and validation scoring excluded."""
        if self.t_start is None or self.t_end is None:
            return 0.0
        return self.t_end - self.t_start - self.eval_s

    def timing(self):
        train_s = self.train_s()
        return {"train_s": train_s, "compute_s": self.compute_s, "comm_s": self.group.comm_s,
                "samples_per_s": self.samples / train_s if train_s > 0 else 0.0}


def _value(v):
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v)) or "none"
    return f"{v:g}" if isinstance(v, float) else str(v)
