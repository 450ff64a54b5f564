#!/bin/bash
# mpidml on PBS Pro / Torque. Submit from the repository root: qsub run/pbs.sh
# (from elsewhere: qsub -v SCRIPT=$PWD/path/to/pbs.sh path/to/pbs.sh, see SCRIPT below).
# It resubmits itself when stopped at the walltime limit; resubmitting by hand resumes from
# the checkpoint too.
#PBS -N mpidml
#PBS -l select=2:ncpus=32:mpiprocs=32
#PBS -l walltime=02:00:00
#PBS -j oe
#PBS -o mpidml.log
set -euo pipefail
# The script to resubmit, by absolute path. PBS runs the copy of the script qsub took (a file
# in its spool directory, or the shell's standard input), starting in $HOME, so a job cannot
# see where the original lies; PBS passes on only the directory qsub ran in, $PBS_O_WORKDIR.
# SCRIPT names the original, absolute or relative to that directory; default run/pbs.sh
# there, which is right for `qsub run/pbs.sh` from the repository root. Run by hand (no
# $PBS_JOBID), the script is its own file.
if [ -z "${PBS_JOBID:-}" ]; then SCRIPT=${SCRIPT:-$(realpath -- "$0")}; fi
cd "${PBS_O_WORKDIR:-.}"
SCRIPT=${SCRIPT:-run/pbs.sh}
case $SCRIPT in /*) ;; *) SCRIPT=$PWD/$SCRIPT ;; esac
if [ ! -f "$SCRIPT" ] && [ "${RESUBMIT:-}" != 0 ]; then     # said at the start, not hours later
  echo "mpidml: $SCRIPT does not exist, so this job cannot resubmit itself;" \
       "submit with qsub -v SCRIPT=/path/to/pbs.sh /path/to/pbs.sh" >&2
fi

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
# A trapped signal ends `wait` early (status 128+signal): wait on while mpiexec runs, then take
# its own exit status, which bash keeps for an ended child however early it was reaped.
while kill -0 "$PID" 2>/dev/null; do wait "$PID" || true; done
RC=0; wait "$PID" || RC=$?
LIMIT=${PBS_WALLTIME:-${WALLTIME:-}}
AT_LIMIT=0                  # within 5 minutes of the walltime: the limit stopped the job, not qdel
if [ -n "$LIMIT" ] && [ $((SECONDS + 300)) -ge "$LIMIT" ]; then AT_LIMIT=1; fi
if [ "$RC" -eq 75 ] && [ -n "$SIGNALLED" ] && [ "${RESUBMIT:-$AT_LIMIT}" = 1 ]; then
  if [ -f "$SCRIPT" ]; then       # from $PBS_O_WORKDIR, so the new job works there too
    qsub -v "DATA=$DATA,OUT=$OUT,EPOCHS=$EPOCHS,SCRIPT=$SCRIPT" "$SCRIPT"
    echo "mpidml: checkpointed on SIG$SIGNALLED; $SCRIPT submitted again to resume"
  else
    echo "mpidml: checkpointed on SIG$SIGNALLED; not resubmitted ($SCRIPT does not exist): qsub it again" >&2
  fi
fi
exit "$RC"
