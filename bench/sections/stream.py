"""bench/run.py's `stream` section (issue 22's acceptance): a file larger than the ranks' memory
trained within it, and what streaming costs against training in memory, page cache warm and cold.

    .venv/bin/python bench/run.py --only stream

Every case runs at N=2 in the same invocation, so read the ratios: this machine is shared.
"""
import json
import os
import re
import threading
import time

import harness
from harness import fmt, mpidml, progress, sh, synth, table, target

N = 2
LIMIT = "256M"                  # per rank: the two ranks may use 512 MB together
LIMIT_BYTES = 256 << 20
FEATURES = 100
BIG = (4_000_000, 200_000)      # training and test rows: 1.7 GB of float32, > 3x the 512 MB
FITS = (1_000_000, 100_000)     # 0.44 GB: fits in memory
MODELS = (("softmax", []), ("MLP 100-128-10", ["--model", "mlp", "--hidden", 128]))
WAIT_BOUND = 0.2                # reading is the bottleneck when ranks wait for chunks this share of train_s
KEEP_COLD_S = 0.2               # how often the cold run drops the file's pages
COLD_BATCH = 4096               # the least work per row (and 16x fewer averages): reading's best chance to bound


def gb(nbytes):
    return f"{nbytes / 1e9:.2f} GB"


def rows_mb(doc):
    """MB/s of training rows (float32 features) a run consumed over its train_s."""
    return doc["data"]["train_samples"] * doc["data"]["features"] * 4 / doc["timing"]["train_s"] / 1e6


def wait_share(doc):
    """The largest share of train_s a rank waited for a chunk (read_wait_s counts the chunk waits
    of test scoring too, which train_s leaves out: an upper bound)."""
    t = doc["timing"]
    return max(t["per_rank"]["read_wait_s"]) / t["train_s"]


def rss(doc):
    return " / ".join(f"{mb:.0f}" for mb in doc["memory"]["peak_rss_mb"])


# -- the page cache -----------------------------------------------------------------------
def read_through(path):
    """Read the whole file once, so its pages are in the page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass


def drop_pages(path, sync=True):
    """Ask the kernel to drop the file's pages from the page cache; `sync`: write dirty pages
    back first (DONTNEED skips them), needless again while nobody writes the file."""
    if sync:
        os.sync()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident(path):
    """Bytes of the file in the page cache (fincore), or None where fincore is missing."""
    try:
        return int(sh(["fincore", "--bytes", "--noheadings", "--output", "RES", path]).stdout.split()[0])
    except (OSError, RuntimeError, ValueError, IndexError):
        return None


def dd_rate(path):
    """MB/s of `dd if=path of=/dev/null bs=16M`, as dd reports bytes and seconds."""
    report = sh(["dd", f"if={path}", "of=/dev/null", "bs=16M"]).stderr
    nbytes, seconds = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", report).groups()
    return int(nbytes) / float(seconds) / 1e6


class KeepCold:
    """Drops a file's pages every KEEP_COLD_S seconds while a run reads it: a streamed run reads
    every row at setup (values checked, statistics) and again in each epoch, so without this
    its epoch would read what setup left cached, unlike a file larger than the page cache."""

    def __init__(self, path):
        self.path, self.stop = path, threading.Event()
        self.thread = threading.Thread(target=self._drop, daemon=True)

    def _drop(self):
        while not self.stop.wait(KEEP_COLD_S):
            drop_pages(self.path, sync=False)

    def __enter__(self):
        drop_pages(self.path)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# -- the cases ----------------------------------------------------------------------------
def over_memory(args, path, size):
    """The file (> 3x the ranks' limits together) trained under --memory-limit: streaming must
    turn itself on (its line, data.stream.why), and each rank's peak RSS stay under the limit."""
    out = os.path.join(harness.WORK, "stream-memory.json")
    proc = sh([args.mpiexec, "-n", N, harness.PY, "-m", "mpidml", "--quiet", "--metrics-json", out, "--data", path,
               "--epochs", 1, "--batch-size", 256, "--memory-limit", LIMIT])
    with open(out) as f:
        doc = json.load(f)
    line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("mpidml: streaming")), None)
    why = doc["data"].get("stream", {}).get("why")
    peak = max(doc["memory"]["peak_rss_mb"])
    progress(f"stream: {gb(size)} under --memory-limit {LIMIT}: why {why}, peak RSS {rss(doc)} MB, "
             f"{doc['timing']['samples_per_s']:,.0f} samples/s")
    ratio = target(f"{peak / (LIMIT_BYTES >> 20):.2f} of the limit (target < 1)", peak < LIMIT_BYTES >> 20,
                   "stream: peak RSS / --memory-limit")
    row = [f"file > 3x memory: --memory-limit {LIMIT} (auto streaming, why: {why})", fmt(doc["data"]["train_samples"]),
           gb(size), f"{LIMIT} per rank", rss(doc), fmt(doc["timing"]["samples_per_s"]), fmt(rows_mb(doc)), ratio,
           f"{wait_share(doc):.2f}"]
    said = target(f"its line: `{line}`" if line else "no `mpidml: streaming` line on stderr",
                  line is not None and why == "auto", "stream: auto streaming under --memory-limit")
    return row, said


