#!/usr/bin/env bash
# The scaling table on a many-core machine with no network, in one call.
#
# Such a machine (the project's lent 16-core one, say) has Python 3.12 with numpy and h5py
# but neither MPI nor mpi4py, and cannot reach PyPI. So:
#
#   1. here, with the network:      bench/device.sh fetch        (wheels into .wheels/cp312, ~15 MB)
#   2. carry .wheels to the machine (the device tool: carry [".wheels"]), then there:
#                                   bench/device.sh run [bench/run.py options]
#
# `run` installs the mpich and mpi4py wheels with `pip install --prefix .devprefix`, puts
# that prefix's lib on LD_LIBRARY_PATH (mpi4py finds libmpi there), its bin on PATH, its
# site-packages and the checkout on PYTHONPATH (mpidml runs from the source tree), and runs
# `bench/run.py --only scaling` on every core, writing the table to $OUT/BENCHMARKS.md (or
# ./BENCHMARKS-device.md without $OUT). About 5 minutes on 16 cores with the defaults below
# (2M rows, one run per row). PYVER=3.11 bench/device.sh fetch|run tries the recipe with
# another Python, e.g. on the development machine at N=2.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
TAG=cp${PYVER/./}
WHEELS=.wheels/$TAG
PY=${PYTHON:-python$PYVER}

case "${1:-}" in
  fetch)
    # the versions .venv runs (the ones the tests passed with), when there is one
    PINS=$(.venv/bin/python -m pip freeze 2>/dev/null | grep -iE '^(mpich|mpi4py|threadpoolctl)==' || true)
    # mpi4py's Linux wheels are tagged manylinux1/manylinux_2_5, the mpich wheel manylinux_2_28
    "${PIP:-.venv/bin/pip}" download -q --only-binary=:all: --python-version "$PYVER" \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
      --platform manylinux1_x86_64 -d "$WHEELS" ${PINS:-mpich mpi4py threadpoolctl}
    ls -l "$WHEELS"
    ;;
  run)
    shift
    PREFIX=$PWD/.devprefix/$TAG
    if [ ! -x "$PREFIX/bin/mpiexec" ]; then
      "$PY" -m pip install -q --ignore-installed --no-index --find-links "$WHEELS" --prefix "$PREFIX" \
        mpich mpi4py threadpoolctl
    fi
    # wherever this Python's pip put it (lib/ or lib64/, site- or dist-packages)
    SITE=$(dirname "$(find "$PREFIX" -name __init__.py -path '*/mpi4py/__init__.py' | head -n 1)")/..
    export LD_LIBRARY_PATH=$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export PATH=$PREFIX/bin:$PATH
    export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}
    "$PY" -c "import mpi4py, numpy, h5py; from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])"
    nproc
    RESULT=${OUT:+$OUT/BENCHMARKS.md}
    exec "$PY" bench/run.py --only scaling --mpiexec "$PREFIX/bin/mpiexec" --out "${RESULT:-BENCHMARKS-device.md}" \
      --scaling-rows 2000000 --repeat 1 "$@"
    ;;
  *)
    sed -n '2,17p' "$0" >&2
    exit 2
    ;;
esac
