"""Which file rows each rank trains on, and which rows are held out for testing.

The rows of the training dataset are cut into blocks of `block_rows` consecutive rows.
One seeded permutation of the blocks (`partition_seed`, independent of the rank count)
serves twice: without a /test set, the last `test_rows` rows of the permuted sequence
are the held-out test set; the rest, in permuted order ('blocks' mode) or in file order
('contiguous' mode), are dealt to the ranks in consecutive runs whose sizes differ by at
most one row; the test rows are dealt the same way, so evaluation is shared too. Files
sorted by label, time or experiment thus give every rank a representative sample, the
test split does not depend on the rank count, and no rank ever shuffles the whole
dataset in memory. A rank keeps its rows in file order (neighbouring blocks merge into
one range, and every read or message fills one contiguous stretch of the partition);
it shuffles them every epoch. The block size (`--block-rows`) trades mixing (small
blocks) against read granularity (large blocks); `--partition contiguous` deals the
training rows in file order instead. Everything here
is a pure function of the arguments, so every rank computes the same plan without
communication.
"""
import numpy as np
from numpy.random import default_rng  # at import: its first use would cost 10 ms mid-run

from ..errors import UsageError


def default_block_rows(n_rows, chunk_rows=None):
    """About 1024 blocks per dataset, at most 4096 rows each; whole HDF5 chunks where the
    chunks are smaller than that (larger chunks would make too few blocks to mix well)."""
    target = max(1, min(4096, -(-n_rows // 1024)))
    if chunk_rows and chunk_rows <= target:
        return int(chunk_rows * round(target / chunk_rows))
    return int(target)


def balanced_sizes(n, parts):
    """`parts` sizes that sum to n and differ by at most one (larger ones first)."""
    base, extra = divmod(n, parts)
    return np.array([base + (r < extra) for r in range(parts)], np.int64)


class Plan:
    """Row ranges per rank: `ranges[r]` is an (k, 3) array of (file_start, length,
    local_offset), sorted by file_start, with the offsets in the same order (the rank's
    rows are in file order); `test[r]` likewise for rank r's held-out rows."""

    def __init__(self, ranges, test, sizes, test_sizes):
        self.ranges, self.test, self.sizes, self.test_sizes = ranges, test, sizes, test_sizes


def _deal(part, nranks):
    """Deal a cut part (rows in offset order) to ranks in balanced consecutive runs."""
    by_offset = part[np.argsort(part[:, 2], kind="stable")]
    sizes = balanced_sizes(int(part[:, 1].sum()), nranks)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [in_file_order(p) for p in _cut(by_offset[:, 0], by_offset[:, 1], bounds)], sizes


def in_file_order(part):
    """The same rows as (file_start, length, offset) ranges in file order: adjacent ranges
    merged, offsets counting up from 0."""
    part = part[np.argsort(part[:, 0], kind="stable")]
    starts, lengths = part[:, 0], part[:, 1]
    new = np.ones(len(part), bool)
    new[1:] = starts[1:] != starts[:-1] + lengths[:-1]      # not the continuation of the last
    first = np.flatnonzero(new)
    merged = np.add.reduceat(lengths, first) if len(part) else lengths
    offsets = np.concatenate([[0], np.cumsum(merged)[:-1]]) if len(part) else merged
    return np.stack([starts[first], merged, offsets], axis=1).astype(np.int64).reshape(-1, 3)


def slabs(n_rows, nranks):
    """Contiguous balanced ranges of n_rows (a separate /test dataset, predictions)."""
    sizes = balanced_sizes(n_rows, nranks)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return [np.array([[s, n, 0]], np.int64)[:1 if n else 0] for s, n in zip(starts, sizes)], sizes


def _cut(starts, lengths, bounds):
    """Split a sequence of row ranges at the cumulative positions `bounds` (one part per
    interval); each part is an (k, 3) array (file_start, length, offset in part)."""
    ends = np.cumsum(lengths)
    begins = ends - lengths
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = np.flatnonzero((ends > lo) & (begins < hi))
        s = np.maximum(begins[sel], lo)
        e = np.minimum(ends[sel], hi)
        file_start = starts[sel] + (s - begins[sel])
        parts.append(np.stack([file_start, e - s, s - lo], axis=1).astype(np.int64).reshape(-1, 3))
    return parts


PARTITION_MODES = ("blocks", "contiguous")     # --partition


def make_plan(n_rows, nranks, test_rows=0, block_rows=None, partition_seed=0, mode="blocks"):
    """The partition plan; see the module docstring."""
    if mode not in PARTITION_MODES:
        raise ValueError(f"unknown partition mode {mode!r}")
    block_rows = int(block_rows or default_block_rows(n_rows))
    nblocks = -(-n_rows // block_rows)
    starts = np.arange(nblocks, dtype=np.int64) * block_rows
    lengths = np.minimum(block_rows, n_rows - starts)
    order = default_rng(partition_seed).permutation(nblocks)
    starts, lengths = starts[order], lengths[order]
    n_train = n_rows - test_rows
    train, test = _cut(starts, lengths, np.array([0, n_train, n_rows]))
    if mode == "contiguous":
        train = in_file_order(train)        # deal in file order
    ranges, sizes = _deal(train, nranks)
    tests, test_sizes = _deal(test, nranks)
    return Plan(ranges, tests, sizes, test_sizes)


def pieces(ranges, window_rows, n_rows):
    """Split (file_start, length, offset) ranges at multiples of `window_rows`; returns
    an (k, 4) array (window, file_start, length, offset) in file order."""
    out = []
    for start, length, off in ranges:
        pos, end = int(start), int(start + length)
        if end > n_rows:
            raise ValueError(f"range {start}+{length} runs past the {n_rows} rows")
        while pos < end:
            w = pos // window_rows
            stop = min(end, (w + 1) * window_rows, n_rows)
            out.append((w, pos, stop - pos, off + pos - start))
            pos = stop
    arr = np.array(out, np.int64).reshape(-1, 4)
    return arr[np.argsort(arr[:, 1], kind="stable")]


ROW_DRAW_MAX = 1 << 22      # partitions larger than this hold out whole runs of HELD_RUN rows:
HELD_RUN = 256              # single rows would cost memory and a read each, per validation row


def validation_draw(sizes, fraction, seed, rank):
    """Validation rows held out of each rank's `sizes` training rows: (rows held per rank,
    this rank's held local rows as sorted (start, length) runs), or (None, None) without
    `fraction`. Seeded per rank, so that in memory or streamed the same rows are held out:
    single rows, or in a partition of more than ROW_DRAW_MAX rows whole runs of HELD_RUN
    (the last one shorter where the count asks), so that neither the draw nor the rows held
    out take memory in proportion to the rows, and a streamed run reads them in runs."""
    if not fraction:
        return None, None
    held = [int(round(fraction * n)) for n in sizes]
    if min(n - h for n, h in zip(sizes, held)) < 1:
        raise UsageError(f"--validation-fraction {fraction:g} leaves a rank no training rows", agreed=True)
    if min(held) < 1:           # early stopping and selection would score an empty set as 0
        r = int(np.argmin(sizes))        # the smallest partition holds out the fewest
        raise UsageError(f"--validation-fraction {fraction:g} holds out no row of the {sizes[r]} training "
                         f"rows of rank {r}; give at least {1 / sizes[r]:.2g}, or 0 for no validation",
                         agreed=True)
    n, k = int(sizes[rank]), held[rank]
    rng = default_rng([seed, rank, 1])
    if n <= ROW_DRAW_MAX:
        return held, runs_of(np.sort(rng.choice(n, k, replace=False)))
    full, rest = divmod(k, HELD_RUN)
    drawn = rng.choice(n // HELD_RUN, full + (rest > 0), replace=False)
    lengths = np.full(len(drawn), HELD_RUN, np.int64)
    if rest:
        lengths[-1] = rest                  # the run drawn last holds the remainder
    order = np.argsort(drawn)
    return held, np.stack([drawn[order] * HELD_RUN, lengths[order]], axis=1)


def runs_of(rows):
    """Sorted rows as (start, length) runs of consecutive rows."""
    rows = np.asarray(rows, np.int64)
    if not len(rows):
        return np.empty((0, 2), np.int64)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = rows[np.concatenate([[0], breaks])]
    lengths = np.diff(np.concatenate([[0], breaks, [len(rows)]]))
    return np.stack([starts, lengths], axis=1)


def rows_of(runs):
    """The rows of (start, length) runs, in order."""
    runs = np.asarray(runs, np.int64).reshape(-1, 2)
    if not len(runs):
        return np.empty(0, np.int64)
    offsets = np.repeat(runs[:, 0] - np.concatenate([[0], np.cumsum(runs[:-1, 1])]), runs[:, 1])
    return np.arange(int(runs[:, 1].sum()), dtype=np.int64) + offsets
