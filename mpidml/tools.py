"""The subcommands besides train: evaluate, predict, data, info, plot."""
import logging
import platform
import sys

import numpy as np

from . import __version__
from .checkpoint import check_output
from .comm import drive
from .data import as_labels, class_array, encode_labels, nonfinite_error, open_h5
from .errors import UsageError
from .evaluate import Scaling, predict, score
from .topology import gather_layout

log = logging.getLogger("mpidml")


def run(args, group, report):
    if args.command == "evaluate":
        return _collective(group, lambda: evaluate(args, report))
    if args.command == "predict":
        return predict_command(args, group)
    if args.command == "info":
        return info(group)
    # data and plot are single-process tools: rank 0 works, the others wait for its verdict
    if args.command == "data":
        from . import datatools
        return _collective(group, lambda: datatools.run(args))
    if args.command == "plot":
        from .plot import plot
        return _collective(group, lambda: plot(args.metrics, args.out))
    raise UsageError(f"unknown command {args.command}", agreed=True)


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
    from .checkpoint import ModelFile
    m = ModelFile.load(path)
    return m, m.net(), Scaling.from_arrays(m.mean, m.std, m.y_mean, m.y_std)


def _label_info(m):
    """What data.class_array and data.encode_labels need to know of a saved model."""
    return {"task": m.task, "classes": m.classes, "label_kind": m.attrs.get("label_kind")}


def _features(m, f, path, name):
    if name not in f:
        raise UsageError(f"{path}: no dataset {name}")
    X = f[name]
    if X.ndim != 2 or X.dtype.kind not in "fiu":
        raise UsageError(f"{path}: dataset {name} must be a 2-D numeric array, has shape {X.shape} {X.dtype}")
    if X.shape[1] != m.sizes[0]:
        raise UsageError(f"{path}: dataset {name} has {X.shape[1]} features, the model expects {m.sizes[0]}")
    return X


def evaluate(args, report):
    """Test metrics of a saved model on /test of a file (or all its rows)."""
    if args.metrics_json:
        check_output(args.metrics_json, "--metrics-json", _inputs(args))
    m, net, scaling = _load(args.model)
    with open_h5(args.data) as f:
        if "test" in f:
            xn, yn = "/test/X", "/test/y"
        elif "X" in f:
            xn, yn = "/X", "/y"
        else:
            xn, yn = "/train/X", "/train/y"
        X = _features(m, f, args.data, xn)
        if yn not in f:
            raise UsageError(f"{args.data}: no dataset {yn}")
        raw_y = f[yn][...]
        X = X[...]
    if len(raw_y) != len(X):
        raise UsageError(f"{args.data}: {xn} has {len(X)} rows but {yn} has {len(raw_y)}")
    err = nonfinite_error(X, np.array([[0, len(X)]]), args.data, xn)
    if err:
        raise err
    info = _label_info(m)
    classes = None
    if m.task != "regression":
        classes = class_array(info)
        labels = as_labels(np.asarray(raw_y).reshape(-1))
        unknown = ~np.isin(labels, classes)
        if unknown.any():
            raise UsageError(f"{args.data}: dataset {yn} has label {labels[np.argmax(unknown)]!r} "
                             f"that the model was not trained on")
    y = encode_labels(raw_y, info, np.float64, classes)
    Xs = scaling.features(X, net.dtype)
    res = score(net, m.params, Xs, y, m.task, len(m.classes or []), scaling)
    doc = {"model": m.kind, "model_file": args.model, "data": args.data, "dataset": xn, "samples": len(y),
           "epoch": m.epoch, "test": res}
    report(doc, args.metrics_json)
    return doc


def predict_command(args, group):
    """Every rank predicts a contiguous slab of the rows; rank 0 gathers and writes them."""
    from .partition import balanced_sizes
    _collective(group, lambda: check_output(args.out, "--out", _inputs(args)))
    err, meta = None, None
    try:
        m, net, scaling = _load(args.model)
        with open_h5(args.data) as f:
            name = args.x_dataset or next((n for n in ("/X", "/test/X", "/train/X") if n in f), "/X")
            X = _features(m, f, args.data, name)
            n = X.shape[0]
            sizes = balanced_sizes(n, group.size)
            lo = int(sizes[:group.rank].sum())
            mine = X[lo:lo + int(sizes[group.rank])]
        err = nonfinite_error(mine, np.array([[lo, len(mine)]]), args.data, name)
        if err:
            raise err
        labels, proba = predict(net, m.params, scaling.features(mine, net.dtype), m.task, scaling)
        meta = name
    except UsageError as e:
        err = e
    drive(group.agree(err, "predict"))
    # one row per sample: [label or value, class probabilities...], gathered on rank 0
    from mpi4py import MPI
    block = np.ascontiguousarray(np.column_stack([labels.astype(np.float64)] + ([] if proba is None else [proba])))
    counts = sizes * block.shape[1]
    recv = spec = None
    if group.rank == 0:
        recv = np.empty((n, block.shape[1]), np.float64)
        spec = [recv, (counts, np.concatenate([[0], np.cumsum(counts)[:-1]])), MPI.DOUBLE]
    drive(group.collective(lambda: group.comm.Igatherv(block, spec, 0), "predict"))
    if group.rank == 0:
        import h5py

        from .checkpoint import atomic_write

        def write(tmp):
            with h5py.File(tmp, "w") as f:
                if m.task == "regression":
                    f["values"] = recv[:, 0]
                else:
                    classes = class_array(_label_info(m))
                    idx = recv[:, 0].astype(np.int64)
                    f["labels"], f["class_index"], f["classes"] = classes[idx], idx, classes
                    f["proba"] = recv[:, 1:].astype(np.float32)
                f.attrs["model"], f.attrs["data"], f.attrs["dataset"] = args.model, args.data, meta
        atomic_write(args.out, write)
        log.warning(f"predict: {n} rows of {args.data}:{meta} -> {args.out}")
    return 0


def info(group):
    """Versions, MPI library, ranks, BLAS and its threads, hosts and cores (rank 0 prints)."""
    import h5py
    import mpi4py
    from mpi4py import MPI
    lines = {
        "mpidml": __version__, "python": platform.python_version(), "numpy": np.__version__,
        "h5py": h5py.version.version, "hdf5": h5py.version.hdf5_version, "mpi4py": mpi4py.__version__,
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0].strip(),
        "mpi_standard": "%d.%d" % MPI.Get_version(), "ranks": group.size,
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