def warm(args, path, size):
    """In memory against --stream on a file that fits, its pages read just before every run:
    best of 3, the two alternating, for each model; every run's samples/s kept for the spread."""
    rows, verdicts = [], []
    repeat = 1 if args.quick else 3
    for name, model in MODELS:
        common = ["--data", path, "--epochs", 1 if args.quick else 2, "--batch-size", 256, *model]
        docs = {"in memory": [], "--stream": []}
        for _ in range(repeat):
            for how, extra in (("in memory", []), ("--stream", ["--stream"])):
                read_through(path)
                docs[how].append(mpidml(N, [*common, *extra], args.mpiexec, what=f"{name} {how} (warm)"))
        rates = {how: [d["timing"]["samples_per_s"] for d in runs] for how, runs in docs.items()}
        ratio = max(rates["--stream"]) / max(rates["in memory"])
        spread = "; ".join(f"{how} {', '.join(fmt(r) for r in rs)}" for how, rs in rates.items())
        verdicts.append(f"{name}: {ratio:.2f}x ({'passes' if ratio >= 0.9 else 'misses'}; every run's samples/s: "
                        f"{spread})")
        for how, runs in docs.items():
            doc = max(runs, key=lambda d: d["timing"]["samples_per_s"])
            mark = "1.00" if how == "in memory" else target(f"{ratio:.2f} (target >= 0.9)", ratio >= 0.9,
                                                            f"stream: warm {name} --stream / in memory")
            rows.append([f"page cache warm, {name}, {how}", fmt(doc["data"]["train_samples"]), gb(size),
                         "auto", rss(doc), fmt(doc["timing"]["samples_per_s"]), fmt(rows_mb(doc)), mark,
                         f"{wait_share(doc):.2f}" if how == "--stream" else ""])
    return rows, verdicts


def shares(doc):
    """Where a rank's train_s went: its largest compute, collective-wait and chunk-wait shares."""
    t = doc["timing"]
    return {k: max(t["per_rank"][k]) / t["train_s"] for k in ("compute_s", "comm_wait_s", "read_wait_s")}


def dropped(path, size):
    """Drop the file's pages and check it worked: (its bytes still cached (None without fincore),
    dd's MB/s right after the drop, dd's MB/s from the page cache, why it did not work or None)."""
    drop_pages(path)
    left = resident(path)
    cold_dd = dd_rate(path)
    warm_dd = dd_rate(path)     # the same read again, from the page cache
    if left is not None:
        failed = left > 0.05 * size and f"{gb(left)} of it still cached"
    else:
        failed = cold_dd > 0.5 * warm_dd and (f"a read after dropping ran at {cold_dd:,.0f} MB/s, against "
                                              f"{warm_dd:,.0f} MB/s from the page cache")
    return left, cold_dd, warm_dd, failed or None


