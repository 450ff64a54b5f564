"""--resume: which model files a run goes on from, their checks against this run (the
grid, the data, the layers, the optimizer, the ranks), and where each model goes on: its
weights, its epoch and step, and within an epoch where it stopped."""
import dataclasses
import logging
import os

import numpy as np

from ..data.provenance import MODEL_OPTIONS, DataIdentity, adopt_model_options, check_data
from ..errors import UsageError
from ..learn.cadence import AUTO, Cadence
from ..learn.checkpoint import ModelFile
from . import sweep
from .saving import sweep_file

log = logging.getLogger("mpidml")


def resume_files(cfg):
    """The model files --resume names: the file, or in a sweep one per model of the grid in
    the directory (as --save-dir wrote them)."""
    if not cfg.resume:
        return []
    if not cfg.sweep:
        return [cfg.resume]
    return [sweep_file(cfg.resume, i) for i in range(len(sweep.points(cfg)))]


class Resumes:
    """The files a job resumes from, loaded on rank 0 (`files`: (path, ModelFile) per model,
    empty when not resuming), and what each model takes from its file."""

    def __init__(self, job):
        self.job = job
        self.files = []

    def load(self):
        """Rank 0, before the data is described (the split must be the saved run's): load
        the files and adopt the model options they decide into the job's config; returns
        those options, for every rank to adopt. A sweep's swept options are its grid's; its
        models share the split and the rest."""
        cfg = self.job.cfg
        self.files = [(path, ModelFile.load(path)) for path in self.paths()]
        path, resume = self.files[0]
        if cfg.sweep:
            swept = {key for key, _ in cfg.sweep}
            adopted = adopt_model_options(cfg, path, resume.model_options(),
                                          [k for k in MODEL_OPTIONS if k not in swept])
            self._check_grid()
        else:
            adopted = adopt_model_options(cfg, cfg.resume, resume.model_options())
        self._warn_validation_moves(resume)
        return adopted

    def paths(self):
        """The files --resume names: the model file, or in a sweep one per model of the grid
        in the directory (as --save-dir wrote them)."""
        cfg = self.job.cfg
        if cfg.sweep and not os.path.isdir(cfg.resume):
            raise UsageError(f"--resume {cfg.resume}: a sweep resumes from the directory its --save-dir "
                             "wrote, not a file")
        paths = resume_files(cfg)
        missing = [p for p in paths if not os.path.exists(p)]
        if cfg.sweep and missing:
            held = len(paths) - len(missing)
            raise UsageError(f"--resume {cfg.resume}: the sweep has {len(paths)} models, the directory holds "
                             f"{held} (no {os.path.basename(missing[0])}); resume with the --sweep, --trials and "
                             "--sweep-seed that wrote it")
        return paths

    def first(self):
        """Rank 0: the first resumed file (the one a single run resumes), or None."""
        return self.files[0][1] if self.files else None

    def of(self, model):
        """Rank 0: the file `model` resumes from, or None."""
        return self.files[model.index][1] if self.files else None

    def describe(self, info, adopted):
        """Rank 0: `info` (what every rank learns) with what the files decide: the options
        they adopted, the architecture, the epochs trained, whether there is anything left
        to train, the streamed chunks and the scaling. Every file must be of this data."""
        resume = self.first()
        for path, m in self.files:       # the architecture comes from the file
            if "identity" in info:
                check_data(path, m.attrs.get("data"), DataIdentity(**info["identity"]))
        info["adopted"] = adopted
        info["model"] = {"kind": resume.kind, "hidden": [int(h) for h in resume.sizes[1:-1]],
                         "activation": resume.activation,
                         "epochs": int(resume.attrs.get("config", {}).get("epochs", 0))}
        info["complete"] = self._already_complete(self.job.cfg.epochs or info["model"]["epochs"])
        info["stream_chunk_rows"] = (resume.attrs.get("rng") or {}).get("chunk_rows")
        # the first layer was trained on features scaled this way: keep it
        info["scaling"] = {k: None if v is None else np.ravel(v).tolist() for k, v in
                           (("mean", resume.mean), ("std", resume.std),
                            ("y_mean", resume.y_mean), ("y_std", resume.y_std))}
        return info

    def restore(self, model):
        """Rank 0: `model`'s weights (or its optimizer's whole state) from its file, and what
        every rank needs to go on where it stopped (see go_on); (None, UsageError) when
        the file does not fit the model."""
        path, m = self.files[model.index]
        err = _misfit(path, m, model)
        if err is not None:
            return None, err
        opt = model.opt
        if m.optimizer_state is not None and m.optimizer_state.size == opt.state.size:
            opt.state[...] = m.optimizer_state
        else:
            opt.weights[...] = m.params
        return {"epoch": int(m.epoch), "step": int(m.attrs.get("step", 0)),
                "history": m.attrs.get("history", []),
                "stopped_at": self._mid_epoch(path, m, model),
                "early_stopped": m.attrs.get("early_stopped"),
                "halving": m.attrs.get("halving") or {},
                "cadence": m.attrs.get("cadence")}, None

    def go_on(self, model, meta):
        """Every rank: `model` goes on where its file stopped (`meta`, rank 0's restore)."""
        model.start_epoch, model.opt.t, model.history = meta["epoch"], meta["step"], meta["history"]
        model.resumed_at = model.start_epoch
        if meta["stopped_at"]:
            model.start_step = meta["stopped_at"]["step"]
            model.start_loss = tuple(meta["stopped_at"]["loss"][self.job.group.rank])
        model.stopped_early = meta["early_stopped"]
        if meta["cadence"] and model.cfg.sync_every == AUTO:       # --resume keeps auto's choice
            model.cadences = [Cadence.from_dict(c) for c in meta["cadence"]]
        model.rung, model.halved = meta["halving"].get("rung", 0), meta["halving"].get("halved")

    def _check_grid(self):
        """Rank 0: each resumed file of a sweep must be its grid point: the same swept values
        and model options. Hidden layers are an mlp's alone: any other model has none,
        whatever --hidden says."""
        cfg = self.job.cfg
        for (path, m), overrides in zip(self.files, sweep.points(cfg)):
            saved, ours = m.model_options(), dataclasses.replace(cfg, **overrides)
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
        job = self.job
        saved = resume.attrs.get("ranks")
        if job.cfg.validation_fraction and saved and saved != job.group.size and job.source is None:
            log.warning(f"mpidml: warning: {job.cfg.resume} was trained at {saved} ranks, this run has "
                        f"{job.group.size}: its validation rows are drawn anew from each rank's rows, so some "
                        "were training rows; validation scores and early stopping lean optimistic")

    def _already_complete(self, epochs):
        """Rank 0: the line to print when every resumed file has trained all `epochs` already
        (or stopped early)."""
        cfg = self.job.cfg
        done = [int(m.epoch) for _, m in self.files if not m.attrs.get("early_stopped")]
        if any(e < epochs for e in done):
            return None
        asked = f"--epochs {cfg.epochs}" if cfg.epochs else "its --epochs"
        what = f"{max(done)} epochs" if done else "stopped early"
        if cfg.sweep:
            what = f"{len(self.files)} models, {what}"
        return (f"{cfg.resume}: already complete ({what}, {asked}); nothing to train "
                "(ask for more with a larger --epochs)")

    def _mid_epoch(self, path, m, model):
        """Rank 0: where in its epoch the resumed file stopped, when this run can continue from
        there: the same ranks, batch size and partitions give the same minibatches. Otherwise
        the epoch starts over from the saved (global) weights."""
        job = self.job
        at = m.attrs.get("stopped_at")
        if not at or not at["step"]:        # stopped at the epoch's start: it starts as any epoch does
            return None
        now = {"ranks": job.group.size, "batch_size": model.cfg.batch_size, "partition": job.partitioning(),
               "chunk_rows": job.chunk_rows()}
        if all(at.get(k) == v for k, v in now.items()):
            return at
        log.warning(f"mpidml: warning: {path} stopped within epoch {int(m.epoch) + 1} at "
                    f"{at['ranks']} ranks, batch size {at['batch_size']}; with other ranks, batch size, "
                    "partitions or streamed chunks that epoch starts over")
        return None


def _misfit(path, m, model):
    """Rank 0: the UsageError to agree on when the file `m` (at `path`) does not fit `model`
    (other layers, or another optimizer's state), else None."""
    sizes = [int(s) for s in m.sizes]
    if sizes != model.net.sizes or m.head != model.net.head:
        return UsageError(f"{path}: model layers {sizes} ({m.head}) do not fit this data "
                          f"({model.net.sizes}, {model.net.head})")
    saved_optimizer = m.attrs.get("config", {}).get("optimizer")
    if m.optimizer_state is not None and saved_optimizer not in (None, model.cfg.optimizer):
        return UsageError(f"{path}: saved with --optimizer {saved_optimizer}, "
                          f"this run uses {model.cfg.optimizer}")
    return None
