#!/usr/bin/env bash
# Every GPU figure of the project in one run on one GPU (sized for an H200 node lent for
# about 15 minutes of device time: 1 GPU, 16 cores), or, with --dry-run, the same stages
# end to end on the CPU at tiny sizes, so that the first GPU session only has to start it.
#
#   bash benchmarks/gpu_session.sh                 # on the GPU machine (about 8 minutes)
#   bash benchmarks/gpu_session.sh --dry-run       # anywhere, on the CPU (about 2 minutes)
#   OUT=/tmp/g STEPS=3000 N_TRAIN=16384 bash benchmarks/gpu_session.sh
#
# On the lent machine (Python 3.12, CUDA torch; pyccl is not there): carry the wheels
# benchmarks/gpu_wheels.sh downloads, then
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
#       PYTHONPATH=/tmp/site:. OUT=$OUT bash benchmarks/gpu_session.sh
#
# Stages, each under its own time limit (a stage that fails or overruns is recorded as
# such and the next one still runs):
#   env       GPU, driver, torch, CUDA, CPU cores
#   tests     the tests that skip without CUDA (GPU statistics against CPU numbers)
#   stats     bench_stats.py: the full set at 256x256 (50 ell bins, Minkowski functionals and
#             peaks at 34 thresholds, PDF, moments) in float32 at batches 1024/4096/16384,
#             and float32 against CPU float64 on the same maps. Target: 20,000 maps/s
#   train     bench_train.py: the paper model (configs/cosmogan256.yaml's architecture) in
#             bf16 + channels_last, with torch.compile at batches 64/256 and without it at
#             256: images/s and MFU against 989 TFLOP/s dense bf16. Target: 2,500 images/s
#   ddp       `torchrun --nproc_per_node 1 -m pipeline train` with train.backend=ddp: DDP
#             over NCCL at world size 1 through the Backend multi-GPU jobs use
#   fidelity  the paper configuration with N_TRAIN training maps and STEPS steps (fewer
#             than its 100,000 and 12,000: the device time allows no more), validated on
#             2,048 maps a side; the verdict table goes to summary.md
# Writes only under $OUT (default bench-out/gpu-session, git-ignored): results.jsonl (one
# JSON object per measurement, with the stage), stage logs, summary.md, report/.
# Exit status 0 when every stage ran (whatever the figures), 1 otherwise.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DRY=0 ONLY=""
while (( $# )); do
    case "$1" in
        --dry-run) DRY=1 ;;
        --stage) ONLY="$2"; shift ;;  # internal: run one stage's function (under the caller's time limit)
        *) echo "gpu_session: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
PY="$(command -v "$PY")" || { echo "gpu_session: no python at ${PYTHON:-python3}" >&2; exit 2; }
BIN="$(dirname "$PY")"  # torchrun and (where there is one) mpirun beside it
OUT="${OUT:-$REPO/bench-out/gpu-session}"
export HDF5_USE_FILE_LOCKING=FALSE PYTHONUNBUFFERED=1
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
FAILED=()

if (( DRY )); then
    DEVICE=cpu; CONFIG=configs/tiny.yaml; STEPS="${STEPS:-16}"; N_TRAIN="${N_TRAIN:-192}"; N_EVAL=32
    STATS_ARGS=(--device cpu --threads 1 --batch-sizes 2 4 --repeats 2 --accuracy)
    TRAIN_SETS=(--size 32 --set model.g_channels=8 --set model.d_channels=8 --set model.z_dim=16)
    TRAIN_RUNS=("--batch 8 --precision fp32 --steps 2 --repeats 2 --warmup 1")
    DDP_SETS=(--set train.device=cpu --set train.steps=4)
    # (tiny.yaml logs every 4 steps)
    FID_SETS=(--set train.device=cpu --set train.precision=fp32 --set train.compile=false)
    LIMIT_SHORT=300; LIMIT_LONG=600
else
    DEVICE=cuda; CONFIG=configs/cosmogan256.yaml; STEPS="${STEPS:-3000}"; N_TRAIN="${N_TRAIN:-16384}"; N_EVAL=2048
    STATS_ARGS=(--device cuda --threads 8 --batch-sizes 1024 4096 16384 --repeats 5 --breakdown --accuracy)
    TRAIN_SETS=(--device cuda --size 256 --peak-tflops "${PEAK_TFLOPS:-989}")
    TRAIN_RUNS=("--batch 64 --precision bf16 --channels-last --compile --steps 20 --repeats 5 --warmup 5"
                "--batch 256 --precision bf16 --channels-last --compile --steps 20 --repeats 5 --warmup 5"
                "--batch 256 --precision bf16 --channels-last --steps 20 --repeats 5 --warmup 3")
    DDP_SETS=(--set train.steps=20 --set train.compile=false --set train.fidelity_every=1000
              --set train.checkpoint_every=1000 --set train.log_every=5)
    FID_SETS=()
    LIMIT_SHORT=120; LIMIT_LONG=300
