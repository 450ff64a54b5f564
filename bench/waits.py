"""Where the wait per average goes, from an mpidml trace (`--trace run.json`):

    python bench/waits.py run.json

For the i-th blocking average of every rank, with a_r its arrival and c_r its completion
on rank r (rank clocks are aligned by a barrier when tracing starts), a rank's wait
c_r - a_r splits into waiting for the last rank to arrive, max(a) - a_r, and the
collective itself once everyone is in, c_r - max(a). Prints one JSON line of means in ms.
The clocks agree to within a barrier's exit skew (microseconds on one host), small
against the tenths of a millisecond split here but not nothing.
"""
import json
import sys
from collections import defaultdict

import numpy as np


def breakdown(events, name="average"):
    per_rank = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("name") == name:
            per_rank[e["pid"]].append((e["ts"], e["ts"] + e["dur"]))
    if not per_rank:
        return None
    count = min(len(v) for v in per_rank.values())
    spans = np.array([sorted(v)[:count] for _, v in sorted(per_rank.items())]) / 1e3   # rank x i x 2, ms
    arrive, done = spans[:, :, 0], spans[:, :, 1]
    last = arrive.max(axis=0)
    return {"averages": int(count), "ranks": len(per_rank),
            "wait_ms": float((done - arrive).mean()),
            "waiting_for_last_arrival_ms": float((last - arrive).mean()),
            "collective_after_last_arrival_ms": float((done - last).mean()),
            "collective_after_last_arrival_median_ms": float(np.median(done - last))}


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(json.dumps(breakdown(json.load(f)["traceEvents"])))
