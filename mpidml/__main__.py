"""`python -m mpidml` (and the `mpidml` script): handle signals at once (guard.py), give a
closed standard stream /dev/null, pin BLAS threads before numpy loads."""
import os
import sys

from mpidml.runtime.guard import Guard


def reopen_closed_std():
    """`mpidml ... >&-` starts Python without stdout (sys.stdout None): every command that
    printed died of AttributeError, and the first file mpidml opened took descriptor 1, so
    any later print would have gone into it. A closed stdin, stdout or stderr becomes
    /dev/null (its output dropped) before anything else opens a file."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)       # the lowest free descriptor: fd itself
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        stream = open(fd, mode, closefd=False)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def entry():
    Guard().install()               # first: a signal in any later import would kill the rank
    from mpidml.runtime.threads import pin_blas_threads
    reopen_closed_std()
    pin_blas_threads(sys.argv[1:])
    from mpidml.cli.main import main  # numpy loads here, after the pinning
    code = main()
    from mpidml.runtime import ft
    if ft.shrunk is not None or ft.lost_ranks():
        leave_without_finalize(code, ft.shrunk)
    return code


def leave_without_finalize(code, survivors):
    """Exit now, skipping MPI_Finalize, in a job whose communicator was shrunk: Open MPI
    5.0's finalize fences every process the job started, and with one of them dead the
    survivors sometimes waited in that fence for ever (about 1 run in 20 here, both
    survivors in ompi_mpi_finalize, the metrics written and complete). The survivors leave
    together (a barrier): mpirun ends a job's other processes once one has left without
    finalizing, and rank 0 may still be writing the checkpoint or its last line."""
    from mpi4py import MPI

    from mpidml.runtime.ft import loud_again
    try:
        if survivors is not None:   # None: a rank lost with no shrink after it (the job's end)
            survivors.Barrier()
    except MPI.Exception:           # another rank lost meanwhile: leave all the same
        pass
    loud_again()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    sys.exit(entry())
