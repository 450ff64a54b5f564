"""Read runs of rows of an HDF5 dataset into preallocated arrays, at file-system speed.

Uncompressed data (contiguous, or chunked in whole rows) lies in the file as plain bytes
at offsets HDF5 reports, so a run of rows is one `preadv` straight into the caller's
array. That skips HDF5's selection machinery, which costs tens of microseconds a call
and, on chunked data, about as much as the copy itself (BENCHMARKS.md: raw reads take
0.9x HDF5's time on contiguous data and 0.5x on chunked, here). Everything else (filters,
another dtype or byte order, unallocated chunks) goes through HDF5, one hyperslab per run.
"""
import bisect
import os

import numpy as np
from h5py import h5d, h5s


class Rows:
    """Rows of dataset `ds` as `dtype`; `fd` is the file opened with os.open (or None for
    HDF5 reads only)."""

    def __init__(self, ds, dtype, fd=None):
        self.ds, self.dtype = ds, np.dtype(dtype)
        self.tail = tuple(ds.shape[1:])
        self.row_bytes = int(np.prod(self.tail, dtype=np.int64)) * self.dtype.itemsize
        self.space = ds.id.get_space()
        self.fd = None
        if fd is not None and hasattr(os, "preadv") and ds.dtype == self.dtype and ds.dtype.kind in "fiu" \
                and len(ds):
            self._map_storage(fd)

    def _map_storage(self, fd):
        """Where the raw rows lie, if the dataset is stored as plain bytes: extents of rows
        (first row, file offset; -1 where a chunk was never written) that each sit back to
        back in the file. A file written front to back has a few large extents even when
        chunked, so a run of rows is one read however many chunks it crosses."""
        ds = self.ds
        dcpl = ds.id.get_create_plist()
        if dcpl.get_nfilters() or dcpl.get_external_count() or ds.is_virtual:
            return
        layout = dcpl.get_layout()
        if layout == h5d.CONTIGUOUS:
            offset = ds.id.get_offset()
            if offset is None:          # never written: HDF5 supplies the fill value
                return
            chunk_rows, offsets = ds.shape[0], np.array([offset], np.int64)
        elif layout == h5d.CHUNKED and tuple(ds.chunks[1:]) == self.tail:
            chunk_rows = ds.chunks[0]
            offsets = np.full(-(-ds.shape[0] // chunk_rows), -1, np.int64)    # -1: not allocated

            def note(info):
                i = info.chunk_offset[0] // chunk_rows
                if i < len(offsets):            # not a chunk past the rows a writer added meanwhile
                    offsets[i] = info.byte_offset
            try:
                ds.id.chunk_iter(note)                  # HDF5 >= 1.14: one pass over the index
            except AttributeError:
                try:
                    for i in range(ds.id.get_num_chunks()):
                        note(ds.id.get_chunk_info(i))
                except AttributeError:                  # HDF5 older than 1.10.5
                    return
        else:
            return
        allocated = np.flatnonzero(offsets >= 0)
        if not len(allocated):
            return
        follows = (offsets[1:] == offsets[:-1] + chunk_rows * self.row_bytes) & (offsets[:-1] >= 0)
        first = np.flatnonzero(np.r_[True, ~follows])           # chunks that start an extent
        self.fd = fd
        self.extent_rows = (first * chunk_rows).tolist() + [ds.shape[0]]
        self.extent_offsets = offsets[first].tolist()
        # trust, but verify: a stored row read both ways must agree to the bit
        row = int(allocated[0]) * chunk_rows
        raw, ref = np.empty((1,) + self.tail, self.dtype), np.empty((1,) + self.tail, self.dtype)
        self._hdf5(row, 1, ref)
        try:
            self.read(row, 1, raw)
            same = raw.tobytes() == ref.tobytes()
        except OSError:
            same = False
        if not same:
            self.fd = None

    def read(self, start, count, out):
        """Rows [start, start + count) into `out`, which has `count` rows of `dtype`."""
        if self.fd is None:
            return self._hdf5(start, count, out)
        pos = 0
        while pos < count:
            row = start + pos
            e = bisect.bisect_right(self.extent_rows, row) - 1
            m = min(count - pos, self.extent_rows[e + 1] - row)
            base = self.extent_offsets[e]
            if base < 0:
                self._hdf5(row, m, out[pos:pos + m])
            else:
                self._pread(base + (row - self.extent_rows[e]) * self.row_bytes, out[pos:pos + m])
            pos += m

    def _pread(self, offset, out):
        view = memoryview(out).cast("B")
        done = 0
        while done < len(view):         # a single read stops at 2 GiB
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got == 0:
                raise OSError(f"the file ends {len(view) - done} bytes short of the dataset's rows")
            done += got

    def _hdf5(self, start, count, out):
        if self.ds.dtype == self.dtype and self.dtype.kind in "fiub" and out.flags.c_contiguous:
            self.space.select_hyperslab((start,) + (0,) * len(self.tail), (count,) + self.tail)
            self.ds.id.read(h5s.create_simple((count,) + self.tail), self.space, out)
        else:   # another dtype: numpy converts (out-of-range values become inf and fail the checks)
            out[...] = self.ds[start:start + count]
