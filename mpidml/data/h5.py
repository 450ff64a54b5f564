"""Opening an HDF5 file and its objects by name, each failure a UsageError that names the
file and the object: missing, dangling links, groups where a dataset belongs, virtual
datasets whose sources are missing (they read as fill values), read errors."""
import contextlib
import os

import h5py

from ..errors import UsageError

# the filters hdf5plugin provides, by HDF5 filter number (HDF5 itself has gzip, szip,
# shuffle, fletcher32, scaleoffset, nbit; h5py adds lzf)
PLUGIN_FILTERS = {307: "bzip2", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle", 32013: "zfp", 32015: "zstd",
                  32017: "sz", 32018: "fcidecomp", 32024: "sz3", 32026: "blosc2"}
# the files `mpidml data convert` reads, by extension: which reader (here, below the
# converter, so that a file that is not HDF5 can be met with the command that makes it so)
CONVERTIBLE = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".npy": "npy", ".npz": "npz",
               ".parquet": "parquet", ".pq": "parquet"}


def open_h5(path, cache_bytes=None):
    """Open an HDF5 file read-only, or raise a UsageError that says what is wrong.
    `cache_bytes`: the chunk cache per dataset (HDF5's default is 1 MB)."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory, not an HDF5 file")
    try:
        if not h5py.is_hdf5(path):
            raise UsageError(f"{path}: not an HDF5 file{_convert_hint(path)}")
        # read-only opens need no lock; HDF5's file locking fails on many parallel file
        # systems ("unable to lock file") and only serializes the ranks' opens elsewhere
        cache = {"rdcc_nbytes": int(cache_bytes), "rdcc_nslots": 10007} if cache_bytes else {}
        return h5py.File(path, "r", locking=False, **cache)
    except UsageError:
        raise
    except Exception as e:  # truncated or corrupt files raise OSError from HDF5
        raise UsageError(f"{path}: cannot read HDF5 file ({short(e)})") from e


def _convert_hint(path):
    """For a file `data convert` reads (by its extension): the command that makes it HDF5."""
    stem, ext = os.path.splitext(path)
    return f"; convert it first: mpidml data convert {path} {stem}.h5" if ext.lower() in CONVERTIBLE else ""


def short(e):
    return str(e).split("\n")[0][:200]


def read_error(path, name, e):
    """The UsageError for HDF5's OSError (or KeyError) reading dataset `name`: a truncated or
    corrupt file, or one that another program writes meanwhile."""
    return UsageError(f"{path}: cannot read dataset {name} ({short(e)})")


@contextlib.contextmanager
def reading(path, name):
    """Reads of dataset `name` inside fail with `read_error`, not an internal error (h5py
    raises RuntimeError where HDF5 fails to walk a chunk index, KeyError for objects)."""
    try:
        yield
    except (OSError, KeyError, RuntimeError) as e:
        raise read_error(path, name, e) from e


def node(f, path, name):
    """f[name], or a UsageError saying why there is none: missing, or a soft or external
    link that leads nowhere (HDF5 raises KeyError for those)."""
    link = None
    if name.strip("/.") == "":
        raise UsageError(f"{path}: {name!r} is the file's root group, not a dataset")
    try:
        link = f.get(name, getlink=True)
        if link is not None:
            return f[name]
    except (KeyError, OSError, RuntimeError) as e:     # RuntimeError: a link loop ("too many links")
        raise UsageError(f"{path}: {name} {_leads_nowhere(link, e)}") from e
    raise UsageError(f"{path}: no dataset {name}")


def _leads_nowhere(link, e):
    if isinstance(link, h5py.ExternalLink):
        return f"is an external link to {link.filename}:{link.path}, which cannot be opened"
    if isinstance(link, h5py.SoftLink):
        return f"is a soft link to {link.path}, which does not exist"
    return f"cannot be opened ({short(e)})"


def dataset(f, path, name):
    ds = node(f, path, name)
    if not isinstance(ds, h5py.Dataset):
        raise UsageError(f"{path}: {name} is a {type(ds).__name__.lower()}, not a dataset")
    if ds.is_virtual:
        _check_sources(ds, path, name)
    _check_filters(ds, path, name)
    return ds


def _check_filters(ds, path, name):
    """A dataset compressed with a filter this HDF5 lacks (blosc, bzip2, zstd: hdf5plugin's)
    failed at its first read with HDF5's "can't open directory /usr/local/hdf5/lib/plugin".
    Where hdf5plugin is installed (an optional extra), importing it registers its filters;
    otherwise one line names the dataset, the filter and what to do."""
    missing = _missing_filters(ds)
    if missing and _load_hdf5plugin():
        missing = _missing_filters(ds)
    if missing:
        code, label = missing[0]
        raise UsageError(f"{path}: dataset {name} is compressed with the {label} filter (HDF5 filter {code}), which "
                         "this HDF5 cannot decode: pip install hdf5plugin (mpidml loads it when installed), or set "
                         "HDF5_PLUGIN_PATH to a directory holding the filter's plugin")


def _missing_filters(ds):
    """[(filter number, name)] of the filters in `ds`'s pipeline that HDF5 cannot load
    (H5Zfilter_avail also looks in HDF5_PLUGIN_PATH)."""
    plist = ds.id.get_create_plist()
    missing = []
    for i in range(plist.get_nfilters()):
        code, _, _, label = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            missing.append((code, PLUGIN_FILTERS.get(code) or label.decode("utf-8", "replace") or "unknown"))
    return missing


def _load_hdf5plugin():
    """Import hdf5plugin, which registers its filters with HDF5; False where not installed."""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        return False
    return True


def _check_sources(ds, path, name):
    """A virtual dataset maps parts of other datasets; where a source file or dataset is
    missing, too short, or no source maps a part, HDF5 reads the fill value without an
    error, and training went on on zeros. (An unlimited mapping has no count to check.)"""
    mapped = 0
    for vs in ds.virtual_sources():
        problem = _source_problem(ds, path, vs)
        if problem:
            raise UsageError(f"{path}: dataset {name} is virtual and its source {vs.file_name}:{vs.dset_name} "
                             f"{problem}: those rows would read as fill values")
        unlimited = mapped is None or _reach(vs.vspace) is None
        mapped = None if unlimited else mapped + vs.vspace.get_select_npoints()
    if mapped is not None and mapped < ds.size:
        raise UsageError(f"{path}: dataset {name} is virtual and maps {mapped} of its {ds.size} values: "
                         "the others would read as fill values")


def _source_problem(ds, path, vs):
    """What keeps a virtual source from supplying the values mapped from it, or None."""
    shape, reach = _source_shape(ds, path, vs), _reach(vs.src_space)
    if shape is None:
        return "cannot be opened"
    if reach and any(r > s for r, s in zip(reach, shape)):
        return f"has shape {shape}, short of the {reach} mapped from it"
    return None


def _reach(space):
    """One past a selection's last index on each axis; None where it is unlimited."""
    if space.get_select_type() == h5py.h5s.SEL_ALL:
        return space.shape
    if space.is_regular_hyperslab() and h5py.h5s.UNLIMITED in space.get_regular_hyperslab()[2]:
        return None
    return tuple(int(h) + 1 for h in space.get_select_bounds()[1])


def _source_shape(ds, path, vs):
    """The shape of a virtual dataset's source, looked for where HDF5 looks; None if absent."""
    if vs.file_name == ".":
        node = ds.file.get(vs.dset_name)
        return node.shape if isinstance(node, h5py.Dataset) else None
    for candidate in _source_paths(path, vs.file_name):
        try:
            with h5py.File(candidate, "r", locking=False) as f:
                node = f.get(vs.dset_name)
                if isinstance(node, h5py.Dataset):
                    return node.shape
        except OSError:
            continue
    return None


def _source_paths(path, name):
    """HDF5's search for a virtual source file (H5F_prefix_open_file): an absolute name as
    it is, then its last part (or a relative name) under each $HDF5_VDS_PREFIX entry,
    beside the virtual file, and in the working directory."""
    here = os.path.dirname(os.path.abspath(path))
    first = [name] if os.path.isabs(name) else []
    name = os.path.basename(name) if first else name
    prefixes = [p.replace("${ORIGIN}", here) for p in os.environ.get("HDF5_VDS_PREFIX", "").split(os.pathsep) if p]
    return first + [os.path.join(p, name) for p in prefixes + [here]] + [name]
