#!/usr/bin/env bash
# Training throughput of the 256x256 CosmoGAN model on one GPU (written for an H200).
#
#   bash benchmarks/gpu_train.sh              # from anywhere; runs in the repository
#   PYTHON=/path/to/python bash benchmarks/gpu_train.sh
#
# Runs benchmarks/bench_train.py (the real GAN step: a D update and a G update)
# at 256x256, bf16 autocast, channels_last, torch.compile, at batches 64/256/512,
# then the same without compile at 256 for comparison; prints images/s, the FLOPs
# per image counted on the model, and the model FLOP utilisation against the
# H200's dense BF16 peak (989 TFLOP/s, the same tensor cores as the H100 SXM).
# Target: at least 2,500 images/s. Writes only bench-out/gpu_train.jsonl
# (git-ignored). Expected to finish in about 4 minutes (compile dominates).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
PEAK=${PEAK_TFLOPS:-989}
OUT="$REPO/bench-out/gpu_train.jsonl"
mkdir -p "$(dirname "$OUT")"
: > "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_train: no CUDA device')"

for batch in 64 256 512; do
    "$PY" benchmarks/bench_train.py --device cuda --size 256 --batch "$batch" --precision bf16 \
        --channels-last --compile --steps 20 --repeats 5 --warmup 5 --peak-tflops "$PEAK" | tee -a "$OUT"
done
"$PY" benchmarks/bench_train.py --device cuda --size 256 --batch 256 --precision bf16 --channels-last \
    --steps 20 --repeats 5 --warmup 3 --peak-tflops "$PEAK" | tee -a "$OUT"
"$PY" benchmarks/bench_train.py --device cuda --size 256 --batch 256 --precision fp32 \
    --steps 10 --repeats 3 --warmup 2 --peak-tflops "$PEAK" | tee -a "$OUT"

"$PY" - "$OUT" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
best = max(rows, key=lambda r: r["images_per_s"])
for r in rows:
    print(f"batch {r['batch']:4d} {r['precision']} compile={r['compile']}: {r['images_per_s']:8.0f} images/s, "
          f"{r['achieved_tflops']:6.1f} TFLOP/s, MFU {r.get('mfu', 0):.1%}")
print(f"best {best['images_per_s']:.0f} images/s ({best['gflop_per_image_iteration']} GFLOP per image per "
      f"iteration); target 2500: {'MET' if best['images_per_s'] >= 2500 else 'NOT MET'}")
PYEOF
