"""One training run on the ranks of a communicator, from a checked TrainConfig: what the
command line's `train`, `mpidml.train` and the estimators share (the group and its
communicators, the stop signals, the trace, job.train, the summary and metrics file)."""
import logging

log = logging.getLogger("mpidml")


def run(cfg, comm, source=None, task=None, everywhere=False, summary=True):
    """Train on every rank of `comm` (an mpi4py communicator); returns (the metrics
    document, the job.Job). The document is None when a resumed run was complete
    already, and off rank 0 unless `everywhere` (one broadcast). `source`, `task`: see
    job.Job. `summary`: rank 0 logs the test line and writes cfg.metrics_json."""
    import numpy as np

    from ..errors import MpidmlError
    from ..runtime.comm import Group, drive
    from ..runtime.stop import parse_signals, watching
    from .job import Job, train
    group = Group(comm, cfg.stall_timeout)
    job = None
    try:                        # from here on the communicators are freed whatever happens
        tracer = None
        if cfg.trace:           # the trace's clocks start together
            drive(group.collective(lambda: group.comm.Ibarrier(), "trace"), "trace")
            from ..files.trace import Tracer
            tracer = group.tracer = Tracer(comm.rank)
        job = Job(cfg, group, tracer, source, task)
        # a diverging run ends with DivergedError (exit 3), not a page of warnings
        with np.errstate(all="ignore"), watching(parse_signals(cfg.checkpoint_signal)) as signals:
            doc = train(cfg, group, tracer, signals, job)
            if everywhere:
                doc = job.elastic.retry(lambda: job.group.bcast_json(doc, label="document"), "document")
            if job.group.rank == 0 and doc is not None and summary:     # rank 0 may be another now
                report(doc, cfg.metrics_json, cfg.quiet)
            job.elastic.finish()        # rank 0 lived to write them all, or exit 75
    except MpidmlError as e:
        e.reporter = (job.group if job else group).rank == 0    # says it for all (cli.main)
        raise
    finally:
        for model in job.models if job else ():
            model.group.free()
        if job is not None and job.group is not group:
            job.group.free()
        group.free()         # before MPI finalizes, also when every rank ends on an error
    return doc, job


def report(doc, metrics_json=None, quiet=False):
    """Rank 0: the final summary line(s) and the metrics file."""
    if metrics_json:
        from ..files.outputs import atomic_write_json
        atomic_write_json(metrics_json, doc, indent=1)
    t = doc.get("test")
    if not t or quiet:              # quiet: nothing but warnings and errors
        return
    if "accuracy" in t:
        log.info(f"test: accuracy {t['accuracy']:.4f}  macro_f1 {t['macro_f1']:.4f}  loss {t['loss']:.4f}")
    else:
        log.info(f"test: r2 {t['r2']:.4f}  rmse {t['rmse']:.4g}  mae {t['mae']:.4g}")
    timing = doc.get("timing")
    if timing:
        log.info(f"time: {timing['wall_s']:.2f} s wall, train {timing['train_s']:.2f} s "
                 f"({timing['samples_per_s'] / 1e3:.1f}k samples/s), distribute {timing['distribute_s']:.2f} s, "
                 f"waiting {timing['comm_wait_s']:.2f} s")
