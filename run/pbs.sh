#!/bin/bash
# mpidml on PBS Pro / Torque. Submit: qsub run/pbs.sh   (resubmit to resume from the checkpoint)
#PBS -N mpidml
#PBS -l select=2:ncpus=32:mpiprocs=32
#PBS -l walltime=02:00:00
#PBS -j oe
#PBS -o mpidml.log
set -euo pipefail
cd "${PBS_O_WORKDIR:-.}"

# module load python/3.11 mpi hdf5                  # the cluster's own modules (examples)
# source $HOME/mpidml/.venv/bin/activate

DATA=${DATA:-$PWD/run.h5}
OUT=${OUT:-$PWD/mpidml-out}
EPOCHS=${EPOCHS:-50}
if [ -r "${PBS_NODEFILE:-}" ]; then         # one line per MPI process PBS placed
  NP=$(wc -l < "$PBS_NODEFILE")
else                                        # outside PBS: NP, or one rank per core here
  NP=${NP:-$(nproc)}
fi
mkdir -p "$OUT"
MODEL=$OUT/model.h5
RESUME=()
if [ -f "$MODEL" ]; then RESUME=(--resume "$MODEL"); fi

export MPIDML_THREADS=1
mpiexec -n "$NP" python -m mpidml train \
    --data "$DATA" --model mlp --epochs "$EPOCHS" \
    --save "$MODEL" --checkpoint-every 1 "${RESUME[@]}" \
    --metrics-json "$OUT/metrics.json" --stall-timeout 600
