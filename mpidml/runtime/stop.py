"""Stopping on a batch system's signal: every rank stops at the same step, checkpointed.

Slurm's time limit and `scancel` send SIGTERM (and, with `--signal`, SIGUSR1 ahead of the
limit) to every task; MPICH's mpiexec forwards both to every rank. A handler only notes
the signal: the training loop finds out at its next vote, a one-integer non-blocking MAX
Allreduce of "has this rank been signalled" started at every synchronisation point and
read at the next one. All ranks start and read the same votes at the same steps, so they
all stop at the same step boundary, where the model has just been averaged, and rank 0
writes a checkpoint from which `--resume` continues exactly. While things go well a vote
costs one tiny collective per K steps that completes behind the averaging.
"""
import contextlib
import signal

import numpy as np
from mpi4py import MPI


def parse_signals(text):
    """`--checkpoint-signal TERM,USR1` (or `none`) -> signal numbers."""
    if text.strip().lower() in ("", "none"):
        return ()
    numbers = []
    for name in text.split(","):
        name = name.strip().upper().removeprefix("SIG")
        number = getattr(signal, "SIG" + name, None)
        if not isinstance(number, signal.Signals) or number in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"not a signal that can be caught: {name!r}")
        numbers.append(number)
    return tuple(numbers)


class StopSignals:
    """While active, the chosen signals are noted (the first one wins) instead of killing
    the rank; a context manager that restores the previous handlers."""

    def __init__(self, numbers):
        self.numbers, self.received, self._previous = tuple(numbers), None, {}

    def __enter__(self):
        for number in self.numbers:
            self._previous[number] = signal.signal(number, self._note)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _note(self, number, frame):
        if self.received is None:
            self.received = signal.Signals(number)

    @property
    def name(self):
        return self.received.name if self.received is not None else None


def watching(numbers):
    """Context: the stop signals (`numbers`) of one training run. The command line's Guard
    where one is installed (guard.py: it handles every signal for the process's whole life);
    otherwise (the Python API) StopSignals for the run alone, which gives the caller's
    handlers back afterwards."""
    from .guard import installed
    guard = installed()
    if guard is not None:
        guard.watch(numbers)
        return contextlib.nullcontext(guard)
    return StopSignals(numbers)


class StopVote:
    """The agreement: `poll()` at every synchronisation point says whether all ranks stop
    here, decided by the vote started at the previous point."""

    def __init__(self, group, signals):
        self.group, self.signals = group, signals
        self.mine, self.verdict = np.zeros(1, np.int32), np.zeros(1, np.int32)
        self.request = None

    def poll(self):
        """Generator: True when the previous vote said stop; otherwise starts the next vote."""
        if not self.signals.numbers:             # --checkpoint-signal none: nothing to agree on
            return False
        if self.request is not None:
            if not self.request.Test():          # nearly always done: it ran behind K steps
                yield from self.group.wait(self.request, "stop vote")
            self.request = None
            if self.verdict[0]:
                return True
        self.mine[0] = self.signals.received is not None
        self.request = self.group.comm.Iallreduce(self.mine, self.verdict, MPI.MAX)
        return False

    def close(self):
        """Generator: complete the vote in flight (MPI must not finalize with it pending)."""
        if self.request is not None:
            yield from self.group.wait(self.request, "stop vote")
            self.request = None
