#!/usr/bin/env bash
# Statistics throughput on one GPU (written for an H200; any CUDA GPU works).
#
#   bash benchmarks/gpu_stats.sh            # from anywhere; runs in the repo
#   PYTHON=/path/to/python bash benchmarks/gpu_stats.sh
#
# 1. the CUDA unit tests of pipeline.stats (GPU vs CPU numbers);
# 2. bench_stats.py --device cuda in float32 at large batches (the full set:
#    C_ell in 50 bins, V0/V1/V2 and peaks in 34 bins, PDF, moments, on
#    256^2 maps), with the per-statistic breakdown and the float32/float64
#    differences from the CPU float64 numbers;
# 3. prints maps/s and whether the target (>= 20,000 maps/s) is met.
#
# Writes only under the repository: bench-out/gpu_stats.json (git-ignored).
# Exit status: non-zero if the tests fail or CUDA is missing; the target is
# reported, not enforced.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi

TARGET=20000
OUTDIR="$REPO/bench-out"
mkdir -p "$OUTDIR"

echo "== python: $PY"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_stats: torch {torch.__version__} sees no CUDA device")
print(f"== torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
EOF

echo "== CUDA unit tests (GPU vs CPU)"
"$PY" -m pytest -q -p no:cacheprovider tests/unit/test_stats.py -k cuda

echo "== benchmark (float32, large batches)"
# 8 CPU threads for the host side (numpy map synthesis, CPU reference for --accuracy)
"$PY" benchmarks/bench_stats.py --device cuda --threads 8 \
    --batch-sizes 1024 4096 16384 --repeats 5 --breakdown --accuracy \
    | tee "$OUTDIR/gpu_stats.json"

"$PY" - "$OUTDIR/gpu_stats.json" "$TARGET" <<'EOF'
import json, sys
rec = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
target = float(sys.argv[2])
for r in rec["results"]:
    print(f"batch {r['batch']:6d}: {r['maps_per_s']:12.0f} maps/s  ({1e3 * r['ms_per_map']:.2f} us/map)")
best = rec["best_maps_per_s"]
print(f"best: {best:.0f} maps/s on {rec['device_name']} ({rec['dtype']}); "
      f"target {target:.0f}: {'MET' if best >= target else 'NOT MET'}")
EOF
