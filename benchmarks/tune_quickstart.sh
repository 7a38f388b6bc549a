#!/usr/bin/env bash
# One quickstart tuning run (docs/training-notes.md): train with the given --set overrides
# on the quickstart dataset, generate 2,048 maps from best.pt, compare them with the test
# split's statistics and print the figures the quickstart targets are judged by.
#
#   bash benchmarks/tune_quickstart.sh NAME [--set key=value ...]
#   OMP_NUM_THREADS=1 bash benchmarks/tune_quickstart.sh G1 --set train.spectral_weight=20.0 &
#
# Makes the dataset and its reference statistics once, under $OUT (default
# bench-out/tune, git-ignored); each run writes $OUT/NAME-{run,gen,gen.h5,cmp}. Two runs
# at one thread each use 2 cores about as well as one run at two threads.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-$REPO/.venv/bin/python}"
OUT="${OUT:-$REPO/bench-out/tune}"
CONFIG="${CONFIG:-configs/quickstart.yaml}"
NAME="$1"; shift
cg() { "$PY" -m pipeline "$@"; }
mkdir -p "$OUT"
# the shared dataset: made once (flock: parallel runs wait for the first to make it)
(
    flock 9
    [[ -f "$OUT/data/test/manifest.json" ]] || cg make-data --config "$CONFIG" --out "$OUT/data" --quiet
    [[ -f "$OUT/ref.h5" ]] || cg stats "$OUT/data/test" --out "$OUT/ref.h5" --quiet
) 9>"$OUT/.lock"
rm -rf "$OUT/$NAME-run" "$OUT/$NAME-gen" "$OUT/$NAME-gen.h5" "$OUT/$NAME-cmp"
t0=$(date +%s)
cg train --config "$CONFIG" --data "$OUT/data" --run "$OUT/$NAME-run" --quiet "$@"
t1=$(date +%s)
cg generate --run "$OUT/$NAME-run" --checkpoint best --n 2048 --out "$OUT/$NAME-gen" --quiet
cg stats "$OUT/$NAME-gen" --out "$OUT/$NAME-gen.h5" --like "$OUT/ref.h5" --quiet
cg compare "$OUT/ref.h5" "$OUT/$NAME-gen.h5" --out "$OUT/$NAME-cmp" > /dev/null
"$PY" - "$OUT/$NAME-cmp/summary.json" "$NAME" "$((t1 - t0))" <<'PYEOF'
import json, sys
summary, name, wall = sys.argv[1:]
stats = json.load(open(summary))["statistics"]
ps = stats["power_spectrum"]
print(f"{name}: train {wall} s; ps worst {abs(ps['worst_rel_diff']):.1%} (bin {ps['worst_bin']}), "
      f"median {ps['median_abs_rel_diff']:.1%}; "
      + ", ".join(f"{k} {stats[k]['worst_diff_over_peak']:.1%}" for k in ("V0", "V1", "V2", "pdf", "peaks")))
print("  ps rel diff per bin: " + " ".join(f"{x:+.2f}" for x in ps["rel_diff"]))
PYEOF
