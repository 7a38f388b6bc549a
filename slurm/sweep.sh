#!/bin/bash
# A validation sweep: `cosmogan sweep` in one MPI step judges many checkpoints of many runs
# (and, for a conditional run, every cosmology of the reference) against one reference. The
# ranks split into SWEEP_GROUPS groups, each validating its share of the items side by side; the
# reference's statistics are computed once.
#
#   RUNS="runs/a runs/b" sbatch -A m1234 slurm/sweep.sh
#   RUNS="$SCRATCH/runs/lr-*" CHECKPOINTS=every-1000,best N=2048 OUT=$SCRATCH/sweep sbatch -A m1234 -N 4 slurm/sweep.sh
#
# Outputs in OUT: sweep.h5 and sweep.csv (one row per item), index.html and sweep.md (the
# metrics against training step, the checkpoints ranked), items/RUN/step-N/ (each item's
# result; its full report with --full-reports). Resumable: a rerun (or a requeued job)
# validates only the items without a result.
#SBATCH -J cosmogan-sweep
#SBATCH -C gpu
#SBATCH -q regular
#SBATCH -N 1
#SBATCH --ntasks-per-node=4
#SBATCH -c 32
#SBATCH --gpus-per-node=4
#SBATCH --gpu-bind=none
#SBATCH -t 01:00:00
#SBATCH -o %x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#
# Knobs (environment): RUNS (run directories, space-separated; globs are expanded),
# CHECKPOINTS (all, last, best, every-K, comma-separated; default all), REFERENCE (held-out
# dataset directory, default DATA/test), N (maps per item; default: as many as REFERENCE
# holds), OUT (default runs/sweep), SWEEP_GROUPS (groups of ranks; default one per task;
# not GROUPS, which bash reserves),
# STATS_CACHE (where reference statistics are kept and reused; default OUT/stats), PYTHON
# or VENV, IMAGE, SRUN_MPI (default pmi2), SRUN_FLAGS. Arguments are passed on to
# `cosmogan sweep` (e.g. --full-reports --set validation.ps_max_rel_err=0.05).
set -uo pipefail

# The repository (holds slurm/env.sh): COSMOGAN_ROOT, else the submitted script's directory
# (Slurm runs a copy of it, so ask scontrol), else the submit directory.
if [ -z "${COSMOGAN_ROOT:-}" ]; then
    _script=$(scontrol show job "${SLURM_JOB_ID:-0}" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p')
    for _d in ${_script:+"$(dirname "$_script")/.."} "${SLURM_SUBMIT_DIR:-$PWD}" "$(dirname "$0")/.."; do
        if [ -f "$_d/slurm/env.sh" ]; then COSMOGAN_ROOT=$(cd "$_d" && pwd); break; fi
    done
fi
if [ -z "${COSMOGAN_ROOT:-}" ]; then
    echo "cosmogan: error: cannot find the repository: set COSMOGAN_ROOT or submit from its top directory" >&2
    exit 1
fi
# shellcheck source=slurm/env.sh
source "${COSMOGAN_ROOT}/slurm/env.sh"

if [ -z "${RUNS:-}" ]; then
    echo "cosmogan: error: set RUNS (the run directories to sweep, space-separated)" >&2
    exit 1
fi
# shellcheck disable=SC2206  # RUNS is split into words and its globs expanded on purpose
RUN_DIRS=(${RUNS})
DATA="${DATA:-${COSMOGAN_ROOT}/data/quickstart}"
REFERENCE="${REFERENCE:-${DATA}/test}"
OUT="${OUT:-${COSMOGAN_ROOT}/runs/sweep}"
echo "cosmogan: job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?}: ${SLURM_NTASKS:-?} tasks," \
     "RUNS=${RUN_DIRS[*]} CHECKPOINTS=${CHECKPOINTS:-all} REFERENCE=${REFERENCE} N=${N:-as the reference} OUT=${OUT}" \
     "SWEEP_GROUPS=${SWEEP_GROUPS:-one per task}"

cosmogan_srun sweep --runs "${RUN_DIRS[@]}" --reference "${REFERENCE}" ${N:+--n "${N}"} --out "${OUT}" \
    --checkpoints "${CHECKPOINTS:-all}" ${SWEEP_GROUPS:+--groups "${SWEEP_GROUPS}"} \
    ${STATS_CACHE:+--stats-cache "${STATS_CACHE}"} --quiet "$@"
exit $?
