"""The rank's job: distribute, standardize, hold out validation rows, initialize the
models, run their tasks, report.

The job owns what its models share: the partitions, the standardization, the scheduler,
the stop signals and the outputs. Each model (trainer.Model) owns its training: a run
trains one, a sweep (--sweep) several at once on the same partitions, so that one model
computes while another's collective is in flight. Tasks on each rank's scheduler:
  lane          the models on one communicator, one after the other, each training in
                it (see _lane); prefetch (and communicator with --overlap) per model,
                see trainer.py
  monitor       the live progress bar on rank 0 (--progress-bar, or stdout a terminal)
"""
import dataclasses
import logging
import os
import resource
import sys
import time

import numpy as np

from ..data import distribute as datamod
from ..data import stream
from ..data.partition import slabs
from ..data.provenance import MODEL_OPTIONS, DataIdentity, adopt_model_options, apply_options, check_data
from ..errors import DivergedError, Stopped, UsageError
from ..files import progress
from ..files.outputs import atomic_write_json, check_output
from ..learn import leaderboard
from ..learn.aggregate import default_merge_after
from ..learn.cadence import AUTO, Cadence
from ..learn.checkpoint import CheckpointSeries, ModelFile, new_series
from ..learn.elastic import Elastic, die
from ..learn.evaluate import Scaling
from ..learn.leaderboard import entry_score, rank_key
from ..learn.trainer import Model
from ..runtime.scheduler import Scheduler, Sleep
from ..runtime.stop import StopSignals
from ..runtime.topology import gather_layout
from . import sweep

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


def check_outputs(cfg):
    """Before any work: no output may overwrite an input (--data, --config, every file
    --resume names) or another output. The one exception: a model may rewrite the file it
    resumes from (a resumed run continues its own checkpoint): --save the --resume file of a
    single run, --save-dir/model-NNN.h5 model NNN's. The numbered checkpoints' longer names
    must fit too. --save-dir is created (as mkdir -p) once everything else passed, then each
    model's file in it is checked."""
    inputs = [("--data", cfg.data), ("--config", cfg.config_file)]
    resumed = [("--resume", path) for path in resume_files(cfg)]
    if cfg.save:
        check_output(cfg.save, "--save", inputs + (resumed if cfg.sweep else []))
    if cfg.keep_checkpoints:
        outputs = [("--metrics-json", cfg.metrics_json), ("--trace", cfg.trace), ("--results", cfg.results)]
        CheckpointSeries(cfg.save, cfg.keep_checkpoints).check(inputs + outputs)
    taken = inputs + resumed + [("--save", cfg.save)]
    for path, option in ((cfg.metrics_json, "--metrics-json"), (cfg.trace, "--trace"), (cfg.results, "--results")):
        if path:
            check_output(path, option, taken)
            taken.append((option, path))
    if cfg.save_dir:
        make_directory(cfg.save_dir, "--save-dir")
        for index, own in enumerate(resumed or [None] * len(sweep.points(cfg))):
            check_output(sweep_file(cfg.save_dir, index), "--save-dir", [t for t in taken if t != own])


def resume_files(cfg):
    """The model files --resume names: the file, or in a sweep one per model of the grid in
    the directory (as --save-dir wrote them)."""
    if not cfg.resume:
        return []
    if not cfg.sweep:
        return [cfg.resume]
    return [sweep_file(cfg.resume, i) for i in range(len(sweep.points(cfg)))]


