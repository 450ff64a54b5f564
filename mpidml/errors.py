"""Errors that end a run with the contract's exit codes and one `mpidml: error:` line."""


class MpidmlError(Exception):
    """Base: exit code 1 (unexpected). `agreed` means every rank raised it together."""
    code = 1
    everywhere = False

    def __init__(self, message, agreed=False, everywhere=False):
        super().__init__(message)
        self.agreed = agreed
        self.everywhere = everywhere    # not agreed, but every rank may meet it: reported once


class UsageError(MpidmlError, ValueError):
    """Bad option or bad input file: exit 2. A ValueError too, as Python callers (the
    estimators, mpidml.train) expect of bad arguments."""
    code = 2


class DivergedError(MpidmlError):
    """Non-finite loss or weights: exit 3."""
    code = 3


class StallError(MpidmlError):
    """A peer rank did not arrive in a collective within --stall-timeout: exit 4."""
    code = 4


STOPPED = 75        # EX_TEMPFAIL (sysexits.h): stopped by a signal after a checkpoint; batch scripts requeue


class Stopped(MpidmlError):
    """Every rank stopped on --checkpoint-signal, checkpointed: exit STOPPED. Not an error."""
    code = STOPPED


class RanksLost(MpidmlError):
    """Ranks were lost and the job cannot go on with the rest (--on-failure stop, fewer than
    --min-ranks left, or a failure while starting): the latest consistent state is
    checkpointed where --save asks, exit STOPPED so that batch scripts requeue."""
    code = STOPPED
