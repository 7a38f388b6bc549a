"""Wall time of `cosmogan sweep` over 8 checkpoints: 1 rank against 2 ranks, side by side.

    python benchmarks/bench_sweep.py [--maps 1024] [--repeats 3]

Makes a quickstart-geometry dataset (64x64 lognormal maps, 3.5 deg; a small training
split) and trains a quickstart-width run for 16 steps with a checkpoint every 2, in a
temporary directory; then sweeps its 8 checkpoints against the test split (``--maps``
generated maps per item, as many reference maps), alternately on 1 rank, on 2 ranks in 2
groups (one checkpoint per rank at a time) and on 2 ranks in 1 group (both ranks on every
checkpoint; generate.shard_size and stats.chunk_size are --maps/8 so that it can split
them), one thread per rank, ``repeats`` times each, each into a fresh directory (the
reference's statistics included). Reports median and range of the wall times (process
start included) and the ratios, and checks that the three give the same table.
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
PY = [sys.executable, "-m", "pipeline"]


def timed(cmd, env) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=1024, help="generated maps per item (and reference maps)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        data, run = tmp / "data", tmp / "run"
        cfg = REPO / "configs" / "quickstart.yaml"
        subprocess.run([*PY, "make-data", "--config", cfg, "--out", data, "--quiet", "--set", "data.n_train=512",
                        "--set", "data.n_validation=64", "--set", f"data.n_test={args.maps}"],
                       check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
        subprocess.run([*PY, "train", "--config", cfg, "--data", data, "--run", run, "--quiet",
                        "--set", "train.steps=16", "--set", "train.checkpoint_every=2",
                        "--set", "train.keep_checkpoints=8", "--set", "train.fidelity_every=8",
                        "--set", "train.fidelity_maps=64", "--set", "train.sample_every=16",
                        "--set", "train.device=cpu"], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
        n_ckpt = len(list((run / "checkpoints").glob("step-*.pt")))
        # shards of maps/8, so that a group of 2 ranks can split each item's generation too
        # (the default generate.shard_size, 1024, would leave one of them idle)
        sweep = [*PY, "sweep", "--runs", run, "--reference", data / "test", "--n", args.maps, "--quiet",
                 "--set", f"generate.shard_size={max(1, args.maps // 8)}",
                 "--set", f"stats.chunk_size={max(1, args.maps // 8)}"]
        modes = {"1 rank": ([], 1), "2 ranks, 2 groups": ([str(BIN / "mpirun"), "-n", "2"], 2),
                 "2 ranks, 1 group": ([str(BIN / "mpirun"), "-n", "2"], 1)}
        times = {m: [] for m in modes}
        tables = {}
        for rep in range(args.repeats):
            for m, (launcher, groups) in modes.items():
                out = tmp / f"sweep-{rep}-{m.replace(' ', '').replace(',', '-')}"
                times[m].append(timed([*launcher, *map(str, sweep), "--out", str(out), "--groups", str(groups)], env))
                tables[m] = (out / "sweep.csv").read_text()
        same = len(set(tables.values())) == 1
    med = {m: statistics.median(t) for m, t in times.items()}
    result = {"checkpoints": n_ckpt, "maps_per_item": args.maps, "repeats": args.repeats,
              "seconds": {m: {"median": round(med[m], 2), "min": round(min(t), 2), "max": round(max(t), 2)}
                          for m, t in times.items()},
              "speedup_2_groups": round(med["1 rank"] / med["2 ranks, 2 groups"], 3),
              "speedup_1_group_of_2": round(med["1 rank"] / med["2 ranks, 1 group"], 3),
              "same_table": same}
    print(json.dumps(result, indent=1))
    if not same:
        sys.exit("the three sweeps gave different tables")


if __name__ == "__main__":
    main()
