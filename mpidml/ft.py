"""Whether this job can survive the loss of a rank: only under an MPI with ULFM (Open MPI 5
started by `mpirun --with-ft ulfm`); under MPICH, or Open MPI without it, a lost rank ends
the job."""
import dataclasses
import os

FT_ON = ("1", "true", "enable")


@dataclasses.dataclass(frozen=True)
class FaultTolerance:
    available: bool
    why: str        # the MPI and what it can do, for `mpidml info` and the logs


def fault_tolerance():
    """What the MPI library this process runs on can do when a rank is lost."""
    from mpi4py import MPI
    library = MPI.Get_library_version().strip().splitlines()[0].strip()
    if "Open MPI" not in library:
        name = library.split(",")[0].split(" Version")[0] or "this MPI"
        return FaultTolerance(False, f"{name}: no ULFM; a lost rank ends the job")
    version = library.split(",")[0].replace("Open MPI v", "Open MPI ")
    if os.environ.get("OMPI_MCA_mpi_ft_enable", "").lower() in FT_ON:
        return FaultTolerance(True, f"{version} with ULFM (mpirun --with-ft ulfm)")
    return FaultTolerance(False, f"{version} without --with-ft ulfm; a lost rank ends the job")
