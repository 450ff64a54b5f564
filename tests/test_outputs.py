"""Outputs never destroy anything: only regular files are written, never over an input,
through symlinks, with a temporary that fits any legal name and does not outlive the write.
Devices are nodes of our own in tmp_path, never the system's /dev/null."""
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import MPIEXEC, ROOT, mpiexec, write_h5

from mpidml.errors import UsageError
from mpidml.files.outputs import atomic_write, atomic_write_bytes, check_output

pytestmark = pytest.mark.timeout(120)
LONG = "n" * 250            # legal: NAME_MAX is 255
TOO_LONG = "n" * 256


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Inputs (data, CSV, a model and its metrics) beside a FIFO, a device node, a directory
    and links to the inputs: everything a bad output could destroy."""
    w = tmp_path_factory.mktemp("outputs")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 4)).astype(np.float32), np.arange(200) % 2
    write_h5(w / "d.h5", X=X, y=y)
    (w / "d.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    (w / "run.toml").write_text("epochs = 1\n")
    mpiexec(1, ["--quiet", "--epochs", "1", "--data", w / "d.h5", "--save", w / "m.h5",
                "--metrics-json", w / "m.json"], check=0)
    os.mkfifo(w / "fifo")
    try:
        os.mknod(w / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pass
    (w / "dir").mkdir()
    os.symlink("d.h5", w / "data-link.h5")
    os.link(w / "d.h5", w / "data-hardlink.h5")
    return w


def device(work):
    if not os.path.exists(work / "null"):
        pytest.skip("making a device node needs root")
    return work / "null"


def snapshot(folder):
    """Every entry under `folder`: type, inode, device number and bytes or link target
    (a FIFO is never opened)."""
    state = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            content = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content = f.read()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            state[path] = (stat.S_IFMT(st.st_mode), st.st_ino, st.st_rdev, content)
    return state


def refused(n, args, folder):
    """Exit 2 with one error line, no traceback, nothing changed under `folder`; the line."""
    before = snapshot(folder)
    proc = mpiexec(n, args, timeout=30, check=2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("mpidml: error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert snapshot(folder) == before
    return lines[0]


def command(w, name, out):
    """The arguments of `name` (a command and its output option) writing to `out`."""
    model, data = ["--model", w / "m.h5"], ["--data", w / "d.h5"]
    return {
        "train --save": ["--quiet", "--epochs", "1", *data, "--save", out],
        "train --metrics-json": ["--quiet", "--epochs", "1", *data, "--metrics-json", out],
        "train --trace": ["--quiet", "--epochs", "1", *data, "--trace", out],
        "predict --out": ["predict", *model, *data, "--out", out],
        "evaluate --metrics-json": ["evaluate", *model, *data, "--metrics-json", out],
        "data synth --out": ["data", "synth", "--samples", "100", "--out", out],
        "data convert dst": ["data", "convert", w / "d.csv", out],
        "plot -o": ["plot", w / "m.json", "-o", out],
    }[name]


COMMANDS = ["train --save", "train --metrics-json", "train --trace", "predict --out", "evaluate --metrics-json",
            "data synth --out", "data convert dst", "plot -o"]


@pytest.mark.parametrize("name", COMMANDS)
def test_no_output_is_written_into_a_fifo(work, name):
    line = refused(1, command(work, name, work / "fifo"), work)
    assert line.endswith(f"{name.split()[-1]} {work / 'fifo'}: is a FIFO, not a regular file")


@pytest.mark.parametrize("name", ["train --save", "predict --out", "data synth --out"])
def test_no_output_replaces_a_device(work, name):
    null = device(work)
    assert f"{null}: is a character device, not a regular file" in refused(1, command(work, name, null), work)


@pytest.mark.parametrize("out, why", [("dir", "is a directory, not a regular file"),
                                      ("dir/", "ends in /, so it names a directory, not a file"),
                                      ("missing/m.h5", "missing does not exist"),
                                      (TOO_LONG, "File name too long")])
def test_save_where_no_file_can_be_is_refused_before_training(work, out, why):
    path = str(work / out) + ("/" if out.endswith("/") else "")
    line = refused(1, command(work, "train --save", path), work)
    assert f"--save {path}: " in line and why in line


def test_every_model_file_of_a_sweep_is_checked(work, tmp_path):
    os.mkfifo(tmp_path / "model-001.h5")
    line = refused(1, ["--quiet", "--data", work / "d.h5", "--sweep", "lr=0.1 0.01", "--save-dir", tmp_path],
                   tmp_path)
    assert line.endswith(f"--save-dir {tmp_path / 'model-001.h5'}: is a FIFO, not a regular file")


@pytest.mark.parametrize("args, said", [
    (["--quiet", "--data", "{w}/d.h5", "--save", "{w}/d.h5"], "--save {w}/d.h5: is the same file as --data"),
    (["--quiet", "--data", "{w}/d.h5", "--save", "{w}/data-hardlink.h5"], "same file as --data {w}/d.h5"),
    (["--quiet", "--data", "{w}/d.h5", "--resume", "{w}/m.h5", "--metrics-json", "{w}/m.h5"],
     "--metrics-json {w}/m.h5: is the same file as --resume"),
    (["--quiet", "--data", "{w}/d.h5", "--save", "{w}/x.h5", "--trace", "{w}/x.h5"], "same file as --save"),
    (["predict", "--model", "{w}/m.h5", "--data", "{w}/d.h5", "--out", "{w}/m.h5"], "same file as --model"),
    (["predict", "--model", "{w}/m.h5", "--data", "{w}/d.h5", "--out", "{w}/data-link.h5"], "same file as --data"),
    (["evaluate", "--model", "{w}/m.h5", "--data", "{w}/d.h5", "--metrics-json", "{w}/d.h5"], "same file as --data"),
    (["data", "convert", "{w}/d.csv", "{w}/d.csv"], "dst {w}/d.csv: is the same file as src {w}/d.csv"),
    (["plot", "{w}/m.json", "-o", "{w}/m.json"], "same file as metrics"),
    (["--quiet", "--config", "{w}/run.toml", "--metrics-json", "{w}/run.toml"],
     "--metrics-json {w}/run.toml: is the same file as --config {w}/run.toml"),
    (["--config", "{w}/run.toml", "--save", "{w}/run.toml"], "--save {w}/run.toml: is the same file as --config"),
    (["--config", "{w}/run.toml", "--trace", "{w}/run.toml"], "same file as --config"),
    (["--config", "{w}/run.toml", "--sweep", "lr=0.1 0.2", "--save-dir", "{w}", "--save", "{w}/run.toml"],
     "same file as --config"),
    (["--data", "{w}/d.h5", "--sweep", "lr=0.1 0.2", "--resume", "{w}/dir", "--metrics-json", "{w}/dir/model-001.h5"],
     "--metrics-json {w}/dir/model-001.h5: is the same file as --resume {w}/dir/model-001.h5"),
    (["--data", "{w}/d.h5", "--sweep", "lr=0.1 0.2", "--resume", "{w}/dir", "--save", "{w}/dir/model-000.h5"],
     "--save {w}/dir/model-000.h5: is the same file as --resume"),
    (["--data", "{w}/d.h5", "--save", "{w}/m.h5", "--keep-checkpoints", "2", "--metrics-json", "{w}/m.epoch0003.h5"],
     "--metrics-json {w}/m.epoch0003.h5: is named as a numbered checkpoint"),
])
def test_no_output_overwrites_an_input_or_another_output(work, args, said):
    line = refused(1, [a.format(w=work) for a in args], work)
    assert said.format(w=work) in line


@pytest.mark.parametrize("args, option", [(["--save", ""], "--save"), (["--data", ""], "--data"),
                                          (["--metrics-json", ""], "--metrics-json"),
                                          (["predict", "--model", "m.h5", "--data", "d.h5", "--out", ""], "--out")])
def test_an_empty_path_is_bad_usage(work, args, option):
    assert f"argument {option}: expects a path" in refused(1, args, work)


def test_plot_refuses_an_unknown_image_format(work):
    line = refused(1, ["plot", work / "m.json", "-o", work / "curves.xyz"], work)
    assert f"-o {work / 'curves.xyz'}: unknown image type .xyz" in line


@pytest.mark.parametrize("name, out", [("train --save", "fifo"), ("train --save", "dir/"),
                                       ("predict --out", "m.h5"), ("data synth --out", "fifo")])
def test_three_ranks_refuse_together(work, name, out):
    refused(3, command(work, name, str(work / out) + ("/" if out.endswith("/") else "")), work)


def test_symlinked_and_longest_outputs_are_written_end_to_end(work, tmp_path):
    """A link is written through (its target replaced, in the target's directory), a
    250-character name works, and --save may be the --resume file."""
    (tmp_path / "real").mkdir()
    link = tmp_path / "model.h5"
    os.symlink(tmp_path / "real" / "target.h5", link)
    data = ["--quiet", "--data", work / "d.h5"]
    mpiexec(1, [*data, "--epochs", "1", "--save", link, "--metrics-json", tmp_path / LONG], timeout=60, check=0)
    mpiexec(3, [*data, "--epochs", "2", "--resume", link, "--save", link, "--trace", tmp_path / LONG[1:]],
            timeout=60, check=0)
    assert os.path.islink(link) and os.readlink(link) == str(tmp_path / "real" / "target.h5")
    with h5py.File(link) as f:
        assert f.attrs["epoch"] == "2"
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["real", "target.h5", "model.h5", LONG, LONG[1:]])


def test_kept_checkpoints_whose_names_are_too_long_are_refused_before_training(work):
    save = work / ("n" * 245 + ".h5")
    line = refused(1, ["--data", work / "d.h5", "--save", save, "--keep-checkpoints", "1"], work)
    assert f"--keep-checkpoints {work / ('n' * 245)}.epoch0001.h5: cannot write (File name too long)" in line


def test_kept_checkpoints_of_a_symlinked_save_are_the_epochs_files(work, tmp_path):
    """Each numbered checkpoint is its epoch's file, not one more name for the link."""
    os.symlink("target.h5", tmp_path / "model.h5")
    mpiexec(1, ["--quiet", "--data", work / "d.h5", "--epochs", "3", "--save", tmp_path / "model.h5",
                "--keep-checkpoints", "2"], timeout=60, check=0)
    assert not (tmp_path / "model.epoch0001.h5").exists()     # rotated: the link's target has the series
    for epoch in (2, 3):
        kept = tmp_path / f"model.epoch000{epoch}.h5"
        assert not os.path.islink(kept)
        with h5py.File(kept) as f:
            assert f.attrs["epoch"] == str(epoch)


def test_a_save_of_no_series_keeps_its_checkpoints_with_a_warning(tmp_path, caplog):
    from mpidml.learn.checkpoint import CheckpointSeries
    (tmp_path / "m.h5").write_bytes(b"no model file")
    for epoch in (1, 2):
        CheckpointSeries(str(tmp_path / "m.h5"), 1).add(epoch)
    assert sorted(os.listdir(tmp_path)) == ["m.epoch0001.h5", "m.epoch0002.h5", "m.h5"]
    assert [r.getMessage() for r in caplog.records] == [
        f"mpidml: warning: --keep-checkpoints 1: {tmp_path / 'm.h5'} records no checkpoint series; no earlier "
        "checkpoint removed"] * 2


@pytest.mark.parametrize("make, kind", [(os.mkfifo, "a FIFO"), (os.mkdir, "a directory"),
                                        (lambda p: socket.socket(socket.AF_UNIX).bind(str(p)), "a socket")])
def test_check_output_names_what_is_there(tmp_path, make, kind):
    make(tmp_path / "x")
    with pytest.raises(UsageError, match=f"^--out {tmp_path / 'x'}: is {kind}, not a regular file$"):
        check_output(str(tmp_path / "x"), "--out")


def test_check_output_follows_a_magic_link_as_open_would():
    """/dev/stdout on a pipe (/proc/self/fd/N) resolves to no name a path can show
    (realpath: /proc/PID/fd/pipe:[...]), so it passed the check; the run trained, then
    failed writing 'pipe:[...]: No such file'. It is refused before any work."""
    r, w = os.pipe()
    try:
        with pytest.raises(UsageError, match=f"^--metrics-json /proc/self/fd/{w}: is a FIFO, not a regular file$"):
            check_output(f"/proc/self/fd/{w}", "--metrics-json")
    finally:
        os.close(r), os.close(w)


def test_the_longest_legal_name_works(tmp_path):
    atomic_write_bytes(tmp_path / ("n" * 255), b"{}")
    assert os.listdir(tmp_path) == ["n" * 255]


def test_a_write_through_a_link_keeps_the_link_and_the_umask(tmp_path):
    os.symlink("target", tmp_path / "link")
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "link", b"through")
    finally:
        os.umask(old)
    assert os.readlink(tmp_path / "link") == "target" and (tmp_path / "target").read_bytes() == b"through"
    assert stat.S_IMODE(os.stat(tmp_path / "target").st_mode) == 0o640


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    (tmp_path / "out").write_bytes(b"old")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "out", write)
    assert os.listdir(tmp_path) == ["out"] and (tmp_path / "out").read_bytes() == b"old"


