"""Shared helpers: launching mpidml under mpiexec with a timeout, and small data files."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
MPIEXEC = os.environ.get("MPIEXEC") or os.path.join(BIN, "mpiexec")


def mpiexec(n, args, timeout=60, script=None, env=None, check=None):
    """Run `python -m mpidml ARGS` (or a script) on n ranks; a hang fails after `timeout` s."""
    target = [script] if script else ["-m", "mpidml"]
    cmd = [MPIEXEC, "-n", str(n), sys.executable, *target, *map(str, args)]
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {timeout} s: {' '.join(cmd)}\n{exc.stdout}\n{exc.stderr}")
    if check is not None:
        assert proc.returncode == check, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def train(n, tmp_path, *args, name="m.json", timeout=90):
    """Train on n ranks and return the metrics document."""
    out = tmp_path / name
    mpiexec(n, ["--quiet", "--metrics-json", out, *args], timeout=timeout, check=0)
    return json.loads(out.read_text())


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


def pytest_configure(config):
    config.addinivalue_line("markers", "network: ranks talk over TCP or across simulated hosts (tests/test_network.py)")
    config.addinivalue_line("markers", "slow: a launch that waits out a timeout on purpose (several seconds)")
