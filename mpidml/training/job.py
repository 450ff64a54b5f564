"""The rank's job: distribute, standardize, hold out validation rows, initialize the
models, run their tasks, report.

The job owns what its models share: the partitions, the standardization, the scheduler,
the stop signals and the outputs. Each model (trainer.Model) owns its training: a run
trains one, a sweep (--sweep) several at once on the same partitions, so that one model
computes while another's collective is in flight. The job orchestrates; it holds an
object for each of the rest: resume.Resumes (the --resume files, their checks, where each
model goes on), report.Reporter (rank 0's lines, the bar, the metrics document) and
saving.ModelOutputs (the model files and checkpoints). Tasks on each rank's scheduler:
  lane          the models on one communicator, one after the other, each training in
                it (see _lane); prefetch (and communicator with --overlap) per model,
                see trainer.py
  monitor       the live progress bar on rank 0 (--progress-bar, or stdout a terminal;
                see report.py)
"""
import dataclasses
import logging
import time

import numpy as np

from ..data import distribute as datamod
from ..data import stream
from ..data.partition import slabs
from ..data.provenance import DataIdentity, apply_options
from ..errors import DivergedError, Stopped, UsageError
from ..files import progress
from ..learn.aggregate import default_merge_after
from ..learn.cadence import AUTO
from ..learn.elastic import Elastic, die
from ..learn.evaluate import Scaling
from ..learn.leaderboard import entry_score, rank_key
from ..learn.trainer import Model
from ..runtime.scheduler import Scheduler
from ..runtime.stop import StopSignals
from ..runtime.topology import gather_layout
from . import sweep
from .report import Reporter
from .resume import Resumes, resume_files
from .saving import ModelOutputs, check_outputs

log = logging.getLogger("mpidml")
COMMUNICATORS = 64      # a sweep's models training at once, each on a communicator of its own


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


