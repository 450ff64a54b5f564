"""What bench/run.py's sections share: running commands and mpidml (`sh`, `mpidml`), synthetic
files (`synth`), the report's pieces (`table`, `fmt`, `progress`) and its targets (`target`,
which collects every missed one in MISSED for the summary at the top of the report), and the
measuring helpers more than one section uses. One module, imported by name (bench/ is on
sys.path when bench/run.py runs), so every section appends to the same MISSED list.
"""
import dataclasses
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, ".bench", "data")      # synthetic files and scratch, removed when done
PY = sys.executable
sys.path.insert(0, ROOT)             # this checkout's mpidml for the sections' own imports

T_START = time.perf_counter()
MISSED = []     # every target a section missed, listed at the top of BENCHMARKS.md


def progress(message):
    """One line on stderr per run, so a long section is never silent."""
    print(f"[{time.perf_counter() - T_START:6.0f} s] {message}", file=sys.stderr, flush=True)


def target(text, ok, where=""):
    """`text`, marked when the target it states is missed; `where` names it in the summary."""
    if ok:
        return text
    MISSED.append(f"{where}: {text}" if where else text)
    return f"{text} **MISSED**"


def sh(cmd, timeout=3600, env=None):
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def mpidml(n, args, mpiexec, repeat=1, env=None, what=None, quiet=False):
    """Run mpidml on n ranks; with repeat > 1, the run with the best samples/s (noise only
    ever slows a run down, so the best of a few is the least noisy estimate)."""
    out = os.path.join(WORK, "metrics.json")
    best = None
    for _ in range(repeat):
        sh([mpiexec, "-n", str(n), PY, "-m", "mpidml", "--quiet", "--metrics-json", out, *map(str, args)], env=env)
        with open(out) as f:
            doc = json.load(f)
        if best is None or doc["timing"]["samples_per_s"] > best["timing"]["samples_per_s"]:
            best = doc
    if not quiet:
        progress(f"N={n} mpidml {what or ' '.join(map(str, args))}: {best['timing']['samples_per_s']:,.0f} samples/s")
    return best


def synth(name, *args):
    path = os.path.join(WORK, name)
    if not os.path.exists(path):
        sh([PY, "-m", "mpidml", "data", "synth", "--out", path, *map(str, args)])
    return path


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(x, digits=0):
    return f"{x:,.{digits}f}"


# -- measuring helpers more than one section uses ----------------------------------------
def gemm_vs_step():
    from mpidml.learn.models import build
    from mpidml.learn.optim import Optimizer
    rng = np.random.default_rng(0)
    net = build("mlp", 100, 10, hidden=(256,))
    opt = Optimizer("momentum", net.size, np.float32, 0.05, 1e-4, net.weight_mask())
    net.init(opt.weights, rng)
    X = rng.standard_normal((256, 100)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    g = np.empty(net.size, np.float32)
    W1, W2 = net.views(opt.weights)[0][0], net.views(opt.weights)[1][0]
    H, Z = np.empty((256, 256), np.float32), np.empty((256, 10), np.float32)
    gW1, gW2, dH = np.empty_like(W1), np.empty_like(W2), np.empty((256, 256), np.float32)

    def gemms():
        np.matmul(X, W1, out=H)
        np.matmul(H, W2, out=Z)
        np.matmul(H.T, Z, out=gW2)
        np.matmul(Z, W2.T, out=dH)
        np.matmul(X.T, dH, out=gW1)

    def step():
        net.loss_grad(opt.weights, X, y, g)
        opt.step(g, 0.05)

    def timed(f, n=2000):
        f()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t0) / n
    return timed(gemms), timed(step)


SCALE_NET = ["--model", "mlp", "--hidden", 256, "--batch-size", 256]
SCALE_MODEL = [*SCALE_NET, "--optimizer", "momentum", "--lr", 0.05, "--l2", 0]


