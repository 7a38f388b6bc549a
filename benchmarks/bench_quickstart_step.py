"""The quickstart's training step as `cosmogan train` runs it (its auxiliary terms included):
images/s of one short run on a small dataset of the config's geometry.

    python benchmarks/bench_quickstart_step.py [--config configs/quickstart.yaml] [--steps 100] [--set KEY=VALUE ...]
    python benchmarks/compare_commits.py --base REV --rounds 5 -- benchmarks/bench_quickstart_step.py

Paths are relative to the working directory, so under compare_commits each side trains
with its own tree's config and package. Prints one JSON line: images_per_s (the median of
the logging windows, the first, which holds start-up, dropped) and steps_per_s.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_rate import make_small_data, train_images_per_s  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--set", action="append", default=[], help="config overrides")
    args = ap.parse_args()
    overrides = [x for kv in args.set for x in ("--set", kv)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_small_data(args.config, data, 2048, 256, overrides)
        rate = train_images_per_s([], args.config, data, Path(tmp) / "run", args.steps, 10, overrides)
    sys.path.insert(0, ".")
    from pipeline.config import load_config
    batch = load_config(args.config, args.set).loader.batch_size
    print(json.dumps({"config": args.config, "steps": args.steps, "images_per_s": round(rate, 1),
                      "steps_per_s": round(rate / batch, 2)}))


if __name__ == "__main__":
    main()
