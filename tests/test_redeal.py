"""Holdings (elastic.py): the file rows every rank holds, as the survivors of a lost rank
compute them without any message, must be the rows distribution and the validation split
gave it; dealing a lost rank's rows hands each of them to exactly one survivor."""
import os

import h5py
import numpy as np
import pytest
from conftest import mpiexec

from mpidml.data.distribute import Partition, plan_for
from mpidml.learn.elastic import Holdings, expand

HERE = os.path.dirname(os.path.abspath(__file__))


def info(rows=1003, test=None):
    return {"rows": rows, "test": test, "block_rows": 17, "partition_seed": 3, "partition": "blocks",
            "path": "d.h5"}


@pytest.mark.parametrize("fraction", [0.0, 0.1])
@pytest.mark.parametrize("test", [None, {"source": "split", "rows": 200}, {"source": "dataset", "rows": 77}])
def test_holdings_are_the_rows_each_rank_was_given(fraction, test):
    size, seed = 4, 5
    i = info(test=test)
    plan = plan_for(i, size)
    held = Holdings(i, size, fraction, seed)
    sizes = [int(s) for s in plan.sizes]
    for rank in range(size):
        ids = expand(plan.ranges[rank]).astype(np.float64)[:, None]      # each row's X: its file row
        part = Partition(ids.copy(), ids[:, 0].copy(), sizes=list(sizes))
        part.hold_out(fraction, seed, rank)
        rows = held.rows_of(rank)
        assert np.array_equal(rows.train, part.X[:, 0]) and len(rows.train) == part.sizes[rank]
        assert np.array_equal(rows.val, part.val_X[:, 0] if fraction else [])
    tests = np.concatenate([held.rows_of(r).test for r in range(size)])
    assert len(tests) == (test["rows"] if test else 0) and len(np.unique(tests)) == len(tests)


def test_dealing_gives_every_lost_row_to_one_survivor_once():
    size = 5
    held = Holdings(info(test={"source": "split", "rows": 200}), size, 0.1, 0)
    before = [held.rows_of(r) for r in range(size)]
    dealt = held.deal([1, 3])
    assert len(dealt) == 3 and len(held.pieces) == 3
    for key in ("train", "val", "test"):
        lost = np.sort(np.concatenate([getattr(before[r], key) for r in (1, 3)]))
        got = np.concatenate([getattr(d, key) for d in dealt])
        assert np.array_equal(np.sort(got), lost)
        counts = [len(getattr(d, key)) for d in dealt]
        assert max(counts) - min(counts) <= 1
        for new, old in enumerate((0, 2, 4)):          # a survivor keeps its rows, then the dealt ones
            mine = getattr(held.rows_of(new), key)
            assert np.array_equal(mine, np.concatenate([getattr(before[old], key), getattr(dealt[new], key)]))
    held.deal([0])                                      # and once more: the dealt rows move on with it
    everything = np.concatenate([held.rows_of(r).train for r in range(2)])
    assert np.array_equal(np.sort(everything), np.sort(np.concatenate([b.train for b in before])))


@pytest.mark.parametrize("layout", ["split", "dataset"])
@pytest.mark.parametrize("mode,how", [("blocks", "scatter"), ("contiguous", "read")])
def test_holdings_match_the_partitions_distribute_gives(tmp_path, layout, mode, how):
    """Not the plan read twice: the rows data.distribute actually delivered, at 3 ranks."""
    rows = np.arange(1001)
    X = np.stack([rows, rows % 7], axis=1).astype(np.float64)
    y = rows % 3
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        if layout == "split":
            f["X"], f["y"] = X, y
        else:
            f["train/X"], f["train/y"], f["test/X"], f["test/y"] = X[:800], y[:800], X[800:] - 800, y[800:]
    proc = mpiexec(3, [str(path), mode, how], script=os.path.join(HERE, "redeal_check.py"), timeout=60, check=0)
    assert all(f"rank {r} ok" in proc.stdout for r in range(3)), proc.stdout + proc.stderr   # lines may interleave