fi

record() {  # record STAGE STATUS SECONDS [JSON-LINE-FILE]: one results line per measurement
    "$PY" - "$RESULTS" "$@" <<'PYEOF'
import json, sys
path, stage, status, seconds, *files = sys.argv[1:]
rows = []
for f in files:
    for line in open(f, errors="replace"):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
with open(path, "a") as out:
    for r in rows or [{}]:
        out.write(json.dumps({"stage": stage, "status": status, "seconds": int(seconds), **r}) + "\n")
PYEOF
}

stage() {  # stage NAME LIMIT_S COMMAND...: run it under a time limit, log it, record it
    local name="$1" limit="$2"; shift 2
    local log="$OUT/$name.log" t0 rc
    echo "== $name (limit ${limit} s)"
    t0=$(date +%s)
    timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$log" 2>&1 < /dev/null
    rc=$?
    local status=ok
    if (( rc == 124 || rc == 137 )); then status="timed out after ${limit} s"; elif (( rc )); then status="failed ($rc)"; fi
    [[ "$status" == ok ]] || FAILED+=("$name: $status")
    record "$name" "$status" "$(( $(date +%s) - t0 ))" "$log"
    tail -n 4 "$log"
    echo "== $name: $status, $(( $(date +%s) - t0 )) s"
}

env_report() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$PY" -c "
import json, os, torch
print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available(),
                  'device_name': torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu',
                  'cpu_cores': os.cpu_count()}))"
    if [[ "$DEVICE" == cuda ]]; then
        "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_session: no CUDA device')"
    fi
}

cuda_tests() {
    # the tests that skip without CUDA; on the CPU (dry run) they are collected and skip
    "$PY" -m pytest -q -p no:cacheprovider -rs tests/unit/test_stats.py -k cuda
}

train_bench() {
    local run
    for run in "${TRAIN_RUNS[@]}"; do
        # shellcheck disable=SC2086
        "$PY" benchmarks/bench_train.py "${TRAIN_SETS[@]}" $run || return 1
    done
}

ddp_world_one() {
    local data="$OUT/ddp-data"
    "$PY" -m pipeline make-data --config "$CONFIG" --out "$data" --quiet --set data.n_train=1024 \
        --set data.n_validation=64 --set data.n_test=64 || return 1
    "$BIN/torchrun" --nproc_per_node 1 -m pipeline train --config "$CONFIG" --data "$data" \
        --run-dir "$OUT/ddp-run" --quiet --set train.backend=ddp "${DDP_SETS[@]}" || return 1
    grep images_per_s "$OUT/ddp-run/metrics.jsonl" | tail -n 1
}

fidelity() {
    local data="$OUT/data" n_ranks
    n_ranks=$(( DRY ? 2 : $(nproc) ))
    local mpi=()
    [[ -x "$BIN/mpirun" ]] && mpi=("$BIN/mpirun" -n "$n_ranks")
    "${mpi[@]}" "$PY" -m pipeline make-data --config "$CONFIG" --out "$data" --quiet \
        --set "data.n_train=$N_TRAIN" --set "data.n_validation=$N_EVAL" --set "data.n_test=$N_EVAL" || return 1
    OMP_NUM_THREADS=8 "$PY" -m pipeline train --config "$CONFIG" --data "$data" --run "$OUT/run" --quiet \
        --set "train.steps=$STEPS" "${FID_SETS[@]}" || return 1
    OMP_NUM_THREADS=1 "${mpi[@]}" "$PY" -m pipeline validate --run "$OUT/run" --reference "$data/test" \
        --n "$N_EVAL" --out "$OUT/report" --quiet
    local rc=$?
    # 3: the verdict is FAIL; that is a measured result (in summary.md), not a broken stage
    (( rc == 0 || rc == 3 )) || return "$rc"
    grep images_per_s "$OUT/run/metrics.jsonl" | tail -n 1
}

if [[ -n "$ONLY" ]]; then  # one stage, in the process the time limit watches
    "$ONLY"
    exit
