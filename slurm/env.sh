# shellcheck shell=bash
# The environment shim of the batch scripts (slurm/train.sh, make_data.sh, validate.sh, sweep.sh, infer.sh).
# Sourced, never executed; needs COSMOGAN_ROOT (the repository) set by the caller.
# See docs/slurm.md.
#
# Job-wide settings only. Each task's RANK / LOCAL_RANK / WORLD_SIZE are not set here:
# srun gives every task SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS (and, with
# --mpi=pmi2, PMI_RANK / PMI_SIZE), and pipeline/parallel reads those.

# Lustre (and NFS) do not support HDF5's file locks; every stage opens shards read-only
# or writes them atomically, so the locks protect nothing here.
export HDF5_USE_FILE_LOCKING=FALSE
export PYTHONUNBUFFERED=1
export PYTHONPATH="${COSMOGAN_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"

# Threads per task = CPUs per task. Since Slurm 22.05 srun no longer reads
# SLURM_CPUS_PER_TASK, so `sbatch -c N` reaches the steps only through SRUN_CPUS_PER_TASK.
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
    export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK}"
    export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK}"
fi

# Rendezvous for DDP when the tasks are started by srun without MPI (or by torchrun): the
# first node of the allocation, and a port that differs between jobs sharing a node
# (29500 + job id mod 1000). Under `srun --mpi=pmi2` rank 0 picks the address and a free
# port itself and broadcasts them over MPI (pipeline/parallel/launch.py).
if [ -n "${SLURM_JOB_NODELIST:-}" ]; then
    MASTER_ADDR="$(scontrol show hostnames "${SLURM_JOB_NODELIST}" 2>/dev/null | head -n 1)"
    export MASTER_ADDR="${MASTER_ADDR:-$(hostname)}"
    export MASTER_PORT="$((29500 + ${SLURM_JOB_ID:-0} % 1000))"
fi

# -- containers ---------------------------------------------------------------------------
# IMAGE set: every task runs inside it, with the first runtime found of shifter,
# podman-hpc, apptainer, singularity (CONTAINER_RUNTIME=NAME picks one). A job submitted
# with `sbatch --image=...` (Shifter's plugin) runs its tasks in that image even without
# IMAGE. CONTAINER_FLAGS adds options to the runtime's command line.
COSMOGAN_CONTAINER=()
cosmogan_container() {
    COSMOGAN_CONTAINER=()
    local runtime="${CONTAINER_RUNTIME:-}"
    if [ -z "${IMAGE:-}" ]; then
        if [ -n "${SLURM_SPANK_SHIFTER_IMAGE:-}" ] && command -v shifter >/dev/null 2>&1; then
            COSMOGAN_CONTAINER=(shifter)     # the job's --image and --module
        fi
        return 0
    fi
    if [ -z "$runtime" ]; then
        for r in shifter podman-hpc apptainer singularity; do
            if command -v "$r" >/dev/null 2>&1; then runtime=$r; break; fi
        done
    fi
    # shellcheck disable=SC2206  # CONTAINER_FLAGS is split into words on purpose
    local extra=(${CONTAINER_FLAGS:-})
    case "$runtime" in
        shifter)
            COSMOGAN_CONTAINER=(shifter "--image=${IMAGE}")
            local modules="${SHIFTER_MODULES-gpu,nccl-plugin}"
            if [ -n "$modules" ]; then COSMOGAN_CONTAINER+=("--module=${modules}"); fi ;;
        podman-hpc)
            COSMOGAN_CONTAINER=(podman-hpc run --rm --gpu --env 'SLURM_*' --env 'PMI_*' --env 'MASTER_*'
                                --env 'OMP_NUM_THREADS' --env 'HDF5_USE_FILE_LOCKING' --env 'PYTHON*'
                                -v "${COSMOGAN_ROOT}:${COSMOGAN_ROOT}" -v "${PWD}:${PWD}" -w "${PWD}") ;;
        apptainer|singularity)
            COSMOGAN_CONTAINER=("$runtime" exec --nv --bind "${COSMOGAN_ROOT}" --bind "${PWD}") ;;
        "")
            echo "cosmogan: error: IMAGE=${IMAGE} but none of shifter, podman-hpc, apptainer, singularity is installed" >&2
            return 1 ;;
        *)
            echo "cosmogan: error: CONTAINER_RUNTIME=${runtime}: use shifter, podman-hpc, apptainer or singularity" >&2
            return 1 ;;
    esac
    COSMOGAN_CONTAINER+=("${extra[@]}")
    if [ "$runtime" = podman-hpc ] || [ "$runtime" = apptainer ] || [ "$runtime" = singularity ]; then
        COSMOGAN_CONTAINER+=("${IMAGE}")
    fi
}
cosmogan_container || exit 1

# The interpreter: PYTHON, else VENV/bin/python, else the repository's .venv (outside a
# container), else the image's / the PATH's python3.
if [ -z "${PYTHON:-}" ]; then
    if [ -n "${VENV:-}" ]; then
        PYTHON="${VENV}/bin/python"
    elif [ ${#COSMOGAN_CONTAINER[@]} -eq 0 ] && [ -x "${COSMOGAN_ROOT}/.venv/bin/python" ]; then
        PYTHON="${COSMOGAN_ROOT}/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
export PYTHON

# -- launching ----------------------------------------------------------------------------
# cosmogan_srun ARGS...: `srun --mpi=$SRUN_MPI $SRUN_FLAGS [container] $PYTHON -m pipeline
# ARGS`, run in the background so that the batch shell can handle signals meanwhile:
# SIGUSR1 (Slurm's --signal=B:USR1 warning, or `scancel --signal=USR1 --batch`) and SIGTERM
# are forwarded to the step. Returns the step's exit status; COSMOGAN_SIGNAL names the
# last signal received ("" when none).
SRUN_MPI="${SRUN_MPI:-pmi2}"
COSMOGAN_SIGNAL=""
COSMOGAN_STEP_PID=""
_cosmogan_forward() {
    COSMOGAN_SIGNAL=$1
    if [ -n "$COSMOGAN_STEP_PID" ]; then
        echo "cosmogan: batch script got SIG$1: forwarding it to the step" >&2
        kill -s "$1" "$COSMOGAN_STEP_PID" 2>/dev/null || true
    fi
}
trap '_cosmogan_forward USR1' USR1
trap '_cosmogan_forward TERM' TERM

cosmogan_srun() {
    local rc=0 saved pid
    # shellcheck disable=SC2206  # SRUN_FLAGS is split into words on purpose
    local cmd=(srun "--mpi=${SRUN_MPI}" ${SRUN_FLAGS:-} "${COSMOGAN_CONTAINER[@]}" "${PYTHON}" -m pipeline "$@")
    echo "+ ${cmd[*]}" >&2
    "${cmd[@]}" &
    pid=$!
    COSMOGAN_STEP_PID=$pid
    if [ -n "$COSMOGAN_SIGNAL" ]; then  # signalled before the step started
        _cosmogan_forward "$COSMOGAN_SIGNAL"
    fi
    # A trapped signal interrupts `wait` (status > 128) while the step runs on: wait again.
    while kill -0 "$pid" 2>/dev/null; do
        wait "$pid"
        rc=$?
    done
    wait "$pid" 2>/dev/null  # the step's own status, kept by bash for background jobs
    saved=$?
    [ "$saved" -ne 127 ] && rc=$saved
    COSMOGAN_STEP_PID=""
    return "$rc"
}
