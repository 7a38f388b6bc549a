#!/usr/bin/env bash
# The conditional emulator at the paper's scale on one GPU (configs/cosmogan256-conditional.yaml):
# make the 25-cosmology training set and the 31-cosmology test split, train G(z, Omega_m,
# sigma_8) 20,000 steps, validate 1,024 generated maps at every test cosmology and print the
# per-cosmology verdicts (benchmarks/gpu_fidelity.sh with this configuration). Written for
# an H200 node (1 GPU, 16 cores); aimed at ~15 minutes.
#
#   bash benchmarks/gpu_conditional.sh
#   OUT=/scratch/x STEPS=40000 bash benchmarks/gpu_conditional.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONFIG=configs/cosmogan256-conditional.yaml N="${N:-1024}" STEPS="${STEPS:-20000}"
export OUT="${OUT:-$HERE/../bench-out/conditional}"
exec bash "$HERE/gpu_fidelity.sh"
