"""BLAS threads per rank, set before numpy loads.

With several ranks per node, each BLAS library spawning one thread per core
oversubscribes the node: measured here, an MLP step with 2 ranks on 2 cores ran 30x
slower with OpenBLAS's default 2 threads per rank than with 1. So mpidml runs 1 BLAS
thread per rank unless told otherwise: `--threads N` or MPIDML_THREADS=N win; otherwise
an OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS the user set is respected.
"""
import os

VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def requested_threads(argv, environ=os.environ):
    """--threads N (or --threads=N) from argv, else MPIDML_THREADS, else None."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return environ.get("MPIDML_THREADS")


def blas_threads(environ=os.environ):
    """The BLAS threads each rank runs, as the variables say (1 when none is set)."""
    values = [environ[v] for v in VARIABLES if environ.get(v, "").isdigit()]
    return max(1, max(map(int, values), default=1))


def pin_blas_threads(argv, environ=os.environ):
    """Set the BLAS thread variables; returns the number chosen (as text)."""
    n = requested_threads(argv, environ)
    if n is not None and n.isdigit() and int(n) > 0:
        for var in VARIABLES:
            environ[var] = n
        return n
    if not any(var in environ for var in VARIABLES):
        for var in VARIABLES:
            environ[var] = "1"
        return "1"
    return next(environ[v] for v in VARIABLES if v in environ)
