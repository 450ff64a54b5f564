"""Run under mpiexec by test_redeal.py: every rank's rows as data.distribute and the
validation split gave them (X's first column is each row's file row) must be the rows
elastic.Holdings computes for it. argv: file, partition mode, distribute mode."""
import sys

import numpy as np
from mpi4py import MPI

from mpidml.data import distribute as data
from mpidml.learn.elastic import Holdings
from mpidml.runtime.comm import Group, drive

path, mode, how = sys.argv[1:4]
group = Group(MPI.COMM_WORLD)
info = data.describe(path, task="classification", block_rows=7, partition_seed=3, partition=mode)
part = drive(data.distribute(group, info, how, np.float64))
part.hold_out(0.1, 5, group.rank)
rows = Holdings(info, group.size, 0.1, 5).rows_of(group.rank)
for name, X, want in (("train", part.X, rows.train), ("val", part.val_X, rows.val), ("test", part.test_X, rows.test)):
    got = X[:, 0].astype(np.int64)
    assert np.array_equal(got, want), (group.rank, name, got[:10], want[:10])
group.close()
print(f"rank {group.rank} ok", flush=True)
