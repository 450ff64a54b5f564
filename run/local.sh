#!/bin/bash
# mpidml on one machine: run/local.sh [NP] [mpidml options...]
#   run/local.sh 4 --data my.h5 --model mlp --epochs 20
#   run/local.sh --data my.h5                      (NP: $NP, or 2)
# Uses the project's .venv (make install) and its mpiexec; one BLAS thread per rank.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
NP=${NP:-2}
if [[ ${1:-} =~ ^[0-9]+$ ]]; then NP=$1; shift; fi
VENV=${VENV:-$HERE/.venv}
[ -x "$VENV/bin/python" ] || make -C "$HERE" install
exec "${MPIEXEC:-$VENV/bin/mpiexec}" -n "$NP" "$VENV/bin/python" -m mpidml "$@"
