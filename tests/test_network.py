"""The network path: ranks that talk over TCP, as between nodes, train to the same bits as over
shared memory, and a stalled or killed rank on another host is named and ends the job.

One-host tests force every message onto TCP with MPICH's `MPIR_CVAR_NOLOCAL=1` (no shared
memory between ranks) and `UCX_TLS=tcp,self` (UCX then uses TCP, not its own shared memory).
Two-host tests run under shared/multihost/mpiexec-2hosts (two network namespaces joined by a
veth link; needs root) and are skipped where it cannot set up. Every launch has a timeout and
every test removes what its own job left behind: processes (found by a tag in their
environment, never by name) and MPICH's node segments in /dev/shm.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import pytest
from conftest import MPIEXEC, ROOT, Job, mpiexec, pids_by_tag, quiet_lines

pytestmark = [pytest.mark.timeout(120), pytest.mark.network]

TCP = {"MPIR_CVAR_NOLOCAL": "1", "UCX_TLS": "tcp,self"}
GRACE = 2.0          # mpidml.runtime.comm.GRACE: how long the ranks wait for answers to their pings

TRANSPORT = """
import json, os, time
import numpy as np
from mpi4py import MPI
comm = MPI.COMM_WORLD
buf = np.ones(227 * 1024 // 4, np.float32)
for _ in range(20):
    comm.Allreduce(MPI.IN_PLACE, buf)
comm.Barrier()
t0 = time.perf_counter()
for _ in range(200):
    comm.Allreduce(MPI.IN_PLACE, buf)
ms = (time.perf_counter() - t0) / 200 * 1e3
mine = set()
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:            # the listing's own descriptor, closed by now
        continue
    if target.startswith("socket:["):
        mine.add(target[8:-1])
tcp = 0
for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
    with open(table) as f:
        tcp += sum(1 for line in f.readlines()[1:] if line.split()[3] == "01" and line.split()[9] in mine)
counts = comm.gather(tcp)
if comm.rank == 0:
    print(json.dumps({"library": MPI.Get_library_version(), "tcp_connections": counts, "allreduce_ms": ms}))
"""


def _two_hosts_script():
    for base in (os.path.dirname(ROOT), ROOT):        # a fresh clone has shared/ beside it
        path = os.path.join(base, "shared", "multihost", "mpiexec-2hosts")
        if os.path.isfile(path):
            return path
    return None


@pytest.fixture(scope="module")
def two_hosts():
    """The two-host launcher, or a skip where it is missing or cannot set up."""
    script = _two_hosts_script()
    if script is None:
        pytest.skip("shared/multihost/mpiexec-2hosts not found beside the repository")
    try:
        version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True, timeout=30).stdout
        check = subprocess.run([script, "--check"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"mpiexec-2hosts --check: {e}")
    if "HYDRA" not in version:
        pytest.skip(f"mpiexec-2hosts drives MPICH's Hydra; {MPIEXEC} is another launcher")
    if check.returncode != 0:
        pytest.skip(f"mpiexec-2hosts cannot set up here (root, ip and unshare needed): {check.stderr.strip()}")
    return script


def _two_hosts_cmd(script, n, args):
    """n ranks, half on each host (ranks 0..n/2-1 on the first); plain paths only: the
    stand-in ssh splits arguments at spaces."""
    cmd = [script, "-n", str(n), "-ppn", str(n // 2), sys.executable, "-m", "mpidml", *map(str, args)]
    assert not any(" " in c for c in cmd), cmd
    return cmd


def _env(tag=None, **extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPIEXEC=MPIEXEC, **extra)
    if tag:
        env["MPIDML_TEST_TAG"] = tag
    return env


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small synthetic file, made the way a user would, at a path without spaces."""
    path = tmp_path_factory.mktemp("net") / "synth.h5"
    subprocess.run([sys.executable, "-m", "mpidml", "data", "synth", "--samples", "4000", "--features", "12",
                    "--classes", "3", "--test-samples", "800", "--seed", "5", "--out", str(path)],
                   check=True, capture_output=True, timeout=60, cwd=ROOT)
    assert " " not in str(path)
    return path


TRAIN = ["--quiet", "--model", "mlp", "--hidden", "64,32", "--epochs", "2", "--sync-every", "2"]


def _result(metrics, model):
    """What must match bit for bit: per-epoch losses and accuracy, test metrics, partition,
    and every array of the saved model."""
    doc = json.loads(metrics.read_text())
    history = [(h["epoch"], h["train_loss"], h["test_loss"], h["test_accuracy"]) for h in doc["history"]]
    with h5py.File(model) as f:
        arrays = {k: f[k][...] for k in f if isinstance(f[k], h5py.Dataset)}
        step = (int(f.attrs["step"]), int(f.attrs["epoch"]))
    return doc, history, arrays, step


def _assert_identical(a, b):
    (da, ha, xa, sa), (db, hb, xb, sb) = a, b
    assert ha == hb
    assert da["test"] == db["test"] and da["data"] == db["data"] and da["ranks"] == db["ranks"]
    assert sa == sb and xa.keys() == xb.keys() and {"params", "optimizer_state"} <= xa.keys()
    for k in xa:
        assert xa[k].dtype == xb[k].dtype and xa[k].tobytes() == xb[k].tobytes(), k


def _train_one_host(n, tmp_path, data, name, env=None, *extra):
    m, h = tmp_path / f"{name}.json", tmp_path / f"{name}.h5"
    mpiexec(n, [*TRAIN, "--data", data, "--metrics-json", m, "--save", h, *extra], env=env, check=0, timeout=60)
    return _result(m, h)


# -- one host, every message over TCP ------------------------------------------------------
def test_the_tcp_environment_moves_messages_over_tcp(tmp_path):
    """Without the variables the ranks hold no TCP connection to each other; with them every
    rank does, and a bare 227 KB Allreduce takes longer (about 0.2 ms against 0.04 ms here)."""
    script = tmp_path / "transport.py"
    script.write_text(TRANSPORT)
    runs = {}
    for mode, env in (("shm", None), ("tcp", TCP)):
        proc = mpiexec(2, [], script=str(script), env=env, check=0, timeout=60)
        runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    if "MPICH" not in runs["shm"]["library"]:
        pytest.skip("MPIR_CVAR_NOLOCAL is MPICH's; this MPI library is another")
    assert runs["shm"]["tcp_connections"] == [0, 0], runs
    assert all(c >= 1 for c in runs["tcp"]["tcp_connections"]), runs
    print(f"227 KB Allreduce, 2 ranks: shm {runs['shm']['allreduce_ms']:.3f} ms, "
          f"tcp {runs['tcp']['allreduce_ms']:.3f} ms")


def test_training_over_tcp_is_bit_identical_to_shared_memory(tmp_path, data):
    shm = _train_one_host(3, tmp_path, data, "shm")
    tcp = _train_one_host(3, tmp_path, data, "tcp", TCP)
    _assert_identical(shm, tcp)


# -- stall diagnosis and killed ranks ------------------------------------------------------
def _long_run(data, timeout):
    return ["--data", data, "--model", "mlp", "--hidden", "256,128", "--epochs", "100000", "--sync-every", "2",
            "--stall-timeout", str(timeout)]


def _assert_names_only(err, victim):
    lines = quiet_lines(err)
    assert len(lines) == 1 and lines[0].startswith("mpidml: error: "), err
    assert "did not arrive" in lines[0], err
    assert re.findall(r"rank (\d+)", lines[0].split("--stall-timeout)")[-1]) == [str(victim)], err


def _stop_and_expect_named(job, victim, timeout):
    ranks = job.wait_epochs(2)
    os.kill(ranks[victim], signal.SIGSTOP)
    t0 = time.time()
    _, err = job.proc.communicate(timeout=timeout + 3 * GRACE + 20)
    elapsed = time.time() - t0
    assert job.proc.returncode == 4, err
    _assert_names_only(err, victim)
    assert elapsed < timeout + GRACE + 5, elapsed


@pytest.mark.slow
def test_stall_over_tcp_names_only_the_stopped_rank(data):
    """Four ranks on one host over TCP: every live rank pings the others at the same moment,
    so each receives two pings over the network at once (the case the ANY_SOURCE receive lost)."""
    job = Job([MPIEXEC, "-n", "4", sys.executable, "-m", "mpidml", *_long_run(data, 4)],
              f"net-tcp-stall-{os.getpid()}", 4, TCP)
    try:
        _stop_and_expect_named(job, 3, 4)
    finally:
        job.close()


# -- two hosts -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_host_4(tmp_path_factory, data):
    return _train_one_host(4, tmp_path_factory.mktemp("one"), data, "one")


@pytest.mark.parametrize("distribute", ["scatter", "read"])
def test_two_hosts_train_as_one_host(two_hosts, one_host_4, data, tmp_path, distribute):
    """4 ranks over 2 hosts (2 each) give the bits of 4 ranks on one host, in both
    distribution modes (so scatter and read agree over the network too)."""
    m, h = tmp_path / "two.json", tmp_path / "two.h5"
    job = Job(_two_hosts_cmd(two_hosts, 4, [*TRAIN, "--data", data, "--distribute", distribute,
                                            "--metrics-json", m, "--save", h]), f"net-2h-{distribute}-{os.getpid()}", 4)
    try:
        _, err = job.proc.communicate(timeout=90)
    finally:
        job.close()
    assert job.proc.returncode == 0, err
    two = _result(m, h)
    assert two[0]["config"]["distribute"] == distribute
    _assert_identical(one_host_4, two)


@pytest.mark.slow
def test_two_hosts_stall_names_only_the_stopped_rank(two_hosts, data):
    """Rank 3, on the second host, stops: the job ends with exit 4 and one line naming rank 3
    alone (rank 2, its healthy neighbour on that host, was accused too)."""
    job = Job(_two_hosts_cmd(two_hosts, 4, _long_run(data, 4)), f"net-2h-stall-{os.getpid()}", 4)
    try:
        _stop_and_expect_named(job, 3, 4)
        assert job.hosts[0] == job.hosts[1] != job.hosts[2] == job.hosts[3], job.hosts
        # each host's node segment is gone, not only the reporting rank's
        assert len(job.segments) == 2 and not [s for s in job.segments if os.path.exists(s)], job.segments
    finally:
        job.close()


@pytest.mark.slow
def test_two_hosts_killed_rank_ends_the_job(two_hosts, data):
    job = Job(_two_hosts_cmd(two_hosts, 4, _long_run(data, 60)), f"net-2h-kill-{os.getpid()}", 4)
    try:
        ranks = job.wait_epochs(2)
        assert job.hosts[3] != job.hosts[0]
        os.kill(ranks[3], signal.SIGKILL)
        t0 = time.time()
        job.proc.communicate(timeout=30)
        elapsed = time.time() - t0
        assert job.proc.returncode != 0
        assert elapsed < 10, elapsed
        time.sleep(0.5)
        assert not [p for p, env in pids_by_tag(job.tag).items() if b"PMI_RANK" in env], "ranks left running"
    finally:
        job.close()
