"""Run under mpiexec: train, with a bug planted on the ranks named in argv[1] ("all" or
e.g. "2"); the rest of argv goes to mpidml. Shows how a rank-local failure is reported."""
import sys

from mpi4py import MPI

import mpidml.learn.trainer
from mpidml.cli.main import main

where = sys.argv[1]
if where == "all" or str(MPI.COMM_WORLD.rank) in where.split(","):
    def broken(*args, **kwargs):
        raise RuntimeError("planted bug")
    mpidml.learn.trainer.build = broken
sys.exit(main(sys.argv[2:]))
