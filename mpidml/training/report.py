"""What a job tells its user, from rank 0: the opening line, the epoch lines (a sweep's
once each epoch is settled), the live bar, --sync-every auto's choices, the metrics
document (rewritten as epochs finish, completed with timing and memory at the end) and
the line a stop ends with."""
import logging
import resource
import sys
import time

from ..errors import Stopped
from ..files import progress
from ..files.outputs import atomic_write_json
from ..learn import leaderboard
from ..learn.leaderboard import entry_score
from ..runtime.scheduler import Sleep
from . import sweep

log = logging.getLogger("mpidml")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Reporter:
    """The job's lines and metrics document. `generation`: how many of a sweep's models
    train at once (the job's lanes), which decides when a sweep's epoch line is settled."""

    def __init__(self, job, generation):
        self.job, self.generation = job, generation
        self.bar, self.bar_width = False, 0
        self.line_at = None         # when rank 0 printed its last epoch line
        self.held = None            # the last epoch line not printed (see _show)
        self.printed = 0            # a sweep's epoch lines settled so far (see sweep_lines)

    # -- lines ---------------------------------------------------------------------------
    def opening(self):
        """Rank 0: the line a run starts with (the data, the ranks, the model, the sync);
        or, when the resumed files trained every epoch already, the line that says so."""
        job, cfg = self.job, self.job.cfg
        if job.group.rank != 0:
            return
        if job.complete:
            log.info(f"mpidml: {job.complete}")
            return
        if cfg.quiet:
            return
        info = job.info
        k = f", {len(info['classes'])} classes" if info["classes"] else ""
        what = (f"model {job.kind} ({job.models[0].net.size} parameters)" if len(job.models) == 1
                else f"a sweep of {len(job.models)} {job.kind} models")
        log.info(f"mpidml: {info['path']}: {job.n_total} training rows x {info['features']} features{k}; "
                 f"{job.group.size} ranks; {what}; "
                 f"sync {cfg.sync} every {cfg.sync_every}{' overlapped' if cfg.overlap else ''}")

    def epoch_done(self, model, entry):
        """Rank 0: a model finished an epoch: its line, and the metrics rewritten. In a sweep
        the line and the metrics come when the epoch is settled (sweep_lines): rewriting
        every model's metrics after every model's epoch took time in the square of the
        models."""
        if len(self.job.models) == 1:
            self._progress_line(entry, model.cfg.epochs)
            if entry["epoch"] < model.cfg.epochs:
                self._write_running()
        else:
            self.sweep_lines()

    def cadence_chosen(self, model, cadence):
        """--sync-every auto chose (every rank at once): rank 0 prints it, once per choice."""
        job = self.job
        if job.group.rank == 0 and not job.cfg.quiet:
            which = f"model {model.index}: " if len(job.models) > 1 else ""
            log.info(f"mpidml: --sync-every auto: {which}{cadence.describe()}")

    def model_done(self, model):
        if self.job.group.rank == 0 and len(self.job.models) > 1:
            self.sweep_lines()

    def take_over(self):
        """This rank is rank 0 now (the old one was lost): it prints the progress from here
        on, after the sweep lines the old one printed (those of the epochs settled here)."""
        if log.handlers:            # the command line's or the API's logging: rank 0's now
            progress.setup_logging(0, self.job.cfg.quiet)
        if len(self.job.models) > 1:
            self.sweep_lines(show=False)

    def _show(self, line, n, total):
        """Rank 0: epoch line `n` of `total`: every one up to 10 or with --verbose; beyond, the
        first, the last and at most one a second (tiny data made 75 lines in a few seconds;
        the metrics file keeps every epoch). A line held back is printed when training ends
        short of the last (early stopping, a stop signal: see print_held), so that the last
        epoch trained shows."""
        cfg = self.job.cfg
        if cfg.quiet:
            return
        now = self.job.clock()
        self.held = line
        if (cfg.verbose or total <= 10 or n == total or self.line_at is None
                or now - self.line_at >= progress.LINE_S):
            self.line_at = now
            self.print_held()

    def print_held(self):
        """Rank 0: the epoch line held back, if any (see _show)."""
        if self.held is not None:
            self.clear_bar()
            log.info(self.held)
            self.held = None

    def _progress_line(self, entry, epochs):
        metric = "".join(f"  {k} {entry[k]:.4f}" for k in ("test_loss", "test_accuracy", "test_r2", "val_loss",
                                                            "val_accuracy", "val_r2") if k in entry)
        wall = entry["wall_s"]
        share = entry["comm_wait_s"] / wall if wall > 0 else 0.0
        self._show(f"epoch {entry['epoch']:>3}/{epochs}  train_loss {entry['train_loss']:.4f}{metric}"
                   f"  {entry['samples_per_s'] / 1e3:8.1f}k samples/s  wait {share:4.0%}", entry["epoch"], epochs)

    def sweep_lines(self, show=True):
        """Rank 0: the sweep's epoch lines that are settled, then the metrics. Its models
        train in generations (see Job._lane): the line for epoch E of a generation is
        settled once each of its models has trained that epoch or finished, and printed
        when some model trained it in this run. `show` False: counted, not printed (a new
        rank 0: the lost one printed them)."""
        everyone, epochs, size = self.job.models, self.job.cfg.epochs, self.generation
        total, settled = -(-len(everyone) // size) * epochs, self.printed
        while self.printed < total:
            generation, done = divmod(self.printed, epochs)
            epoch = done + 1
            models = everyone[generation * size:(generation + 1) * size]
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
        job = self.job
        everyone = len(job.models)
        who = (f"{training} of {everyone} models training" if len(models) == everyone else
               f"models {models[0].index}-{models[-1].index}: {training} training, "
               f"{sum(m.started for m in job.models)} of {everyone} started")
        line = f"epoch {epoch:>3}/{job.cfg.epochs}  {who}"
        seen = self.best_seen(epoch)
        if seen is None:
            return line
        model, entry = seen
        key = "val_r2" if job.info["task"] == "regression" else "val_accuracy"
        shown = "".join(f"  {k} {entry[k]:.4f}" for k in dict.fromkeys((job.cfg.select, key)))
        return f"{line}  best so far: model {model.index} ({model.describe()}) epoch {entry['epoch']}{shown}"

    def best_seen(self, epoch):
        """(model, history entry) of the best validation score by --select in the epochs up
        to `epoch` (models ahead of the line have later ones); None before any validation."""
        select, best = self.job.cfg.select, None
        for m in self.job.models:
            for entry in m.history[:epoch]:
                score = entry_score(select, entry)
                if score is not None and (best is None or score > best[0]):
                    best = (score, m, entry)
        return best and best[1:]

    # -- the bar -------------------------------------------------------------------------
    def start_bar(self, sched):
        """Rank 0, where progress shows as a bar (--progress-bar, or stdout a terminal): its
        task on `sched`."""
        if progress.style(self.job.cfg, self.job.group.rank) == "bar":
            self.bar = True
            sched.spawn(self._monitor(), "monitor")

    def _monitor(self):
        """Task: a live bar within the epoch, redrawn every 0.2 s (rank 0), until every model
        has finished: how far, samples/s, the time left in the epoch and the running loss."""
        job = self.job
        epoch, start, since, width = None, job.clock(), 0.0, 0
        while not all(m.finished or m.paused for m in job.models):
            yield Sleep(0.2)
            model = next((m for m in job.models if not m.finished), None)
            if model is None or not model.step_total:
                continue
            fraction = model.step_index / model.step_total
            if model.epoch != epoch:
                epoch, start, since = model.epoch, job.clock(), fraction
            loss_sum, count = model.running
            line = progress.epoch_bar(epoch + 1, fraction, job.clock() - start, job.n_total,
                                      loss_sum / count if count else None, since)
            self.bar_width = width = max(width, len(line))
            self.bar = progress.redraw(sys.stdout, f"\r{line:<{width}}")
            if not self.bar:
                return
        self.clear_bar()

    def clear_bar(self):
        if self.bar:
            self.bar = progress.redraw(sys.stdout, "\r" + " " * self.bar_width + "\r")

    # -- the metrics document ------------------------------------------------------------
    def _write_running(self):
        if self.job.cfg.metrics_json:
            # a job killed later still leaves the epochs it finished (the final write adds timing)
            atomic_write_json(self.job.cfg.metrics_json, self.document("running"), indent=1)

    def document(self, status):
        """Rank 0: the metrics document as far as the run has come (`status` running,
        complete or stopped); final adds timing and memory at the end. Top level: the
        best model's config, history and test; a sweep adds every model under `sweep`."""
        job = self.job
        info, part, best = job.info, job.part, job.best_model()
        val_rows = int(sum(part.val_sizes)) if part.holds("val") else 0
        doc = {"status": status, "ranks": job.group.size, "model": job.kind, "config": best.cfg.as_dict(),
               "data": {"path": info["path"], "train_samples": job.n_total,
                        "test_samples": int(sum(part.test_sizes)) if part.holds("test") else 0,
                        "validation_samples": val_rows,
                        "features": info["features"], "classes": len(info["classes"]) if info["classes"] else 0,
                        "partition_sizes": part.sizes},
               "history": best.history, "sync": best.sync_record()}
        if job.streaming:
            doc["data"]["stream"] = job.streaming.document(part)
        if best.final is not None:
            doc["test"] = best.final
        if best.validation is not None:
            doc["validation"] = best.validation
        doc["failures"] = job.elastic.document()
        if job.cfg.sweep:
            doc["search"] = sweep.document(job.cfg)
        if len(job.models) > 1:
            doc["sweep"] = [{"overrides": m.overrides, "history": m.history, "validation": m.validation,
                             "test": m.final, "timing": m.timing(), "sync": m.sync_record(),
                             "early_stopped": m.stopped_early,
                             "epochs": len(m.history), "diverged": m.diverged,
                             **({"rung": m.rung, "halved": m.halved} if job.halving else {}),
                             "started": m.started} for m in job.models]
            doc["best"], doc["best_on"] = best.index, job.best_on()
        if job.halving:
            doc["halving"] = {"factor": job.cfg.halving_factor, "rung_epochs": job.cfg.rung_epochs,
                              "rungs": job.rung_ends(), "decisions": job.halvings}
        return doc

    def costs(self):
        """Every rank, when training ended: this rank's times and peak memory, for the
        metrics' per-rank timing (rank 0 gathers them) and, rank 0's, its totals."""
        job = self.job
        group, models = job.group, job.models
        comm_s = group.comm_s + sum(m.group.comm_s for m in models)
        by_label = dict(group.comm_s_by_label)
        for m in models:
            for label, seconds in m.group.comm_s_by_label.items():
                by_label[label] = by_label.get(label, 0.0) + seconds
        mine = {"rss": peak_rss_mb(), "compute_s": sum(m.compute_s for m in models), "comm_s": comm_s,
                "comm_wait_s": job.sched.idle_s, "collective_s": by_label, "read_s": 0.0,
                "read_wait_s": sum(m.read_wait_s for m in models)}
        if job.part.streamed:
            mine["read_s"] = job.part.reader.read_s
        return mine

    def final(self, stopped, mine, per_rank, t_start, train_s):
        """Rank 0: the metrics document at the end (stopped or complete), with timing (rank 0's
        `mine`, every rank's `per_rank`: see costs) and memory; --results and a sweep's
        leaderboard written from it."""
        job, models = self.job, self.job.models
        doc = self.document("stopped" if stopped else "complete")
        samples = sum(m.samples for m in models)
        doc.update({
            "timing": {"wall_s": time.perf_counter() - t_start, "distribute_s": job.distribute_s,
                       "train_s": train_s, "evaluate_s": sum(m.eval_s for m in models),
                       "compute_s": mine["compute_s"], "comm_s": mine["comm_s"], "comm_wait_s": mine["comm_wait_s"],
                       "samples_per_s": samples / train_s if train_s > 0 else 0.0,
                       "per_rank": {k: [r[k] for r in per_rank]
                                    for k in ("compute_s", "comm_s", "comm_wait_s", "collective_s", "read_s",
                                              "read_wait_s")}},
            "memory": {"peak_rss_mb": [r["rss"] for r in per_rank]},
        })
        leaderboard.finish(job.cfg, doc)        # --results, and a sweep's leaderboard
        return doc

    def stopped(self, doc, stopped):
        """Rank 0, after a stop: where the first of the `stopped` models stopped, in the
        metrics document (written) and in the one line returned to end with."""
        cfg, models = self.job.cfg, self.job.models
        stop = stopped[0].stopped_at
        doc["stopped"] = {k: stop.get(k) for k in ("signal", "cause", "epoch", "step", "steps")}
        if cfg.metrics_json:
            atomic_write_json(cfg.metrics_json, doc, indent=1)
        return stopped_line(cfg, stop, len(models), sum(not m.started for m in models))


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
