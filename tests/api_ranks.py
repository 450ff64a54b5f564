"""Run under mpiexec: the Python API at several ranks; rank 0 prints one JSON line.

  fit KIND DATA OUT OPTIONS_JSON   each rank fits its own shard of DATA's /X, /y (the rows
                                   --partition contiguous deals it), then rank 0 saves OUT
  train OPTIONS_JSON               mpidml.train(**options) on every rank
  bad-rows                         rank 1 passes NaN: every rank must raise, none hang
  differ                           each rank passes another lr to fit and to train: every
                                   rank must raise, none train
"""
import json
import sys

from mpidml.runtime.threads import pin_blas_threads

pin_blas_threads([])        # as the command line does: one BLAS thread per rank

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import mpidml  # noqa: E402
from mpidml.data.partition import balanced_sizes  # noqa: E402

comm = MPI.COMM_WORLD
rank = comm.rank
mode = sys.argv[1]
out = {}
if mode == "fit":
    kind, data, path, options = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
    with h5py.File(data, "r") as f:
        X, y = f["X"][()], f["y"][()]
    sizes = balanced_sizes(len(y), comm.size)
    lo = int(sizes[:rank].sum())
    mine = slice(lo, lo + int(sizes[rank]))
    estimator = getattr(mpidml, kind)(**options).fit(X[mine], y[mine])
    params = comm.gather(estimator._model.optimizer_state.tobytes())
    history = comm.gather(json.dumps(estimator.history_))
    estimator.save(path)
    if rank == 0:
        out = {"same_model_on_every_rank": len(set(params)) == 1, "same_history": len(set(history)) == 1,
               "epochs": len(estimator.history_), "score": estimator.score(X[mine], y[mine])}
elif mode == "train":
    doc = mpidml.train(**json.loads(sys.argv[2]))
    docs = comm.gather(json.dumps(doc, sort_keys=True))
    if rank == 0:
        out = {"same_on_every_rank": len(set(docs)) == 1, "doc": doc}
elif mode == "bad-rows":
    rng = np.random.default_rng(rank)
    X, y = rng.standard_normal((50, 4)), rng.integers(0, 2, 50)
    if rank == 1:
        X[7, 2] = np.nan
    try:
        mpidml.Classifier(epochs=1).fit(X, y)
        raised = None
    except ValueError as e:
        raised = [type(e).__name__, str(e)]
    out = {"raised": comm.gather(raised)}
elif mode == "differ":
    rng = np.random.default_rng(rank)
    X, y = rng.standard_normal((50, 4)), rng.integers(0, 2, 50)
    raised = []
    for call in (lambda: mpidml.Classifier(epochs=1, lr=0.1 * (rank + 1)).fit(X, y),
                 lambda: mpidml.train(epochs=1, quiet=True, lr=0.1 * (rank + 1))):
        try:
            call()
            raised.append(None)
        except ValueError as e:
            raised.append(str(e))
    out = {"raised": comm.gather(raised)}
if rank == 0:
    print(json.dumps(out))
