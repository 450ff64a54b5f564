"""The training run: distribute, initialize, train local coroutines, aggregate, test.

Each rank runs four cooperative tasks on its scheduler:
  trainer       minibatch steps on the local partition; yields after every step
  communicator  the overlapped averaging collectives (--overlap)
  prefetch      the next epoch's minibatch order
  monitor       the live progress bar on rank 0 (--progress-bar, or stdout a terminal)
"""
import functools
import logging
import resource
import sys
import time

import numpy as np

from . import data as datamod
from .aggregate import Averager
from .checkpoint import CheckpointSeries, ModelFile, atomic_write_json, check_writable
from .comm import drive
from .errors import DivergedError, Stopped, UsageError
from .evaluate import Scaling, from_sums, partial_sums
from .models import build
from .optim import Optimizer, schedule
from .provenance import DataIdentity, adopt_model_options, check_data
from .scheduler import Event, Scheduler, Sleep
from .stop import StopSignals, StopVote
from .topology import gather_layout

log = logging.getLogger("mpidml")


def choose_model(kind, info):
    """Resolve --model auto and check the choice fits the labels."""
    k = len(info["classes"]) if info["classes"] is not None else 0
    if kind == "auto":
        kind = "linear" if info["task"] == "regression" else ("logistic" if k == 2 else "softmax")
    if kind == "logistic" and k != 2:
        raise UsageError(f"--model logistic needs 2 classes, {info['path']}:{info['y']} has {k}; "
                         "use --model softmax")
    if kind in ("logistic", "softmax") and info["task"] == "regression":
        raise UsageError(f"--model {kind} needs class labels, {info['path']}:{info['y']} holds float "
                         "targets; use --model linear or mlp")
    if kind == "linear" and info["task"] != "regression":
        raise UsageError(f"--model linear needs float targets, {info['path']}:{info['y']} holds class "
                         "labels; use --model logistic or softmax")
    return kind


