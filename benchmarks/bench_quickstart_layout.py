"""The quickstart's training on one 2-core node: one process with 2 threads against 2 DDP
ranks with 1 thread each, at the same global batch, side by side.

    python benchmarks/bench_quickstart_layout.py [--config configs/quickstart.yaml] [--steps 120] [--rounds 3] \
        [--backend ddp|horovod] [--set KEY=VALUE ...]

Each round runs `cosmogan train` with the config (its auxiliary terms included) for
--steps steps on a small dataset of the config's geometry, once per layout, alternately:
  single: 1 process, OMP_NUM_THREADS=2, loader.batch_size = B (the config's);
  ddp2:   `mpirun -n 2`, OMP_NUM_THREADS=1 per rank, loader.batch_size = B / 2, train.backend
          --backend (ddp by default).
and reads the global images/s from metrics.jsonl (the first window, which holds
start-up, dropped). Prints the median and range over the rounds, per layout, and the
ratio of the medians; steps/s = images/s / B.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from train_rate import make_small_data, train_images_per_s

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs/quickstart.yaml"))
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", choices=("ddp", "horovod"), default="ddp", help="the 2-rank layout's backend")
    ap.add_argument("--set", action="append", default=[], help="config overrides for both layouts")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from pipeline.config import load_config
    batch = load_config(args.config, args.set).loader.batch_size
    if batch % 2:
        sys.exit(f"{args.config}: loader.batch_size={batch} is odd; two ranks cannot split it")
    overrides = [x for kv in args.set for x in ("--set", kv)]
    layouts = {"single": ([], "2", batch, []),
               "ddp2": ([str(BIN / "mpirun"), "-n", "2"], "1", batch // 2, ["--set", f"train.backend={args.backend}"])}
    rates: dict[str, list[float]] = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_small_data(args.config, data, 2048, 256, overrides)
        for rnd in range(args.rounds):
            for name, (launcher, threads, per_rank, backend) in layouts.items():
                rates[name].append(train_images_per_s(
                    launcher, args.config, data, Path(tmp) / f"{name}-{rnd}", args.steps, 10,
                    overrides + backend + ["--set", f"loader.batch_size={per_rank}"],
                    env=dict(os.environ, OMP_NUM_THREADS=threads)))
                print(f"round {rnd} {name}: {rates[name][-1]:.1f} images/s", file=sys.stderr)
    out = {"config": args.config, "backend": args.backend, "global_batch": batch, "steps": args.steps, "rounds": args.rounds}
    for name, r in rates.items():
        out[name] = {"images_per_s_median": round(statistics.median(r), 1), "range": [round(min(r), 1), round(max(r), 1)],
                     "steps_per_s_median": round(statistics.median(r) / batch, 2)}
    out["ratio_ddp2_over_single"] = round(out["ddp2"]["images_per_s_median"] / out["single"]["images_per_s_median"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
