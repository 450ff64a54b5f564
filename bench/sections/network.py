"""bench/run.py's `network` section (issue 24): two simulated hosts, one rank each, over a link
unshaped, at 1 Gbit/s and at 100 Mbit/s; the hand-written loop, mpidml's fixed averaging
periods (blocking and overlapped) and `--sync-every auto`, against the ceiling of two
single-rank runs at once.

    .venv/bin/python bench/run.py --only network

Every row of a link runs in the same invocation, round-robin, so read the ratios: this machine
is shared. A row that fails shows its error in the table; the others still run.
"""
import dataclasses
import json
import os
import subprocess

import numpy as np

import harness
from harness import fmt, progress, sh, synth, table, target
from mpidml.learn.aggregate import default_merge_after

LINKS = (("unshaped", ""), ("1 Gbit/s", "1gbit"), ("100 Mbit/s", "100mbit"))    # label, MH_RATE
BATCH = 256                     # harness.SCALE_MODEL's batch per rank
# mpidml's fixed-K rows: label, K, overlapped
FIXED = (("mpidml blocking K=16", 16, False), ("mpidml overlap K=16", 16, True),
         ("mpidml blocking K=64", 64, False), ("mpidml overlap K=64", 64, True),
         ("mpidml overlap K=256", 256, True))
CEILING, LOOP, LOOP_GRADIENTS, AUTO = ("ceiling: 2 single-rank runs at once", "hand-written loop K=16",
                                       "hand-written loop, --sync gradients", "mpidml --sync-every auto")
BLOCKING_16 = FIXED[0][0]
TIMEOUT = 900                   # s per run: a hung run becomes a failed row, not a stuck bench


@dataclasses.dataclass
class Result:
    """One run of a row. `rate` (samples/s, 0 when it failed) and `wait_ms` (ms a rank was
    blocked per average) are what harness.best_of reads; `share`: the share of the training time
    the ranks waited; `merge_ms`: ms an overlapped round's merge waited; `choice`: what
    `--sync-every auto` chose; `error`: one line when the run failed."""
    rate: float = 0.0
    wait_ms: float = 0.0
    share: float = None
    merge_ms: float = None
    accuracy: float = None
    choice: str = ""
    error: str = ""
    every: int = None           # the K it averaged with (auto's last choice)
    overlap: bool = False


@dataclasses.dataclass(frozen=True)
class Hosts:
    """mpiexec-2hosts with one rank per host, the link shaped to `rate` (MH_RATE; "" unshaped),
    MPICH's `mpiexec` as the launcher and this worktree's mpidml on the path of every rank."""
    script: str
    mpiexec: str
    rate: str

    @property
    def launch(self):
        return [self.script, "-n", 2, "-ppn", 1]

    @property
    def env(self):
        return {"MPIEXEC": self.mpiexec, "MH_RATE": self.rate, "PYTHONPATH": harness.ROOT}


def one_line(message):
    """The line that says why a run failed: mpidml's `error:` line, else the last one."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    line = next((ln for ln in lines if "error:" in ln), lines[-1] if lines else "no output")
    return line.replace("|", "/")[:200]


def attempt(name, job):
    """job(), or a failed Result naming its error, so that one row's failure leaves the others."""
    try:
        return job()
    except subprocess.TimeoutExpired:
        error = f"no result after {TIMEOUT} s"
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        error = one_line(str(e))
    progress(f"  {name}: failed: {error}")
    return Result(error=error)


def fresh(name):
    """A path under the bench's scratch folder, with no file left there by an earlier run."""
    path = os.path.join(harness.WORK, name)
    if os.path.exists(path):
        os.remove(path)
    return path


