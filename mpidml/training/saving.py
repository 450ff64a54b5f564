"""The job's model files: where each model's file goes, what it holds, the epoch
checkpoints and their series, and (before any work) the check that no output of the run
overwrites an input or another output."""
import os

import numpy as np

from ..errors import UsageError
from ..files.outputs import check_output
from ..learn.checkpoint import CheckpointSeries, ModelFile, new_series
from . import sweep


def check_outputs(cfg, resumed):
    """Before any work: no output may overwrite an input (--data, --config, every file
    --resume names: `resumed`, see resume.resume_files) or another output. The one
    exception: a model may rewrite the file it resumes from (a resumed run continues its own
    checkpoint): --save the --resume file of a single run, --save-dir/model-NNN.h5 model
    NNN's. The numbered checkpoints' longer names must fit too. --save-dir is created (as
    mkdir -p) once everything else passed, then each model's file in it is checked."""
    inputs = [("--data", cfg.data), ("--config", cfg.config_file)]
    resumed = [("--resume", path) for path in resumed]
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


def make_directory(path, option):
    """Create an output directory (and its parents) as `mkdir -p` would."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot create the directory ({e.strerror})") from None
    if not os.path.isdir(path):
        raise UsageError(f"{option} {path}: not a directory")


def sweep_file(directory, index):
    """Model `index`'s file in a sweep's --save-dir (and so in the --resume directory)."""
    return os.path.join(directory, f"model-{index:03d}.h5")


class ModelOutputs:
    """The job's models as files (rank 0 writes them): each model's path, its file, its
    checkpoint series. It reads what a file records (the data, the scaling, the search)
    from the job as it is when the file is written."""

    def __init__(self, job):
        self.job = job
        self.series = {}            # model index: its checkpoint series, see series_of

    def agree_series(self):
        """Generator: every rank knows each checkpoint series, so that a new rank 0 (the
        old one lost) continues it."""
        job = self.job
        ids = [self.series_of(m) for m in job.models] if job.group.rank == 0 else None
        self.series = dict(enumerate((yield from job.group.bcast_json(ids, label="series"))))

    def series_of(self, model):
        """The model's checkpoint series (checkpoint.CheckpointSeries): the one of the file it
        resumed from, else one new to this run."""
        if model.index not in self.series:
            resume = self.job.resumes.of(model)
            resumed = resume.attrs.get("series") if resume is not None else None
            self.series[model.index] = resumed or new_series()
        return self.series[model.index]

    def path(self, model):
        """Where a model's file goes: --save for a single run; in a sweep --save-dir/model-NNN.h5."""
        cfg = self.job.cfg
        if len(self.job.models) == 1 and cfg.save:
            return cfg.save
        return sweep_file(cfg.save_dir, model.index)

    def save(self, model, epoch, stopped_at=None):
        """Rank 0: write the model's file at its path (see file); returns the path."""
        path = self.path(model)
        self.file(model, epoch, stopped_at).save(path)
        return path

    def checkpoint(self, model, epoch):
        """Rank 0, after the model's epoch `epoch`: its file, every --checkpoint-every epochs
        short of the last (the last one is saved when training ends), and with
        --keep-checkpoints a numbered copy."""
        job, cfg = self.job, model.cfg
        every = cfg.checkpoint_every
        if every and epoch % every == 0 and epoch < cfg.epochs and (cfg.save or cfg.save_dir):
            t0 = job.clock()
            path = self.save(model, epoch)
            if cfg.keep_checkpoints and len(job.models) == 1:
                CheckpointSeries(path, cfg.keep_checkpoints).add(epoch)
            if job.tracer:
                job.tracer.span("io", "checkpoint", t0, job.clock())

    def save_final(self):
        """Rank 0, when training ended: every model's file where it stopped (a sweep's in
        --save-dir), and a sweep's best model (Job.best_model) as --save."""
        cfg, models = self.job.cfg, self.job.models
        for m in models:
            if cfg.save_dir or (cfg.save and len(models) == 1):
                epoch = m.stopped_at["epoch"] if m.stopped_at else len(m.history)
                path = self.save(m, epoch, m.stopped_at)
                if cfg.keep_checkpoints and not m.stopped_at and len(models) == 1:
                    CheckpointSeries(path, cfg.keep_checkpoints).add(epoch)
        if cfg.save and len(models) > 1:
            best = self.job.best_model()
            self.file(best, len(best.history)).save(cfg.save)

    def file(self, model, epoch, stopped_at=None):
        """A model as a file; `stopped_at`: where within `epoch` + 1 the run stopped."""
        job, cfg = self.job, model.cfg
        s, info = job.scaling, job.info
        return ModelFile(params=model.opt.weights.copy(), optimizer_state=model.opt.state,
                         classes=info["classes"], mean=s.mean, std=s.std,
                         y_mean=None if s.y_mean is None else np.array([s.y_mean]),
                         y_std=None if s.y_std is None else np.array([s.y_std]),
                         kind=job.kind, task=info["task"], head=model.net.head, sizes=model.net.sizes,
                         activation=model.net.activation, dtype=job.dtype.name, epoch=epoch, step=model.opt.t,
                         seed=cfg.seed, ranks=job.group.size, label_kind=info["label_kind"],
                         rng={"generator": "numpy PCG64", "epoch_order_seed": "[seed, rank, epoch]",
                              "seed": cfg.seed, "next_epoch": epoch, "chunk_rows": job.chunk_rows()},
                         features=info["features"], history=model.history,
                         # the block size used: the default follows the file's chunking
                         config=dict(cfg.as_dict(), block_rows=info["block_rows"] or cfg.block_rows),
                         data=info.get("identity"), stopped_at=stopped_at,
                         best_epoch=getattr(model, "best_epoch", None), early_stopped=model.stopped_early,
                         halving=self._halving_record(model) if job.halving else None,
                         cadence=model.sync_record()["choices"] or None,
                         series=self.series_of(model))

    def _halving_record(self, model):
        """A model's place in the search, for its file (resume): the rungs it passed, the
        epoch halving stopped it at (None: it was not), and the verdicts so far."""
        return {"rung": model.rung, "halved": model.halved, "decisions": self.job.halvings}