class Job:
    """One training job on one rank (see `train`): the data, the models, the outputs.

    `source`: rows from elsewhere than the file cfg.data (arrays.ArraySource: each rank's
    own, the estimators'), an object whose generators describe(group) (collective: the
    info data.distribute.describe gives, for every rank's rows) and distribute(group, info, how, dtype)
    (this rank's Partition) stand in for data.distribute.describe and data.distribute. `task`: the
    labels are classes (or regression targets) whatever their dtype (an estimator's)."""

    def __init__(self, cfg, group, tracer=None, source=None, task=None):
        self.cfg, self.group, self.tracer = cfg, group, tracer
        self.source, self.task = source, task
        self.dtype = np.dtype(cfg.dtype)
        self.clock = time.perf_counter
        self.models = []
        self.report = Reporter(self, COMMUNICATORS)     # rank 0's lines and metrics document
        self.outputs = ModelOutputs(self)               # the model files and their checkpoints
        self.elastic = Elastic(self)    # what the survivors of a lost rank do
        self.halted = None          # why the survivors of a lost rank stopped (elastic.py)
        self.streaming = None       # stream.Streaming: the rows stay in the file
        self.decisions = 0          # successive halving: the rungs decided (see _halve)
        self.halvings = []          # and what each kept and stopped

    # -- setup ------------------------------------------------------------------------
    def setup(self):
        """Generator: describe, distribute, standardize, hold out, build and initialize."""
        cfg, g = self.cfg, self.group
        self.resumes = Resumes(self)        # rank 0: the files --resume names, loaded in _describe
        yield from self._agree_options()
        described = (yield from self.source.describe(g)) if self.source else None
        self.info = info = yield from g.on_root(lambda: self._describe(described), "describe")
        apply_options(cfg, info.get("adopted", {}))             # the resumed file's model options
        _check_select(cfg, info["task"])
        self.dtype = np.dtype(cfg.dtype)
        self.complete = info.get("complete")
        if self.complete:
            return
        self.layout = yield from gather_layout(g)
        self.polls = self.layout.polls(g.rank, cfg.wait)
        warning = self.layout.warning()
        if warning and g.rank == 0:
            log.warning(f"mpidml: warning: {warning}")
        if self.source and (cfg.stream or cfg.stage_dir):
            raise UsageError("--stream and --stage-dir read rows from a file; arrays given in Python are in "
                             "memory already", agreed=True)
        self.streaming = None if self.source else (yield from self._streaming(info))
        self.elastic.track(self.layout)
        if self.elastic.death == (-1, 0):       # MPIDML_KILL=R@0:0: while the data is distributed
            die(-1, 0)
        self.kind = info["model"]["kind"]
        t0 = self.clock()
        if self.source:         # rows in memory: nothing to read, nothing to show
            self.part = yield from self.source.distribute(g, info, cfg.distribute, self.dtype)
        elif self.streaming:
            self.part = yield from self._open_stream(info)
        else:
            self.part = yield from datamod.distribute(g, info, cfg.distribute, self.dtype,
                                                      progress.meter(progress.style(cfg, g.rank)))
        self.distribute_s = self.clock() - t0
        if self.tracer:
            self.tracer.span("io", "distribute", t0, self.clock())
        self.part.hold_out(cfg.validation_fraction, cfg.partition_seed, g.rank)
        if g.rank == 0 and not cfg.validation_fraction and len(sweep.points(cfg)) > 1:
            log.warning("mpidml: warning: a sweep with --validation-fraction 0 has no validation rows: its best "
                        "model is chosen on the final training loss, which rewards overfitting; hold out rows "
                        "with --validation-fraction F to choose on validation")
        self.n_total = int(sum(self.part.sizes))
        self.n_outputs = n_outputs(self.kind, info)
        if g.rank == 0:
            datamod.warn_unintended(cfg, info, self.part.sizes)
        self.scaling = yield from self._scaling(info.get("scaling"))
        self._standardize()
        self.models = self._build_models(info["model"].get("epochs"))
        if cfg.save or cfg.save_dir:
            yield from self.outputs.agree_series()
        for model in self.models:
            yield from self._initial_state(model)
        for model in self.models:       # a resumed search: those still in it passed every verdict
            if model.halved is None and not model.stopped_early:
                model.rung = self.decisions

    def _agree_options(self):
        """Generator: every rank must train with the same options, or ranks would train other
        models, or wait in collectives the others never start. The command line refuses a
        command that differs across ranks (cli.main.agree_command_line); the Python API's ranks
        each pass their own parameters, so the effective options are compared here: all but
        rank 0's printing, and the file an estimator's partial_fit resumes (one per rank)."""
        skip = {"quiet", "verbose", "progress_bar"} | ({"resume"} if self.source else set())
        mine = {k: v for k, v in self.cfg.as_dict().items() if k not in skip}
        every = yield from self.group.gather_json(mine, label="options")
        yield from self.group.on_root(lambda: _same_options(every), "options")

    def _describe(self, described=None):
        """Rank 0: check the outputs, load what --resume names, describe the data (or take
        the source's info, `described`); the returned dict is what every rank learns (JSON)."""
        cfg = self.cfg
        check_outputs(cfg, resume_files(cfg))
        self.elastic.check()
        adopted = self.resumes.load() if cfg.resume else {}
        resume = self.resumes.first()
        task = self.task
        if resume is not None:
            task = resume.task
        elif task is None and cfg.model in ("logistic", "softmax"):
            task = "classification"
        elif task is None and cfg.model == "linear":
            task = "regression"
        if described is not None:       # rows in memory: no file whose identity to keep
            info = dict(described)
        else:
            info = datamod.describe(cfg.data, cfg.x_dataset or None, cfg.y_dataset or None, task,
                                    cfg.test_fraction, cfg.block_rows or None, cfg.partition_seed,
                                    cfg.partition, cfg.chunk_mb)
            if cfg.save or cfg.save_dir or cfg.resume:
                info["identity"] = DataIdentity.of(info).as_dict()
        if resume is None:
            info["model"] = {"kind": choose_model(cfg.model, info), "hidden": list(cfg.hidden),
                             "activation": cfg.activation}
            return info
        return self.resumes.describe(info, adopted)

    def _streaming(self, info):
        """Generator: a stream.Streaming when this job leaves its rows in the file (--stream,
        --stage-dir, or a rank whose rows would take more than STREAM_SHARE of its memory
        limit: rank 0 says so in one line), else None. Every rank decides alike: each one's
        need and limit reach all, and the chunk size is the smallest rank's."""
        cfg, g = self.cfg, self.group
        budget = stream.MemoryBudget(cfg.memory_limit, len(self.layout.host_of(g.rank).ranks))
        plan = datamod.plan_for(info, g.size)
        test = info["test"]
        test_rows = 0
        if test:
            test_rows = (plan.test_sizes if test["source"] == "split" else slabs(test["rows"], g.size)[1])[g.rank]
        row_bytes = info["features"] * self.dtype.itemsize + 8
        need = (int(plan.sizes[g.rank]) + int(test_rows)) * row_bytes
        if cfg.validation_fraction:
            need *= 2           # Partition.hold_out copies the rows out while they are still held
        streams = min(COMMUNICATORS, len(sweep.points(cfg)))
        table = np.zeros((g.size, 3))
        table[g.rank] = (need, budget.bytes, budget.chunk_bytes(streams, cfg.stream_chunk_mb))
        yield from g.allreduce(table, "memory")
        over = np.flatnonzero(table[:, 0] > stream.STREAM_SHARE * table[:, 1])
        resumed = info.get("stream_chunk_rows")         # the --resume file was trained streamed
        if not (cfg.stream or cfg.stage_dir or resumed or len(over)) or ("stream" in cfg.given and not cfg.stream):
            return None             # --no-stream: in memory, whatever the limit says
        chunk = int(table[:, 2].min())
        if resumed and not cfg.stream_chunk_mb:     # the order of its epochs follows from its chunks
            chunk = resumed * row_bytes
        why = "--stage-dir" if cfg.stage_dir else "--stream" if cfg.stream else "--resume" if resumed else "auto"
        if why == "auto" and g.rank == 0:
            r = int(over[0])
            limit = budget.said if r == g.rank else "--memory-limit" if cfg.memory_limit != "auto" else "auto"
            log.warning(f"mpidml: streaming {info['path']}: rank {r}'s rows take {stream.mb(table[r, 0])}, more "
                        f"than {stream.STREAM_SHARE:g} of its memory limit {stream.mb(table[r, 1])} ({limit}); "
                        f"every rank reads its rows in chunks of {stream.mb(chunk)} while it trains")
        if budget.used >= budget.bytes and g.rank == 0:
            log.warning(f"mpidml: warning: {budget.said} is less than the {stream.mb(budget.used)} rank 0 uses "
                        "before it holds any rows: it streams in the smallest chunks, slowly")
        held = 2 * chunk * streams
        if cfg.stream_chunk_mb and held > stream.BUFFER_SHARE * table[:, 1].min() and g.rank == 0:
            log.warning(f"mpidml: warning: --stream-chunk-mb {cfg.stream_chunk_mb:g}: two chunk buffers for each of "
                        f"{streams} models take {stream.mb(held)}, more than {stream.BUFFER_SHARE:g} of the memory "
                        f"limit {stream.mb(table[:, 1].min())}; leave it out to size the chunks to the limit")
        return stream.Streaming(plan, chunk, int(table[g.rank, 1]), why)

    def _open_stream(self, info):
        """Generator: this rank's StreamedPart, over the file or (--stage-dir) its staged copy."""
        g, s = self.group, self.streaming
        if self.cfg.stage_dir:
            from ..data.stage import stage
            return (yield from stage(g, info, s.plan, self.cfg.stage_dir, self.dtype, s.chunk_bytes,
                                     progress.meter(progress.style(self.cfg, g.rank))))
        err = part = None
        try:
            part = stream.StreamedPart.of_plan(info, s.plan, g.rank, g.size, self.dtype, s.chunk_bytes)
        except UsageError as e:
            err = e
        yield from g.agree(err, "validate")
        return part

    def _standardize(self):
        """Scale every rank's features (training, test, validation) in place, and the
        training targets: scoring (evaluate.partial_sums) takes test and validation targets
        in the data's units. A stream scales each chunk as it is read."""
        part, s = self.part, self.scaling
        if part.streamed:
            part.reader.scaling = s
            return
        for X in (part.X, part.test_X, part.val_X):
            if X is not None:
                s.apply(X)
        s.apply_targets(part.y)

    def _build_models(self, saved_epochs):
        """One Model per point of the grid (one without a sweep), each with its options; the
        first COMMUNICATORS train at once, each later one after the model it takes the
        communicator of (see _lane: MPI runs out of communicators near 2000)."""
        cfg, models = self.cfg, []
        for i, overrides in enumerate(sweep.points(cfg)):
            mcfg = dataclasses.replace(cfg, **overrides)
            if cfg.overlap and "merge_after" not in cfg.given and mcfg.sync_every != AUTO:
                mcfg.merge_after = default_merge_after(mcfg.sync_every)
            mcfg.epochs = cfg.epochs or saved_epochs or auto_epochs(max(self.part.sizes), mcfg.batch_size)
            models.append(Model(self, mcfg, i, overrides))
        self.fork_models(models)
        cfg.epochs = max(m.cfg.epochs for m in models)
        if self.group.rank == 0:
            self._warn_search(models)
        return models

    def _warn_search(self, models):
        """Rank 0: a search that can only waste work or do nothing it says: the same point
        sampled twice (a choice or int axis), halving that has no rung to decide."""
        seen = {}
        for m in models:
            seen.setdefault(repr(sorted(m.overrides.items())), []).append(m.index)
        twice = [ids for ids in seen.values() if len(ids) > 1]
        if twice:
            log.warning(f"mpidml: warning: {sum(len(ids) - 1 for ids in twice)} sampled points repeat others "
                        f"(models {', '.join('=' .join(map(str, ids)) for ids in twice[:3])}"
                        f"{', ...' if len(twice) > 3 else ''}): they train the same model again")
        if self.halving and (len(models) < 2 or len(self.rung_ends()) < 2):
            log.warning(f"mpidml: warning: --search halving with {len(models)} models and --epochs {self.cfg.epochs} "
                        f"(first rung {self.cfg.rung_epochs}) has no rung to decide: every model trains every epoch")

    def fork_models(self, models=None):
        """Each model's group: a communicator of its own for the first COMMUNICATORS, then
        the one of the model COMMUNICATORS before it (see _lane)."""
        models = self.models if models is None else models
        for i, model in enumerate(models):
            model.group = self.group.fork(models[i - COMMUNICATORS].group if i >= COMMUNICATORS else None)

    def _scaling(self, saved):
        """Generator: the standardization statistics, from the resumed model or computed
        from all training rows (data.Moments: one pass, one Allreduce)."""
        g, part, info = self.group, self.part, self.info
        regression = info["task"] == "regression"
        wanted = saved is None and self.cfg.standardize
        if part.streamed:       # one pass over every row: the values checked, the moments taken
            mx, my = yield from part.survey(g, wanted, regression)
        if saved is not None:
            return Scaling.from_arrays(saved["mean"], saved["std"], saved["y_mean"], saved["y_std"])
        scaling = Scaling()
        if not wanted:
            return scaling
        if not part.streamed:
            mx, my = datamod.Moments(info["features"]), datamod.Moments(1)
            mx.add(part.X)
            if regression:
                my.add(part.y.astype(np.float64))
        where = f"{info['path']}: dataset "
        scaling.mean, scaling.std = yield from datamod.global_stats(g, mx, self.dtype, where + info["x"])
        if regression:
            ym, ys = yield from datamod.global_stats(g, my, self.dtype, where + info["y"])
            scaling.y_mean, scaling.y_std = float(ym[0]), float(ys[0])
        return scaling

    def _initial_state(self, model):
        """Generator: the same starting state on every rank (seeded on rank 0, or its
        --resume file's: see resume.Resumes; broadcast)."""
        g, opt = self.group, model.opt
        meta, err = None, None
        if g.rank == 0:
            if self.resumes.of(model) is not None:
                meta, err = self.resumes.restore(model)
            else:
                model.net.init(opt.weights, np.random.default_rng(model.cfg.seed))
        yield from g.agree(err, "resume")
        yield from g.bcast(opt.state, label="init")
        if self.cfg.resume:
            meta = yield from g.bcast_json(meta, label="init")
            self.resumes.go_on(model, meta)
            # a model halted at rung r says that r was decided; the longest record of the verdicts wins
            self.decisions = max(self.decisions, model.rung + (model.halved is not None))
            if len(meta["halving"].get("decisions", [])) > len(self.halvings):
                self.halvings = meta["halving"]["decisions"]

    def chunk_rows(self):
        """A stream's chunk rows (its epochs' order follows from them), or None in memory."""
        return self.part.chunk_rows if self.part.streamed else None

    def partitioning(self):
        """What the partitions follow from; after a lost rank's rows were dealt out, not the plan."""
        plan = [self.info["partition"], self.info["block_rows"], self.info["partition_seed"]]
        return plan + ["redealt"] if self.elastic.redealt else plan

    def epoch_done(self, model, entry):
        """A model finished an epoch (every rank at once): rank 0 prints, rewrites the metrics
        (see report.Reporter.epoch_done) and checkpoints."""
        if self.group.rank != 0:
            return
        self.report.epoch_done(model, entry)
        self.outputs.checkpoint(model, entry["epoch"])

    # -- the whole job -------------------------------------------------------------------
    def train(self, signals):
        """Run every model's tasks to completion (or to the step where all ranks agreed to
        stop on one of `signals`, a StopSignals); returns train_s, the loop without scoring."""
        self.sched = Scheduler(tracer=self.tracer, polls=self.polls)
        t0 = self.clock()
        while self.halted is None:
            self._rung_targets()
            for lane in range(min(COMMUNICATORS, len(self.models))):
                models = [m for m in self.models[lane::COMMUNICATORS] if not m.finished]
                if models:
                    self.sched.spawn(self._lane(models, signals, self.decisions > 0), f"lane {lane}")
            self.report.start_bar(self.sched)
            if self.elastic.settle(self.elastic.attempt(self.sched.run)[0]):
                if not self._halve():       # halving: the next rung, if the search goes on
                    break
                self.sched.clear()
                continue
            self.sched.clear()              # a rank was lost: go on with the others, or stop
            self.elastic.recover()
        if len(self.models) > 1 and all(m.diverged for m in self.models):
            raise DivergedError("training diverged in every model of the sweep; try smaller learning rates "
                                "(--lr, the sweep's lr), --clip-norm, or --standardize", agreed=True)
        self.report.print_held()    # rank 0: the last epoch line, when training ended short of it
        return self.clock() - t0 - sum(m.eval_s for m in self.models)

    def close(self):
        """Let go of the rows: a stream's reader thread and open file."""
        if getattr(self, "part", None) is not None:
            self.part.close()

    def _lane(self, models, signals, late=False):
        """Task: the models that share one communicator (every COMMUNICATORS-th of a sweep: MPI
        has about 2000), one after the other. Each starts once the one before has completed
        every collective on it, so every rank runs the same collectives on it in the same
        order; a later one votes first (as every one does in a later rung, `late`), so that
        after a stop signal none trains (trainer.Model.run)."""
        for n, model in enumerate(models):
            yield from model.run(self.sched, signals, late=late or n > 0)

    # -- successive halving --------------------------------------------------------------
    def rung_ends(self):
        """The epochs successive halving's rungs end at: --rung-epochs R, then ETA times as
        many each, the last at --epochs. Grid search: one rung, the whole run."""
        cfg = self.cfg
        ends, end = [], cfg.rung_epochs
        while cfg.search == "halving" and end < cfg.epochs:
            ends.append(end)
            end *= cfg.halving_factor
        return ends + [cfg.epochs]

    def _rung_targets(self):
        """Every model still training trains to the end of the current rung."""
        ends = self.rung_ends()
        end = ends[min(self.decisions, len(ends) - 1)]        # a resumed search may have fewer rungs now
        for m in self.models:
            if not m.finished:
                m.until, m.paused = (end if end < m.cfg.epochs else None), False

    @property
    def halving(self):
        return self.cfg.search == "halving"

    def _halve(self):
        """After a rung every model reached the end of (or left early): the best 1/ETA by
        --select go on, the others stop there. Rank 0 ranks them and every rank takes its
        verdict (one broadcast; the scores are the same everywhere, the verdict must be too).
        False when the search is over: the last rung, a stop, or no model left."""
        ends = self.rung_ends()
        alive = [m for m in self.models if not m.finished]
        if (self.decisions >= len(ends) - 1 or not alive or not all(m.paused for m in alive)
                or any(m.stopped_at for m in self.models)):      # stopped: --resume decides with them all
            return False
        select, keep = self.cfg.select, max(1, len(alive) // self.cfg.halving_factor)
        ranked = None
        if self.group.rank == 0:
            ranked = [m.index for m in sorted(alive, key=lambda m: (entry_score(select, m.history[-1]), -m.index),
                                          reverse=True)]
        ranked = self.elastic.retry(lambda: self.group.bcast_json(ranked, label="halving"), "halving")
        rung, end = self.decisions, ends[self.decisions]
        by_index = {m.index: m for m in alive}
        for i in ranked[keep:]:
            by_index[i].halt()
        for i in ranked[:keep]:
            by_index[i].rung = rung + 1
        self.decisions += 1
        self.halvings.append({"rung": rung + 1, "epoch": end, "kept": ranked[:keep], "stopped": ranked[keep:]})
        if self.group.rank == 0 and self.cfg.save_dir:      # the verdict on file at once: a kill keeps it
            for m in alive:
                self.outputs.save(m, len(m.history))
        if self.group.rank == 0 and not self.cfg.quiet:
            best = by_index[ranked[0]]
            log.info(f"halving: rung {rung + 1} ended at epoch {end}: {keep} of {len(alive)} models go on; best "
                     f"{select} {best.history[-1][select]:.4f}: model {best.index} ({best.describe()})")
        return True

    def best_model(self):
        """The model with the best validation score by --select (the test set never chooses);
        without validation rows (setup warned), the lowest final training loss; before any
        epoch, the first: the leaderboard's first (leaderboard.rank_key)."""
        return min(self.models, key=lambda m: rank_key(self.cfg.select, m.index, m.validation, m.history,
                                                       m.diverged))

    def best_on(self):
        """What chose the best model: its validation score, or (without validation rows) its training loss."""
        return "validation" if any(m.validation is not None for m in self.models) else "train_loss"


def _check_select(cfg, task):
    """--select names a metric of this task (every rank raises it alike)."""
    wrong = {"classification": ("val_r2", "val_loss, val_accuracy or val_f1"),
             "regression": ("val_accuracy", "val_f1", "val_loss or val_r2")}[task]
    if cfg.select in wrong[:-1]:
        raise UsageError(f"--select {cfg.select} does not score {task}: use {wrong[-1]}", agreed=True)


def _same_options(every):
    """Rank 0: UsageError naming the first option in which a rank differs from rank 0."""
    ours = every[0]
    for rank, theirs in enumerate(every):
        for key in ours:
            if theirs[key] != ours[key]:
                raise UsageError(f"ranks were given different options: {key} is {ours[key]!r} on rank 0, "
                                 f"{theirs[key]!r} on rank {rank}")


def train(cfg, group, tracer=None, signals=None, job=None):
    """The whole training job on every rank; returns the metrics document on rank 0 (None
    when a resumed run was complete already). Raises Stopped on every rank when all stopped
    on one of `signals` (a StopSignals), after rank 0 wrote the checkpoint and metrics.
    `job`: a Job the caller made (with a data source, or to read its models afterwards)."""
    job = job or Job(cfg, group, tracer)
    try:
        return _train(job, cfg, tracer, signals)
    finally:
        job.close()         # on every path: a stream's reader thread and file (a failed run keeps its staged copy)


def _train(job, cfg, tracer, signals):
    t_start = time.perf_counter()
    job.elastic.setup()                 # a rank lost before training: start again without it, or stop
    job.report.opening()
    if job.complete:
        return None
    train_s = job.train(signals or StopSignals(()))
    models = job.models
    mine = job.report.costs()
    if job.part.streamed:
        job.part.close(complete=not any(m.stopped_at for m in models))
    per_rank = job.elastic.retry(lambda: job.group.gather_json(mine, label="report"), "report")
    for m in models:
        m.group.close()
    if tracer is not None:
        payloads = job.elastic.retry(lambda: job.group.gather_json(tracer.payload(), label="trace"), "trace")
        if job.group.rank == 0:
            from ..files.trace import write
            write(cfg.trace, payloads)
    stopped = [m for m in models if m.stopped_at]
    if job.group.rank != 0:
        if stopped:
            raise Stopped("stopped", agreed=True)
        return None
    job.outputs.save_final()
    doc = job.report.final(stopped, mine, per_rank, t_start, train_s)
    if stopped:
        raise Stopped(job.report.stopped(doc, stopped), agreed=True)
    return doc