def steps_per_epoch(doc):
    """Every rank's minibatch steps per epoch (the largest partition's, as the trainer counts)."""
    return -(-max(doc["data"]["partition_sizes"]) // BATCH)


def sync_of(doc):
    """(K, overlapped) of a run: `--sync-every auto`'s choice (the last one) or its options; K is
    None where neither is a whole number."""
    auto, config = doc.get("sync") or {}, doc["config"]
    every = auto.get("every", config.get("sync_every"))
    return (every if isinstance(every, int) else None), bool(auto.get("overlap", config.get("overlap")))


def choice_of(doc):
    """What `--sync-every auto` chose, as `K=.. D=..` or `K=.. blocking`; "" without a choice."""
    auto = doc.get("sync") or {}
    if not auto:
        return ""
    took = sum(c.get("took_ms", 0.0) for c in auto.get("choices", []))
    measured = f" (measured in {took:.0f} ms)" if took else ""
    if auto.get("overlap"):
        return f"K={auto.get('every', '?')} D={auto.get('merge_after', '?')}{measured}"
    return f"K={auto.get('every', '?')} blocking{measured}"


def merge_wait_ms(doc, epochs, every):
    """ms a rank waited per overlapped round, mean over ranks: comm_wait_s less the blocking
    averages that end each epoch (collective_s "average") and auto's measuring ("cadence"),
    over the rounds run: those after steps K-1, 2K-1, ... that merge D steps later before
    the epoch's last step (aggregate.Averager skips the others); None when there was none."""
    last = steps_per_epoch(doc) - 1
    merge_after = (doc.get("sync") or {}).get("merge_after") or default_merge_after(every)
    rounds = epochs * sum(1 for s in range(every - 1, last, every) if s + merge_after < last)
    if rounds == 0:
        return None
    t = doc["timing"]["per_rank"]
    waited = [max(0.0, w - c.get("average", 0.0) - c.get("cadence", 0.0))
              for w, c in zip(t["comm_wait_s"], t["collective_s"])]
    return 1e3 * float(np.mean(waited)) / rounds


def run_mpidml(hosts, path, epochs, extra):
    """mpidml over the two hosts with harness.SCALE_MODEL and `extra` (its averaging options)."""
    out = fresh("network.json")
    sh([*hosts.launch, harness.PY, "-m", "mpidml", "--quiet", "--metrics-json", out, "--data", path, "--epochs", epochs,
        *harness.SCALE_MODEL, *extra], timeout=TIMEOUT, env=hosts.env)
    with open(out) as f:
        doc = json.load(f)
    t = doc["timing"]
    every, overlap = sync_of(doc)
    waited = float(np.mean(t["per_rank"]["comm_wait_s"]))
    averages = every and epochs * ((steps_per_epoch(doc) - 1) // every + 1)   # the epochs' closing ones included
    return Result(t["samples_per_s"], 1e3 * waited / averages if averages else 0.0, waited / t["train_s"],
                  merge_wait_ms(doc, epochs, every) if overlap and every else None, doc["test"]["accuracy"],
                  choice_of(doc), every=every, overlap=overlap)


def run_loop(hosts, path, epochs, extra):
    """bench/handloop.py over the two hosts; its wait: the time in its averaging Allreduce
    (mean over ranks, syncs x wait per sync) over its training time."""
    out = fresh("network-loop.json")
    sh([*hosts.launch, harness.PY, os.path.join(harness.ROOT, "bench", "handloop.py"), "--data", path,
        "--epochs", epochs, "--out", out, *extra], timeout=TIMEOUT, env=hosts.env)
    with open(out) as f:
        doc = json.load(f)
    waited = doc["wait_per_sync_ms"] * doc["syncs"] / 1e3
    return Result(doc["samples_per_s"], doc["wait_per_sync_ms"], waited / doc["train_s"], accuracy=doc["accuracy"])


def run_ceiling(rows, epochs, mpiexec):
    """harness.run_ceiling at N=2: two single-rank runs at once, on this host (no link to cross)."""
    return Result(harness.run_ceiling(2, rows, epochs, mpiexec).rate)


def jobs_for(hosts, path, rows, epochs):
    """{row: job} for one link, in the table's order."""
    jobs = {CEILING: lambda: run_ceiling(rows, epochs, hosts.mpiexec),
            LOOP: lambda: run_loop(hosts, path, epochs, ["--sync-every", 16]),
            # one epoch: an Allreduce per step takes minutes over 100 Mbit/s, and samples/s tells all
            LOOP_GRADIENTS: lambda: run_loop(hosts, path, 1, ["--sync", "gradients"])}
    for name, every, overlap in FIXED:
        extra = ["--sync-every", every, "--overlap" if overlap else "--no-overlap"]
        jobs[name] = lambda extra=extra: run_mpidml(hosts, path, epochs, extra)
    jobs[AUTO] = lambda: run_mpidml(hosts, path, epochs, ["--sync-every", "auto"])
    return {name: lambda name=name, job=job: attempt(name, job) for name, job in jobs.items()}


def ratio(res, name, ref):
    """res[name] / res[ref] in samples/s, None where either failed."""
    a, b = res[name], res[ref]
    return None if a.error or b.error else a.rate / b.rate


def shown(x, digits=2, unit=""):
    return "" if x is None else f"{x:.{digits}f}{unit}"


def link_rows(link, res):
    """The table's rows of one link."""
    rows = []
    for name, r in res.items():
        if r.error:
            rows.append([link, name, f"failed: {r.error}", "", "", "", "", "", ""])
            continue
        accuracy = "" if name == CEILING else f"{r.accuracy:.4f}"
        share = "" if name == CEILING else f"{r.share:.1%}"
        rows.append([link, name, fmt(r.rate), shown(ratio(res, name, CEILING)), shown(ratio(res, name, LOOP)),
                     share, shown(r.merge_ms, 3), accuracy, r.choice])
    return rows


def best_fixed(res):
    """The fastest fixed-K mpidml row that ran, or None."""
    ran = [name for name, _, _ in FIXED if not res[name].error]
    return max(ran, key=lambda name: res[name].rate, default=None)


def measured(x, shape):
    """`shape` filled with x, or what says a row it needs failed."""
    return "not measured (a row failed)" if x is None else shape.format(x)


def at_least(what, x, goal, where):
    """A target line `what: 1.23x (target >= goal)`; missed when x is None (a row failed)."""
    return target(f"{what}: {measured(x, '{:.2f}x')} (target >= {goal:g}x)", x is not None and x >= goal, where)


def overlap_pays(res, where):
    """Overlapped against blocking averaging at the fixed K nearest auto's choice (16 or 64):
    at least as fast, or auto does not overlap here (issue 24, item 2)."""
    every, overlap = (res[AUTO].every, res[AUTO].overlap) if not res[AUTO].error else (16, True)
    k = 16 if (every or 16) <= 32 else 64
    pays = ratio(res, f"mpidml overlap K={k}", f"mpidml blocking K={k}")
    chose = "" if overlap else f": it chose {res[AUTO].choice}"
    return target(f"overlap K={k} / blocking K={k}: {measured(pays, '{:.2f}x')} (target >= 1x, or auto does not "
                  f"overlap here{chose})", pays is not None and (pays >= 1.0 or not overlap), where)


def link_targets(link, res):
    """The acceptance lines of one link (issue 24), and whether overlap at K=16 pays there."""
    where = f"network: {link}"
    lines = []
    if link == "100 Mbit/s":
        lines.append(at_least("auto / ceiling", ratio(res, AUTO, CEILING), 0.9, where))
        lines.append(at_least("auto / hand-written loop K=16", ratio(res, AUTO, LOOP), 1.5, where))
        auto, blocking = res[AUTO], res[BLOCKING_16]
        gap = None if auto.error or blocking.error else 100 * (auto.accuracy - blocking.accuracy)
        lines.append(target(f"auto's test accuracy - blocking K=16's: {measured(gap, '{:+.2f} points')} "
                            "(target within 0.5)", gap is not None and abs(gap) <= 0.5, where))
    else:
        best = best_fixed(res)
        lines.append(at_least(f"auto / the best fixed K ({best or 'none ran'})", best and ratio(res, AUTO, best), 0.95,
                              where))
    lines.append(overlap_pays(res, where))
    return f"- {link}: " + "; ".join(lines)


def setup_text(rows, epochs, repeat):
    """What ran, and how to read the table."""
    cores = len(os.sched_getaffinity(0))
    return (f"Two simulated hosts (`shared/multihost/mpiexec-2hosts`: two network namespaces on this {cores}-core "
            f"shared VM joined by a veth pair, TCP between them), one rank on each: the 2 ranks share the VM's "
            f"{cores} cores. The link unshaped (a veth pair moves bytes at memory speed), or shaped by `MH_RATE` "
            "to 1 Gbit/s or 100 Mbit/s (a tc tbf token bucket on each end). MLP 100-256-10, ReLU, momentum SGD "
            f"(lr 0.05, no L2), batch {BATCH} per rank, synthetic {rows:,} x 100 10-class data (noise 1.5, 10k test "
            f"rows), {epochs} epochs; {'one run per row' if repeat == 1 else f'the best of {repeat} runs per row'}, "
            "the rows of a link taken round-robin. The ceiling: two independent single-rank mpidml runs at once "
            f"(blocking K=16, no link), each on a file of {rows // 2:,} rows, their samples/s summed. The "
            "hand-written loop: `bench/handloop.py` (a blocking Allreduce of [weights | momentum] every 16 "
            "steps, or of the gradient every step). Wait share: mpidml, the mean over ranks of "
            "`timing.per_rank.comm_wait_s` (time blocked with nothing else to run) over `timing.train_s`; the "
            "loop, its time in the averaging Allreduce (mean over ranks) over its training time. Merge wait per "
            "overlapped round: `comm_wait_s` less the blocking averages that end each epoch "
            "(`per_rank.collective_s[\"average\"]`) and auto's measuring (`[\"cadence\"]`), mean over ranks, over "
            "the overlapped rounds run (after steps K-1, 2K-1, ... that merge D steps later before the epoch's last "
            "step; for auto, with the K and D it reports); the stop vote's and the epoch loss's small waits "
            "stay in it, so it is an upper bound. The gradient loop runs one epoch. Auto's choice: `sync.every`, "
            "`sync.merge_after` (D) or "
            "blocking, from the metrics.")


def measure(args):
    title = "Across hosts: averaging over a network (two simulated hosts)"
    script = harness.multihost_script("mpiexec-2hosts")
    if not script:
        return title, ("Not run: shared/multihost/mpiexec-2hosts is missing or its --check failed here (it needs "
                       "root, ip and unshare).")
    # a million rows: auto's measuring (about 0.1 s at 100 Mbit/s) weighs on a run of seconds
    # as it would not on a real one; 3 repeats: this machine's noise is +-10% a run
    rows, epochs = (200_000, 2) if args.quick else (1_000_000, 3)
    repeat = 1 if args.quick else 3
    path = synth(f"network-{rows}.h5", "--samples", rows, "--features", 100, "--classes", 10, "--noise", 1.5,
                 "--test-samples", 10_000)
    table_rows, targets = [], []
    for link, rate in LINKS:
        progress(f"network {link}: {len(FIXED) + 4} rows x {repeat}")
        res = harness.best_of(jobs_for(Hosts(script, args.mpiexec, rate), path, rows, epochs), repeat)
        table_rows += link_rows(link, res)
        targets.append(link_targets(link, res))
    text = setup_text(rows, epochs, repeat) + "\n\n"
    text += table(["link", "row", "samples/s", "x ceiling", "x loop K=16", "wait share",
                   "merge wait ms per overlapped round", "test accuracy", "auto's choice"], table_rows)
    text += ("\n\nTargets (issue 24): at 100 Mbit/s auto >= 0.9x the ceiling, >= 1.5x the loop at K=16, and test "
             "accuracy within 0.5 point of blocking K=16; unshaped and at 1 Gbit/s auto >= 0.95x the best fixed K "
             "of its link; on every link overlap at least as fast as blocking, or auto does not choose it there.\n\n")
    return title, text + "\n".join(targets)
