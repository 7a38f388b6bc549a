"""Weak scaling of training on CPU, 1 rank against 2, for each backend, side by side.

    python benchmarks/bench_scaling.py [--size 64] [--batch 16] [--steps 24] [--repeats 2]

For each backend (ddp; horovod when installed) and rank count (1, 2), runs
`mpirun -n R cosmogan train` on a small quickstart-geometry dataset with a fixed
per-rank batch and one thread per rank, and reads images/s from metrics.jsonl
(the first logging window, which holds start-up, is dropped). Weak-scaling
efficiency = (images/s per rank on 2 ranks) / (images/s on 1 rank). Then
benchmarks/allreduce_time.py gives the time one step's gradient allreduce takes.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from train_rate import make_small_data, train_images_per_s

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    backends = ["ddp"] + (["horovod"] if importlib.util.find_spec("horovod") else [])
    config = str(REPO / "configs/quickstart.yaml")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_small_data(config, data, 1024, 64, ["--set", f"physics.map_size={args.size}"], env)
        for rep in range(args.repeats):
            for backend in backends:
                for ranks in (1, 2):
                    rate = train_images_per_s(
                        [str(BIN / "mpirun"), "-n", str(ranks)], config, data, Path(tmp) / f"{backend}-{ranks}-{rep}",
                        args.steps, 4, ["--set", f"train.backend={backend}", "--set", f"loader.batch_size={args.batch}"],
                        env)
                    results.setdefault((backend, ranks), []).append(rate)
        out = {"size": args.size, "per_rank_batch": args.batch, "steps": args.steps}
        for backend in backends:
            one = statistics.median(results[(backend, 1)])
            two = statistics.median(results[(backend, 2)])
            allreduce = subprocess.run([str(BIN / "mpirun"), "-n", "2", sys.executable,
                                        str(REPO / "benchmarks/allreduce_time.py"), backend, "--size", str(args.size)],
                                       check=True, env=env, capture_output=True, text=True)
            ar = json.loads(allreduce.stdout.strip().splitlines()[-1])
            out[backend] = {"images_per_s_1_rank": round(one, 1), "images_per_s_2_ranks": round(two, 1),
                            "per_rank_2_ranks": round(two / 2, 1), "weak_scaling_efficiency": round(two / 2 / one, 3),
                            "step_ms_2_ranks": round(1e3 * 2 * args.batch / two, 1),
                            "allreduce_ms_per_step": ar["median_ms"], "allreduce_megabytes": ar["megabytes"]}
        print(json.dumps(out))


if __name__ == "__main__":
    main()
