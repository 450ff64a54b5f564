"""Outputs written atomically, with the permissions the umask gives, never over an input.

A file is written to a temporary name in the same directory (named for its writer, so
that the next write's sweep removes a dead writer's leftovers), flushed, fsync'ed and
renamed: a crash never leaves a half-written file under the final name. check_output
refuses, before any work, an output that would destroy something (a device, a FIFO, a
directory, one of the run's inputs). Every file mpidml writes goes through here: model
files, metrics, traces, plots, CSVs, staged partitions.
"""
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import signal
import stat
import tempfile
import threading

import h5py

from ..errors import UsageError

log = logging.getLogger("mpidml")

_temporaries = set()        # temporaries of the writes in progress, for _removed_on_signal
_cleaned = set()            # directories whose stale temporaries this process removed (see _temporary)
# a temporary's name: .mpidml-, its writer (machine, pid, start time), mkstemp's 8 characters
_PREFIX = ".mpidml-"
_NAME = re.compile(r"\.mpidml-([0-9a-f]{8})([0-9a-f]{8})([0-9a-f]{12})-[a-z0-9_]{8}\.tmp")


def atomic_write(path, write):
    """Call write(tmp_path), then fsync and rename tmp_path over `path`. A symlinked `path`
    is written through: its target is replaced, in the target's directory, and the link stays."""
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    with _removed_on_signal():
        tmp = temporary(path, directory)
        try:
            write(tmp)
            fsync_path(tmp)
            os.replace(tmp, path)
            fsync_path(directory)
        except BaseException as e:
            unlink_if_there(tmp)
            if isinstance(e, OSError):          # disk full, quota, a directory gone meanwhile
                raise UsageError(f"{path}: cannot write ({_reason(e)})") from e
            raise
        finally:
            release(tmp)


def _reason(e):
    """An OSError in words: its errno's (HDF5's own text spans lines of driver internals)."""
    return os.strerror(e.errno) if e.errno else str(e).split("\n")[0][:200]


