"""The subcommands besides train: evaluate, predict, data, info, plot, results."""
import logging
import os
import platform
import sys

import numpy as np

from .. import __version__
from ..data import distribute as data
from ..data import formats
from ..data.partition import balanced_sizes
from ..errors import UsageError
from ..files.outputs import check_output
from ..files.progress import quiet_stdout
from ..learn.evaluate import from_sums, partial_sums, predict
from ..runtime.comm import drive
from ..runtime.topology import gather_layout

log = logging.getLogger("mpidml")


def run(args, group, report):
    if args.command == "evaluate":
        return evaluate(args, group, report)
    if args.command == "predict":
        return predict_command(args, group)
    if args.command == "info":
        return _printing(lambda: info(group))
    # data, plot and results are single-process tools: rank 0 works, the others wait for its verdict
    if args.command == "data":
        from . import datatools
        work = (lambda: _printing(lambda: datatools.run(args))) if args.data_command == "inspect" else None
        return _collective(group, work or (lambda: datatools.run(args)))
    if args.command == "plot":
        from .plot import plot
        return _collective(group, lambda: plot(args.metrics, args.out))
    if args.command == "results":
        return _collective(group, lambda: _printing(lambda: results(args.metrics, args.out)))
    raise UsageError(f"unknown command {args.command}", agreed=True)


def results(metrics_path, out=None):
    """`results METRICS.json [-o CSV]`: a sweep's leaderboard, printed as training prints it;
    with `out`, its CSV too (--results)."""
    from ..learn.leaderboard import Leaderboard
    from .plot import load
    if out:
        check_output(out, "-o", (("metrics", metrics_path),))
    doc = load(metrics_path)
    if not doc.get("sweep"):
        raise UsageError(f"{metrics_path}: not a sweep's metrics (no sweep entries): a leaderboard ranks the models "
                         "of a --sweep")
    board = Leaderboard(doc)
    if out:
        board.write_csv(out)
    sys.stdout.write("".join(line + "\n" for line in board.lines()))
    return 0


def _printing(work):
    """Run a command whose product is what it prints (info, data inspect): a stdout that
    cannot take it (a full disk under `> out.txt`) is one line naming stdout, exit 2, not an
    internal error; a closed pipe (`| head`) stays the reader's choice."""
    try:
        return work()
    except BrokenPipeError:
        raise
    except OSError as e:
        if e.filename is not None:          # a file's error, not the output's
            raise
        quiet_stdout()
        raise UsageError(f"stdout: cannot write ({e.strerror or e})") from None


def _collective(group, work):
    """Rank 0 runs `work`; every rank learns its verdict (so errors end all ranks)."""
    err = None
    if group.rank == 0:
        try:
            work()
        except UsageError as e:
            err = e
    drive(group.agree(err, "command"))
    return 0


def _inputs(args):
    """The files evaluate and predict read, which their outputs must not overwrite."""
    return (("--model", args.model), ("--data", args.data))


def _load(path):
    from ..learn.checkpoint import ModelFile
    m = ModelFile.load(path)
    return m, m.net(), m.scaling()


# the rows evaluate and predict use by default: the test set, else all rows of the file
DEFAULT_ROWS = (("/test/X", "/test/y"), ("/X", "/y"), ("/train/X", "/train/y"))


def _names(f, args, labels):
    """The (x, y) datasets: --x-dataset/--y-dataset, else the first of DEFAULT_ROWS that
    the file has; y is None for predict, which needs no labels."""
    x, y = args.x_dataset, getattr(args, "y_dataset", None)
    if labels and y and not x:          # labels named alone: the rest of their frame, AnnData's X
        x = formats.default_features(f, args.data, y)
    if labels and bool(x) != bool(y):
        raise UsageError("--x-dataset and --y-dataset go together")
    if not x:
        x, y = next((pair for pair in DEFAULT_ROWS if pair[0] in f), DEFAULT_ROWS[1])
    return x, y if labels else None


def _describe(args, m, labels):
    """Rank 0: check the rows to use against the model; what every rank needs to read
    them (data.read_rows)."""
    with data.open_h5(args.data) as f:
        x, y = _names(f, args, labels)
        X, Y = data.check_xy(f, args.data, x, y) if labels else (data.check_x(f, args.data, x), None)
        if X.shape[1] != m.sizes[0]:
            raise UsageError(f"{args.data}: dataset {x} has {X.shape[1]} features, the model expects {m.sizes[0]}")
        info = {"path": args.data, "x": x, "y": y, "rows": int(X.shape[0]), "features": int(X.shape[1]),
                "task": m.task, "classes": m.classes, "label_kind": m.attrs.get("label_kind"), **data.storage(X)}
        if labels:
            found = data.scan_labels(Y, args.data, y, m.task, hint=f"model {args.model} is a classifier")
            if m.task != "regression":
                data.check_classes(found, data.class_array(info), args.data, y, f"model {args.model}")
            info["training_rows"] = _trained_on(m, args.data, x, y)
    return info


