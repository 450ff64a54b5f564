"""Batch life: the scripts in run/ (and the README's Slurm snippet) under stand-in launchers,
the Makefile's set-up under a stand-in interpreter, and outputs teammates can read."""
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time

import pytest
from conftest import BIN, DIGITS, MPIEXEC, ROOT

from mpidml.files.outputs import atomic_write_bytes

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


def _quick_env(tmp_path, **extra):
    """The site's environment with launchers (srun, mpiexec) that write their pid to $READY and
    end with 75 the moment SIGUSR1 or SIGTERM reaches them, as if the ranks checkpointed in no
    time, and scontrol and qsub that record their call in requeue.log."""
    env = _site_env(tmp_path, READY=str(tmp_path / "ready"), REQUEUE_LOG=str(tmp_path / "requeue.log"), **extra)
    quick = tmp_path / "quick-bin"
    quick.mkdir()
    launcher = (f"#!{sys.executable} -S\nimport os, signal, time\n"
                "for sig in (signal.SIGUSR1, signal.SIGTERM):\n    signal.signal(sig, lambda *a: os._exit(75))\n"
                "with open(os.environ['READY'] + '.tmp', 'w') as f:\n    f.write(str(os.getpid()))\n"
                "os.rename(os.environ['READY'] + '.tmp', os.environ['READY'])\n"
                "while True:\n    time.sleep(1)\n")
    tools = {"srun": launcher, "mpiexec": launcher}
    for tool in ("scontrol", "qsub"):
        tools[tool] = f'#!/bin/bash\necho "{tool} $*" >> "$REQUEUE_LOG"\n'
    for name, text in tools.items():
        (quick / name).write_text(text)
        (quick / name).chmod(0o755)
    env["PATH"] = os.pathsep.join([str(quick), env["PATH"]])
    return env


def _signal_when_running(cmd, env, cwd, sig, tmp_path):
    """Run a batch script, send `sig` to its shell once the launcher runs, and return the
    script's exit status, stderr and what it asked the scheduler for."""
    for name in ("ready", "requeue.log"):
        (tmp_path / name).unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = tmp_path / "requeue.log"
    return proc.returncode, err, log.read_text() if log.exists() else ""


@pytest.mark.parametrize("script, sig, call", [("slurm.sbatch", signal.SIGUSR1, "scontrol requeue 4242\n"),
                                               ("pbs.sh", signal.SIGTERM, "qsub -v ")])
def test_batch_scripts_requeue_on_the_launchers_own_status_however_fast_it_ends(tmp_path, script, sig, call):
    """The signal ends the shell's `wait` early (128+signal); a launcher that ends at once is
    then already reaped when the script asks whether it still runs. The script must still act
    on the launcher's own 75, every time (the old loop took the 138 in most of these rounds)."""
    env = _quick_env(tmp_path, SLURM_JOB_ID="4242", WALLTIME="1", DATA=DIGITS)
    for _ in range(5):
        rc, err, log = _signal_when_running(["bash", os.path.join(ROOT, "run", script)], env, tmp_path, sig, tmp_path)
        assert (rc, log.startswith(call)) == (75, True), err


def test_slurm_script_is_requeueable_and_appends_to_its_output():
    """`scontrol requeue` needs a requeueable job, and a requeued job keeps its job ID, so its
    mpidml-%j.out would be truncated without --open-mode=append."""
    with open(os.path.join(ROOT, "run", "slurm.sbatch")) as f:
        head = [ln for ln in f.read().split("\nset ")[0].splitlines() if ln.startswith("#SBATCH")]
    options = {opt for ln in head for opt in shlex.split(ln.removeprefix("#SBATCH"), comments=True)}
    assert {"--requeue", "--open-mode=append", "--signal=B:USR1@120"} <= options


def _readme_slurm_snippet():
    """The README's short Slurm script: the indented block that requeues."""
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"(?:^    .*\n)+", f.read(), re.M)
    block, = [b for b in blocks if "scontrol requeue" in b]
    return "".join(ln[4:] + "\n" for ln in block.splitlines())


def test_the_readmes_slurm_snippet_requeues_after_the_warning(tmp_path):
    snippet = _readme_slurm_snippet()
    assert "--requeue" in snippet and "--open-mode=append" in snippet
    (tmp_path / "job.sh").write_text(snippet)
    env = _quick_env(tmp_path, SLURM_JOB_ID="4242", SCRATCH=str(tmp_path))
    rc, err, log = _signal_when_running(["bash", "job.sh"], env, tmp_path, signal.SIGUSR1, tmp_path)
    assert log == "scontrol requeue 4242\n", err


