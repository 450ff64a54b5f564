"""Placement of ranks on hosts and cores, and the wait policy it implies (topology.py)."""
from mpidml.runtime.threads import blas_threads
from mpidml.runtime.topology import Layout, Placement, _ranges


def place(host, cpus, quota=None, threads=1):
    return Placement(host, frozenset(cpus), quota, threads)


def test_cores_are_the_union_of_the_ranks_cpus_and_a_quota_caps_them():
    unbound = Layout.of([place("a", range(4)) for _ in range(3)])
    assert [(h.name, h.ranks, h.cores) for h in unbound.hosts] == [("a", (0, 1, 2), 4)]
    bound = Layout.of([place("a", [0]), place("a", [1]), place("b", [0]), place("b", [0])])
    assert [(h.name, h.cores, h.oversubscribed) for h in bound.hosts] == [("a", 2, False), ("b", 1, True)]
    capped = Layout.of([place("a", range(8), quota=2) for _ in range(3)])
    assert capped.hosts[0].cores == 2 and capped.hosts[0].oversubscribed


def test_ranks_poll_only_where_every_thread_has_a_core():
    layout = Layout.of([place("a", range(2)), place("a", range(2)), place("b", range(2), threads=2),
                        place("b", range(2), threads=2)])
    assert [layout.polls(r) for r in range(4)] == [True, True, False, False]
    assert layout.polls(2, "spin") and not layout.polls(0, "nap")
    warning = layout.warning()
    assert "b: ranks 2-3 (2 x 2 BLAS threads) on 2 cores" in warning and "a:" not in warning
    assert Layout.of([place("a", range(2))]).warning() is None


def test_rank_ranges_and_blas_threads():
    assert _ranges((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8" and _ranges((3,)) == "3"
    assert blas_threads({}) == 1 and blas_threads({"OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "2"}) == 4
    assert blas_threads({"OMP_NUM_THREADS": "junk"}) == 1
