#!/bin/bash
# Infer (Omega_m, sigma_8) from observed maps with a conditional emulator: `cosmogan infer`
# in one MPI step draws the emulator's maps over a parameter grid (spread over the tasks,
# a GPU per task), builds the likelihood and writes the posterior and its report.
#
#   RUN=$SCRATCH/runs/conditional OBSERVED=$SCRATCH/survey.fits OUT=$SCRATCH/infer/survey sbatch -A m1234 slurm/infer.sh
#   RUN=... OBSERVED=$SCRATCH/kappa/test SELECT=Omega_m=0.325,sigma_8=0.75 N_OBS=10 SIMULATOR=both sbatch ... slurm/infer.sh
#
# Outputs in OUT: simulations-<simulator>.h5 (reused by later inferences with the same
# grid and bins), posterior.h5, summary.json, contours.png, index.html (docs/inference.md).
# Resumable: a rerun (or a requeued job) draws only the grid rows still missing.
#SBATCH -J cosmogan-infer
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
# Knobs (environment): RUN (the conditional run), OBSERVED (a dataset, .npy or FITS),
# SELECT (a dataset of many cosmologies: the maps of this one), N_OBS (the first N maps),
# SIMULATOR (emulator, physics or both; default emulator), CHECKPOINT (default best), OUT
# (default RUN/infer), PYTHON or VENV, IMAGE, SRUN_MPI (default pmi2), SRUN_FLAGS.
# Arguments are passed on to `cosmogan infer` (e.g. --grid 41 --n-sim 512 --sampler emcee
# --set infer.ranges=Omega_m=0.25:0.35).
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

RUN="${RUN:-${COSMOGAN_ROOT}/runs/conditional}"
OUT="${OUT:-${RUN}/infer}"
if [ -z "${OBSERVED:-}" ]; then
    echo "cosmogan: error: OBSERVED is not set (the maps to infer from: a dataset, .npy or FITS)" >&2
    exit 1
fi
echo "cosmogan: job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?}: ${SLURM_NTASKS:-?} tasks," \
     "RUN=${RUN} OBSERVED=${OBSERVED} SELECT=${SELECT:-none} SIMULATOR=${SIMULATOR:-emulator} OUT=${OUT}"

cosmogan_srun infer --emulator "${RUN}" --observed "${OBSERVED}" --out "${OUT}" \
    ${SELECT:+--select "${SELECT}"} ${N_OBS:+--n-obs "${N_OBS}"} ${SIMULATOR:+--simulator "${SIMULATOR}"} \
    ${CHECKPOINT:+--checkpoint "${CHECKPOINT}"} --quiet "$@"
exit $?