def auto_epochs(largest_partition, batch_size, min_steps=300):
    """Default epochs: 10, or more (up to 100) so that every rank takes >= min_steps steps;
    small datasets split over many ranks otherwise stop long before they converge."""
    steps = -(-largest_partition // batch_size)
    return int(min(100, max(10, -(-min_steps // steps))))


def n_outputs(kind, info):
    if info["task"] == "regression":
        return 1
    k = len(info["classes"])
    return 1 if (kind == "logistic" or (kind == "mlp" and k == 2)) else k


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Run:
    """One training run on one rank (see `train`)."""

    def __init__(self, cfg, group, tracer=None):
        self.cfg, self.group, self.tracer = cfg, group, tracer
        self.dtype = np.dtype(cfg.dtype)
        self.clock = time.perf_counter
        self.compute_s = 0.0
        self.eval_s = 0.0           # test scoring, kept out of train_s and samples/s
        self.bar = False
        self.history = []
        self.samples = 0

    # -- setup ------------------------------------------------------------------------
    def setup(self):
        """Generator: describe, distribute, standardize, build and initialize."""
        cfg, g = self.cfg, self.group
        err, info, resume = None, None, None
        if g.rank == 0:
            try:
                for path, opt in ((cfg.save, "--save"), (cfg.metrics_json, "--metrics-json"),
                                  (cfg.trace, "--trace")):
                    if path:
                        check_writable(path, opt)
                adopted = {}
                if cfg.resume:
                    resume = ModelFile.load(cfg.resume)
                    adopted = adopt_model_options(cfg, cfg.resume, resume.model_options())
                task = None
                if resume is not None:
                    task = resume.task
                elif cfg.model in ("logistic", "softmax"):
                    task = "classification"
                elif cfg.model == "linear":
                    task = "regression"
                info = datamod.describe(cfg.data, cfg.x_dataset or None, cfg.y_dataset or None, task,
                                        cfg.test_fraction, cfg.block_rows or None, cfg.partition_seed,
                                        cfg.partition, cfg.chunk_mb)
                if cfg.save or cfg.resume:
                    info["identity"] = DataIdentity.of(info).as_dict()
                if resume is not None:      # the architecture comes from the file
                    check_data(cfg.resume, resume.attrs.get("data"), DataIdentity(**info["identity"]))
                    info["adopted"] = adopted
                    info["model"] = {"kind": resume.kind, "hidden": [int(h) for h in resume.sizes[1:-1]],
                                     "activation": resume.activation,
                                     "epochs": int(resume.attrs.get("config", {}).get("epochs", 0))}
                    info["complete"] = self._already_complete(resume, cfg.epochs or info["model"]["epochs"])
                    # the first layer was trained on features scaled this way: keep it
                    info["scaling"] = {k: None if v is None else np.ravel(v).tolist() for k, v in
                                       (("mean", resume.mean), ("std", resume.std),
                                        ("y_mean", resume.y_mean), ("y_std", resume.y_std))}
                else:
                    info["model"] = {"kind": choose_model(cfg.model, info), "hidden": list(cfg.hidden),
                                     "activation": cfg.activation}
            except UsageError as e:
                err = e
        yield from g.agree(err, "open")
        self.info = info = yield from g.bcast_json(info, label="describe")
        for key, value in info.get("adopted", {}).items():      # the resumed file's model options
            setattr(cfg, key, tuple(value) if key == "hidden" else value)
        self.dtype = np.dtype(cfg.dtype)
        self.complete = info.get("complete")
        if self.complete:
            return
        self.layout = yield from gather_layout(g)
        self.polls = self.layout.polls(g.rank, cfg.wait)
        warning = self.layout.warning()
        if warning and g.rank == 0:
            log.warning(f"mpidml: warning: {warning}")
        arch = info["model"]
        self.kind = arch["kind"]
        t0 = self.clock()
        part = yield from datamod.distribute(g, info, cfg.distribute, self.dtype)
        self.distribute_s = self.clock() - t0
        if self.tracer:
            self.tracer.span("io", "distribute", t0, self.clock())
        self.part = part
        self.n_total = int(sum(part.sizes))
        if not cfg.epochs:
            cfg.epochs = arch.get("epochs") or auto_epochs(max(part.sizes), cfg.batch_size)
        self.net = build(self.kind, info["features"], n_outputs(self.kind, info), arch["hidden"],
                         arch["activation"], self.dtype, info["task"])
        self.opt = Optimizer(cfg.optimizer, self.net.size, self.dtype, cfg.lr, cfg.l2,
                             self.net.weight_mask(), cfg.momentum, cfg.nesterov, clip_norm=cfg.clip_norm)
        self.scaling = yield from self._scaling(info.get("scaling"))
        s = self.scaling
        s.apply(part.X)
        if part.test_X is not None:
            s.apply(part.test_X)
        if s.y_mean is not None:
            part.y -= self.dtype.type(s.y_mean)
            part.y /= self.dtype.type(s.y_std)
        yield from self._initial_state(resume)

    def _scaling(self, saved):
        """Generator: the standardization statistics, from the resumed model or computed
        from all training rows (two Allreduce passes)."""
        if saved is not None:
            return Scaling.from_arrays(saved["mean"], saved["std"], saved["y_mean"], saved["y_std"])
        scaling = Scaling()
        if not self.cfg.standardize:
            return scaling
        g, part = self.group, self.part
        scaling.mean, scaling.std = yield from datamod.global_stats(g, part.X, self.n_total)
        if self.info["task"] == "regression":
            ym, ys = yield from datamod.global_stats(g, part.y.astype(np.float64), self.n_total)
            scaling.y_mean, scaling.y_std = float(ym[0]), float(ys[0])
        return scaling

    def _initial_state(self, resume):
        """Generator: same starting state on every rank (seeded on rank 0, broadcast)."""
        g, opt = self.group, self.opt
        self.start_epoch = 0
        meta, err = None, None
        if g.rank == 0:
            if resume is not None:
                err = self._check_resume(resume)
                if err is None:
                    if resume.optimizer_state is not None and resume.optimizer_state.size == opt.state.size:
                        opt.state[...] = resume.optimizer_state
                    else:
                        opt.weights[...] = resume.params
                    meta = {"epoch": int(resume.epoch), "step": int(resume.attrs.get("step", 0)),
                            "history": resume.attrs.get("history", []), "stopped_at": self._mid_epoch(resume)}
            else:
                self.net.init(opt.weights, np.random.default_rng(self.cfg.seed))
        yield from g.agree(err, "resume")
        yield from g.bcast(opt.state, label="init")
        self.start_step, self.start_loss = 0, (0.0, 0)
        if self.cfg.resume:
            meta = yield from g.bcast_json(meta, label="init")
            self.start_epoch, opt.t, self.history = meta["epoch"], meta["step"], meta["history"]
            if meta["stopped_at"]:
                self.start_step = meta["stopped_at"]["step"]
                self.start_loss = tuple(meta["stopped_at"]["loss"][g.rank])

    def _check_resume(self, m):
        sizes = [int(s) for s in m.sizes]
        if sizes != self.net.sizes or m.head != self.net.head:
            return UsageError(f"{self.cfg.resume}: model layers {sizes} ({m.head}) do not fit this data "
                              f"({self.net.sizes}, {self.net.head})")
        saved_optimizer = m.attrs.get("config", {}).get("optimizer")
        if m.optimizer_state is not None and saved_optimizer not in (None, self.cfg.optimizer):
            return UsageError(f"{self.cfg.resume}: saved with --optimizer {saved_optimizer}, "
                              f"this run uses {self.cfg.optimizer}")
        return None

    def _already_complete(self, m, epochs):
        """Rank 0: the line to print when the resumed file has trained all `epochs` already."""
        if int(m.epoch) < epochs:
            return None
        asked = f"--epochs {self.cfg.epochs}" if self.cfg.epochs else "its --epochs"
        return (f"{self.cfg.resume}: already complete ({int(m.epoch)} epochs, {asked}); nothing to train "
                "(ask for more with a larger --epochs)")

    def _mid_epoch(self, m):
        """Rank 0: where in its epoch the resumed file stopped, when this run can continue from
        there: the same ranks, batch size and partitions give the same minibatches. Otherwise
        the epoch starts over from the saved (global) weights."""
        at = m.attrs.get("stopped_at")
        if not at:
            return None
        now = {"ranks": self.group.size, "batch_size": self.cfg.batch_size, "partition": self._partitioning()}
        if all(at.get(k) == v for k, v in now.items()):
            return at
        log.warning(f"mpidml: warning: {self.cfg.resume} stopped within epoch {int(m.epoch) + 1} at "
                    f"{at['ranks']} ranks, batch size {at['batch_size']}; with other ranks, batch size or "
                    "partitions that epoch starts over")
        return None

    def _partitioning(self):
        return [self.info["partition"], self.info["block_rows"], self.info["partition_seed"]]

    # -- the tasks ---------------------------------------------------------------------
    def prefetch(self):
        """Task: compute each epoch's minibatch order ahead of the trainer."""
        n = len(self.part.y)
        for epoch in range(self.start_epoch, self.cfg.epochs):
            rng = np.random.default_rng([self.cfg.seed, self.group.rank, epoch])
            self.orders[epoch] = rng.permutation(n)
            self.order_ready.set()
            while epoch in self.orders and not self.finished:       # until the trainer took it
                yield self.order_taken
                self.order_taken.clear()

    BAR_WIDTH = 30

    def monitor(self):
        """Task: a live progress bar within the epoch, redrawn every 0.2 s (rank 0)."""
        while not self.finished:
            yield Sleep(0.2)
            if self.step_total and not self.finished:
                frac = self.step_index / self.step_total
                bar = "#" * int(frac * self.BAR_WIDTH)
                sys.stdout.write(f"\r  epoch {self.epoch + 1} [{bar:<{self.BAR_WIDTH}}] {frac:4.0%}")
                sys.stdout.flush()
        self.clear_bar()

    def clear_bar(self):
        if self.bar:
            sys.stdout.write("\r" + " " * (self.BAR_WIDTH + 20) + "\r")
            sys.stdout.flush()

    def trainer(self):
        """Task: the local minibatch loop and the synchronisation policy."""
        cfg, g, net, opt, part = self.cfg, self.group, self.net, self.opt, self.part
        B, K = cfg.batch_size, cfg.sync_every
        sizes = np.array(part.sizes)
        steps = -(-int(sizes.max()) // B)
        self.step_total = steps
        total_steps = steps * cfg.epochs
        lr_at = schedule(cfg.schedule, cfg.lr, total_steps, steps, int(cfg.warmup_epochs * steps),
                         cfg.step_epochs, cfg.gamma)
        # global batch size at each step (all ranks know every partition size)
        per_rank = np.clip(sizes[:, None] - np.arange(steps)[None, :] * B, 0, B)
        global_batch = per_rank.sum(axis=0)
        gradients = cfg.sync == "gradients"
        averager = self.averager
        rows = min(B, int(sizes.max()))             # a batch beyond the partition is the partition
        xb = np.empty((rows, part.X.shape[1]), part.X.dtype)
        yb = np.empty(rows, part.y.dtype)
        grad = np.empty(net.size, self.dtype)
        w = opt.weights
        trace = self.tracer
        for epoch in range(self.start_epoch, cfg.epochs):
            self.epoch = epoch
            t_epoch = self.clock()
            comm0, idle0, compute0 = g.comm_s, self.sched.idle_s, self.compute_s
            if epoch not in self.orders:
                yield self.order_ready
            order = self.orders.pop(epoch)
            self.order_ready.clear()
            self.order_taken.set()
            first = self.start_step if epoch == self.start_epoch else 0
            loss_sum, count = self.start_loss if first else (0.0, 0)
            check_average = functools.partial(self._check_finite, epoch=epoch)
            for s in range(first, steps):
                self.step_index = s
                t0 = self.clock()
                idx = order[s * B:(s + 1) * B]
                m = len(idx)
                if m:
                    np.take(part.X, idx, axis=0, out=xb[:m])
                    np.take(part.y, idx, out=yb[:m])
                    # while an overlapped average is in flight, progress it between layers too
                    poll = g.poke if averager is not None and averager.in_flight else None
                    loss = net.loss_grad(w, xb[:m], yb[:m], grad, poll)
                    loss_sum += loss * m
                    count += m
                else:
                    grad[...] = 0
                lr = lr_at(epoch * steps + s)
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
                t1 = self.clock()
                self.compute_s += t1 - t0
                if trace:
                    trace.span("trainer", "step", t0, t1)
                if not gradients:
                    yield from averager.after_step(s, steps - 1, check_average)
                yield
                if (s + 1) % K == 0 and s < steps - 1 and (yield from self.vote.poll()):
                    if averager is not None and averager.overlap:
                        yield from averager.end_epoch()     # one global model to checkpoint
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
            res = (yield from self.evaluate()) if part.test_X is not None else None
            wall = self.clock() - t_epoch
            self._end_epoch(epoch, red[0] / max(red[1], 1), res, wall, wall - (self.eval_s - eval0), red[1],
                            g.comm_s - comm0, self.sched.idle_s - idle0, self.compute_s - compute0)
            if epoch + 1 < cfg.epochs and (yield from self.vote.poll()):
                yield from self._stop(epoch + 1, 0, None)
                return
        yield from self.vote.close()
        self._finish()

    def _finish(self):
        self.finished = True
        self.order_taken.set()            # the prefetch task ends
        if self.averager is not None:
            self.averager.stop()

    def _stop(self, epoch, step, partial_loss):
        """Generator: every rank stops at local step `step` of `epoch` (0: at its start),
        holding the global model; rank 0 keeps what the checkpoint needs to continue there."""
        yield from self.vote.close()
        losses = yield from self.group.gather_json(partial_loss, label="stop")
        self.stopped_at = {"epoch": epoch, "step": step, "steps": self.step_total, "signal": self.signals.name,
                           "ranks": self.group.size, "batch_size": self.cfg.batch_size,
                           "partition": self._partitioning(), "loss": losses if step else None}
        self._finish()

    def _diverged(self, epoch):
        return DivergedError(f"training diverged in epoch {epoch + 1}: non-finite loss or weights; "
                             f"try a smaller --lr (now {self.cfg.lr:g}), --clip-norm, or --standardize",
                             agreed=True)

    def _check_finite(self, w, epoch):
        # w must be identical on every rank (an average), so all ranks agree without messages;
        # |w| beyond ~1e19 overflows the float32 dot product, which is divergence all the same
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(np.dot(w, w))
        if not finite:
            raise self._diverged(epoch)

    def _end_epoch(self, epoch, train_loss, res, wall, train_wall, samples, comm_s, idle_s, compute_s):
        """Rank 0: record, print, checkpoint."""
        if self.group.rank != 0:
            return
        entry = {"epoch": epoch + 1, "train_loss": float(train_loss)}
        if res is not None:
            entry["test_loss"] = res["loss"]
            key = "r2" if self.info["task"] == "regression" else "accuracy"
            entry["test_" + key] = res[key]
            self.final = res
        entry.update({"wall_s": wall, "samples_per_s": samples / train_wall if train_wall > 0 else 0.0,
                      "compute_s": compute_s, "comm_s": comm_s, "comm_wait_s": idle_s})
        self.history.append(entry)
        if not self.cfg.quiet:
            self.clear_bar()
            metric = "".join(f"  {k} {entry[k]:.4f}" for k in ("test_loss", "test_accuracy", "test_r2")
                             if k in entry)
            share = idle_s / wall if wall > 0 else 0.0
            log.info(f"epoch {epoch + 1:>3}/{self.cfg.epochs}  train_loss {train_loss:.4f}{metric}"
                     f"  {entry['samples_per_s'] / 1e3:8.1f}k samples/s  wait {share:4.0%}")
        if self.cfg.metrics_json and epoch + 1 < self.cfg.epochs:
            # a job killed later still leaves the epochs it finished (the final write adds timing)
            atomic_write_json(self.cfg.metrics_json, self.document("running"), indent=1)
        every = self.cfg.checkpoint_every
        if self.cfg.save and every and (epoch + 1) % every == 0 and epoch + 1 < self.cfg.epochs:
            t0 = self.clock()
            self.model_file(epoch + 1).save(self.cfg.save)
            if self.cfg.keep_checkpoints:
                CheckpointSeries(self.cfg.save, self.cfg.keep_checkpoints).add(epoch + 1)
            if self.tracer:
                self.tracer.span("io", "checkpoint", t0, self.clock())

    def document(self, status):
        """Rank 0: the metrics document as far as the run has come (`status` running or
        complete); train() adds timing and memory at the end."""
        info = self.info
        doc = {"status": status, "ranks": self.group.size, "model": self.kind, "config": self.cfg.as_dict(),
               "data": {"path": info["path"], "train_samples": self.n_total,
                        "test_samples": 0 if self.part.test_X is None else int(sum(self.part.test_sizes)),
                        "features": info["features"], "classes": len(info["classes"]) if info["classes"] else 0,
                        "partition_sizes": self.part.sizes},
               "history": self.history}
        if hasattr(self, "final"):
            doc["test"] = self.final
        return doc

    def evaluate(self):
        """Generator: test metrics of the (global) model; every rank scores its share of
        the test rows and one Allreduce of the partial sums gives the exact totals."""
        k = len(self.info["classes"]) if self.info["classes"] else 0
        t0 = self.clock()
        sums = partial_sums(self.net, self.opt.weights, self.part.test_X, self.part.test_y, self.info["task"], k,
                            self.scaling)
        if self.tracer:
            self.tracer.span("trainer", "evaluate", t0, self.clock())
        yield from self.group.allreduce(sums, "evaluate")
        self.eval_s += self.clock() - t0
        return from_sums(sums, self.info["task"], k)

    def model_file(self, epoch, stopped_at=None):
        """The model as a file; `stopped_at`: where within `epoch` + 1 the run stopped."""
        s = self.scaling
        return ModelFile(params=self.opt.weights.copy(), optimizer_state=self.opt.state,
                         classes=self.info["classes"], mean=s.mean, std=s.std,
                         y_mean=None if s.y_mean is None else np.array([s.y_mean]),
                         y_std=None if s.y_std is None else np.array([s.y_std]),
                         kind=self.kind, task=self.info["task"], head=self.net.head, sizes=self.net.sizes,
                         activation=self.net.activation, dtype=self.dtype.name, epoch=epoch, step=self.opt.t,
                         seed=self.cfg.seed, ranks=self.group.size, label_kind=self.info["label_kind"],
                         rng={"generator": "numpy PCG64", "epoch_order_seed": "[seed, rank, epoch]",
                              "seed": self.cfg.seed, "next_epoch": epoch},
                         features=self.info["features"], config=self.cfg.as_dict(), history=self.history,
                         data=self.info.get("identity"), stopped_at=stopped_at)

    # -- the whole run -----------------------------------------------------------------
    def train(self, signals):
        """Run the tasks to completion (or to the step where every rank agreed to stop on one
        of `signals`, a StopSignals); returns train_s (the loop without test scoring)."""
        cfg = self.cfg
        self.signals, self.vote, self.stopped_at = signals, StopVote(self.group, signals), None
        self.sched = Scheduler(tracer=self.tracer, polls=self.polls)
        self.orders, self.order_ready, self.order_taken = {}, Event(), Event()
        self.finished, self.epoch, self.step_index, self.step_total = False, self.start_epoch, 0, 0
        self.averager = None
        if cfg.sync == "average":
            weight = self.dtype.type(len(self.part.y) / self.n_total)
            self.averager = Averager(self.group, self.opt.state, weight, cfg.sync_every,
                                     cfg.merge_after if cfg.overlap else None, self.opt)
        t0 = self.clock()
        self.sched.spawn(self.trainer(), "trainer")
        if self.averager is not None and cfg.overlap:
            self.sched.spawn(self.averager.communicator(), "communicator")
        self.sched.spawn(self.prefetch(), "prefetch")
        if self.group.rank == 0 and not cfg.quiet and (cfg.progress_bar or sys.stdout.isatty()):
            self.bar = True
            self.sched.spawn(self.monitor(), "monitor")
        self.sched.run()
        self.finished = True
        return self.clock() - t0 - self.eval_s


def train(cfg, group, tracer=None, signals=None):
    """The whole training run on every rank; returns the metrics document on rank 0 (None
    when a resumed run was complete already). Raises Stopped on every rank when all stopped
    on one of `signals` (a StopSignals), after rank 0 wrote the checkpoint and metrics."""
    t_start = time.perf_counter()
    run = Run(cfg, group, tracer)
    drive(run.setup(), "setup")
    if run.complete:
        if group.rank == 0:
            log.warning(f"mpidml: {run.complete}")
        return None
    if group.rank == 0 and not cfg.quiet:
        info = run.info
        k = f", {len(info['classes'])} classes" if info["classes"] else ""
        log.info(f"mpidml: {info['path']}: {run.n_total} training rows x {info['features']} features{k}; "
                 f"{group.size} ranks; model {run.kind} ({run.net.size} parameters); "
                 f"sync {cfg.sync} every {cfg.sync_every}{' overlapped' if cfg.overlap else ''}")
    train_s = run.train(signals or StopSignals(()))
    per_rank = drive(group.gather_json({"rss": peak_rss_mb(), "compute_s": run.compute_s,
                                        "comm_s": group.comm_s, "comm_wait_s": run.sched.idle_s,
                                        "collective_s": dict(group.comm_s_by_label)},
                                       label="report"), "report")
    if tracer is not None:
        payloads = drive(group.gather_json(tracer.payload(), label="trace"), "trace")
        if group.rank == 0:
            from .trace import write
            write(cfg.trace, payloads)
    stop = run.stopped_at
    if group.rank != 0:
        if stop:
            raise Stopped("stopped", agreed=True)
        return None
    if cfg.save:
        run.model_file(stop["epoch"] if stop else cfg.epochs, stop).save(cfg.save)
        if cfg.keep_checkpoints and not stop:
            CheckpointSeries(cfg.save, cfg.keep_checkpoints).add(cfg.epochs)
    doc = run.document("stopped" if stop else "complete")
    if stop:
        doc["stopped"] = {k: stop[k] for k in ("signal", "epoch", "step", "steps")}
    doc.update({
        "timing": {"wall_s": time.perf_counter() - t_start, "distribute_s": run.distribute_s,
                   "train_s": train_s, "evaluate_s": run.eval_s, "compute_s": run.compute_s,
                   "comm_s": group.comm_s,
                   "comm_wait_s": run.sched.idle_s,
                   "samples_per_s": run.samples / train_s if train_s > 0 else 0.0,
                   "per_rank": {k: [r[k] for r in per_rank]
                                for k in ("compute_s", "comm_s", "comm_wait_s", "collective_s")}},
        "memory": {"peak_rss_mb": [r["rss"] for r in per_rank]},
    })
    if stop:
        if cfg.metrics_json:
            atomic_write_json(cfg.metrics_json, doc, indent=1)
        raise Stopped(stopped_line(cfg, stop), agreed=True)
    return doc


def stopped_line(cfg, stop):
    where = (f"in epoch {stop['epoch'] + 1} after step {stop['step']} of {stop['steps']}" if stop["step"]
             else f"after epoch {stop['epoch']}")
    kept = (f"checkpoint {cfg.save}; continue with --resume {cfg.save}" if cfg.save
            else "no --save, so the progress is lost")
    return f"stopped by {stop['signal']} {where}: {kept} (exit {Stopped.code})"
