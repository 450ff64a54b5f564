"""A small per-rank cooperative scheduler on Python generators.

A task is a generator. `yield` (or `yield None`) cedes to the next runnable task;
`yield Wait(request, timeout)` suspends until an MPI request completes (or throws
`TimeoutError` into the task when the timeout passes); `yield Sleep(s)` suspends for a
while; `yield event` (an `Event`) suspends until it is set; `yield future` (a
concurrent.futures.Future: work on a thread, such as a chunk being read) suspends until
it is done (napping for it alone counts as `thread_wait_s`, not `idle_s`); `return value` finishes the
task and sets `task.result`. MPICH and Open MPI progress non-blocking collectives only
inside MPI calls, so between task steps the scheduler tests the outstanding requests
(one Testsome). When nothing can run while a request is outstanding it polls, with a
sched_yield between polls (a peer rank sharing the core gets to run: with 3 ranks on 2
cores, sleeping between polls made an Iallreduce take milliseconds), for up to
`spin_s`, then sleeps in short, growing naps so a long wait does not burn a core. All of
it is counted as blocked time (`idle_s`). How long to poll depends on the cores
(topology.py): with a core per rank, `SPIN_S_OWN_CORE` (0.2 s), since every step of a
collective needs every rank inside MPI and one napping rank holds all of them up (at 16
ranks, 2 ms of polling then naps made the wait per average grow to 20 ms against 0.2 ms
for a blocking Allreduce); with more ranks than cores, `SPIN_S_SHARED` (2 ms).

Order is deterministic: runnable tasks run first-in first-out, and woken tasks join the
queue in the order they were suspended. An exception in a task ends `run()` with it.
"""
import os
import time
from collections import deque
from concurrent import futures
from concurrent.futures import Future

from mpi4py import MPI


class Wait:
    """Suspend until `request` completes; TimeoutError after `timeout` seconds."""
    __slots__ = ("request", "timeout", "label")

    def __init__(self, request, timeout=None, label=""):
        self.request, self.timeout, self.label = request, timeout, label


class Sleep:
    """Suspend for `seconds`."""
    __slots__ = ("seconds",)

    def __init__(self, seconds):
        self.seconds = seconds


class Event:
    """A flag tasks can wait on (`yield event`); `set()` wakes them all."""

    def __init__(self):
        self.is_set = False

    def set(self):
        self.is_set = True

    def clear(self):
        self.is_set = False


class Task:
    __slots__ = ("name", "gen", "result", "done", "_throw")

    def __init__(self, gen, name):
        self.name, self.gen = name, gen
        self.result, self.done = None, False
        self._throw = None      # an exception to raise inside the task when it resumes


