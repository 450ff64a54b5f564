"""Scaling over ranks: N = 1, 2, 4, ... up to the cores, the ceiling (N single-rank runs at once,
no communication), the hand-written mpi4py loop (bench/handloop.py) and mpidml's averaging
modes, in samples/s and milliseconds waited per average against a bare Allreduce of the same
bytes; at the largest N also over TCP, and one traced run (bench/waits.py) that splits the wait.
bench/device.sh runs this section on a many-core machine."""
import dataclasses
import functools
import json
import os

import numpy as np

import waits
from harness import (
    PY,
    ROOT,
    SCALE_MODEL,
    WORK,
    Measured,
    best_of,
    fmt,
    gemm_vs_step,
    mpidml,
    progress,
    rank_counts,
    run_ceiling,
    sh,
    synth,
    table,
    target,
)

SCALE_PARAMS = 100 * 256 + 256 + 256 * 10 + 10
TCP = {"MPIR_CVAR_NOLOCAL": "1", "UCX_TLS": "tcp,self"}   # every message over TCP, as between nodes


@dataclasses.dataclass(frozen=True)
class ScalingRun:
    """One row of the scaling table: the hand-written loop or mpidml with `args`, compared
    with the loop row `peer` against `goal` (from `goal_from` ranks on)."""
    name: str
    args: tuple
    loop: bool = False
    peer: str = ""
    goal: float = None
    goal_from: int = 1
    env: dict = None                # TCP rows: run at the largest N only

    @property
    def gradients(self):
        return "--sync" in self.args


LOOP, LOOP_GRADIENTS, LOOP_TCP = ("hand-written loop, K=16", "hand-written loop, gradient Allreduce",
                                  "hand-written loop, K=16, over TCP")
SCALING_RUNS = (
    ScalingRun(LOOP, ("--sync-every", 16), loop=True),
    ScalingRun(LOOP_GRADIENTS, ("--sync", "gradients"), loop=True),
    ScalingRun("mpidml --sync-every 16", ("--sync-every", 16, "--no-overlap"), peer=LOOP, goal=1.0),
    ScalingRun("mpidml --sync-every 64", ("--sync-every", 64, "--no-overlap"), peer=LOOP),
    ScalingRun("mpidml --sync-every 16 --overlap", ("--sync-every", 16, "--overlap"), peer=LOOP, goal=1.15,
               goal_from=16),
    ScalingRun("mpidml --sync gradients", ("--sync", "gradients"), peer=LOOP_GRADIENTS, goal=0.95),
    ScalingRun(LOOP_TCP, ("--sync-every", 16), loop=True, env=TCP),
    ScalingRun("mpidml --sync-every 16, over TCP", ("--sync-every", 16, "--no-overlap"), peer=LOOP_TCP, goal=1.0,
               env=TCP),
)


def run_loop(n, path, epochs, extra, mpiexec, env=None):
    """bench/handloop.py on n ranks."""
    out = os.path.join(WORK, "loop.json")
    sh([mpiexec, "-n", n, PY, os.path.join(ROOT, "bench", "handloop.py"), "--data", path, "--epochs", epochs,
        "--out", out, *extra], env=env)
    with open(out) as f:
        doc = json.load(f)
    return Measured(doc["samples_per_s"], doc["wait_per_sync_ms"], doc["accuracy"])


