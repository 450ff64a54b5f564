"""The command line's signal handling, from the first line of `python -m mpidml` to exit.

A rank must never die of a signal: MPICH's mpiexec then kills the other ranks and prints
its banner ("BAD TERMINATION ...", exit 15 or 9) instead of our one line and exit code.
So SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 have a handler before numpy and MPI load
(a signal in Python's own start-up, the first tenth of a second, still ends a rank as the
signal would). Only the first signal counts: the job is ending already, and a Ctrl-C in a
terminal reaches every rank twice, from the terminal and again from mpiexec, the second
often while the first was being reported (a traceback, then the banner). This module
imports nothing heavy: it loads before the BLAS threads are pinned.
"""
import os
import signal
import sys
import threading

from ..errors import STOPPED

CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_installed = None


class Interrupted(KeyboardInterrupt):
    """A signal that ends the command where it stands: Ctrl-C (exit 130), or a stop signal
    where no training run's vote watches for it (exit STOPPED: nothing was checkpointed;
    a batch script may requeue). A KeyboardInterrupt, as Ctrl-C is in any Python program."""

    def __init__(self, number):
        self.signal = signal.Signals(number)
        super().__init__(self.signal.name)

    @property
    def code(self):
        return 130 if self.signal == signal.SIGINT else STOPPED

    @property
    def message(self):
        if self.signal == signal.SIGINT:
            return "interrupted"
        return f"stopped by {self.signal.name} where no checkpoint could be written (exit {STOPPED})"


class Guard:
    """Until `arm()` (MPI runs, so an error can end the job cleanly) a signal is only noted;
    armed, it raises Interrupted at once, except the stop signals that a training run's
    votes act on (`watch`). The interface StopVote reads: `numbers`, `received`, `name`."""

    def __init__(self):
        self.numbers, self.received, self.armed = (), None, False
        self.ignored = None         # the signals this process was started with ignored
        self._hook = None           # the unraisable hook before ours (see _unraisable)

    def install(self):
        """Handle CAUGHT, except a signal the process was started with ignored: `nohup`
        ignores SIGHUP so that a job outlives its terminal, and a background job of a
        non-interactive shell ignores SIGINT; they stay ignored, as Python leaves them."""
        global _installed
        if self.ignored is None:
            self.ignored = {n for n in CAUGHT if signal.getsignal(n) == signal.SIG_IGN}
        for number in CAUGHT:
            if number not in self.ignored:
                signal.signal(number, self._handle)
        if self._hook is None:             # once: arm() installs again
            self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        _installed = self
        return self

    def _unraisable(self, info):
        """Interrupted raised inside a finalizer (a weakref callback of h5py's, a __del__),
        where Python cannot pass it on: it printed "Exception ignored ..." with a traceback
        and went on as if no signal had come. The signal is sent again a moment later, to
        be raised where the main thread runs again outside the finalizer."""
        if not isinstance(info.exc_value, Interrupted):
            self._hook(info)
            return
        self.received = None
        threading.Timer(0.001, os.kill, (os.getpid(), info.exc_value.signal)).start()

    def _handle(self, number, frame):
        if self.received is not None:
            return
        self.received = signal.Signals(number)
        if self.armed and number not in self.numbers:
            raise Interrupted(number)

    def arm(self):
        """Raise on signals from now on, and on one that came before. Installs the handlers
        again: MPI's start-up (UCX, in the mpich wheel) takes SIGHUP for itself."""
        self.install()
        self.armed = True
        if self.received is not None and self.received not in self.numbers:
            raise Interrupted(self.received)

    def disarm(self):
        """An error is being reported: a signal now is only noted (raised inside the report,
        it would skip the abort that ends the other ranks)."""
        self.armed = False

    def finish(self):
        """The command is over: ignore the signals. Python's exit puts back the default
        actions of the signals it handles (not of ignored ones), and mpi4py's MPI_Finalize
        runs after that, waiting for the other ranks: a SIGTERM there killed the rank."""
        for number in CAUGHT:
            signal.signal(number, signal.SIG_IGN)

    def watch(self, numbers):
        """A training run's votes act on `numbers` from now on, to the end of the process:
        a stop signal after the last vote lets the finished run complete."""
        self.numbers = tuple(numbers)
        if self.armed:
            self.arm()

    @property
    def name(self):
        return self.received.name if self.received is not None else None


def installed():
    """The command line's Guard, or None (mpidml used as a library: the caller's handlers)."""
    return _installed
