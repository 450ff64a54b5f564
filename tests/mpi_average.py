"""Run under mpiexec: averaging (blocking and overlapped) against the weighted mean.

Each rank holds a different state and partition size; rank 0 prints a JSON verdict.
"""
import json
import sys

import numpy as np
from mpi4py import MPI

from mpidml.learn.aggregate import Averager
from mpidml.runtime.comm import Group
from mpidml.runtime.scheduler import Scheduler

comm = MPI.COMM_WORLD
rank, size = comm.rank, comm.size
sizes = np.array([10 + 7 * r for r in range(size)], np.float64)   # uneven partitions
weight = sizes[rank] / sizes.sum()
states = np.stack([np.random.default_rng(r).standard_normal(1000) for r in range(size)])
expected = (sizes[:, None] * states).sum(axis=0) / sizes.sum()
group = Group(comm, stall_timeout=20)
out = {}

# blocking
state = states[rank].copy()
avg = Averager(group, state, weight)
s = Scheduler()
s.spawn(avg.blocking(), "t")
s.run()
out["blocking_err"] = float(np.abs(state - expected).max())
all_states = comm.allgather(state)
out["identical"] = all(np.array_equal(all_states[0], a) for a in all_states)

# overlapped: snapshot, local progress, merge -> avg(snapshot) + local progress
state = states[rank].copy()
avg = Averager(group, state, weight, merge_after=5)


def trainer():
    avg.start()
    # the Iallreduce is already under way: MPI progress alone completes it, before the
    # communicator task has even run
    out["started_at_sync_point"] = any(group.poke() or avg.handle[0].Get_status() for _ in range(200000))
    for _ in range(5):
        pass                  # local steps would run here
        yield
    state[:] += 1.0          # local progress made while the round is in flight
    yield from avg.finish()
    avg.stop()


s = Scheduler()
s.spawn(trainer(), "trainer")
s.spawn(avg.communicator(), "communicator")
s.run()
out["overlap_err"] = float(np.abs(state - (expected + 1.0)).max())
if rank == 0:
    sys.stdout.write(json.dumps(out) + "\n")
group.close()
