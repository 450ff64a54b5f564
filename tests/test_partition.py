"""The partition plan: every row once, balanced sizes, a test split independent of N."""
import numpy as np
import pytest

from mpidml.data.partition import balanced_sizes, default_block_rows, make_plan, pieces, slabs


def rows_of(ranges):
    order = np.argsort(ranges[:, 2])           # by local offset = the rank's row order
    return np.concatenate([np.arange(s, s + n) for s, n, _ in ranges[order]]) if len(ranges) else np.array([], int)


@pytest.mark.parametrize("n,nranks,test,block", [(1001, 3, 0, None), (1797, 4, 360, None), (10, 10, 0, 1),
                                                 (5000, 7, 1000, 64), (97, 2, 13, 10)])
@pytest.mark.parametrize("mode", ["blocks", "contiguous"])
def test_plan_covers_every_row_once(n, nranks, test, block, mode):
    plan = make_plan(n, nranks, test, block, partition_seed=5, mode=mode)
    assert plan.sizes.max() - plan.sizes.min() <= 1 and plan.sizes.sum() == n - test
    parts = [rows_of(r) for r in plan.ranges]
    for r, rows in enumerate(parts):
        assert len(rows) == plan.sizes[r]
        offsets = plan.ranges[r][:, 2]
        assert sorted(offsets.tolist()) == sorted(set(offsets.tolist()))
    assert plan.test_sizes.sum() == test and plan.test_sizes.max() - plan.test_sizes.min() <= 1
    every = np.concatenate(parts + [rows_of(t) for t in plan.test])
    assert np.array_equal(np.sort(every), np.arange(n))


def test_1001_rows_on_3_ranks():
    assert balanced_sizes(1001, 3).tolist() == [334, 334, 333]


def test_test_split_does_not_depend_on_rank_count():
    tests = {tuple(np.sort(np.concatenate([rows_of(t) for t in make_plan(2000, n, 400).test])))
             for n in (1, 2, 3, 5, 8)}
    assert len(tests) == 1


def test_contiguous_mode_deals_file_order():
    plan = make_plan(100, 4, 0, 5, mode="contiguous")
    assert rows_of(plan.ranges[0]).tolist() == list(range(25))
    assert rows_of(plan.ranges[3]).tolist() == list(range(75, 100))


def test_blocks_mode_mixes_a_sorted_file():
    # 10 classes stored sorted by label, 1000 rows each: every rank should see all classes evenly
    labels = np.repeat(np.arange(10), 1000)
    plan = make_plan(10000, 4, 0, None, partition_seed=0)
    for r in range(4):
        counts = np.bincount(labels[rows_of(plan.ranges[r])], minlength=10)
        assert counts.min() > 0.6 * counts.mean()


def test_default_block_rows_aligns_to_chunks():
    assert default_block_rows(1797) == 2
    assert default_block_rows(10 ** 9) == 4096
    assert default_block_rows(2_000_000, chunk_rows=500) % 500 == 0
    assert default_block_rows(2_000_000, chunk_rows=10000) == 1954     # huge chunks: mixing first


def test_pieces_split_at_windows():
    p = pieces(np.array([[5, 20, 0], [40, 3, 20]]), 10, 100)
    assert p.tolist() == [[0, 5, 5, 0], [1, 10, 10, 5], [2, 20, 5, 15], [4, 40, 3, 20]]


def test_slabs():
    ranges, sizes = slabs(10, 3)
    assert sizes.tolist() == [4, 3, 3] and [r.tolist() for r in ranges] == [[[0, 4, 0]], [[4, 3, 0]], [[7, 3, 0]]]


@pytest.mark.parametrize("mode", ["blocks", "contiguous"])
def test_ranks_keep_their_rows_in_file_order_in_merged_ranges(mode):
    plan = make_plan(5000, 3, 1000, 64, partition_seed=2, mode=mode)
    for ranges in plan.ranges + plan.test:
        starts, lengths, offsets = ranges.T
        assert np.all(np.diff(starts) > 0)
        assert np.array_equal(offsets, np.concatenate([[0], np.cumsum(lengths)[:-1]]))
        assert np.all(starts[1:] > starts[:-1] + lengths[:-1])    # neighbours are merged
    assert len(make_plan(5000, 3, 0, 64, mode="contiguous").ranges[1]) == 1
