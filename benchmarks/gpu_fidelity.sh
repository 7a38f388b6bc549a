#!/usr/bin/env bash
# The paper configuration end to end on one GPU (written for an H200 node: 1 GPU, 16 cores):
# make 100,000 + 2 x 2,048 synthetic 256x256 maps, train the CosmoGAN DCGAN (bf16,
# channels_last, torch.compile; configs/cosmogan256.yaml), validate 2,048 generated maps
# against the test split and print the verdicts. Aimed at well under 10 minutes:
# data ~1.5 min (26 GB), training 12,000 steps of 64 (~5 min at 2,500 images/s),
# validation ~1 min.
#
#   bash benchmarks/gpu_fidelity.sh            # from anywhere; works in the repository
#   OUT=/scratch/x STEPS=20000 bash benchmarks/gpu_fidelity.sh
#   CONFIG=configs/other.yaml N=1024 bash benchmarks/gpu_fidelity.sh   # another configuration
#
# Writes under $OUT (default bench-out/fidelity, git-ignored); prints the report's path.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
BIN="$(dirname "$PY")"
MPIRUN="${MPIRUN:-$BIN/mpirun}"
RANKS="${RANKS:-$(nproc)}"
OUT="${OUT:-$REPO/bench-out/fidelity}"
STEPS="${STEPS:-12000}"
CONFIG="${CONFIG:-configs/cosmogan256.yaml}"
N="${N:-2048}"     # generated maps (a conditional run: at each cosmology of the test split)
export HDF5_USE_FILE_LOCKING=FALSE OMP_NUM_THREADS=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_fidelity: no CUDA device')"

t0=$(date +%s)
"$MPIRUN" -n "$RANKS" "$PY" -m pipeline make-data --config "$CONFIG" --out "$OUT/data" --quiet
t1=$(date +%s)
OMP_NUM_THREADS=8 "$PY" -m pipeline train --config "$CONFIG" --data "$OUT/data" --run "$OUT/run" \
    --set "train.steps=$STEPS" --quiet
t2=$(date +%s)
status=0  # validate exits 3 on a FAIL verdict: the timings and the report's path are still wanted
"$MPIRUN" -n "$RANKS" "$PY" -m pipeline validate --run "$OUT/run" --reference "$OUT/data/test" --n "$N" \
    --out "$OUT/report" --quiet || status=$?
t3=$(date +%s)
echo "$(basename "$CONFIG" .yaml): make-data $((t1 - t0)) s, train $((t2 - t1)) s, validate $((t3 - t2)) s, total $((t3 - t0)) s"
grep images_per_s "$OUT/run/metrics.jsonl" | tail -n 3
echo "report: $OUT/report/index.html (validate exit $status)"
