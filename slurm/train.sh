#!/bin/bash
# Train the DCGAN data-parallel: one task per GPU, `cosmogan train` under srun.
#
#   sbatch -A m1234 slurm/train.sh [--set section.key=value ...]
#   CONFIG=configs/cosmogan256.yaml DATA=$SCRATCH/kappa RUN=$SCRATCH/runs/a sbatch -A m1234 -N 4 slurm/train.sh
#
# Perlmutter GPU nodes: 4 A100s, 4 tasks per node, 32 CPUs (16 cores x 2 threads) per task.
# Every #SBATCH line can be overridden on the sbatch command line. Not here, because a Slurm
# without NERSC's Shifter plugin refuses them as #SBATCH lines (docs/slurm.md): the account
# (sbatch -A, or SBATCH_ACCOUNT) and Shifter's `--image=... --module=gpu,nccl-plugin`.
#SBATCH -J cosmogan-train
#SBATCH -C gpu
#SBATCH -q regular
#SBATCH -N 1
#SBATCH --ntasks-per-node=4
#SBATCH -c 32
#SBATCH --gpus-per-node=4
#SBATCH --gpu-bind=none
#SBATCH -t 02:00:00
#SBATCH -o %x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@180
#
# Knobs (environment): CONFIG (YAML), DATA (make-data output), RUN (run directory; a
# requeued or resubmitted job resumes from its newest checkpoint), PYTHON or VENV, IMAGE,
# SRUN_MPI (default pmi2), SRUN_FLAGS. Arguments are passed on to `cosmogan train`.
#
# Pre-emption: 180 s before the time limit Slurm sends SIGUSR1 to this script (B:), which
# forwards it to the step; training finishes its step, checkpoints and exits 75; then this
# script requeues the job, which resumes from RUN when it starts again.
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
DATA="${DATA:-${COSMOGAN_ROOT}/data/quickstart}"
RUN="${RUN:-${COSMOGAN_ROOT}/runs/${SLURM_JOB_NAME:-cosmogan-train}}"
echo "cosmogan: job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-?}:" \
     "${SLURM_NTASKS:-?} tasks, CONFIG=${CONFIG} DATA=${DATA} RUN=${RUN}"

cosmogan_srun train --config "${CONFIG}" --data "${DATA}" --run "${RUN}" --quiet "$@"
rc=$?

# Requeue after a pre-emption warning: the step checkpointed (75) or was killed by it. Never
# on SIGTERM (scancel, the time limit, or Slurm's own pre-emption requeueing the job itself).
if [ "${COSMOGAN_SIGNAL}" != TERM ] && { [ "$rc" -eq 75 ] || { [ "${COSMOGAN_SIGNAL}" = USR1 ] && [ "$rc" -gt 128 ]; }; }; then
    echo "cosmogan: training stopped at a checkpoint (status ${rc}); requeueing job ${SLURM_JOB_ID}" >&2
    if scontrol requeue "${SLURM_JOB_ID}"; then
        exit 0
    fi
    echo "cosmogan: error: scontrol requeue ${SLURM_JOB_ID} failed; resubmit to resume from ${RUN}" >&2
fi
exit "$rc"
