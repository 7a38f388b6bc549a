#!/usr/bin/env bash
# Seconds per posterior of `cosmogan infer` with the emulator on one GPU (written for an H200).
#
#   RUN=runs/conditional OBS=data/conditional/test SELECT=Omega_m=0.325,sigma_8=0.75 bash benchmarks/gpu_infer.sh
#
# Runs benchmarks/bench_infer.py on one rank with --device cuda: a 41 x 41 grid at 128 and
# at 1024 maps per point, then prints the maps/s of the simulations. RUN is a conditional run
# (its checkpoints and config.yaml), OBS the observed maps (a dataset with SELECT, or a .npy).
# Needs the pipeline's requirements (pyccl, emcee, astropy) on the device's python.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-python3}"
: "${RUN:?set RUN to a conditional run directory}" "${OBS:?set OBS to the observed maps}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_infer: no CUDA device')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for n_sim in 128 1024; do
    "$PY" benchmarks/bench_infer.py --run "$RUN" --observed "$OBS" ${SELECT:+--select "$SELECT"} \
        --ranks 1 --device cuda --grid 41 --n-sim "$n_sim"
done