def test_sigterm_during_a_write_removes_the_temporary(tmp_path):
    """The rank dies of the signal as before, and its hidden temporary goes with it."""
    proc = subprocess.Popen([MPIEXEC, "-n", "1", sys.executable, "-m", "mpidml", "data", "synth",
                             "--samples", "5000000", "--features", "20", "--out", tmp_path / "big.h5"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not any(n.startswith(".mpidml-") for n in os.listdir(tmp_path)):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)            # mpiexec forwards it to the rank
    proc.communicate(timeout=30)
    assert proc.returncode != 0 and os.listdir(tmp_path) == []


def kept(folder, stem="m"):
    """{name: (epoch, series)} of the numbered checkpoints in `folder` (series None: no model file)."""
    found = {}
    for p in sorted(folder.glob(f"{stem}.epoch*.h5")):
        try:
            with h5py.File(p) as f:
                found[p.name] = (int(f.attrs["epoch"]), f.attrs.get("series"))
        except OSError:
            found[p.name] = (None, None)
    return found


def test_rotation_counts_and_removes_only_this_runs_series(work, tmp_path):
    """A 3-epoch run after a 5-epoch one keeps its own last 2, not the earlier run's 4 and 5
    (nor a foreign file named like a checkpoint); resumed, it goes on with its own series."""
    run = ["--quiet", "--data", work / "d.h5", "--save", tmp_path / "m.h5"]
    mpiexec(1, [*run, "--epochs", "5", "--keep-checkpoints", "5"], check=0)
    earlier = kept(tmp_path)
    (tmp_path / "m.epoch0009.h5").write_text("not a model")
    mpiexec(1, [*run, "--epochs", "3", "--keep-checkpoints", "2"], check=0)
    now = kept(tmp_path)
    assert [n for n in now if now[n] != earlier.get(n)] == ["m.epoch0002.h5", "m.epoch0003.h5", "m.epoch0009.h5"]
    assert {n: now[n] for n in ("m.epoch0004.h5", "m.epoch0005.h5")} == {n: earlier[n] for n in
                                                                            ("m.epoch0004.h5", "m.epoch0005.h5")}
    assert (tmp_path / "m.epoch0009.h5").read_text() == "not a model"
    series = now["m.epoch0003.h5"][1]
    mpiexec(1, [*run, "--epochs", "4", "--keep-checkpoints", "2", "--resume", tmp_path / "m.h5"], check=0)
    after = kept(tmp_path)
    assert "m.epoch0002.h5" not in after and after["m.epoch0003.h5"] == (3, series)
    assert after["m.epoch0004.h5"] == (4, series) and after["m.epoch0005.h5"] == earlier["m.epoch0005.h5"]


@pytest.mark.parametrize("n", [1, 3])
def test_a_later_numbered_name_that_is_no_model_file_is_one_line(work, tmp_path, n):
    (tmp_path / "m.epoch0002.h5").mkdir()
    (tmp_path / "m.epoch0002.h5" / "keep").write_text("mine")
    proc = mpiexec(n, ["--quiet", "--data", work / "d.h5", "--epochs", "3", "--save", tmp_path / "m.h5",
                       "--keep-checkpoints", "2"], timeout=60, check=2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("mpidml: error:")]
    assert lines == [f"mpidml: error: --keep-checkpoints {tmp_path / 'm.epoch0002.h5'}: is a directory, "
                     "not a regular file; nothing replaced"], proc.stderr
    assert "Traceback" not in proc.stderr and (tmp_path / "m.epoch0002.h5" / "keep").read_text() == "mine"


WRITE_UNTIL_SIGNALLED = """
import os, resource, signal, sys, time
from mpidml.files.outputs import atomic_write_bytes, atomic_write
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
def write(tmp):
    with open(tmp, "wb") as f:
        f.write(b"half")
    print("writing", flush=True)
    if {signum}:
        os.kill(os.getpid(), {signum})
    time.sleep(30)
atomic_write(sys.argv[1], write)
"""


def writer(path, signum=0):
    """A process in the middle of writing `path` (it has made its temporary); with `signum`
    it sends itself that signal there."""
    proc = subprocess.Popen([sys.executable, "-c", WRITE_UNTIL_SIGNALLED.format(signum=int(signum)), str(path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n", proc.stderr.read()
    return proc


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGHUP, signal.SIGQUIT, signal.SIGALRM, signal.SIGUSR1,
                                    signal.SIGXCPU])
def test_a_signal_that_ends_the_writer_removes_its_temporary(tmp_path, signum):
    proc = writer(tmp_path / "out", signum)
    proc.communicate(timeout=30)
    assert proc.returncode == -signum and os.listdir(tmp_path) == []


def test_the_next_write_removes_temporaries_whose_writer_is_provably_dead(tmp_path):
    """SIGKILL runs no handler: its temporary stays until the next write into the directory
    removes it. Kept: a live writer's, another machine's, a reused pid's own process (its
    start time tells), a directory, names of any other scheme."""
    from mpidml.files import outputs
    alive = writer(tmp_path / "other")
    try:
        (live,) = os.listdir(tmp_path)
        killed = writer(tmp_path / "out")
        killed.kill()
        killed.communicate(timeout=30)
        (stale,) = set(os.listdir(tmp_path)) - {live}
        machine, me, dead = outputs._machine(), os.getpid(), killed.pid
        started = outputs._started(me)
        reused = f".mpidml-{machine}{me:08x}{started + 1:012x}-reused00.tmp"
        kept = [f".mpidml-{'0' * 8 if machine != '0' * 8 else '1' * 8}{dead:08x}{1:012x}-elsewher.tmp",
                f".mpidml-{machine}{me:08x}{started:012x}-itsalive.tmp", ".mpidml-abcd1234.tmp", "mpidml-x.tmp",
                f".mpidml-{machine}{dead:08x}{1:012x}-adirecto.tmp"]
        for name in kept[:-1] + [reused]:
            (tmp_path / name).write_bytes(b"")
        (tmp_path / kept[-1]).mkdir()
        before = set(os.listdir(tmp_path))
        atomic_write_bytes(tmp_path / "new", b"{}")
        assert before - set(os.listdir(tmp_path)) == {stale, reused}
        assert set(os.listdir(tmp_path)) == set(kept) | {live, "new"}
    finally:
        alive.kill()
        alive.communicate(timeout=30)


def _stale_temporary(folder):
    """A temporary named by this process's pid with another start time: a dead writer's, whose
    pid is ours now (see _remove_stale)."""
    from mpidml.files import outputs
    started = outputs._started(os.getpid())
    path = folder / f".mpidml-{outputs._machine()}{os.getpid():08x}{started + 1:012x}-stale000.tmp"
    path.write_bytes(b"")
    return path


def test_a_stale_temporary_of_another_user_is_kept(tmp_path, monkeypatch):
    """With /proc mounted hidepid=2 another user's live writer looks dead: only our own go."""
    stale = _stale_temporary(tmp_path)
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)        # the temporary is someone else's
    atomic_write_bytes(tmp_path / "new", b"{}")
    assert stale.exists()


def test_each_directory_is_cleaned_once_per_process(tmp_path, monkeypatch):
    """A sweep rewrites its files each epoch: the directory is listed at the first write only."""
    listed = []
    listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda d=".": listed.append(str(d)) or listdir(d))
    stale = _stale_temporary(tmp_path)
    atomic_write_bytes(tmp_path / "a", b"{}")
    assert not stale.exists()
    for name in ("a", "b", "a"):
        atomic_write_bytes(tmp_path / name, b"{}")
    assert listed.count(str(tmp_path)) == 1


