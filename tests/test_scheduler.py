"""The cooperative scheduler: ordering, request waits, events, deadlines, exceptions."""
import time

import numpy as np
import pytest
from mpi4py import MPI

from mpidml.runtime.scheduler import Event, Scheduler, Sleep, Wait


def test_round_robin_order_and_results():
    log = []

    def task(name, n):
        for i in range(n):
            log.append((name, i))
            yield
        return name * 2

    s = Scheduler()
    a, b = s.spawn(task("a", 3), "a"), s.spawn(task("b", 2), "b")
    s.run()
    assert log == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    assert (a.result, b.result, a.done, b.done) == ("aa", "bb", True, True)


def test_wait_for_request_lets_others_run():
    comm = MPI.COMM_SELF
    buf = np.zeros(1)
    log = []

    def receiver():
        req = comm.Irecv(buf, source=0, tag=5)
        yield Wait(req, timeout=10)
        log.append(("received", buf[0]))

    def sender():
        for i in range(3):
            log.append(("work", i))
            yield
        comm.Send(np.array([42.0]), dest=0, tag=5)

    s = Scheduler()
    s.spawn(receiver(), "r")
    s.spawn(sender(), "s")
    s.run()
    assert log == [("work", 0), ("work", 1), ("work", 2), ("received", 42.0)]


def test_deadline_throws_timeout_into_the_task():
    comm = MPI.COMM_SELF
    req = comm.Irecv(np.zeros(1), source=0, tag=99)   # nobody sends
    seen = []

    def waiter():
        try:
            yield Wait(req, timeout=0.05, label="never")
        except TimeoutError as e:
            seen.append(str(e))

    s = Scheduler()
    t0 = time.perf_counter()
    s.spawn(waiter(), "w")
    s.run()
    assert seen == ["never"] and 0.05 <= time.perf_counter() - t0 < 2
    assert s.idle_s > 0.03          # it slept rather than ran
    req.Cancel()
    req.Wait()


def test_exception_in_a_task_ends_run_and_closes_others():
    closed = []

    def bad():
        yield
        raise ValueError("boom")

    def forever():
        try:
            while True:
                yield
        finally:
            closed.append(True)

    s = Scheduler()
    s.spawn(forever(), "f")
    s.spawn(bad(), "b")
    with pytest.raises(ValueError, match="boom"):
        s.run()
    assert closed == [True]


def test_events_and_sleep():
    ev = Event()
    log = []

    def waiter():
        yield ev
        log.append("woke")

    def setter():
        yield Sleep(0.01)
        log.append("set")
        ev.set()

    s = Scheduler()
    s.spawn(waiter(), "w")
    s.spawn(setter(), "s")
    s.run()
    assert log == ["set", "woke"]


def test_event_nobody_sets_is_reported():
    def waiter():
        yield Event()

    s = Scheduler()
    s.spawn(waiter(), "lonely")
    with pytest.raises(RuntimeError, match="lonely"):
        s.run()


def test_wait_on_a_request_completed_elsewhere_resumes():
    comm = MPI.COMM_SELF
    req = comm.Isend(np.zeros(1), dest=0, tag=3)
    comm.Recv(np.zeros(1), source=0, tag=3)
    req.Wait()                                  # now MPI_REQUEST_NULL
    log = []

    def waiter():
        yield Wait(req, timeout=1)
        log.append("resumed")

    s = Scheduler()
    s.spawn(waiter(), "w")
    s.run()
    assert log == ["resumed"]


@pytest.mark.parametrize("polls", [True, False])
def test_a_rank_with_its_own_core_keeps_polling_mpi(monkeypatch, polls):
    """Each step of a collective needs every rank inside MPI: with a core per rank a waiting
    rank polls (no naps within SPIN_S_OWN_CORE); sharing cores, it naps after SPIN_S_SHARED.
    Deadlines hold either way."""
    import mpidml.runtime.scheduler as sched_mod
    naps = []
    real_sleep = time.sleep
    monkeypatch.setattr(sched_mod.time, "sleep", lambda s: (naps.append(s), real_sleep(s)))
    req = MPI.COMM_SELF.Irecv(np.zeros(1), source=0, tag=98)   # nobody sends
    seen = []

    def waiter():
        try:
            yield Wait(req, timeout=0.05, label="never")
        except TimeoutError:
            seen.append(time.perf_counter())

    s = Scheduler(polls=polls)
    s.spawn(waiter(), "w")
    t0 = time.perf_counter()
    s.run()
    req.Cancel()
    req.Wait()
    assert seen and 0.05 <= seen[0] - t0 < 0.5
    assert (len(naps) == 0) if polls else (len(naps) > 5)
    assert s.idle_s >= 0.045