def _pbs_job(tmp_path, on_stdin, **extra):
    """pbs.sh as PBS runs it: the copy qsub took, in the spool directory (or fed to a login
    shell's standard input), started in $HOME, submitted from work/ (not the repository
    root), at the walltime limit."""
    for name in ("spool", "home", "work"):
        (tmp_path / name).mkdir()
    copy = tmp_path / "spool" / "7.server.SC"
    copy.write_text(open(os.path.join(ROOT, "run", "pbs.sh")).read())
    env = _quick_env(tmp_path, PBS_JOBID="7.server", PBS_O_WORKDIR=str(tmp_path / "work"), WALLTIME="1",
                     DATA=DIGITS, **extra)
    if on_stdin:                            # $0 is then "-bash"
        return ["bash", "-c", 'exec -a -bash bash --noprofile -s < "$0"', str(copy)], env
    return ["bash", str(copy)], env


@pytest.mark.parametrize("on_stdin", [False, True])
def test_pbs_script_resubmits_the_script_named_by_SCRIPT_by_absolute_path(tmp_path, on_stdin):
    cmd, env = _pbs_job(tmp_path, on_stdin, SCRIPT="jobs/pbs.sh")   # qsub -v SCRIPT=jobs/pbs.sh jobs/pbs.sh
    original = tmp_path / "work" / "jobs" / "pbs.sh"
    original.parent.mkdir()
    original.write_text("# the user's copy\n")
    rc, err, log = _signal_when_running(cmd, env, tmp_path / "home", signal.SIGTERM, tmp_path)
    assert rc == 75, err
    args = shlex.split(log)
    assert args[:2] == ["qsub", "-v"] and args[3:] == [str(original)], log
    assert f"SCRIPT={original}" in args[2].split(","), log     # and the next job knows it too


@pytest.mark.parametrize("on_stdin", [False, True])
def test_pbs_script_submitted_elsewhere_says_so_and_never_resubmits_a_wrong_path(tmp_path, on_stdin):
    cmd, env = _pbs_job(tmp_path, on_stdin)     # qsub path/to/run/pbs.sh from work/: no work/run/pbs.sh
    rc, err, log = _signal_when_running(cmd, env, tmp_path / "home", signal.SIGTERM, tmp_path)
    assert (rc, log) == (75, ""), err
    missing = tmp_path / "work" / "run" / "pbs.sh"
    said = [ln for ln in err.splitlines() if ln.startswith("mpidml:")]
    assert len(said) == 2 and all(str(missing) in ln for ln in said), err
    assert "qsub -v SCRIPT=" in said[0] and "not resubmitted" in said[1]


def _make(tmp_path, *args):
    """`make ARGS` in the repository with .venv replaced by a stand-in interpreter that only
    records its calls: which install steps each target runs, and how often."""
    venv = tmp_path / "venv"
    if not venv.exists():
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").write_text(f'#!/bin/bash\necho "$*" >> {tmp_path / "calls"}\n')
        (venv / "bin" / "python").chmod(0o755)
    names = ("NP", "ARGS", "PYTHON", "MPICC", "MPIEXEC", "PYTEST", "BENCH", "BENCH_OUT", "BENCH_TORCH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS")) and k not in names}
    (tmp_path / "calls").write_text("")
    proc = subprocess.run(["make", "-s", "-C", ROOT, f"VENV={venv}", *args], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [ln for ln in (tmp_path / "calls").read_text().splitlines() if ln != "-m pip install -q --upgrade pip"]


def test_make_installs_for_each_target_only_what_it_needs_and_once(tmp_path):
    assert _make(tmp_path, "install") == ["-m pip install -q -e .[mpich]"]
    assert _make(tmp_path, "install") == []
    assert _make(tmp_path, "test", "PYTEST=-x") == ["-m pip install -q -e .[test]", "-m pytest -x"]
    assert _make(tmp_path, "test") == ["-m pytest"]
    bench = _make(tmp_path, "bench")
    assert bench[0] == "-m pip install -q -e .[bench]" and len(bench) == 2
    assert "--out .bench/BENCHMARKS.md" in bench[1]           # not the committed report
    bench = _make(tmp_path, "bench", "BENCH_TORCH=1", "BENCH_OUT=BENCHMARKS.md")
    assert bench[0] == "-m pip install -q -e .[torch]" and "--out BENCHMARKS.md" in bench[1]