fi
SELF=(bash "${BASH_SOURCE[0]}")
(( DRY )) && SELF+=(--dry-run)
: > "$RESULTS"
stage env 60 "${SELF[@]}" --stage env_report
stage tests "$LIMIT_SHORT" "${SELF[@]}" --stage cuda_tests
stage stats "$LIMIT_SHORT" "$PY" benchmarks/bench_stats.py "${STATS_ARGS[@]}"
stage train "$LIMIT_LONG" "${SELF[@]}" --stage train_bench
stage ddp "$LIMIT_SHORT" "${SELF[@]}" --stage ddp_world_one
stage fidelity "$LIMIT_LONG" "${SELF[@]}" --stage fidelity

"$PY" - "$RESULTS" "$OUT" "$DRY" <<'PYEOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
rows = [json.loads(line) for line in open(sys.argv[1])]
out, dry = Path(sys.argv[2]), sys.argv[3] == "1"
print(f"# GPU session{' (dry run on the CPU: tiny sizes, no figure means anything)' if dry else ''}\n")
print("| stage | status | seconds |\n|---|---|---|")
seen = {}
for r in rows:
    seen.setdefault(r["stage"], r)
for name, r in seen.items():
    print(f"| {name} | {r['status']} | {r['seconds']} |")
env = next((r for r in rows if r["stage"] == "env" and "torch" in r), {})
print(f"\ndevice: {env.get('device_name', '?')}, torch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}\n")
stats = next((r for r in rows if r["stage"] == "stats" and "results" in r), None)
if stats:
    print("## Statistics (maps/s, full set at 256x256)\n\n| batch | maps/s | us/map |\n|---|---|---|")
    for p in stats["results"]:
        print(f"| {p['batch']} | {p['maps_per_s']:.0f} | {1e3 * p['ms_per_map']:.2f} |")
    print(f"\nbest {stats['best_maps_per_s']:.0f} maps/s ({stats['dtype']}); target 20,000: "
          f"{'met' if stats['best_maps_per_s'] >= 20000 else 'not met'}")
    for name, acc in (stats.get("accuracy_vs_cpu_float64") or {}).items():
        print(f"- {name} against CPU float64: C_ell max rel {acc['power_spectrum_max_rel']:.2e}, "
              f"V1 {acc['V1_max_diff_over_peak']:.2e} / V2 {acc['V2_max_diff_over_peak']:.2e} of peak, "
              f"pixels moved per map: V0 {acc['V0_moved_per_map']:.2f}, PDF {acc['pdf_moved_per_map']:.2f}, "
              f"peaks {acc['peaks_moved_per_map']:.2f}")
train = [r for r in rows if r["stage"] == "train" and "images_per_s" in r]
if train:
    print("\n## Training step (paper model)\n\n| batch | precision | compile | images/s | TFLOP/s | MFU |\n|---|---|---|---|---|---|")
    for r in train:
        print(f"| {r['batch']} | {r['precision']} | {r['compile']} | {r['images_per_s']:.0f} | "
              f"{r['achieved_tflops']:.1f} | {r.get('mfu', 0):.1%} |")
    best = max(r["images_per_s"] for r in train)
    print(f"\nbest {best:.0f} images/s; target 2,500: {'met' if best >= 2500 else 'not met'}")
for stage in ("ddp", "fidelity"):
    m = [r for r in rows if r["stage"] == stage and "images_per_s" in r]
    if m:
        print(f"\n{stage}: {m[-1]['images_per_s']:.0f} images/s in cosmogan train (metrics.jsonl, step {m[-1].get('step')})")
report = out / "report" / "summary.json"
if report.is_file():
    s = json.loads(report.read_text())
    v = s.get("verdicts", {})
    print(f"\n## Fidelity ({s['n_candidate']} generated against {s['n_reference']} test maps): "
          f"{'PASS' if v.get('pass') else 'FAIL'}\n\n| statistic | metric | value | threshold | KS p > 0.05 | verdict |\n|---|---|---|---|---|---|")
    for name, r in v.get("statistics", {}).items():
        value = "n/a" if r["value"] is None else f"{r['value']:.2%}"
        print(f"| {name} | {r['metric'].replace('|', chr(92) + '|')} | {value} | {r['threshold']:.0%} | {r['ks_frac_above']:.0%} | "
              f"{'PASS' if r['pass'] else 'FAIL'} |")
PYEOF

if (( ${#FAILED[@]} )); then
    printf 'gpu_session: %s\n' "${FAILED[@]}" >&2
    exit 1
fi
echo "gpu_session: every stage ran; $OUT/summary.md"
