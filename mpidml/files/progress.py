"""Feedback on long input work: distributing a 1.6 GB gzip file took 15 s before the first
line. Rank 0 reports how far it has come: a line every few seconds where stdout is a file
or a pipe (batch logs), a bar redrawn in place on a terminal (or with --progress-bar),
nothing with --quiet, and nothing at all for work done within QUIET_S. The caller ticks
once per window of rows, so the clock is read once a window, not once a row.
"""
import logging
import os
import stat
import sys
import time

log = logging.getLogger("mpidml")
QUIET_S = 2.0       # work done sooner shows nothing
EVERY_S = 5.0       # seconds between lines
REDRAW_S = 0.2      # seconds between redraws of the bar
BAR_WIDTH = 30
LINE_S = 1.0        # seconds between epoch lines, when there are many (first and last always)


def style(cfg, rank):
    """How rank `rank` shows progress for the train options `cfg`: 'bar', 'lines' or None."""
    if rank != 0 or cfg.quiet:
        return None
    return "bar" if cfg.progress_bar or terminal() else "lines"


def terminal(out=None):
    """Whether rank 0's output reaches a terminal: its stdout is one, or it runs under a
    local MPICH mpiexec (the rank writes to a pipe to hydra_pmi_proxy, the proxy to a pipe
    to mpiexec, which passes the bytes on unchanged) whose stdout is one. Elsewhere (a
    file, a remote node, srun's pipes, Open MPI's mpirun, which indents and prefixes the
    lines it forwards) there are no redraws. Open MPI's launcher gives every rank a terminal
    of its own (a pty), whatever mpirun's stdout is: the clearing meant for it reached logs
    as lines indented by the bar's width."""
    out = out or sys.stdout
    try:
        if out.isatty():
            return not launched_by_open_mpi()
    except ValueError:                   # closed
        return False
    proxy = os.getppid()
    launcher = _parent(proxy)
    if _name(proxy) != "hydra_pmi_proxy" or launcher is None or not _name(launcher).startswith("mpiexec"):
        return False
    path = f"/proc/{launcher}/fd/1"
    try:
        # only a character device can be a terminal; opening a FIFO whose reader has gone
        # would block for ever, outside any stall deadline
        if not stat.S_ISCHR(os.stat(path).st_mode):
            return False
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def launched_by_open_mpi():
    """Whether Open MPI's mpirun started this process: it sets OMPI_COMM_WORLD_SIZE (its
    documented variables) in every rank's environment."""
    return "OMPI_COMM_WORLD_SIZE" in os.environ


def _name(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def epoch_bar(epoch, fraction, elapsed, rows, loss, since=0.0, width=BAR_WIDTH):
    """The bar within an epoch: how far, samples per second across the ranks (`rows`: the
    training rows of all ranks), the time left in the epoch and rank 0's running loss.
    `elapsed`: seconds since the epoch was seen at fraction `since`."""
    done = fraction - since
    pace = ""
    if done > 0 and elapsed > 0:         # not yet measured on the first redraw of an epoch
        pace = f"  {done * rows / elapsed / 1e3:.1f}k samples/s  {elapsed * (1 - fraction) / done:.0f} s left"
    shown = f"  loss {loss:.4f}" if loss is not None else ""
    return f"  epoch {epoch} [{'#' * int(fraction * width):<{width}}] {fraction:4.0%}{pace}{shown}"


def redraw(out, text):
    """Write and flush a bar's redraw. A closed pipe (`... --progress-bar | head`) ends the
    output, not the run: rank 0 died of BrokenPipeError there and its peers waited until
    --stall-timeout. Returns False once the output is gone."""
    try:
        out.write(text)
        out.flush()
        return True
    except OSError as e:
        output_lost(e)
        return False


def output_lost(error):
    """stdout cannot be written: a closed pipe (`| head`: the reader has what it wanted) or
    a full or failing disk under `> run.log` (said once on stderr). Either ends the output,
    not the run."""
    if not isinstance(error, BrokenPipeError):
        try:
            sys.stderr.write(f"mpidml: warning: stdout: cannot write ({error.strerror or error}); "
                             "the rest of the output is dropped\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    quiet_stdout()


def quiet_stdout():
    """Point stdout at /dev/null, so that later writes and the flush at exit do not fail on
    the closed pipe too."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def size(n):
    """Bytes for people: 640 MB, 1.6 GB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 999.5 or unit == "TB":
            break
        n /= 1000
    return f"{n:.1f} {unit}" if n < 9.95 and unit != "B" else f"{n:.0f} {unit}"


def meter(how):
    """What data.distribute and data.stage take to show their progress as `how` (a style)."""
    def make(what, total, row_bytes, share=1.0):
        return Progress(what, total, row_bytes, how, share)
    return make


class Progress:
    """Progress through `total` rows of `row_bytes` each of `what`, shown as `how` (a
    `style`; None shows nothing). `share`: the part of the rows this rank handles itself;
    where every rank reads its share, rank 0's pace stands for all of them."""

    def __init__(self, what, total, row_bytes, how, share=1.0, clock=time.monotonic, out=None):
        self.what, self.how, self.clock = what, how, clock
        self.total, self.mine = total * row_bytes, max(1.0, total * share)
        self.out = out or sys.stdout
        self.done, self.shown, self.width = 0, False, 0
        self.start = clock()
        self.due = self.start + QUIET_S

    def tick(self, rows):
        """`rows` more done by this rank."""
        self.done += rows
        if self.how is None:
            return
        now = self.clock()
        if now >= self.due:
            self._show(now)

    def _show(self, now):
        self.shown = True
        fraction = min(1.0, self.done / self.mine)
        state = f"{size(fraction * self.total)} of {size(self.total)}, {fraction:.0%}, {now - self.start:.0f} s"
        if self.how == "bar":
            line = f"  {self.what} [{'#' * int(fraction * BAR_WIDTH):<{BAR_WIDTH}}] {state}"
            self.width = max(self.width, len(line))
            if not redraw(self.out, f"\r{line:<{self.width}}"):
                self.how = None
            self.due = now + REDRAW_S
        else:
            log.info(f"{self.what}: {state}")
            self.due = now + EVERY_S

    def close(self):
        """The work is done: a last line, where any was shown (the bar is cleared first)."""
        if not self.shown:
            return
        if self.how == "bar":
            redraw(self.out, "\r" + " " * self.width + "\r")
        log.info(f"{self.what}: {size(self.total)} in {self.clock() - self.start:.1f} s")


class _Handler(logging.StreamHandler):
    """A progress line stdout cannot take (a closed pipe, `mpidml ... | head`; a full disk)
    ends the output, not the run; a rank's stderr that cannot be written has no one to tell."""

    def handleError(self, record):
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            if self.stream is sys.stdout:
                output_lost(error)
            return
        super().handleError(record)


def setup_logging(rank, quiet=False):
    """Rank 0's progress and results go to stdout, every warning to stderr (so that
    `mpidml ... > out.txt` still shows them, and stdout stays the run's output); other
    ranks log warnings alone, to stderr, marked with their rank."""
    form = logging.Formatter("%(message)s" if rank == 0 else f"[rank {rank}] %(message)s")
    warnings = _Handler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    handlers = [warnings]
    if rank == 0:
        results = _Handler(sys.stdout)
        results.addFilter(lambda record: record.levelno < logging.WARNING)
        handlers.append(results)
    for handler in handlers:
        handler.setFormatter(form)
    log.handlers[:] = handlers
    log.propagate = False
    log.setLevel(logging.WARNING if (quiet or rank != 0) else logging.INFO)
