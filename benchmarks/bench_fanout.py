"""Throughput of the `cosmogan stats` stage (maps/s), 1 rank against 2 ranks, side by side.

    python benchmarks/bench_fanout.py [--maps 4096] [--size 256] [--repeats 5]

Makes a lognormal dataset with make-data in a temporary directory, then runs
`cosmogan stats` (full set: 20 ell bins, 34 thresholds for MFs, peaks and PDF,
moments) alternately under `mpirun -n 1` and `mpirun -n 2` with one thread per rank,
`repeats` times each. Start-up
(interpreter, imports, MPI) is measured in each repeat with a 16-map dataset and
subtracted from that repeat's time for its steady-state rate; reported: median
wall times (process start included) and the median and range of maps/s.

In the same run, the kernels' own rate: pipeline.stats.all_statistics on one thread
over the same maps (read once into memory, the stage's chunks and bins), in as many
processes at once as the stage has ranks; ``stage_over_kernels_per_rank`` is the
stage's median maps/s per rank over it (what reading, the sigma pass, writing and
joining cost).
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
VARIANTS = {"": []}  # name suffix: extra stats arguments, for settings measured side by side


def run(cmd, env):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=4096)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--kernel-rate", nargs=2, metavar=("DATA", "TABLE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.kernel_rate:  # one kernel process (see below): print its maps/s
        print(kernel_rate(Path(args.kernel_rate[0]), Path(args.kernel_rate[1]), args.repeats))
        return
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
        walls = {(r, v): [] for r in (1, 2) for v in VARIANTS}
        rates = {(r, v): [] for r in (1, 2) for v in VARIANTS}
        for rep in range(args.repeats):
            for ranks in (1, 2):
                mpirun = [str(BIN / "mpirun"), "-n", str(ranks)] + py + ["stats", "--quiet"]
                startup = run(mpirun + [str(tmp / "small" / "train"), "--out", str(tmp / f"small-{ranks}-{rep}.h5")],
                              env)
                for variant, extra in VARIANTS.items():
                    out = tmp / f"big-{ranks}{variant}-{rep}.h5"
                    wall = run(mpirun + [str(tmp / "big" / "train"), "--out", str(out), *extra], env)
                    walls[(ranks, variant)].append(wall)
                    rates[(ranks, variant)].append(args.maps / (wall - startup))
                    if (ranks, variant, rep) != (1, "", 0):
                        out.unlink()  # the first table gives the kernels their bins
        result = {"maps": args.maps, "size": args.size, "repeats": args.repeats}
        for (ranks, variant), r in rates.items():
            result[f"ranks{ranks}{variant}_wall_s"] = round(statistics.median(walls[(ranks, variant)]), 2)
            result[f"ranks{ranks}{variant}_maps_per_s"] = round(statistics.median(r), 1)
            result[f"ranks{ranks}{variant}_maps_per_s_range"] = [round(min(r), 1), round(max(r), 1)]
        result["speedup_2_over_1"] = round(result["ranks2_maps_per_s"] / result["ranks1_maps_per_s"], 2)
        for ranks in (1, 2):
            # as many kernel processes at once as the stage had ranks: they share the
            # memory bandwidth as the ranks do
            cmd = [sys.executable, __file__, "--kernel-rate", str(tmp / "big" / "train"), str(tmp / "big-1-0.h5"),
                   "--repeats", str(args.repeats)]
            procs = [subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
                     for _ in range(ranks)]
            kernels = statistics.mean(float(p.communicate()[0]) for p in procs)
            result[f"ranks{ranks}_kernels_maps_per_s_per_process"] = round(kernels, 1)
            for variant in VARIANTS:
                result[f"ranks{ranks}{variant}_stage_over_kernels_per_rank"] = round(
                    result[f"ranks{ranks}{variant}_maps_per_s"] / ranks / kernels, 3)
        print(json.dumps(result))


def kernel_rate(data: Path, table: Path, repeats: int) -> float:
    """maps/s of all_statistics alone, one thread, on the dataset's maps and the table's bins."""
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO))
    from pipeline.config import StatsConfig
    from pipeline.data.loader import MapDataset
    from pipeline.stats import all_statistics
    from pipeline.stats.table import read_table

    torch.set_num_threads(1)
    ds = MapDataset(data)
    maps = ds.read(np.arange(ds.manifest.n_maps))[0]
    bins = read_table(table).header.bins
    chunk = StatsConfig().chunk_size
    side = ds.manifest.side_angle_deg

    def once():
        for start in range(0, len(maps), chunk):
            all_statistics(maps[start:start + chunk], side, np.asarray(bins.l_edges), np.asarray(bins.thresholds))

    once()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    return len(maps) / statistics.median(times)


if __name__ == "__main__":
    main()
