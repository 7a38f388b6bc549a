"""Throughput of the `cosmogan stats` stage (maps/s), 1 rank against 2 ranks, side by side.

    python benchmarks/bench_fanout.py [--maps 2048] [--size 256] [--repeats 3]

Makes a lognormal dataset with make-data in a temporary directory, then runs
`cosmogan stats` (full set: 20 ell bins, 34 thresholds for MFs, peaks and PDF,
moments) alternately under `mpirun -n 1` and `mpirun -n 2` with one thread per
rank, `repeats` times each. Reports median wall times (process start included)
and maps/s. Start-up (interpreter, torch import) is measured separately with a
16-map dataset and subtracted for the steady-state rate.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def run(cmd, env):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=2048)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    py = [sys.executable, "-m", "pipeline"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, n in (("big", args.maps), ("small", 16)):
            subprocess.run(py + ["make-data", "--config", str(REPO / "configs/quickstart.yaml"), "--out",
                                 str(tmp / name), "--quiet", "--set", f"physics.map_size={args.size}",
                                 "--set", "physics.side_angle_deg=3.5", "--set", f"data.n_train={n}",
                                 "--set", "data.n_validation=1", "--set", "data.n_test=1"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
        times = {(r, name): [] for r in (1, 2) for name in ("big", "small")}
        for rep in range(args.repeats):
            for ranks in (1, 2):
                for name in ("big", "small"):
                    out = tmp / f"{name}-{ranks}-{rep}.h5"
                    cmd = [str(BIN / "mpirun"), "-n", str(ranks)] + py + [
                        "stats", str(tmp / name / "train"), "--out", str(out), "--quiet"]
                    times[(ranks, name)].append(run(cmd, env))
        result = {"maps": args.maps, "size": args.size, "repeats": args.repeats}
        for ranks in (1, 2):
            big, small = (statistics.median(times[(ranks, n)]) for n in ("big", "small"))
            result[f"ranks{ranks}_wall_s"] = round(big, 2)
            result[f"ranks{ranks}_startup_s"] = round(small, 2)
            result[f"ranks{ranks}_maps_per_s"] = round(args.maps / (big - small), 1)
        result["speedup_2_over_1"] = round(result["ranks2_maps_per_s"] / result["ranks1_maps_per_s"], 2)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
