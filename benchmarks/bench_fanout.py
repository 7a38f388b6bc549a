"""Throughput of the `cosmogan stats` stage (maps/s) against its kernels', 1 rank and 2 ranks.

    python benchmarks/bench_fanout.py [--maps 4096] [--size 256] [--repeats 5]

Makes a lognormal dataset with make-data in a temporary directory. Each repeat runs,
in turn, for 1 and then 2 ranks (one thread each):
- `cosmogan stats` under `mpirun -n RANKS` (full set: 20 ell bins, 34 thresholds for
  MFs, peaks and PDF, moments), and the same on a 16-map dataset for the start-up
  (interpreter, imports, MPI), subtracted for the stage's steady-state rate;
- the kernels alone: pipeline.stats.all_statistics over the same maps (read once into
  memory, the stage's chunks and bins) in RANKS processes at once, so that they share
  the memory bandwidth and the machine's state of the moment as the ranks did.
``stage_over_kernels_per_rank`` is the stage's maps/s per rank over the kernels' maps/s
per process of the same repeat (what reading, the sigma pass, writing and joining
cost); reported as the median and range over repeats, with the median maps/s and wall
times (process start included). Pairing within a repeat matters on a shared machine,
whose speed drifts by 10% and more from minute to minute.
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
    ap.add_argument("--maps", type=int, default=4096)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--kernel-rate", nargs=2, metavar=("DATA", "TABLE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.kernel_rate:  # one kernel process (see below): print its maps/s
        print(kernel_rate(Path(args.kernel_rate[0]), Path(args.kernel_rate[1])))
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
        table = tmp / "bins.h5"  # the kernels' bins: the stage's own
        subprocess.run(py + ["stats", str(tmp / "big" / "train"), "--out", str(table), "--quiet"], check=True,
                       env=env, cwd=REPO, stdout=subprocess.DEVNULL)
        kernel_cmd = [sys.executable, __file__, "--kernel-rate", str(tmp / "big" / "train"), str(table)]
        rows = {r: {"wall": [], "stage": [], "kernels": [], "ratio": []} for r in (1, 2)}
        for rep in range(args.repeats):
            for ranks in (1, 2):
                mpirun = [str(BIN / "mpirun"), "-n", str(ranks)] + py + ["stats", "--quiet"]
                startup = run(mpirun + [str(tmp / "small" / "train"), "--out", str(tmp / f"small-{ranks}-{rep}.h5")],
                              env)
                out = tmp / f"big-{ranks}-{rep}.h5"
                wall = run(mpirun + [str(tmp / "big" / "train"), "--out", str(out)], env)
                out.unlink()
                procs = [subprocess.Popen(kernel_cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
                         for _ in range(ranks)]
                kernels = statistics.mean(float(p.communicate()[0]) for p in procs)
                stage = args.maps / (wall - startup)
                row = rows[ranks]
                row["wall"].append(wall)
                row["stage"].append(stage)
                row["kernels"].append(kernels)
                row["ratio"].append(stage / ranks / kernels)
        result = {"maps": args.maps, "size": args.size, "repeats": args.repeats}
        for ranks, row in rows.items():
            result[f"ranks{ranks}_wall_s"] = round(statistics.median(row["wall"]), 2)
            result[f"ranks{ranks}_maps_per_s"] = round(statistics.median(row["stage"]), 1)
            result[f"ranks{ranks}_kernels_maps_per_s_per_process"] = round(statistics.median(row["kernels"]), 1)
            result[f"ranks{ranks}_stage_over_kernels_per_rank"] = round(statistics.median(row["ratio"]), 3)
            result[f"ranks{ranks}_stage_over_kernels_per_rank_range"] = [round(min(row["ratio"]), 3),
                                                                        round(max(row["ratio"]), 3)]
        result["speedup_2_over_1"] = round(result["ranks2_maps_per_s"] / result["ranks1_maps_per_s"], 2)
        print(json.dumps(result))


def kernel_rate(data: Path, table: Path) -> float:
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

    def stats(part):
        all_statistics(part, side, np.asarray(bins.l_edges), np.asarray(bins.thresholds))

    stats(maps[:chunk])  # warm: numba's cached loops loaded, torch's FFT plans made
    t = time.perf_counter()
    for start in range(0, len(maps), chunk):
        stats(maps[start:start + chunk])
    return len(maps) / (time.perf_counter() - t)


if __name__ == "__main__":
    main()