def _trained_on(m, path, x, y):
    """Whether rows x, y of `path` are the very datasets the model trained on (the data
    identity its file records: same shapes, dtypes and sampled rows), so that scores on them
    include its training rows. Files from before provenance record none: False."""
    from ..data.provenance import fingerprint
    saved = m.attrs.get("data")
    return isinstance(saved, dict) and saved.get("fingerprint") == fingerprint(path, x, y)


def _outputs(args):
    """The (option, path) pairs evaluate or predict writes."""
    if args.command == "predict":
        return (("--out", args.out),)
    return (("--metrics-json", args.metrics_json),) if args.metrics_json else ()


def _prepare(args, group, labels):
    """Rank 0 checks the outputs before any work; every rank loads the model; rank 0
    checks the rows; all learn the verdict and the rows: (model, net, scaling, info)."""
    err, loaded, info = None, (None, None, None), None
    try:
        if group.rank == 0:
            for option, path in _outputs(args):
                check_output(path, option, _inputs(args))
            if args.command == "predict":
                _out_format(args.out)
        loaded = _load(args.model)
        if group.rank == 0:
            info = _describe(args, loaded[0], labels)
    except UsageError as e:
        err = e
    drive(group.agree(err, "open"))
    return (*loaded, drive(group.bcast_json(info, label="open")))