def _can_mount_private_tmpfs(folder):
    """Whether this machine lets us mount a tmpfs in a private mount namespace (root, unshare)."""
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {folder}"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def on_a_full_disk(tmp_path, args, free_kb):
    """Run `mpidml ARGS` (ARGS naming {disk}) on 2 ranks in a private mount namespace where
    {disk} is a 2 MB tmpfs with `free_kb` KB left and /dev/shm a fresh tmpfs (MPICH's
    segments: only this job's). Returns the process and what was left in both."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount_private_tmpfs(disk):
        pytest.skip("needs a private mount namespace with tmpfs (unshare -m, root)")
    cmd = " ".join(map(shlex.quote, [MPIEXEC, "-n", "2", sys.executable, "-m", "mpidml",
                                     *(str(a).format(disk=disk) for a in args)]))
    script = (f"mount -t tmpfs -o size=2m tmpfs {disk} && mount -t tmpfs tmpfs /dev/shm && "
              f"head -c {2048 - free_kb}k /dev/zero > {disk}/filler && cd {ROOT} && {cmd}; rc=$?; "
              f"ls -A {disk} > {tmp_path}/left-disk; ls -A /dev/shm > {tmp_path}/left-shm; exit $rc")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=90,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return proc, (tmp_path / "left-disk").read_text().split(), (tmp_path / "left-shm").read_text().split()


@pytest.mark.parametrize("args, free_kb, out", [
    (["data", "synth", "--samples", "100000", "--features", "20", "--out", "{disk}/x.h5"], 500, "x.h5"),
    (["data", "synth", "--samples", "20000", "--compression", "gzip", "--out", "{disk}/x.h5"], 300, "x.h5"),
    (["data", "convert", "{csv}", "{disk}/x.h5"], 100, "x.h5"),
    (["--quiet", "--epochs", "1", "--model", "mlp", "--hidden", "256", "--sweep", "lr=0.1 0.2",
      "--save-dir", "{disk}/out"], 150, "out/model-000.h5"),
    (["--quiet", "--epochs", "1", "--save", "{disk}/m.h5"], 10, "m.h5"),
    (["predict", "--model", "{work}/m.h5", "--data", "{work}/d.h5", "--out", "{disk}/p.h5"], 0, "p.h5"),
])
def test_a_full_disk_is_one_line_and_leaves_nothing(work, tmp_path, args, free_kb, out):
    """No HDF5 internals, no segfault at exit (MPICH's banner), no temporary, no segment."""
    csv = tmp_path / "big.csv"
    np.savetxt(csv, np.random.default_rng(0).standard_normal((20000, 8)), fmt="%.6f", delimiter=",",
               header="a,b,c,d,e,f,g,label", comments="")
    args = [str(a).replace("{csv}", str(csv)).replace("{work}", str(work)) for a in args]
    proc, left, segments = on_a_full_disk(tmp_path, args, free_kb)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [f"mpidml: error: {tmp_path / 'disk' / out}: cannot write "
                                        "(No space left on device)"], proc.stderr
    assert "BAD TERMINATION" not in proc.stdout and left in (["filler"], ["filler", "out"]) and segments == []