@contextlib.contextmanager
def create_h5(tmp):
    """A new HDF5 file at `tmp` (atomic_write's temporary), open for writing, that HDF5 writes
    through: no chunk cache and no sieve buffer, so raw data reaches the file in the call
    that wrote it and a write error (a full disk) is raised there. Cached, it would be
    written when its dataset closes, and HDF5 cannot fail there: the half-closed dataset
    stays registered, and the file's close (or HDF5's own, at exit) crashes on it (a
    segfault, MPI's banner, its shared memory segment left behind). Metadata is still
    written when the file closes (see _close). HDF5's I/O errors come out as OSError."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)      # as h5py.File's own: closing closes all
    fapl.set_cache(0, 0, 0, 0.75)
    fapl.set_sieve_buf_size(0)
    f = h5py.File(h5py.h5f.create(os.fsencode(tmp), h5py.h5f.ACC_TRUNC, fapl=fapl))
    try:
        try:
            yield f
        finally:
            _close(f, tmp)
    except RuntimeError as e:       # h5py raises some of HDF5's I/O errors as RuntimeError
        error = _io_error(e)
        if error is None:
            raise
        raise error from e


def _close(f, tmp):
    """Close the file. Where HDF5 cannot write its metadata, it keeps the file open (and its
    space taken): the file is emptied, which frees the space, and closed again."""
    try:
        f.close()
    except (OSError, RuntimeError):
        os.truncate(tmp, 0)
        with contextlib.suppress(OSError, RuntimeError):
            f.close()
        raise


def _io_error(e):
    """The OSError an HDF5 error reports (the file driver's `errno = 28`), or None."""
    found = re.search(r"errno = (\d+)", str(e))
    return OSError(int(found.group(1)), str(e)) if found else None


def temporary(path, directory):
    """A new empty file in `directory` with the umask's permissions, named after its writer
    (see _writer) once the stale temporaries there are gone: the first write of this process
    there lists the directory, later ones do not (a sweep rewrites its files every epoch, in
    directories of thousands). Its name has a fixed length, so every final name the file
    system allows also works as a temporary."""
    if directory not in _cleaned:
        _cleaned.add(directory)
        _remove_stale(directory)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{_PREFIX}{_writer()}-", suffix=".tmp", dir=directory)
    except OSError as e:
        raise UsageError(f"{path}: cannot write ({e.strerror})") from e
    _temporaries.add(tmp)
    try:
        os.fchmod(fd, 0o666 & ~_umask())    # mkstemp makes 0600; teammates read outputs as with any tool
    finally:
        os.close(fd)
    return tmp


def release(tmp):
    """A temporary renamed or removed by its writer: no signal handler removes it now."""
    _temporaries.discard(tmp)


@functools.lru_cache(maxsize=None)
def _machine():
    """8 hex digits naming this kernel's boot and pid namespace: where a pid means this
    process table's process; xs where there is no /proc to ask (no temporary then matches _NAME)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return "x" * 8
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:8]


def _started(pid):
    """When process `pid` started (clock ticks after boot): None when there is no such
    process, 0 when it cannot be told (no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else 0
    except (OSError, ValueError, IndexError):
        return 0


def _writer():
    """This process, as its temporaries' names record it: machine, pid and start time."""
    return f"{_machine()}{os.getpid():08x}{_started(os.getpid()) or 0:012x}"


def _remove_stale(directory):
    """Remove the temporaries in `directory` whose writer is provably dead: named by a
    process of this machine (see _machine) that is gone, or whose pid is another process's
    now (another start time). A writer killed by SIGKILL (or by the launcher, when mpiexec
    died of a signal) runs no handler and leaves its temporary; this is where it goes. Only
    regular files named as ours and owned by our uid: no other name, and never a temporary of
    a live writer, of another machine (its pids are not ours to check) or of another user
    (with /proc mounted hidepid=2 their live processes look gone to us)."""
    machine = _machine()
    try:
        names = [n for n in os.listdir(directory) if n.startswith(_PREFIX)]
    except OSError:
        return
    for name in names:
        found = _NAME.fullmatch(name)
        if not found or found.group(1) != machine:
            continue
        pid, start = int(found.group(2), 16), int(found.group(3), 16)
        if start and _started(pid) not in (start, 0):
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
                    os.unlink(path)


# the signals that end a process by default, and that a handler can catch
_FATAL_SIGNALS = tuple(getattr(signal, name) for name in (
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPIPE", "SIGVTALRM", "SIGPROF",
    "SIGXCPU", "SIGXFSZ") if hasattr(signal, name))


@contextlib.contextmanager
def _removed_on_signal(signals=_FATAL_SIGNALS):
    """While writing, a signal that would end the process as it stands (no handler of
    anyone else's) first removes the temporaries: a killed job leaves no hidden file.
    (SIGINT has Python's handler, and KeyboardInterrupt removes them in atomic_write.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mine = [s for s in signals if signal.getsignal(s) is signal.SIG_DFL]
    for s in mine:
        signal.signal(s, _remove_and_die)
    try:
        yield
    finally:
        for s in mine:
            signal.signal(s, signal.SIG_DFL)


def _remove_and_die(signum, frame):
    """Remove the temporaries, then end as the signal would have (the same exit status)."""
    for tmp in list(_temporaries):
        unlink_if_there(tmp)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_if_there(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write)


def atomic_write_json(path, obj, indent=None):
    atomic_write_bytes(path, json.dumps(obj, indent=indent).encode())


def check_output(path, option, inputs=()):
    """Refuse an output before any work (exit 2 naming `option`), where writing it would
    destroy something or fail only at the end, with the work lost. `inputs`: the run's
    (option, path) pairs it must not overwrite."""
    path = os.fspath(path)
    problem = _output_problem(path, inputs)
    if problem:
        raise UsageError(f"{option} {path}: {problem}" if path else f"{option}: {problem}")


_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def not_regular(mode):
    """What a file of `mode` that is not a regular file is, as a reason not to write it."""
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
    return f"is {kind}, not a regular file"


def _output_problem(path, inputs):
    """Why `path` may not be written, or None."""
    if not path:
        return "empty path"
    if path.endswith(os.sep):
        return "ends in /, so it names a directory, not a file"
    target = os.path.realpath(path)
    try:    # `path` as open() follows it: /dev/stdout resolves to no name realpath can show
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:                    # a name too long, a symlink loop, a file used as a directory
        return f"cannot write ({e.strerror})"
    if mode is not None and not stat.S_ISREG(mode):
        return not_regular(mode)
    same = next((f"{opt} {p}" for opt, p in inputs if p and same_file(target, p)), None)
    if same:
        return f"is the same file as {same}"
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        return f"directory {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable"
    return None


def same_file(a, b):
    """The same name once links are followed, or the same file under another (hard) link."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:                         # one of them does not exist (yet)
        return False
