"""Batch life: the scripts in run/ under a stand-in launcher, and outputs teammates can read."""
import json
import os
import stat
import subprocess
import sys

import pytest
from conftest import BIN, DIGITS, MPIEXEC, ROOT

from mpidml.checkpoint import atomic_write_bytes

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "out.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out.json").st_mode) == mode


def test_training_outputs_are_0644_under_umask_022(tmp_path):
    out = {name: tmp_path / name for name in ("m.h5", "m.json", "t.json")}
    subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "mpidml", "--quiet", "--epochs", "2",
                    "--save", out["m.h5"], "--metrics-json", out["m.json"], "--trace", out["t.json"]],
                   cwd=ROOT, check=True, capture_output=True, timeout=60, umask=0o022)
    assert {n: oct(stat.S_IMODE(os.stat(p).st_mode)) for n, p in out.items()} == dict.fromkeys(out, "0o644")


def _fake_launchers(tmp_path):
    """srun and scontrol stand-ins: srun drops its options and runs the command on 2 ranks
    with the project's mpiexec (as Slurm would, on the job's tasks)."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "srun").write_text(f'#!/bin/bash\nwhile [[ $1 == -* ]]; do shift; done\nexec {MPIEXEC} -n 2 "$@"\n')
    (fake / "scontrol").write_text("#!/bin/bash\nexit 0\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    return fake


def _site_env(tmp_path, **extra):
    """The environment of a site where none of the scheduler's variables are set."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "PBS_", "MPIDML_")) and k not in ("SCRATCH", "NP", "OUT", "DATA")}
    env["PATH"] = os.pathsep.join([str(_fake_launchers(tmp_path)), BIN, env.get("PATH", "")])
    env.update(extra)
    return env


@pytest.mark.parametrize("script", ["slurm.sbatch", "pbs.sh"])
def test_batch_scripts_run_with_the_sites_variables_unset(tmp_path, script):
    """No $SCRATCH, no SLURM_* or PBS_NODEFILE: the scripts fall back to the submit directory
    and the local cores instead of stopping on an unbound variable or running 0 ranks."""
    env = _site_env(tmp_path, DATA=DIGITS, EPOCHS="2")
    proc = subprocess.run(["bash", os.path.join(ROOT, "run", script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / ("mpidml-mpidml" if script == "slurm.sbatch" else "mpidml-out")
    doc = json.loads((out / "metrics.json").read_text())
    assert (out / "model.h5").exists() and len(doc["history"]) == 2
    assert doc["ranks"] == (2 if script == "slurm.sbatch" else len(os.sched_getaffinity(0)))


def test_local_script_takes_options_without_a_rank_count(tmp_path):
    env = _site_env(tmp_path, VENV=os.path.dirname(BIN))
    proc = subprocess.run(["bash", os.path.join(ROOT, "run", "local.sh"), "--data", DIGITS, "--epochs", "1",
                           "--quiet", "--metrics-json", tmp_path / "m.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "m.json").read_text())["ranks"] == 2
