"""Per-rank timeline as Chrome trace events (open the JSON in Perfetto or chrome://tracing):
one process per rank, one track per task."""
import time

MAX_EVENTS = 200_000  # per rank; later spans are counted, not kept


class Tracer:
    def __init__(self, rank, clock=time.perf_counter):
        self.rank, self.clock = rank, clock
        self.origin = clock()
        self.events, self.dropped = [], 0
        self.tracks = {}

    def span(self, track, name, t0, t1, **args):
        """Record `name` on `track` from t0 to t1 (clock seconds)."""
        if len(self.events) >= MAX_EVENTS:
            self.dropped += 1
            return
        tid = self.tracks.setdefault(track, len(self.tracks) + 1)
        ev = {"ph": "X", "name": name, "pid": self.rank, "tid": tid,
              "ts": round((t0 - self.origin) * 1e6, 3), "dur": round((t1 - t0) * 1e6, 3)}
        if args:
            ev["args"] = args
        self.events.append(ev)

    def payload(self):
        meta = [{"ph": "M", "name": "process_name", "pid": self.rank, "args": {"name": f"rank {self.rank}"}},
                {"ph": "M", "name": "process_sort_index", "pid": self.rank, "args": {"sort_index": self.rank}}]
        meta += [{"ph": "M", "name": "thread_name", "pid": self.rank, "tid": tid, "args": {"name": track}}
                 for track, tid in self.tracks.items()]
        if self.dropped:
            meta.append({"ph": "i", "s": "p", "name": f"{self.dropped} spans dropped", "pid": self.rank,
                         "ts": 0})
        return meta + self.events


def write(path, per_rank_events):
    """One Chrome trace file from every rank's `payload()` (rank clocks aligned at start)."""
    events = [e for evs in per_rank_events for e in evs]
    from .outputs import atomic_write_json
    atomic_write_json(path, {"traceEvents": events, "displayTimeUnit": "ms"})
