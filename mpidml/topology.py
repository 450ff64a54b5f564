"""Where the ranks run: hosts, ranks per host, and the cores they may use.

Why it matters: how a rank waits for a collective. The mpich wheel has no progress
thread, so each step of a collective advances only while every rank taking part is
inside MPI; a rank that naps between polls holds up every step (a ring over 16 ranks
has 30). With a core per rank, waiting ranks should therefore spin in MPI, as a
blocking MPI call does. With more ranks than cores, a spinning rank takes the core from
the very peer it waits for, so ranks nap instead (the scheduler's default). The layout
also lets `mpidml info` show the placement and training warn about oversubscription.
"""
import math
import os
from dataclasses import dataclass

from mpi4py import MPI


def usable_cpus():
    """The CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota
    (containers limit cores that way without touching the mask)."""
    cpus = sorted(os.sched_getaffinity(0))
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return cpus, max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return cpus, None


@dataclass(frozen=True)
class Placement:
    """One rank's host and the CPUs it may use."""
    host: str
    cpus: tuple
    quota: int = None       # cores a cgroup quota allows, None when unlimited


@dataclass(frozen=True)
class Layout:
    """Every rank's placement, known on every rank."""
    ranks: tuple            # Placement per rank

    @property
    def hosts(self):
        """Host names in order of their first rank."""
        return list(dict.fromkeys(p.host for p in self.ranks))

    def ranks_on(self, host):
        return [r for r, p in enumerate(self.ranks) if p.host == host]

    def cores_on(self, host):
        """Distinct CPUs the ranks on `host` may use together (a quota caps each rank)."""
        placed = [self.ranks[r] for r in self.ranks_on(host)]
        cores = len(set().union(*(p.cpus for p in placed)))
        quotas = [p.quota for p in placed if p.quota is not None]
        return min(cores, max(quotas)) if quotas else cores

    def oversubscribed_hosts(self):
        """(host, ranks, cores) wherever ranks outnumber cores."""
        return [(h, len(self.ranks_on(h)), self.cores_on(h)) for h in self.hosts
                if len(self.ranks_on(h)) > self.cores_on(h)]

    def has_core_per_rank(self, rank):
        """True when every rank on `rank`'s host can have a core of its own."""
        host = self.ranks[rank].host
        return len(self.ranks_on(host)) <= self.cores_on(host)

    def describe(self):
        """One line per host: ranks and cores."""
        return [f"{h}: ranks {_ranges(self.ranks_on(h))} ({len(self.ranks_on(h))}) on {self.cores_on(h)} cores"
                for h in self.hosts]


def gather_layout(group):
    """Generator: every rank's placement, on every rank (two JSON collectives)."""
    cpus, quota = usable_cpus()
    me = Placement(MPI.Get_processor_name(), tuple(cpus), quota)
    per_rank = yield from group.gather_json([me.host, list(me.cpus), me.quota], label="layout")
    per_rank = yield from group.bcast_json(per_rank, label="layout")
    return Layout(tuple(Placement(h, tuple(c), q) for h, c, q in per_rank))


def oversubscription_warning(layout):
    """The warning text when ranks outnumber cores somewhere, else None."""
    over = layout.oversubscribed_hosts()
    if not over:
        return None
    where = "; ".join(f"{h}: {n} ranks on {c} cores" for h, n, c in over)
    return (f"more ranks than cores ({where}): ranks will wait on each other for the CPU; "
            "run one rank per core (or --threads and fewer ranks)")


def _ranges(ranks):
    """[0, 1, 2, 5] -> '0-2,5'."""
    out, start = [], None
    for i, r in enumerate(ranks):
        if start is None:
            start = r
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            out.append(f"{start}" if start == r else f"{start}-{r}")
            start = None
    return ",".join(out)
