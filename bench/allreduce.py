"""A bare blocking Allreduce(IN_PLACE) of float32 buffers, the floor under every
averaging: `mpiexec -n N python bench/allreduce.py BYTES [BYTES ...]` prints one JSON line
on rank 0 with the median milliseconds per call for each size."""
import json
import sys
import time

import numpy as np
from mpi4py import MPI


def median_ms(comm, nbytes, calls=200):
    buf = np.ones(max(1, nbytes // 4), np.float32)
    for _ in range(20):
        comm.Allreduce(MPI.IN_PLACE, buf)
    times = np.empty(calls)
    for i in range(calls):
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf)
        times[i] = time.perf_counter() - t0
    comm.Allreduce(MPI.IN_PLACE, times)
    times /= comm.size      # per call, the mean over ranks
    return float(np.median(times) * 1e3)


if __name__ == "__main__":
    comm = MPI.COMM_WORLD
    res = {int(b): median_ms(comm, int(b)) for b in sys.argv[1:]}
    if comm.rank == 0:
        print(json.dumps(res))
