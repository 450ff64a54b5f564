"""Reading runs of rows: raw reads where the bytes are plain, HDF5 elsewhere; same answer."""
import os

import h5py
import numpy as np
import pytest

from mpidml.data.rows import Rows

RNG = np.random.default_rng(3)
X = RNG.standard_normal((1000, 7)).astype(np.float32)
RUNS = [(0, 1), (3, 250), (300, 700), (999, 1), (123, 456)]     # across chunk edges, to the last row


def layouts(tmp_path):
    """name -> (file, dataset name, expect raw reads)"""
    path = tmp_path / "layouts.h5"
    with h5py.File(path, "w") as f:
        f["contiguous"] = X
        f.create_dataset("chunked", data=X, chunks=(64, 7))           # last chunk partly filled
        f.create_dataset("column_chunks", data=X, chunks=(64, 3))     # a row spans three chunks
        f.create_dataset("gzip", data=X, chunks=(64, 7), compression="gzip", shuffle=True)
        f.create_dataset("big_endian", data=X.astype(">f4"))
        f.create_dataset("float64", data=X.astype(np.float64))
        f.create_dataset("labels", data=np.arange(1000), chunks=(100,))
        sparse = f.create_dataset("sparse", shape=X.shape, dtype=np.float32, chunks=(64, 7), fillvalue=7.0)
        sparse[128:256] = X[128:256]                                  # the other chunks are never written
        f.create_dataset("unwritten", shape=X.shape, dtype=np.float32, fillvalue=-1.0)
        # chunks stored out of row order, and in order but between another dataset's
        backwards = f.create_dataset("backwards", shape=X.shape, dtype=np.float32, chunks=(64, 7))
        for k in reversed(range(0, 1000, 64)):
            backwards[k:k + 64] = X[k:k + 64]
            f.flush()                           # allocates the chunk now, below the next one
        interleaved = f.create_dataset("interleaved", shape=X.shape, dtype=np.float32, chunks=(64, 7))
        other = f.create_dataset("other", shape=X.shape, dtype=np.float32, chunks=(64, 7))
        for k in range(0, 1000, 128):
            interleaved[k:k + 128] = X[k:k + 128]
            f.flush()
            other[k:k + 128] = X[k:k + 128]
            f.flush()
    return path, {"contiguous": True, "chunked": True, "column_chunks": False, "gzip": False, "big_endian": False,
                  "float64": False, "labels": True, "sparse": True, "unwritten": False, "backwards": True,
                  "interleaved": True}


@pytest.mark.parametrize("name", ["contiguous", "chunked", "column_chunks", "gzip", "big_endian", "float64",
                                  "labels", "sparse", "unwritten", "backwards", "interleaved"])
def test_runs_read_the_same_as_h5py(tmp_path, name):
    path, raw = layouts(tmp_path)
    fd = os.open(path, os.O_RDONLY)
    try:
        with h5py.File(path, "r") as f:
            ds = f[name]
            dtype = ds.dtype if name == "labels" else np.float32
            rows = Rows(ds, dtype, fd)
            assert (rows.fd is not None) == raw[name]
            for start, count in RUNS:
                out = np.full((count,) + ds.shape[1:], 12345, dtype)
                rows.read(start, count, out)
                expect = ds[start:start + count].astype(dtype)
                assert np.array_equal(out, expect), (name, start, count)
    finally:
        os.close(fd)


def test_a_file_cut_short_is_an_error_not_garbage(tmp_path):
    path = tmp_path / "short.h5"
    with h5py.File(path, "w") as f:
        f["X"] = X
    fd = os.open(path, os.O_RDONLY)
    try:
        with h5py.File(path, "r") as f:
            rows = Rows(f["X"], np.float32, fd)
            rows.extent_offsets[0] = os.path.getsize(path) - 100       # as if the file ended mid-dataset
            with pytest.raises(OSError, match="short"):
                rows.read(0, 10, np.empty((10, 7), np.float32))
    finally:
        os.close(fd)


def test_raw_reads_that_disagree_with_hdf5_are_not_trusted(tmp_path):
    # the descriptor of another file with the same layout and other values
    for name, data in (("a.h5", X), ("b.h5", X + 1)):
        with h5py.File(tmp_path / name, "w") as f:
            f["X"] = data
    fd = os.open(tmp_path / "b.h5", os.O_RDONLY)
    try:
        with h5py.File(tmp_path / "a.h5", "r") as f:
            rows = Rows(f["X"], np.float32, fd)
            assert rows.fd is None
            out = np.empty((10, 7), np.float32)
            rows.read(5, 10, out)
            assert np.array_equal(out, X[5:15])
    finally:
        os.close(fd)


def test_chunks_stored_back_to_back_are_read_as_one_extent(tmp_path):
    """A run of rows costs one read per extent of adjacent chunks, not one per chunk."""
    path, _ = layouts(tmp_path)
    fd = os.open(path, os.O_RDONLY)
    try:
        with h5py.File(path, "r") as f:
            extents = {name: len(Rows(f[name], np.float32, fd).extent_offsets)
                       for name in ("contiguous", "chunked", "sparse", "backwards", "interleaved")}
    finally:
        os.close(fd)
    # sparse: 14 unwritten chunks, and the two written ones side by side
    assert extents == {"contiguous": 1, "chunked": 1, "sparse": 15, "backwards": 16, "interleaved": 8}