def sweep_file(directory, index):
    """Model `index`'s file in a sweep's --save-dir (and so in the --resume directory)."""
    return os.path.join(directory, f"model-{index:03d}.h5")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Job:
    """One training job on one rank (see `train`): the data, the models, the outputs.

    `source`: rows from elsewhere than the file cfg.data (arrays.ArraySource: each rank's
    own, the estimators'), an object whose generators describe(group) (collective: the
    info data.describe gives, for every rank's rows) and distribute(group, info, how, dtype)
    (this rank's Partition) stand in for data.describe and data.distribute. `task`: the
    labels are classes (or regression targets) whatever their dtype (an estimator's)."""

    def __init__(self, cfg, group, tracer=None, source=None, task=None):
        self.cfg, self.group, self.tracer = cfg, group, tracer
        self.source, self.task = source, task
        self.dtype = np.dtype(cfg.dtype)
        self.clock = time.perf_counter
        self.bar, self.bar_width = False, 0
        self.line_at = None         # when rank 0 printed its last epoch line
        self.held = None            # the last epoch line not printed (see _show)
        self.printed = 0            # a sweep's epoch lines settled so far (see _sweep_lines)
        self.models = []
        self.series = {}            # model index: its checkpoint series, see series_of
        self.elastic = Elastic(self)    # what the survivors of a lost rank do
        self.halted = None          # why the survivors of a lost rank stopped (elastic.py)
        self.streaming = None       # stream.Streaming: the rows stay in the file
        self.decisions = 0          # successive halving: the rungs decided (see _halve)
        self.halvings = []          # and what each kept and stopped

    # -- setup ------------------------------------------------------------------------
    def setup(self):
        """Generator: describe, distribute, standardize, hold out, build and initialize."""
        cfg, g = self.cfg, self.group
        self.resumes = []           # rank 0: (path, ModelFile) per model, when resuming
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
        if cfg.save or cfg.save_dir:    # every rank knows each checkpoint series: a new rank 0 continues it
            ids = [self.series_of(m) for m in self.models] if g.rank == 0 else None
            self.series = dict(enumerate((yield from g.bcast_json(ids, label="series"))))
        for model in self.models:
            yield from self._initial_state(model, self.resumes[model.index][1] if self.resumes else None)
        for model in self.models:       # a resumed search: those still in it passed every verdict
            if model.halved is None and not model.stopped_early:
                model.rung = self.decisions

    def _agree_options(self):
        """Generator: every rank must train with the same options, or ranks would train other
        models, or wait in collectives the others never start. The command line refuses a
        command that differs across ranks (cli.agree_command_line); the Python API's ranks
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
        check_outputs(cfg)
        self.elastic.check()
        adopted, resume = {}, None
        if cfg.resume:
            self.resumes = [(path, ModelFile.load(path)) for path in self.resume_paths()]
            resume = self.resumes[0][1]
            # in place before the data is described: the split must be the saved run's
            if cfg.sweep:           # its swept options are its grid's; its models share the split and the rest
                swept = {key for key, _ in cfg.sweep}
                adopted = adopt_model_options(cfg, self.resumes[0][0], resume.model_options(),
                                              [k for k in MODEL_OPTIONS if k not in swept])
                self._check_grid()
            else:
                adopted = adopt_model_options(cfg, cfg.resume, resume.model_options())
            self._warn_validation_moves(resume)
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
        for path, m in self.resumes:       # the architecture comes from the file
            if "identity" in info:
                check_data(path, m.attrs.get("data"), DataIdentity(**info["identity"]))
        info["adopted"] = adopted
        info["model"] = {"kind": resume.kind, "hidden": [int(h) for h in resume.sizes[1:-1]],
                         "activation": resume.activation,
                         "epochs": int(resume.attrs.get("config", {}).get("epochs", 0))}
        info["complete"] = self._already_complete(cfg.epochs or info["model"]["epochs"])
        info["stream_chunk_rows"] = (resume.attrs.get("rng") or {}).get("chunk_rows")
        # the first layer was trained on features scaled this way: keep it
        info["scaling"] = {k: None if v is None else np.ravel(v).tolist() for k, v in
                           (("mean", resume.mean), ("std", resume.std),
                            ("y_mean", resume.y_mean), ("y_std", resume.y_std))}
        return info

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

    def _initial_state(self, model, resume):
        """Generator: the same starting state on every rank (seeded on rank 0, broadcast)."""
        g, opt = self.group, model.opt
        meta, err = None, None
        if g.rank == 0:
            if resume is not None:
                err = self._check_resume(resume, model)
                if err is None:
                    if resume.optimizer_state is not None and resume.optimizer_state.size == opt.state.size:
                        opt.state[...] = resume.optimizer_state
                    else:
                        opt.weights[...] = resume.params
                    meta = {"epoch": int(resume.epoch), "step": int(resume.attrs.get("step", 0)),
                            "history": resume.attrs.get("history", []),
                            "stopped_at": self._mid_epoch(resume, model),
                            "early_stopped": resume.attrs.get("early_stopped"),
                            "halving": resume.attrs.get("halving") or {},
                            "cadence": resume.attrs.get("cadence")}
            else:
                model.net.init(opt.weights, np.random.default_rng(model.cfg.seed))
        yield from g.agree(err, "resume")
        yield from g.bcast(opt.state, label="init")
        if self.cfg.resume:
            meta = yield from g.bcast_json(meta, label="init")
            model.start_epoch, opt.t, model.history = meta["epoch"], meta["step"], meta["history"]
            model.resumed_at = model.start_epoch
            if meta["stopped_at"]:
                model.start_step = meta["stopped_at"]["step"]
                model.start_loss = tuple(meta["stopped_at"]["loss"][g.rank])
            model.stopped_early = meta["early_stopped"]
            if meta["cadence"] and model.cfg.sync_every == AUTO:       # --resume keeps auto's choice
                model.cadences = [Cadence.from_dict(c) for c in meta["cadence"]]
            model.rung, model.halved = meta["halving"].get("rung", 0), meta["halving"].get("halved")
            # a model halted at rung r says that r was decided; the longest record of the verdicts wins
            self.decisions = max(self.decisions, model.rung + (model.halved is not None))
            if len(meta["halving"].get("decisions", [])) > len(self.halvings):
                self.halvings = meta["halving"]["decisions"]

    def _check_grid(self):
        """Rank 0: each resumed file of a sweep must be its grid point: the same swept values
        and model options. Hidden layers are an mlp's alone: any other model has none,
        whatever --hidden says."""
        for (path, m), overrides in zip(self.resumes, sweep.points(self.cfg)):
            saved, ours = m.model_options(), dataclasses.replace(self.cfg, **overrides)
            for key in (*overrides, *MODEL_OPTIONS):        # the split: every file's is the one adopted
                value = getattr(ours, key)
                if key == "hidden":
                    value = list(value) if saved["model"] == "mlp" else []
                if key in saved and saved[key] != value and not (key == "model" and value == "auto"):
                    raise UsageError(f"{path} was trained with {key.replace('_', '-')} {saved[key]}, its sweep "
                                     f"point has {value}: resume with the same --sweep (and --trials, --sweep-seed)")

    def _warn_validation_moves(self, resume):
        """Rank 0: validation rows are drawn from each rank's partition, so at another rank
        count they are other rows, some of them trained on before."""
        saved = resume.attrs.get("ranks")
        if self.cfg.validation_fraction and saved and saved != self.group.size and self.source is None:
            log.warning(f"mpidml: warning: {self.cfg.resume} was trained at {saved} ranks, this run has "
                        f"{self.group.size}: its validation rows are drawn anew from each rank's rows, so some "
                        "were training rows; validation scores and early stopping lean optimistic")

    def resume_paths(self):
        """The files --resume names: the model file, or in a sweep one per model of the grid
        in the directory (as --save-dir wrote them)."""
        if self.cfg.sweep and not os.path.isdir(self.cfg.resume):
            raise UsageError(f"--resume {self.cfg.resume}: a sweep resumes from the directory its --save-dir "
                             "wrote, not a file")
        paths = resume_files(self.cfg)
        missing = [p for p in paths if not os.path.exists(p)]
        if self.cfg.sweep and missing:
            held = len(paths) - len(missing)
            raise UsageError(f"--resume {self.cfg.resume}: the sweep has {len(paths)} models, the directory holds "
                             f"{held} (no {os.path.basename(missing[0])}); resume with the --sweep, --trials and "
                             "--sweep-seed that wrote it")
        return paths

    def _check_resume(self, m, model):
        path = self.resumes[model.index][0]
        sizes = [int(s) for s in m.sizes]
        if sizes != model.net.sizes or m.head != model.net.head:
            return UsageError(f"{path}: model layers {sizes} ({m.head}) do not fit this data "
                              f"({model.net.sizes}, {model.net.head})")
        saved_optimizer = m.attrs.get("config", {}).get("optimizer")
        if m.optimizer_state is not None and saved_optimizer not in (None, model.cfg.optimizer):
            return UsageError(f"{path}: saved with --optimizer {saved_optimizer}, "
                              f"this run uses {model.cfg.optimizer}")
        return None

    def _already_complete(self, epochs):
        """Rank 0: the line to print when every resumed file has trained all `epochs` already
        (or stopped early)."""
        done = [int(m.epoch) for _, m in self.resumes if not m.attrs.get("early_stopped")]
        if any(e < epochs for e in done):
            return None
        asked = f"--epochs {self.cfg.epochs}" if self.cfg.epochs else "its --epochs"
        what = f"{max(done)} epochs" if done else "stopped early"
        if self.cfg.sweep:
            what = f"{len(self.resumes)} models, {what}"
        return (f"{self.cfg.resume}: already complete ({what}, {asked}); nothing to train "
                "(ask for more with a larger --epochs)")

    def _mid_epoch(self, m, model):
        """Rank 0: where in its epoch the resumed file stopped, when this run can continue from
        there: the same ranks, batch size and partitions give the same minibatches. Otherwise
        the epoch starts over from the saved (global) weights."""
        at = m.attrs.get("stopped_at")
        if not at or not at["step"]:        # stopped at the epoch's start: it starts as any epoch does
            return None
        now = {"ranks": self.group.size, "batch_size": model.cfg.batch_size, "partition": self.partitioning(),
               "chunk_rows": self.chunk_rows()}
        if all(at.get(k) == v for k, v in now.items()):
            return at
        log.warning(f"mpidml: warning: {self.resumes[model.index][0]} stopped within epoch {int(m.epoch) + 1} at "
                    f"{at['ranks']} ranks, batch size {at['batch_size']}; with other ranks, batch size, "
                    "partitions or streamed chunks that epoch starts over")
        return None

    def chunk_rows(self):
        """A stream's chunk rows (its epochs' order follows from them), or None in memory."""
        return self.part.chunk_rows if self.part.streamed else None

    def partitioning(self):
        """What the partitions follow from; after a lost rank's rows were dealt out, not the plan."""
        plan = [self.info["partition"], self.info["block_rows"], self.info["partition_seed"]]
        return plan + ["redealt"] if self.elastic.redealt else plan

    # -- progress -------------------------------------------------------------------------
    def monitor(self):
        """Task: a live bar within the epoch, redrawn every 0.2 s (rank 0), until every model
        has finished: how far, samples/s, the time left in the epoch and the running loss."""
        epoch, start, since, width = None, self.clock(), 0.0, 0
        while not all(m.finished or m.paused for m in self.models):
            yield Sleep(0.2)
            model = next((m for m in self.models if not m.finished), None)
            if model is None or not model.step_total:
                continue
            fraction = model.step_index / model.step_total
            if model.epoch != epoch:
                epoch, start, since = model.epoch, self.clock(), fraction
            loss_sum, count = model.running
            line = progress.epoch_bar(epoch + 1, fraction, self.clock() - start, self.n_total,
                                      loss_sum / count if count else None, since)
            self.bar_width = width = max(width, len(line))
            self.bar = progress.redraw(sys.stdout, f"\r{line:<{width}}")
            if not self.bar:
                return
        self.clear_bar()

    def clear_bar(self):
        if self.bar:
            self.bar = progress.redraw(sys.stdout, "\r" + " " * self.bar_width + "\r")

    def _show(self, line, n, total):
        """Rank 0: epoch line `n` of `total`: every one up to 10 or with --verbose; beyond, the
        first, the last and at most one a second (tiny data made 75 lines in a few seconds;
        the metrics file keeps every epoch). A line held back is printed when training ends
        short of the last (early stopping, a stop signal: see train), so that the last epoch
        trained shows."""
        if self.cfg.quiet:
            return
        now = self.clock()
        self.held = line
        if (self.cfg.verbose or total <= 10 or n == total or self.line_at is None
                or now - self.line_at >= progress.LINE_S):
            self.line_at = now
            self._print_held()

    def _print_held(self):
        if self.held is not None:
            self.clear_bar()
            log.info(self.held)
            self.held = None

    def epoch_done(self, model, entry):
        """A model finished an epoch (every rank at once): rank 0 prints, rewrites the metrics
        and checkpoints. In a sweep the line and the metrics come when the epoch is settled
        (_sweep_lines): rewriting every model's metrics after every model's epoch took time
        in the square of the models."""
        if self.group.rank != 0:
            return
        epoch = entry["epoch"]
        if len(self.models) == 1:
            self._progress_line(entry, model.cfg.epochs)
            if epoch < model.cfg.epochs:
                self._write_running()
        else:
            self._sweep_lines()
        cfg = model.cfg
        every = cfg.checkpoint_every
        if every and epoch % every == 0 and epoch < cfg.epochs and (cfg.save or cfg.save_dir):
            t0 = self.clock()
            path = self.model_path(model)
            self.model_file(model, epoch).save(path)
            if cfg.keep_checkpoints and len(self.models) == 1:
                CheckpointSeries(path, cfg.keep_checkpoints).add(epoch)
            if self.tracer:
                self.tracer.span("io", "checkpoint", t0, self.clock())

    def cadence_chosen(self, model, cadence):
        """--sync-every auto chose (every rank at once): rank 0 prints it, once per choice."""
        if self.group.rank == 0 and not self.cfg.quiet:
            which = f"model {model.index}: " if len(self.models) > 1 else ""
            log.info(f"mpidml: --sync-every auto: {which}{cadence.describe()}")

    def model_done(self, model):
        if self.group.rank == 0 and len(self.models) > 1:
            self._sweep_lines()

    def _progress_line(self, entry, epochs):
        metric = "".join(f"  {k} {entry[k]:.4f}" for k in ("test_loss", "test_accuracy", "test_r2", "val_loss",
                                                            "val_accuracy", "val_r2") if k in entry)
        wall = entry["wall_s"]
        share = entry["comm_wait_s"] / wall if wall > 0 else 0.0
        self._show(f"epoch {entry['epoch']:>3}/{epochs}  train_loss {entry['train_loss']:.4f}{metric}"
                   f"  {entry['samples_per_s'] / 1e3:8.1f}k samples/s  wait {share:4.0%}", entry["epoch"], epochs)

    def _sweep_lines(self, show=True):
        """Rank 0: the sweep's epoch lines that are settled, then the metrics. Its models
        train in generations of COMMUNICATORS (see _lane): the line for epoch E of a
        generation is settled once each of its models has trained that epoch or finished,
        and printed when some model trained it in this run. `show` False: counted, not printed
        (a new rank 0: the lost one printed them)."""
        epochs, size = self.cfg.epochs, COMMUNICATORS
        total, settled = -(-len(self.models) // size) * epochs, self.printed
        while self.printed < total:
            generation, done = divmod(self.printed, epochs)
            epoch = done + 1
            models = self.models[generation * size:(generation + 1) * size]
            if not all(len(m.history) >= epoch or m.finished for m in models):
                break
            self.printed += 1
            training = sum(m.resumed_at < epoch <= len(m.history) for m in models)
            if training and show:
                self._show(self._sweep_line(epoch, models, training), self.printed, total)
        if settled < self.printed < total and show:
            self._write_running()

    def _sweep_line(self, epoch, models, training):
        """The line for `epoch` of the generation `models`: how many trained it (and in a
        sweep of several generations, how many models have started), and the best validation
        score (--select) any model has had at any epoch so far: it never goes down."""
        everyone = len(self.models)
        who = (f"{training} of {everyone} models training" if len(models) == everyone else
               f"models {models[0].index}-{models[-1].index}: {training} training, "
               f"{sum(m.started for m in self.models)} of {everyone} started")
        line = f"epoch {epoch:>3}/{self.cfg.epochs}  {who}"
        seen = self.best_seen(epoch)
        if seen is None:
            return line
        model, entry = seen
        key = "val_r2" if self.info["task"] == "regression" else "val_accuracy"
        shown = "".join(f"  {k} {entry[k]:.4f}" for k in dict.fromkeys((self.cfg.select, key)))
        return f"{line}  best so far: model {model.index} ({model.describe()}) epoch {entry['epoch']}{shown}"

    def best_seen(self, epoch):
        """(model, history entry) of the best validation score by --select in the epochs up
        to `epoch` (models ahead of the line have later ones); None before any validation."""
        select, best = self.cfg.select, None
        for m in self.models:
            for entry in m.history[:epoch]:
                score = entry_score(select, entry)
                if score is not None and (best is None or score > best[0]):
                    best = (score, m, entry)
        return best and best[1:]

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
            if progress.style(self.cfg, self.group.rank) == "bar":
                self.bar = True
                self.sched.spawn(self.monitor(), "monitor")
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
        self._print_held()          # rank 0: the last epoch line, when training ended short of it
        return self.clock() - t0 - sum(m.eval_s for m in self.models)

    def close(self):
        """Let go of the rows: a stream's reader thread and open file."""
        if getattr(self, "part", None) is not None:
            self.part.close()

    def take_over(self):
        """This rank is rank 0 now (the old one was lost): it prints the progress from here
        on, after the sweep lines the old one printed (those of the epochs settled here)."""
        if log.handlers:            # the command line's or the API's logging: rank 0's now
            progress.setup_logging(0, self.cfg.quiet)
        if len(self.models) > 1:
            self._sweep_lines(show=False)

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

    def _halving_record(self, model):
        """A model's place in the search, for its file (resume) and the metrics: the rungs it
        passed, the epoch halving stopped it at (None: it was not), and the verdicts so far."""
        return {"rung": model.rung, "halved": model.halved, "decisions": self.halvings}

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
                self.model_file(m, len(m.history)).save(self.model_path(m))
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

    def model_path(self, model):
        """Where a model's file goes: --save for a single run; in a sweep --save-dir/model-NNN.h5."""
        if len(self.models) == 1 and self.cfg.save:
            return self.cfg.save
        return sweep_file(self.cfg.save_dir, model.index)

    def _write_running(self):
        if self.cfg.metrics_json:
            # a job killed later still leaves the epochs it finished (the final write adds timing)
            atomic_write_json(self.cfg.metrics_json, self.document("running"), indent=1)

    def document(self, status):
        """Rank 0: the metrics document as far as the run has come (`status` running,
        complete or stopped); train() adds timing and memory at the end. Top level: the
        best model's config, history and test; a sweep adds every model under `sweep`."""
        info, part, best = self.info, self.part, self.best_model()
        val_rows = int(sum(part.val_sizes)) if part.holds("val") else 0
        doc = {"status": status, "ranks": self.group.size, "model": self.kind, "config": best.cfg.as_dict(),
               "data": {"path": info["path"], "train_samples": self.n_total,
                        "test_samples": int(sum(part.test_sizes)) if part.holds("test") else 0,
                        "validation_samples": val_rows,
                        "features": info["features"], "classes": len(info["classes"]) if info["classes"] else 0,
                        "partition_sizes": part.sizes},
               "history": best.history, "sync": best.sync_record()}
        if self.streaming:
            doc["data"]["stream"] = self.streaming.document(part)
        if best.final is not None:
            doc["test"] = best.final
        if best.validation is not None:
            doc["validation"] = best.validation
        doc["failures"] = self.elastic.document()
        if self.cfg.sweep:
            doc["search"] = sweep.document(self.cfg)
        if len(self.models) > 1:
            doc["sweep"] = [{"overrides": m.overrides, "history": m.history, "validation": m.validation,
                             "test": m.final, "timing": m.timing(), "sync": m.sync_record(),
                             "early_stopped": m.stopped_early,
                             "epochs": len(m.history), "diverged": m.diverged,
                             **({"rung": m.rung, "halved": m.halved} if self.halving else {}),
                             "started": m.started} for m in self.models]
            doc["best"], doc["best_on"] = best.index, self.best_on()
        if self.halving:
            doc["halving"] = {"factor": self.cfg.halving_factor, "rung_epochs": self.cfg.rung_epochs,
                              "rungs": self.rung_ends(), "decisions": self.halvings}
        return doc

    def series_of(self, model):
        """The model's checkpoint series (checkpoint.CheckpointSeries): the one of the file it
        resumed from, else one new to this run."""
        if model.index not in self.series:
            resumed = self.resumes[model.index][1].attrs.get("series") if self.resumes else None
            self.series[model.index] = resumed or new_series()
        return self.series[model.index]

    def model_file(self, model, epoch, stopped_at=None):
        """A model as a file; `stopped_at`: where within `epoch` + 1 the run stopped."""
        s, cfg = self.scaling, model.cfg
        return ModelFile(params=model.opt.weights.copy(), optimizer_state=model.opt.state,
                         classes=self.info["classes"], mean=s.mean, std=s.std,
                         y_mean=None if s.y_mean is None else np.array([s.y_mean]),
                         y_std=None if s.y_std is None else np.array([s.y_std]),
                         kind=self.kind, task=self.info["task"], head=model.net.head, sizes=model.net.sizes,
                         activation=model.net.activation, dtype=self.dtype.name, epoch=epoch, step=model.opt.t,
                         seed=cfg.seed, ranks=self.group.size, label_kind=self.info["label_kind"],
                         rng={"generator": "numpy PCG64", "epoch_order_seed": "[seed, rank, epoch]",
                              "seed": cfg.seed, "next_epoch": epoch, "chunk_rows": self.chunk_rows()},
                         features=self.info["features"], history=model.history,
                         # the block size used: the default follows the file's chunking
                         config=dict(cfg.as_dict(), block_rows=self.info["block_rows"] or cfg.block_rows),
                         data=self.info.get("identity"), stopped_at=stopped_at,
                         best_epoch=getattr(model, "best_epoch", None), early_stopped=model.stopped_early,
                         halving=self._halving_record(model) if self.halving else None,
                         cadence=model.sync_record()["choices"] or None,
                         series=self.series_of(model))


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


def make_directory(path, option):
    """Create an output directory (and its parents) as `mkdir -p` would."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot create the directory ({e.strerror})") from None
    if not os.path.isdir(path):
        raise UsageError(f"{option} {path}: not a directory")


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
    group = job.group
    if job.complete:
        if group.rank == 0:
            log.info(f"mpidml: {job.complete}")
        return None
    if group.rank == 0 and not cfg.quiet:
        info = job.info
        k = f", {len(info['classes'])} classes" if info["classes"] else ""
        what = (f"model {job.kind} ({job.models[0].net.size} parameters)" if len(job.models) == 1
                else f"a sweep of {len(job.models)} {job.kind} models")
        log.info(f"mpidml: {info['path']}: {job.n_total} training rows x {info['features']} features{k}; "
                 f"{group.size} ranks; {what}; "
                 f"sync {cfg.sync} every {cfg.sync_every}{' overlapped' if cfg.overlap else ''}")
    train_s = job.train(signals or StopSignals(()))
    group, models = job.group, job.models
    comm_s = group.comm_s + sum(m.group.comm_s for m in models)
    by_label = dict(group.comm_s_by_label)
    for m in models:
        for label, seconds in m.group.comm_s_by_label.items():
            by_label[label] = by_label.get(label, 0.0) + seconds
    compute_s = sum(m.compute_s for m in models)
    mine = {"rss": peak_rss_mb(), "compute_s": compute_s, "comm_s": comm_s, "comm_wait_s": job.sched.idle_s,
            "collective_s": by_label, "read_s": 0.0, "read_wait_s": sum(m.read_wait_s for m in models)}
    if job.part.streamed:
        mine["read_s"] = job.part.reader.read_s
        job.part.close(complete=not any(m.stopped_at for m in models))
    per_rank = job.elastic.retry(lambda: job.group.gather_json(mine, label="report"), "report")
    group = job.group
    for m in models:
        m.group.close()
    if tracer is not None:
        payloads = job.elastic.retry(lambda: job.group.gather_json(tracer.payload(), label="trace"), "trace")
        group = job.group
        if group.rank == 0:
            from ..files.trace import write
            write(cfg.trace, payloads)
    stopped = [m for m in models if m.stopped_at]
    if group.rank != 0:
        if stopped:
            raise Stopped("stopped", agreed=True)
        return None
    for m in models:
        if cfg.save_dir or (cfg.save and len(models) == 1):
            epoch = m.stopped_at["epoch"] if m.stopped_at else len(m.history)
            path = job.model_path(m)
            job.model_file(m, epoch, m.stopped_at).save(path)
            if cfg.keep_checkpoints and not m.stopped_at and len(models) == 1:
                CheckpointSeries(path, cfg.keep_checkpoints).add(epoch)
    best = job.best_model()
    if cfg.save and len(models) > 1:
        job.model_file(best, len(best.history)).save(cfg.save)
    doc = job.document("stopped" if stopped else "complete")
    samples = sum(m.samples for m in models)
    doc.update({
        "timing": {"wall_s": time.perf_counter() - t_start, "distribute_s": job.distribute_s,
                   "train_s": train_s, "evaluate_s": sum(m.eval_s for m in models), "compute_s": compute_s,
                   "comm_s": comm_s, "comm_wait_s": job.sched.idle_s,
                   "samples_per_s": samples / train_s if train_s > 0 else 0.0,
                   "per_rank": {k: [r[k] for r in per_rank]
                                for k in ("compute_s", "comm_s", "comm_wait_s", "collective_s", "read_s",
                                          "read_wait_s")}},
        "memory": {"peak_rss_mb": [r["rss"] for r in per_rank]},
    })
    leaderboard.finish(cfg, doc)        # --results, and a sweep's leaderboard
    if stopped:
        stop = stopped[0].stopped_at
        doc["stopped"] = {k: stop.get(k) for k in ("signal", "cause", "epoch", "step", "steps")}
        if cfg.metrics_json:
            atomic_write_json(cfg.metrics_json, doc, indent=1)
        raise Stopped(stopped_line(cfg, stop, len(models), sum(not m.started for m in models)), agreed=True)
    return doc


def stopped_line(cfg, stop, n_models=1, unstarted=0):
    """The stop's one line: where, what was kept; `unstarted`: a sweep's models that had not
    started (trainer.Model.run)."""
    where = (f"in epoch {stop['epoch'] + 1} after step {stop['step']} of {stop['steps']}" if stop["step"]
             else f"after epoch {stop['epoch']}")
    if n_models == 1:
        kept = (f"checkpoint {cfg.save}; continue with --resume {cfg.save}" if cfg.save
                else "no --save, so the progress is lost")
    else:
        kept = (f"every model's checkpoint in {cfg.save_dir}" if cfg.save_dir
                else "no --save-dir, so the progress is lost")
        if unstarted:
            kept += f" ({unstarted} of the {n_models} models not started yet)"
    if stop.get("cause"):           # the survivors of a lost rank stopped (elastic.py)
        return f"stopped at the start of epoch {stop['epoch'] + 1}: {stop['cause']}: {kept} (exit {Stopped.code})"
    return f"stopped by {stop['signal']} {where}: {kept} (exit {Stopped.code})"