class Scheduler:
    """Runs tasks to completion on one rank; see the module docstring."""

    SPIN_S_SHARED, SPIN_S_OWN_CORE, MIN_NAP, MAX_NAP = 2e-3, 0.2, 50e-6, 0.5e-3

    def __init__(self, clock=time.perf_counter, tracer=None, polls=False):
        self.clock, self.tracer = clock, tracer
        self.spin_s = self.SPIN_S_OWN_CORE if polls else self.SPIN_S_SHARED
        self.ready = deque()
        self.requests = []          # [task, request, deadline, label]
        self.sleepers = []          # [task, wake_time]
        self.waiting_events = []    # [task, event]
        self.futures = []           # [task, future]
        self.tasks = []
        self.idle_s = 0.0
        self.thread_wait_s = 0.0    # napping with only a thread's work to wait for

    def spawn(self, gen, name):
        task = Task(gen, name)
        self.tasks.append(task)
        self.ready.append(task)
        return task

    def run(self):
        try:
            while self.ready or self.requests or self.sleepers or self.waiting_events or self.futures:
                if self.ready:
                    self._step(self.ready.popleft())
                self._poll()
                if not self.ready:
                    if not (self.requests or self.sleepers or self.futures):
                        if self.waiting_events:
                            names = ", ".join(t.name for t, _ in self.waiting_events)
                            raise RuntimeError(f"deadlock: tasks wait on events nobody sets: {names}")
                        break
                    self._nap()
        except BaseException:
            for t in self.tasks:
                if not t.done:
                    t.gen.close()
            raise

    # -- internals ---------------------------------------------------------------
    def _step(self, task):
        throw, task._throw = task._throw, None
        try:
            op = task.gen.throw(throw) if throw is not None else task.gen.send(None)
        except StopIteration as stop:
            task.done, task.result = True, stop.value
            return
        if op is None:
            self.ready.append(task)
        elif isinstance(op, Wait):
            if op.request == MPI.REQUEST_NULL:      # already completed elsewhere
                self.ready.append(task)
                return
            deadline = None if op.timeout is None else self.clock() + op.timeout
            self.requests.append([task, op.request, deadline, op.label])
        elif isinstance(op, Event):
            if op.is_set:
                self.ready.append(task)
            else:
                self.waiting_events.append([task, op])
        elif isinstance(op, Sleep):
            self.sleepers.append([task, self.clock() + op.seconds])
        elif isinstance(op, Future):
            if op.done():
                self.ready.append(task)
            else:
                self.futures.append([task, op])
        else:
            task._throw = TypeError(f"task {task.name} yielded {op!r}")
            self.ready.append(task)

    def _poll(self):
        """Move tasks whose request, event or sleep finished to the ready queue."""
        if self.requests:
            reqs = [r[1] for r in self.requests]
            done = _testsome(reqs)
            if done:
                done = set(done)
                keep = []
                for i, entry in enumerate(self.requests):
                    if i in done:
                        self.ready.append(entry[0])
                    else:
                        keep.append(entry)
                self.requests = keep
            now = None
            for entry in self.requests:
                if entry[2] is not None:
                    now = now or self.clock()
                    if now > entry[2]:
                        entry[0]._throw = TimeoutError(entry[3] or "request")
                        entry[2] = None
                        self.ready.append(entry[0])
            if now is not None:
                self.requests = [e for e in self.requests if e[0] not in self.ready]
        if self.waiting_events and any(ev.is_set for _, ev in self.waiting_events):
            keep = []
            for task, ev in self.waiting_events:
                (self.ready.append(task) if ev.is_set else keep.append([task, ev]))
            self.waiting_events = keep
        if self.futures and any(f.done() for _, f in self.futures):
            keep = []
            for task, fut in self.futures:
                (self.ready.append(task) if fut.done() else keep.append([task, fut]))
            self.futures = keep
        if self.sleepers:
            now = self.clock()
            keep = []
            for task, wake in self.sleepers:
                (self.ready.append(task) if now >= wake else keep.append([task, wake]))
            self.sleepers = keep

    def clear(self):
        """Forget every task (after run() ended with an exception), keeping the idle time."""
        self.ready.clear()
        self.requests, self.sleepers, self.waiting_events, self.tasks, self.futures = [], [], [], [], []

    def _nap(self):
        """Sleep in growing naps until some task can run; count it as idle time."""
        start = self.clock()
        waiting_on_mpi = bool(self.requests) or not self.futures
        spin_until = start + self.spin_s       # most collectives finish within microseconds
        while not self.ready and self.requests and self.clock() < spin_until:
            os.sched_yield()                    # let a peer on the same core run
            self._poll()
        nap = self.MIN_NAP
        while not self.ready:
            horizon = [e[2] for e in self.requests if e[2] is not None]
            horizon += [w for _, w in self.sleepers]
            sleep = nap
            if horizon:
                sleep = max(0.0, min(nap, min(horizon) - self.clock()))
            if self.futures and not self.requests:     # a thread's work: wake the moment it is done
                futures.wait([f for _, f in self.futures], sleep, futures.FIRST_COMPLETED)
            else:
                time.sleep(sleep)
            nap = min(nap * 2, self.MAX_NAP)
            self._poll()
        end = self.clock()
        if waiting_on_mpi:
            self.idle_s += end - start
        else:                                   # a thread's work (a chunk read), not the peers
            self.thread_wait_s += end - start
        if self.tracer:
            self.tracer.span("blocked", "wait", start, end)


_STATUSES = []      # reused: Testsome runs in the tightest polling loop


def _testsome(requests):
    """MPI Testsome, raising the failed request's own error (a peer lost, a communicator
    revoked: see ft.py) rather than MPI_ERR_IN_STATUS, which says only that one failed."""
    while len(_STATUSES) < len(requests):
        _STATUSES.append(MPI.Status())
    statuses = _STATUSES                # MPI fills the first len(requests)
    try:
        return MPI.Request.Testsome(requests, statuses)
    except MPI.Exception as e:
        if e.Get_error_class() != MPI.ERR_IN_STATUS:
            raise
        code = next((s.Get_error() for s in statuses if s.Get_error() != MPI.SUCCESS), None)
        if code is None:
            raise
        raise MPI.Exception(code) from None
