#!/bin/bash
# Validate a trained generator: `cosmogan validate` in one MPI step generates maps, computes
# their statistics and those of held-out simulations, compares them (KS tests, relative
# errors, chi^2) and writes the report.
#
#   RUN=runs/cosmogan-train sbatch -A m1234 slurm/validate.sh
#   RUN=$SCRATCH/runs/a REFERENCE=$SCRATCH/kappa/test N=4096 OUT=$SCRATCH/val/a sbatch -A m1234 slurm/validate.sh
#
# Outputs in OUT: generated/ (a dataset), stats/ (stats tables; the reference's is reused
# by later validations with the same bins), summary.json, summary.md, report.md,
# index.html and the figures. Resumable: a rerun (or a requeued job) finishes only what is
# missing.
#SBATCH -J cosmogan-validate
#SBATCH -C gpu
#SBATCH -q regular
#SBATCH -N 1
#SBATCH --ntasks-per-node=4
#SBATCH -c 32
#SBATCH --gpus-per-node=4
#SBATCH --gpu-bind=none
#SBATCH -t 00:30:00
#SBATCH -o %x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#
# Knobs (environment): RUN (the training run), CHECKPOINT (last, best, or a path; default:
# best when the run kept one), REFERENCE (held-out dataset directory, default DATA/test), N
# (maps to generate; default: as many as REFERENCE holds, per cosmology for a conditional run), OUT (default RUN/validation),
# STATS_CACHE (where reference statistics are kept and reused; default OUT/stats),
# NOISE_FLOOR (a second held-out sample, e.g. DATA/validation: every figure beside what two
# samples of the simulations give; default none), PYTHON
# or VENV, IMAGE, SRUN_MPI (default pmi2), SRUN_FLAGS. Arguments are passed on to
# `cosmogan validate` (e.g. --config my-bins.yaml --set generate.seed=1
# --set validation.ps_max_rel_err=0.05: stats, validation and generate settings over the run's).
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

RUN="${RUN:-${COSMOGAN_ROOT}/runs/cosmogan-train}"
DATA="${DATA:-${COSMOGAN_ROOT}/data/quickstart}"
REFERENCE="${REFERENCE:-${DATA}/test}"
OUT="${OUT:-${RUN}/validation}"
echo "cosmogan: job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?}: ${SLURM_NTASKS:-?} tasks," \
     "RUN=${RUN} CHECKPOINT=${CHECKPOINT:-default} REFERENCE=${REFERENCE} N=${N:-as the reference} OUT=${OUT}"

cosmogan_srun validate --run "${RUN}" --reference "${REFERENCE}" ${N:+--n "${N}"} --out "${OUT}" \
    ${CHECKPOINT:+--checkpoint "${CHECKPOINT}"} ${STATS_CACHE:+--stats-cache "${STATS_CACHE}"} \
    ${NOISE_FLOOR:+--noise-floor "${NOISE_FLOOR}"} --quiet "$@"
exit $?