@dataclasses.dataclass
class Measured:
    """One run of the scaling table: samples/s over all ranks, milliseconds a rank waited per
    average (or per gradient Allreduce), test accuracy."""
    rate: float
    wait_ms: float
    accuracy: float


def rank_counts(limit):
    """1, 2, 4, ... up to `limit`, and `limit` itself."""
    ns = [1]
    while ns[-1] * 2 <= limit:
        ns.append(ns[-1] * 2)
    return ns if ns[-1] == limit else ns + [limit]


def run_ceiling(n, rows, epochs, mpiexec):
    """n independent single-rank runs at once, each on a file of rows/n rows (one rank's
    share), their samples/s summed: the machine's rate for this model without communication."""
    path = synth(f"ceiling-{rows // n}.h5", "--samples", rows // n, "--features", 100, "--classes", 10, "--noise", 1.5,
                 "--test-samples", 1000)
    outs = [os.path.join(WORK, f"ceiling-{i}.json") for i in range(n)]
    cmd = [mpiexec, "-n", 1, PY, "-m", "mpidml", "--quiet", "--data", path, "--epochs", epochs, "--sync-every", 16,
           "--no-overlap", *SCALE_MODEL]
    procs = [subprocess.Popen([str(c) for c in [*cmd, "--metrics-json", out]], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for out in outs]
    for p in procs:
        if p.wait(timeout=3600) != 0:
            raise RuntimeError(f"a ceiling run failed: {p.stderr.read()}")
    docs = [json.load(open(out)) for out in outs]
    return Measured(sum(d["timing"]["samples_per_s"] for d in docs), 0.0, 0.0)


def best_of(jobs, repeat):
    """Run every job `repeat` times, round-robin (so the machine's noise spreads over all of
    them), and keep each one's fastest run."""
    best = {}
    for _ in range(repeat):
        for name, job in jobs.items():
            m = job()
            progress(f"  {name}: {m.rate:,.0f} samples/s, wait {m.wait_ms:.3f} ms per average")
            if name not in best or m.rate > best[name].rate:
                best[name] = m
    return best


def pages_out_idle_memory():
    """True where the kernel runs DAMON with the pageout action (this project's VMs do): it
    drops page-cache pages it takes for idle, even of a file read seconds earlier (here,
    three back-to-back `--distribute read` runs of the 1.6 GB file took 1.1, 0.11, 1.2 s)."""
    root = "/sys/kernel/mm/damon/admin/kdamonds"

    def read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return ""
    actions = glob.glob(f"{root}/[0-9]*/contexts/[0-9]*/schemes/[0-9]*/action")
    return any(read(a) == "pageout" and read(a.split("/contexts/")[0] + "/state") == "on" for a in actions)


def multihost_script(name):
    """shared/multihost/NAME beside the repository (or inside it), where it can set up here."""
    for base in (os.path.dirname(ROOT), ROOT):
        path = os.path.join(base, "shared", "multihost", name)
        if os.path.isfile(path):
            check = subprocess.run([path, "--check"], capture_output=True, timeout=60)
            return path if check.returncode == 0 else None
    return None


def mpi_launchers(args):
    """{MPI: (how to start N ranks on this host, on two hosts with K per host; its python)}."""
    mpirun = os.path.join(args.openmpi, "mpirun")
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    ft = ["--with-ft", "ulfm"]
    mpiexec2, mpirun2 = multihost_script("mpiexec-2hosts"), multihost_script("mpirun-2hosts")
    return {
        "MPICH": (lambda n: [args.mpiexec, "-n", n],
                  mpiexec2 and (lambda n, k: [mpiexec2, "-n", n, "-ppn", k]), {"MPIEXEC": args.mpiexec}, PY),
        "Open MPI (ULFM)": (lambda n: [mpirun, *ft, "--oversubscribe", *root, "-n", n],
                            mpirun2 and (lambda n, k: [mpirun2, *ft, "-n", n, "--map-by", f"ppr:{k}:node"]),
                            {"MPIRUN": mpirun}, os.path.join(args.openmpi, "python")),
    }
