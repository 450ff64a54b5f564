"""Outputs never destroy anything: written through symlinks, with a temporary that fits
any legal name and does not outlive the write."""
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from conftest import MPIEXEC, ROOT

from mpidml.checkpoint import atomic_write, atomic_write_bytes

pytestmark = pytest.mark.timeout(120)


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
