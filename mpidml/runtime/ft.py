"""Surviving a lost rank: what the MPI library can do, and the revoke-shrink step.

Open MPI's ULFM extension (`mpirun --with-ft ulfm`) reports a dead peer as an error of
class MPI_ERR_PROC_FAILED (or _PENDING, for a wildcard receive or probe) in whichever
call touches it, and MPI_ERR_REVOKED on a communicator another rank revoked. A survivor
that sees either revokes every communicator of the job, so that no other survivor stays
waiting in a collective on any of them, and shrinks the job's communicator to the ranks
still alive (Shrink agrees on that set fault-tolerantly). What the survivors then do with
their models and rows is elastic.Elastic's. MPICH (ch4) has no ULFM: a lost
rank ends the job, as mpiexec decides.
"""
import dataclasses
import os
import sys
import threading

from mpi4py import MPI

shrunk = None           # the survivors' communicator after the last shrink (__main__.leave_without_finalize)
FAILURE_CLASSES = frozenset(getattr(MPI, name) for name in ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING",
                                                             "ERR_REVOKED") if hasattr(MPI, name))


@dataclasses.dataclass(frozen=True)
class FaultTolerance:
    """Whether this run's MPI can go on without a lost rank, and why (for `mpidml info`)."""
    available: bool
    why: str


def library():
    """The MPI library's name and version, its first line (Open MPI ends the string with a
    NUL, which made `mpidml info | grep` call the output binary)."""
    return MPI.Get_library_version().replace("\0", "").strip().splitlines()[0].strip()


def fault_tolerance():
    """What this run's MPI can do when a rank is lost: ULFM needs Open MPI's mpirun started
    with --with-ft ulfm, which sets OMPI_MCA_mpi_ft_enable in every rank's environment."""
    name = library()
    if "Open MPI" not in name:
        name = "MPICH" if "MPICH" in name else name.split(",")[0]
        return FaultTolerance(False, f"{name} has no ULFM: a lost rank ends the job")
    version = name.split(",")[0].replace("Open MPI v", "Open MPI ").strip()
    if os.environ.get("OMPI_MCA_mpi_ft_enable", "").lower() in ("1", "true", "enable", "yes"):
        return FaultTolerance(True, f"{version} with ULFM (mpirun --with-ft ulfm): the survivors go on")
    return FaultTolerance(False, f"{version} without --with-ft ulfm: a lost rank ends the job (launch with "
                                 "mpirun --with-ft ulfm to go on without it)")


def is_failure(exc):
    """True for the MPI errors that mean a rank is gone or a survivor revoked the communicator."""
    return isinstance(exc, MPI.Exception) and exc.Get_error_class() in FAILURE_CLASSES


def revoke(comms):
    """Revoke every communicator in `comms`, so that no rank stays waiting on any of them."""
    for c in comms:
        try:
            c.Revoke()
        except MPI.Exception:           # freed, or revoked already: nothing to wake on it
            pass


def shrink(comm):
    """Shrink `comm` (revoked) to the ranks alive; returns (the new communicator, the lost
    ranks as ranks of `comm`). Collective over the survivors, fault tolerant."""
    global shrunk
    new = shrunk = comm.Shrink()
    old_group, new_group = comm.Get_group(), new.Get_group()
    alive = set(MPI.Group.Translate_ranks(new_group, list(range(new.Get_size())), old_group))
    for g in (old_group, new_group):
        g.Free()
    return new, [r for r in range(comm.Get_size()) if r not in alive]


def free(*comms):
    """Free communicators a lost rank left revoked (None: skipped): a job that survives many
    losses would otherwise keep every generation's."""
    for c in comms:
        if c is not None:
            try:
                c.Free()
            except MPI.Exception:
                pass


def lost_ranks(comm=MPI.COMM_WORLD):
    """The ranks of `comm` the MPI knows to have failed (ULFM), for an MPI error no survivor
    could go on from (a rank lost while the job starts); [] elsewhere."""
    try:
        failed = comm.Get_failed()
        ranks = MPI.Group.Translate_ranks(failed, list(range(failed.Get_size())), comm.Get_group())
    except (NotImplementedError, MPI.Exception):
        return []
    return [int(r) for r in ranks]


class LibnbcFilter:
    """Open MPI's libnbc writes `NBC_Progress: an error 75 was found during schedule 0x...
    - aborting the schedule` and a blank line to stderr for every non-blocking collective a
    lost rank broke, with no setting to silence it: noise for the user, since the survivors
    go on and say so in one line of their own. While installed, stderr (descriptor 2) is a
    pipe that a thread copies to the real stderr, those lines left out."""
    NOISE = b"NBC_Progress: an error "

    def __init__(self):
        self.real = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._copy, args=(read,), name="stderr filter", daemon=True)
        self.thread.start()

    def _copy(self, read):
        pending, skip_blank = b"", False
        while True:
            chunk = os.read(read, 65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            kept = []
            for line in lines:
                if line.startswith(self.NOISE) or (skip_blank and not line.strip()):
                    skip_blank = line.startswith(self.NOISE)
                    continue
                skip_blank = False
                kept.append(line + b"\n")
            self._write(b"".join(kept))
        self._write(pending)
        os.close(read)

    def _write(self, data):
        while data:
            data = data[os.write(self.real, data):]

    def remove(self):
        """The real stderr back, everything written so far passed on."""
        if self.real is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.real, 2)          # closes the pipe's only writer: the thread reads its end
        self.thread.join(timeout=5)
        os.close(self.real)
        self.real = None


_filter = None


def quiet_libnbc():
    """Install the LibnbcFilter for this process's life (the command line, where the MPI can
    go on without a lost rank); removed at exit, before MPI finalizes."""
    global _filter
    if _filter is None:
        import atexit
        _filter = LibnbcFilter()
        atexit.register(loud_again)


def real_stderr():
    """The descriptor of the real stderr: for a line that must get out before this process
    dies at once (the LibnbcFilter's thread would not copy it in time)."""
    return _filter.real if _filter is not None and _filter.real is not None else 2


def loud_again():
    """Remove the LibnbcFilter (at exit, or before leaving without finalizing)."""
    if _filter is not None:
        _filter.remove()
