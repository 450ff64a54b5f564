#!/bin/bash
# mpidml on PBS Pro / Torque. Submit: qsub run/pbs.sh   (it resubmits itself when stopped at
# the walltime limit; resubmitting by hand resumes from the checkpoint too)
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

# qdel and the walltime limit send SIGTERM (then SIGKILL after the server's kill_delay):
# it is passed on to mpiexec and every rank, which stop at one step, write the checkpoint and
# exit 75 (mpidml's "stopped, checkpointed"). Stopped at the walltime limit, the script then
# submits itself again and the new job resumes from the checkpoint; stopped by qdel, it does
# not. The limit is Torque's $PBS_WALLTIME or WALLTIME (seconds; PBS Pro does not export it);
# RESUBMIT=1 resubmits after any stop, RESUBMIT=0 never.
SIGNALLED=
forward() { SIGNALLED=$1; [ -n "${PID:-}" ] && kill -"$1" "$PID" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward USR1' USR1

export MPIDML_THREADS=1
mpiexec -n "$NP" python -m mpidml train \
    --data "$DATA" --model mlp --epochs "$EPOCHS" \
    --save "$MODEL" --checkpoint-every 1 "${RESUME[@]}" \
    --metrics-json "$OUT/metrics.json" --stall-timeout 600 &
PID=$!
while :; do                 # a trapped signal ends `wait` early: wait on until mpiexec has ended
  RC=0; wait "$PID" || RC=$?
  kill -0 "$PID" 2>/dev/null || break
done
LIMIT=${PBS_WALLTIME:-${WALLTIME:-}}
AT_LIMIT=0                  # within 5 minutes of the walltime: the limit stopped the job, not qdel
if [ -n "$LIMIT" ] && [ $((SECONDS + 300)) -ge "$LIMIT" ]; then AT_LIMIT=1; fi
if [ "$RC" -eq 75 ] && [ -n "$SIGNALLED" ] && [ "${RESUBMIT:-$AT_LIMIT}" = 1 ]; then
  qsub -v "DATA=$DATA,OUT=$OUT,EPOCHS=$EPOCHS" "${SCRIPT:-${PBS_O_WORKDIR:-$PWD}/run/pbs.sh}"
  echo "mpidml: checkpointed on SIG$SIGNALLED; submitted again to resume"
fi
exit "$RC"
