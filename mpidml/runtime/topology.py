"""Where the ranks run: hosts, ranks per host, and the cores they may use.

Why it matters: how a rank waits for a collective. The mpich wheel has no progress
thread, so each step of a collective advances only while every rank taking part is
inside MPI; a rank that naps between polls holds up every step (a ring over 16 ranks
has 30). With a core per rank, waiting ranks should therefore keep polling, as a
blocking MPI call does. With more ranks than cores, a polling rank takes the core from
the very peer it waits for, so ranks nap instead (scheduler.py). The layout also lets
`mpidml info` show the placement and training warn about oversubscription.

Rank 0 gathers every rank's placement and broadcasts only the per-host summary, so the
cost at start-up grows with the rank count on rank 0 alone.
"""
import os
from dataclasses import dataclass

from mpi4py import MPI

from .threads import blas_threads


def cgroup_cpu_quota():
    """Whole cores a cgroup CPU quota allows (v2 cpu.max, v1 cfs_quota_us), None when
    unlimited: containers limit cores that way without touching the affinity mask. Rounded
    down: 1.5 cores cannot keep 2 polling ranks busy."""
    candidates = (("/sys/fs/cgroup/cpu.max", None),
                  ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
                  ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us"))
    for quota_path, period_path in candidates:
        try:
            with open(quota_path) as f:
                fields = f.read().split()
            if period_path:
                with open(period_path) as f:
                    fields = [fields[0], f.read().strip()]
        except (OSError, IndexError):
            continue
        if fields[0] in ("max", "-1"):
            return None
        try:
            return max(1, int(fields[0]) // int(fields[1]))
        except (ValueError, IndexError, ZeroDivisionError):
            return None
    return None


@dataclass(frozen=True)
class Placement:
    """One rank's host, the CPUs it may run on, and the BLAS threads it runs."""
    host: str
    cpus: frozenset
    quota: int | None = None        # a cgroup quota's cores, taken as shared by the host's ranks
    threads: int = 1

    @classmethod
    def here(cls):
        return cls(MPI.Get_processor_name(), frozenset(os.sched_getaffinity(0)), cgroup_cpu_quota(),
                   blas_threads())


@dataclass(frozen=True)
class Host:
    """One host's ranks and the cores they share."""
    name: str
    ranks: tuple
    cores: int
    threads: int                    # BLAS threads of all its ranks together

    @property
    def oversubscribed(self):
        return self.threads > self.cores

    def describe(self):
        per = f" x {self.threads // len(self.ranks)} BLAS threads" if self.threads > len(self.ranks) else ""
        return f"{self.name}: ranks {_ranges(self.ranks)} ({len(self.ranks)}{per}) on {self.cores} cores"


@dataclass(frozen=True)
class Layout:
    """Every host of the job, known on every rank."""
    hosts: tuple

    @classmethod
    def of(cls, placements):
        """The layout of ranks placed so (one Placement per rank, in rank order)."""
        by_host = {}
        for rank, p in enumerate(placements):
            by_host.setdefault(p.host, []).append(rank)
        hosts = []
        for name, ranks in by_host.items():
            mine = [placements[r] for r in ranks]
            cores = len(frozenset().union(*(p.cpus for p in mine)))
            quotas = [p.quota for p in mine if p.quota is not None]
            hosts.append(Host(name, tuple(ranks), min(cores, max(quotas)) if quotas else cores,
                              sum(p.threads for p in mine)))
        return cls(tuple(hosts))

    def host_of(self, rank):
        return next(h for h in self.hosts if rank in h.ranks)

    def polls(self, rank, wait="auto"):
        """Whether `rank` keeps polling MPI while it waits (--wait): `auto` where every
        thread of its host's ranks has a core of its own."""
        return wait == "spin" or (wait == "auto" and not self.host_of(rank).oversubscribed)

    def warning(self):
        """The warning text when ranks (and their BLAS threads) outnumber cores, else None."""
        over = [h.describe() for h in self.hosts if h.oversubscribed]
        if not over:
            return None
        return (f"more ranks (or BLAS threads) than cores ({'; '.join(over)}): ranks will wait on each other "
                "for the CPU; "
                "run one rank per core (or --threads and fewer ranks)")


def gather_layout(group):
    """Generator: the job's layout, on every rank."""
    me = Placement.here()
    mask = hex(sum(1 << c for c in me.cpus))           # 32 characters for 128 CPUs
    placements = yield from group.gather_json([me.host, mask, me.quota, me.threads], label="layout")
    summary = None
    if group.rank == 0:
        layout = Layout.of([Placement(h, _cpus(int(m, 16)), q, t) for h, m, q, t in placements])
        summary = [[h.name, list(h.ranks), h.cores, h.threads] for h in layout.hosts]
    summary = yield from group.bcast_json(summary, label="layout")
    return Layout(tuple(Host(n, tuple(r), c, t) for n, r, c, t in summary))


def _cpus(mask):
    return frozenset(i for i in range(mask.bit_length()) if mask >> i & 1)


def _ranges(ranks):
    """(0, 1, 2, 5) -> '0-2,5'."""
    out, start = [], None
    for i, r in enumerate(ranks):
        if start is None:
            start = r
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            out.append(f"{start}" if start == r else f"{start}-{r}")
            start = None
    return ",".join(out)
