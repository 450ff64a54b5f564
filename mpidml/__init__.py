"""mpidml: data-parallel training on HDF5 data with MPI and cooperative coroutines."""
__version__ = "0.1.0"
