#!/bin/bash
# Make the training/validation/test datasets from the physical model, MPI ranks in parallel.
#
#   sbatch -A m1234 slurm/make_data.sh
#   CONFIG=configs/cosmogan256.yaml OUT=$SCRATCH/kappa sbatch -A m1234 -N 2 slurm/make_data.sh --set data.n_train=65536
#
# The output is byte-identical for any number of tasks, and a rerun (or a requeued job)
# finishes only what is missing. CPU work: the GPU lines only match Perlmutter's GPU
# nodes; on CPU nodes use `sbatch -C cpu --gpus-per-node=0 --ntasks-per-node=128 -c 2`.
#SBATCH -J cosmogan-make-data
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
# Knobs (environment): CONFIG (YAML), OUT (dataset directory; gets train/, validation/,
# test/), PYTHON or VENV, IMAGE, SRUN_MPI (default pmi2), SRUN_FLAGS. Arguments are passed
# on to `cosmogan make-data`.
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

CONFIG="${CONFIG:-${COSMOGAN_ROOT}/configs/quickstart.yaml}"
OUT="${OUT:-${COSMOGAN_ROOT}/data/quickstart}"
echo "cosmogan: job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?}: ${SLURM_NTASKS:-?} tasks, CONFIG=${CONFIG} OUT=${OUT}"

cosmogan_srun make-data --config "${CONFIG}" --out "${OUT}" --quiet "$@"
exit $?