def cold(args, path, size):
    """--stream on a cold file (softmax, 1 epoch) against dd's sequential read of it, both with the
    file's pages dropped first; dd before and after the run, the faster one the reference."""
    left, before, cached, failed = dropped(path, size)
    if failed:
        return [], f"Cold cache: not measured: dropping the file's pages did not work here ({failed})."
    with KeepCold(path):
        doc = mpidml(N, ["--data", path, "--epochs", 1, "--batch-size", COLD_BATCH, "--stream"], args.mpiexec,
                     what="softmax --stream (cold)")
    after_run = resident(path)
    drop_pages(path)
    after = dd_rate(path)
    dd, rate, share = max(before, after), rows_mb(doc), wait_share(doc)
    bound = share >= WAIT_BOUND
    ratio = f"{rate / dd:.2f}"
    if bound:
        ratio = target(f"{ratio} (target >= 0.8)", rate >= 0.8 * dd, "stream: cold --stream rows MB/s / dd")
    rows = [["cold: dd if=FILE of=/dev/null bs=16M (pages dropped)", "", gb(size), "", "", "", fmt(dd), "1.00", ""],
            [f"cold: softmax, batch {COLD_BATCH}, --stream, 1 epoch (pages dropped throughout)",
             fmt(doc["data"]["train_samples"]), gb(size), "auto", rss(doc), fmt(doc["timing"]["samples_per_s"]),
             fmt(rate), ratio, f"{share:.2f}"]]
    checked = (f"fincore: {gb(left)} of it cached after the drop, {gb(after_run)} right after the run"
               if left is not None else f"fincore is missing; dd after the drop ran at {before:,.0f} MB/s, from "
               f"the page cache at {cached:,.0f} MB/s")
    note = (f"Cold cache: the file's pages dropped (`posix_fadvise(DONTNEED)` after `sync`; {checked}). dd read it "
            f"at {before:,.0f} MB/s before the run and {after:,.0f} MB/s after it (pages dropped each time; the "
            f"faster is the reference), {cached:,.0f} MB/s from the page cache. During the run a thread of the bench "
            f"dropped the file's pages every {KEEP_COLD_S:g} s, since the streamed run's setup pass reads every row "
            "once before the epoch does. The VM's disk is cached by its host, so a read that misses this VM's page "
            "cache may still come from the host's memory (dd's rate varies from run to run). ")
    if bound:
        note += (f"Reading was the bottleneck: a rank waited for chunks {share:.0%} of train_s (>= {WAIT_BOUND:.0%}), "
                 f"so the target applies: streamed {rate:,.0f} MB/s of rows = {rate / dd:.2f}x dd.")
    else:
        note += (f"Reading was not the bottleneck: ranks waited for chunks at most {share:.0%} of train_s "
                 f"(< {WAIT_BOUND:.0%}); training consumed {rate:,.0f} MB/s of rows ({rate / dd:.2f}x dd), so the "
                 ">= 0.8x target does not apply to this run.")
    note += (" Of train_s, a rank spent at most {compute_s:.0%} computing, {comm_wait_s:.0%} blocked in collectives "
             "and {read_wait_s:.0%} waiting for chunks.".format(**shares(doc)))
    return rows, note


def setup_text(args, big_size, fits_size, said):
    """What ran, and how to read the table."""
    aggregate = N * LIMIT_BYTES
    times = target(f"{big_size / aggregate:.1f}x", big_size >= 3 * aggregate,
                   "stream: file / the ranks' limits (>= 3x)")
    text = (f"N={N} on this {len(os.sched_getaffinity(0))}-core shared VM, synthetic float32 data, {FEATURES} "
            f"features, 10 classes, batch 256 per rank ({COLD_BATCH} in the cold run), plain defaults otherwise "
            f"(softmax, local SGD). Larger than memory: {BIG[0]:,} training + {BIG[1]:,} test rows ({gb(big_size)}, "
            f"{times} the {aggregate >> 20} MB the two ranks may use together), 1 epoch under "
            f"`--memory-limit {LIMIT}`: {said}. Warm: {FITS[0]:,} + {FITS[1]:,} rows ({gb(fits_size)}), read "
            "through once before every run, in memory against `--stream` (64 MB chunks), "
            f"{'1 run' if args.quick else 'best of 3 runs, alternating'}, {1 if args.quick else 2} epochs. Peak RSS: "
            "each rank's getrusage maximum (rank 0 / rank 1). samples/s: all ranks over train_s; rows MB/s: the "
            "training rows' bytes over train_s. Read wait: the largest share of train_s a rank waited for a chunk "
            "(its read_wait_s also counts waits while scoring the test rows, outside train_s). ratio: peak RSS / "
            "limit (first row), streamed / in-memory samples/s (warm), streamed rows MB/s / dd (cold).")
    if harness.pages_out_idle_memory():
        text += (" This VM's kernel pages out memory DAMON sees as idle, page cache included, so even a warm file "
                 "may be partly read from disk again.")
    return text


def measure(args):
    title = "Streaming: data larger than memory (--stream, --memory-limit)"
    big = synth(f"stream-{BIG[0]}.h5", "--samples", BIG[0], "--features", FEATURES, "--classes", 10, "--noise", 1.5,
                "--test-samples", BIG[1])
    fits = synth(f"stream-{FITS[0]}.h5", "--samples", FITS[0], "--features", FEATURES, "--classes", 10, "--noise",
                 1.5, "--test-samples", FITS[1])
    big_size, fits_size = os.path.getsize(big), os.path.getsize(fits)
    t0 = time.perf_counter()
    memory_row, said = over_memory(args, big, big_size)
    warm_rows, verdicts = warm(args, fits, fits_size)
    cold_rows, cold_note = cold(args, big, big_size)
    progress(f"stream: measured in {time.perf_counter() - t0:.0f} s")
    if not args.keep_data:
        for path in (big, fits):
            os.remove(path)
    text = setup_text(args, big_size, fits_size, said)
    text += "\n\n" + table(["case", "training rows", "file", "memory limit", "peak RSS MB per rank", "samples/s",
                            "rows MB/s", "ratio", "read wait share"], [memory_row, *warm_rows, *cold_rows])
    text += f"\n\nWarm, --stream / in memory, best against best (target >= 0.9x): {'. '.join(verdicts)}."
    return title, f"{text}\n\n{cold_note}"