def run_mpidml(n, path, epochs, extra, mpiexec, env=None):
    """mpidml on n ranks with the scaling model; the wait is the time a rank spent in its
    averages, start to completion (mean over ranks), per average: one every K steps and one
    at each epoch's end (per step for gradients). Blocked time in the overlapped rounds."""
    doc = mpidml(n, ["--data", path, "--epochs", epochs, *SCALE_MODEL, *extra], mpiexec, env=env, quiet=True)
    steps = -(-max(doc["data"]["partition_sizes"]) // 256)
    t = doc["timing"]
    if "--sync" in extra:
        count, label = epochs * steps, "gradients"
    else:
        K = int(extra[extra.index("--sync-every") + 1])
        count, label = epochs * ((steps - 1) // K + 1), "average"
    if "--overlap" in extra:      # the rounds themselves run behind the steps: count what blocked
        seconds = np.mean(t["per_rank"]["comm_wait_s"])
    else:
        seconds = np.mean([c.get(label, 0.0) for c in t["per_rank"]["collective_s"]])
    return Measured(t["samples_per_s"], 1e3 * float(seconds) / count, doc["test"]["accuracy"])


def bare_allreduce(n, sizes, mpiexec, env=None):
    """Median ms of a blocking Allreduce of each size (bench/allreduce.py)."""
    if n == 1:
        return dict.fromkeys(sizes, 0.0)
    proc = sh([mpiexec, "-n", n, PY, os.path.join(ROOT, "bench", "allreduce.py"), *sizes], env=env)
    return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def measure(args):
    cores = len(os.sched_getaffinity(0))
    ns = rank_counts(min(args.max_ranks or cores, cores))
    rows = args.scaling_rows or (1_000_000 if args.quick else 2_000_000)
    repeat = args.repeat or (1 if args.quick else 3)
    path = synth(f"scale-{rows}.h5", "--samples", rows, "--features", 100, "--classes", 10, "--noise", 1.5,
                 "--test-samples", 100_000)
    t_gemm = min(gemm_vs_step()[0] for _ in range(5))   # noise only ever slows the GEMMs down
    avg_bytes, grad_bytes = 2 * SCALE_PARAMS * 4, SCALE_PARAMS * 4     # [w | momentum], the gradient
    out, checks = [], []
    mp = args.mpiexec
    for n in ns:
        epochs = max(1, n // 2)         # every N trains for about as long
        runs = [r for r in SCALING_RUNS if r.env is None or (n == ns[-1] and n > 1)]
        jobs = {r.name: functools.partial(run_loop if r.loop else run_mpidml, n, path, epochs, list(r.args),
                                          mpiexec=mp, env=r.env) for r in runs}
        progress(f"scaling N={n}: {len(jobs)} runs x {repeat}, then the ceiling")
        res = best_of(jobs, repeat)
        top = run_ceiling(n, rows, epochs, mp).rate
        progress(f"N={n} ceiling ({n} single-rank runs at once): {top:,.0f} samples/s")
        bare = bare_allreduce(n, [avg_bytes, grad_bytes], mp)
        bare_tcp = bare_allreduce(n, [avg_bytes], mp, env=TCP) if n == ns[-1] and n > 1 else {}
        out.append([n, "ceiling: N single-rank runs at once", fmt(top), "", "1.00", "", "", ""])
        for r in runs:
            m = res[r.name]
            ratio = "1.00" if r.loop else f"{m.rate / res[r.peer].rate:.2f}"
            if r.goal is not None and n >= r.goal_from:
                ratio = target(f"{ratio} (target >= {r.goal:g})", m.rate >= r.goal * res[r.peer].rate,
                               f"scaling: N={n} {r.name} x {r.peer}")
            tcp = r.env is not None
            nbytes = grad_bytes if r.gradients else avg_bytes
            out.append([n, r.name, fmt(m.rate), ratio, "" if tcp else f"{m.rate / top:.2f}",
                        f"{m.wait_ms:.3f}" if n > 1 else "",
                        f"{(bare_tcp if tcp else bare)[nbytes]:.3f}" if n > 1 else "", f"{m.accuracy:.4f}"])
        k16, loop = res["mpidml --sync-every 16"], res[LOOP]
        if n == ns[-1] and n > 1:   # one traced run: does the wait go to late peers or to the collective?
            trace = os.path.join(WORK, "scaling-trace.json")
            run_mpidml(n, path, epochs, ["--sync-every", 16, "--no-overlap", "--trace", trace], mp)
            with open(trace) as f:
                w = waits.breakdown(json.load(f)["traceEvents"])
            checks.append(f"N={n}, mpidml --sync-every 16 traced (`bench/waits.py`): of {w['wait_ms']:.3f} ms waited "
                          f"per average, {w['waiting_for_last_arrival_ms']:.3f} ms went to waiting for the last rank "
                          f"to arrive and {w['collective_after_last_arrival_ms']:.3f} ms (median "
                          f"{w['collective_after_last_arrival_median_ms']:.3f}) to the collective once all were in; "
                          f"a bare Allreduce of those bytes takes {bare[avg_bytes]:.3f} ms")
        if n == 1:
            gemm_rate = 256 / t_gemm
            checks.append(target(f"one rank: {k16.rate / gemm_rate:.2f} of the rate its five matrix products allow "
                                 f"alone ({fmt(gemm_rate)} samples/s, timed in this run; target >= 0.7)",
                                 k16.rate >= 0.7 * gemm_rate, "scaling"))
        if n == 2 or (n == ns[-1] and n >= 16):
            goal = 1.5 if n == 2 else 2.0
            checks.append(target(f"N={n}: mpidml's wait per average {k16.wait_ms:.3f} ms, the loop's "
                                 f"{loop.wait_ms:.3f} ms: {k16.wait_ms / max(loop.wait_ms, 1e-9):.2f}x "
                                 f"(target <= {goal:g}x)", k16.wait_ms <= goal * loop.wait_ms, "scaling"))
    text = (f"MLP 100-256-10, ReLU, momentum SGD (lr 0.05, no L2), batch 256 per rank, synthetic {rows:,} x 100 "
            f"10-class data (100k test rows), one BLAS thread per rank, N = {', '.join(map(str, ns))} on this "
            f"{cores}-core machine, max(1, N/2) epochs (so every N trains for about as long); "
            f"{'one run per row' if repeat == 1 else f'the best of {repeat} runs per row, taken round-robin'}. "
            "The ceiling: N independent single-rank mpidml runs at once, each on a file of the rows one rank holds "
            "(no communication), their samples/s summed. The hand-written loop: `bench/handloop.py`, about 80 lines "
            "of numpy and mpi4py (contiguous shard read with h5py, momentum SGD, a blocking Allreduce(IN_PLACE) of "
            "[weights | momentum] every 16 steps, or of the gradient every step). `wait per avg`: milliseconds a rank "
            "spent per average (per step for gradients) in the blocking Allreduce (loop), in its averaging collectives "
            "from start to completion (mpidml, `per_rank.collective_s`; `comm_wait_s`, the time blocked, for "
            "--overlap), the epoch's end included; `bare Allreduce`: a blocking "
            f"Allreduce of the same bytes alone ({avg_bytes:,} B; {grad_bytes:,} B for gradients), median. "
            "Over TCP: `MPIR_CVAR_NOLOCAL=1 UCX_TLS=tcp,self`, every message through the network stack as between "
            "nodes.\n\n")
    text += table(["N", "run", "samples/s", "x loop", "x ceiling", "wait per avg (ms)", "bare Allreduce (ms)",
                   "test accuracy"], out)
    text += "\n\n" + "\n".join(f"- {c}" for c in checks)
    if ns[-1] < 16:
        text += (f"\n\nThis machine has {cores} cores: the 16-rank targets (overlap >= 1.15x the loop, wait per "
                 "average <= 2x the loop's) need a 16-core machine; `bench/device.sh` runs this section there.")
    return "Scaling over ranks against a hand-written loop", text