def _slab(group, info, net, scaling, chunk_rows=None):
    """This rank's contiguous share of the rows, standardized (a rank may have none):
    (sizes of all shares, X, y); with `chunk_rows`, a generator of (X, y) pieces of at most
    that many rows, as many on every rank (each read is agreed on)."""
    sizes = balanced_sizes(info["rows"], group.size)
    lo = int(sizes[:group.rank].sum())
    if chunk_rows is None:
        X, y, err = data.read_rows(info, lo, lo + int(sizes[group.rank]), net.dtype)
        drive(group.agree(err, "read"))
        return sizes, scaling.apply(X), y
    return _pieces(group, info, net, scaling, lo, int(sizes[group.rank]), -(-int(sizes.max()) // chunk_rows))


def _pieces(group, info, net, scaling, lo, rows, count):
    """Generator: this rank's `rows` from file row `lo` in `count` pieces, each read (and
    the file checked unchanged since the first: another file moved over it meanwhile
    mixed two files' rows into one score) and agreed on by every rank."""
    step = -(-rows // max(count, 1))
    first = None
    for i in range(count):
        a, b = min(rows, i * step), min(rows, (i + 1) * step)
        X, y, err = data.read_rows(info, lo + a, lo + b, net.dtype)
        try:
            now = data.file_identity(info["path"])
            first = first or now
            if now != first:
                err = err or UsageError(f"{info['path']}: the file changed while it was being read; "
                                        "evaluate it once the writer is done")
        except UsageError as e:
            err = err or e
        drive(group.agree(err, "read"))
        yield scaling.apply(X), y


EVALUATE_CHUNK_MB = 64      # evaluate reads (and scores) a rank's rows this much at a time


def _rows_used(info):
    labels = f", labels {info['y']}" if info["y"] else ""
    return f"{info['rows']} rows of {info['path']}:{info['x']}{labels}"


def evaluate(args, group, report):
    """Test metrics of a saved model on /test of a file (or all its rows, or the named
    datasets): every rank scores a slab, one Allreduce of the partial sums gives the totals."""
    m, net, scaling, info = _prepare(args, group, labels=True)
    k = len(m.classes or [])
    chunk_rows = max(1, (EVALUATE_CHUNK_MB << 20) // (info["features"] * net.dtype.itemsize))
    sums = sum(partial_sums(net, m.params, X, y, m.task, k, scaling)
               for X, y in _slab(group, info, net, scaling, chunk_rows))
    drive(group.allreduce(sums, "evaluate"))
    res = from_sums(sums, m.task, k)
    if group.rank == 0:
        log.info(f"evaluate: {_rows_used(info)}")
        if info.get("training_rows"):
            log.warning(f"mpidml: warning: {info['path']}:{info['x']} is the data model {args.model} was trained on, "
                        "so these rows include its training rows: the metrics overstate how it does on new rows "
                        "(score rows it never saw, e.g. a /test group held out before training)")
        report({"model": m.kind, "model_file": args.model, "data": args.data, "dataset": info["x"],
                "labels": info["y"], "samples": info["rows"], "epoch": m.epoch, "test": res}, args.metrics_json)
    return 0


def predict_command(args, group):
    """Every rank predicts a contiguous slab of the rows; rank 0 gathers and writes them."""
    m, net, scaling, info = _prepare(args, group, labels=False)
    sizes, X, _ = _slab(group, info, net, scaling)
    labels, proba = predict(net, m.params, X, m.task, scaling)
    # one row per sample: [label or value, class probabilities...], gathered on rank 0
    from mpi4py import MPI
    block = np.ascontiguousarray(np.column_stack([labels.astype(np.float64)] + ([] if proba is None else [proba])))
    counts = sizes * block.shape[1]
    recv = spec = None
    if group.rank == 0:
        recv = np.empty((info["rows"], block.shape[1]), np.float64)
        spec = [recv, (counts, np.concatenate([[0], np.cumsum(counts)[:-1]])), MPI.DOUBLE]
    drive(group.collective(lambda: group.comm.Igatherv(block, spec, 0), "predict"))
    if group.rank == 0:
        _write_predictions(args, m, info, recv)
        log.info(f"predict: {_rows_used(info)} -> {args.out}")
    return 0


# predict --out: the format each extension names (anything else is refused, so that a
# typo or an unexpected name never gets a format the user did not ask for)
OUT_FORMATS = {".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".he5": "hdf5", ".csv": "csv"}


def _out_format(path):
    """'hdf5' or 'csv', by the extension of predict's --out."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in OUT_FORMATS:
        raise UsageError(f"--out {path}: predictions are written as HDF5 (.h5, .hdf5) or CSV (.csv); "
                         f"{ext or 'no extension'} is neither")
    return OUT_FORMATS[ext]


def _write_predictions(args, m, info, recv):
    """The gathered rows [label or value, class probabilities...] into --out: HDF5 datasets
    (labels, class_index, classes, proba; or values), or CSV with a header and a row per
    sample (label, proba_CLASS...; or value)."""
    from ..files.outputs import atomic_write
    classes = None if m.task == "regression" else data.class_array(info)
    if _out_format(args.out) == "csv":
        atomic_write(args.out, lambda tmp: _write_csv(tmp, recv, classes))
    else:
        atomic_write(args.out, lambda tmp: _write_hdf5(tmp, args, info, recv, classes))


def _write_hdf5(tmp, args, info, recv, classes):
    from ..files.outputs import create_h5
    with create_h5(tmp) as f:
        if classes is None:
            f["values"] = recv[:, 0]
        else:
            idx = recv[:, 0].astype(np.int64)
            f["labels"], f["class_index"], f["classes"] = classes[idx], idx, classes
            f["proba"] = recv[:, 1:].astype(np.float32)
        f.attrs["model"], f.attrs["data"], f.attrs["dataset"] = args.model, args.data, info["x"]


def _write_csv(tmp, recv, classes):
    """Numbers as the shortest text that reads back the same (probabilities at float32, as
    the HDF5 output holds them). No record of the model and data, which the HDF5 output
    keeps as attributes: a comment line would trip plain CSV readers."""
    import csv
    if classes is None:
        header, columns = ["value"], [recv[:, 0].astype(str)]
    else:
        names = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in classes.tolist()]
        labels = np.array(names, dtype=object)[recv[:, 0].astype(np.int64)]
        header = ["label"] + [f"proba_{n}" for n in names]
        columns = [labels] + list(recv[:, 1:].astype(np.float32).astype(str).T)
    with open(tmp, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        out.writerows(zip(*columns))


def info(group):
    """Versions, MPI library and whether it survives a lost rank, ranks, BLAS and its
    threads, hosts and cores (rank 0 prints)."""
    import h5py
    import mpi4py
    from mpi4py import MPI

    from mpidml.runtime.ft import fault_tolerance, library
    ft = fault_tolerance()
    lines = {
        "mpidml": __version__, "python": platform.python_version(), "numpy": np.__version__,
        "h5py": h5py.version.version, "hdf5": h5py.version.hdf5_version, "mpi4py": mpi4py.__version__,
        "mpi_library": library(),
        "mpi_standard": "%d.%d" % MPI.Get_version(),
        "fault_tolerance": f"{'yes' if ft.available else 'no'}: {ft.why}", "ranks": group.size,
        "processor": platform.processor() or platform.machine(),
    }
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}), "
                f"{p.get('num_threads')} threads" for p in threadpool_info() if p.get("user_api") == "blas"]
        lines["blas"] = "; ".join(blas) or "unknown"
    except ImportError:
        lines["blas"] = "unknown (threadpoolctl not installed)"
    threads = drive(group.gather_json(_blas_threads(), label="info"))
    layout = drive(gather_layout(group))
    if group.rank == 0:
        lines["blas_threads_per_rank"] = threads
        lines["hosts"] = len(layout.hosts)
        for i, host in enumerate(layout.hosts):
            lines[f"host {i}"] = host.describe()
        from ..data.stream import STREAM_SHARE, mb, rank_memory
        limit, said = rank_memory(len(layout.host_of(0).ranks))
        lines["memory_per_rank"] = (f"{mb(limit)} ({said}); a run streams its rows from the file where they "
                                    f"would take more than {STREAM_SHARE:g} of it (--memory-limit, --stream)")
        polling = sum(not h.oversubscribed for h in layout.hosts)
        lines["collective_wait"] = (f"--wait auto: ranks poll MPI on {polling} of {len(layout.hosts)} hosts "
                                    "(where each has a core), nap elsewhere")
        warning = layout.warning()
        if warning:
            lines["warning"] = warning
        width = max(len(k) for k in lines)
        for k, v in lines.items():
            sys.stdout.write(f"{k:<{width}}  {v}\n")
    return 0


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
        return max((p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"), default=None)
    except ImportError:
        return None

