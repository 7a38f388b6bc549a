#!/usr/bin/env bash
# The conditional emulator at the paper's scale on one GPU (configs/cosmogan256-conditional.yaml):
# make the 25-cosmology training set and the 31-cosmology test split, train G(z, Omega_m,
# sigma_8), validate 1,024 generated maps at every test cosmology, print the per-cosmology
# verdicts. Written for an H200 node (1 GPU, 16 cores); aimed at ~15 minutes.
#
#   bash benchmarks/gpu_conditional.sh
#   OUT=/scratch/x STEPS=40000 bash benchmarks/gpu_conditional.sh
#
# Writes under $OUT (default bench-out/conditional, git-ignored); prints the report's path.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
BIN="$(dirname "$PY")"
MPIRUN="${MPIRUN:-$BIN/mpirun}"
RANKS="${RANKS:-$(nproc)}"
OUT="${OUT:-$REPO/bench-out/conditional}"
STEPS="${STEPS:-20000}"
CONFIG=configs/cosmogan256-conditional.yaml
export HDF5_USE_FILE_LOCKING=FALSE OMP_NUM_THREADS=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_conditional: no CUDA device')"

t0=$(date +%s)
"$MPIRUN" -n "$RANKS" "$PY" -m pipeline make-data --config "$CONFIG" --out "$OUT/data" --quiet
t1=$(date +%s)
OMP_NUM_THREADS=8 "$PY" -m pipeline train --config "$CONFIG" --data "$OUT/data" --run "$OUT/run" \
    --set "train.steps=$STEPS" --quiet
t2=$(date +%s)
status=0
"$MPIRUN" -n "$RANKS" "$PY" -m pipeline validate --run "$OUT/run" --reference "$OUT/data/test" --n 1024 \
    --out "$OUT/report" --quiet || status=$?
t3=$(date +%s)
echo "gpu_conditional: make-data $((t1 - t0)) s, train $((t2 - t1)) s, validate $((t3 - t2)) s, total $((t3 - t0)) s"
grep images_per_s "$OUT/run/metrics.jsonl" | tail -n 3
echo "report: $OUT/report/index.html (validate exit $status)"
