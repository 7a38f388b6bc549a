"""The per-map distribution term alone (pipeline/train/distribution_loss.py): milliseconds
per forward and backward pass on a batch of quickstart-like 64x64 maps.

    python benchmarks/bench_distribution_term.py [--batch 64] [--bank 2048] [--threads 1] [--repeats 10]
    python benchmarks/compare_commits.py --base REV --key ms_per_call -- benchmarks/bench_distribution_term.py

The bank and the batch are maps of the physical model (pipeline.physics.fields.MapModel)
at configs/quickstart.yaml's cosmology, with the pixel transform fitted to the bank as
training fits it; spread and correlation parts on. Prints one JSON line: ms_per_call,
the median of --repeats calls after 2 warm-up calls.
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch

from pipeline.config import load_config
from pipeline.data.transforms import PixelTransform
from pipeline.physics.fields import MapModel
from pipeline.train.distribution_loss import PerMapDistributionLoss

CONFIG = "configs/quickstart.yaml"


def model_maps(model: MapModel, point: tuple[float, ...], n: int, stream: int) -> np.ndarray:
    """n maps (n, N, N) float32 at ``point``, random stream ``stream``."""
    return np.stack([model.synthesize(point, (2017, stream, i)) for i in range(n)]).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--bank", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(CONFIG)
    model = MapModel(cfg.physics, cfg.cosmology)
    point = cfg.cosmology.design.points_list()[0]  # the quickstart's one cosmology
    bank = model_maps(model, point, args.bank, 0)
    transform = PixelTransform.fit(bank, cfg.transform)
    loss = PerMapDistributionLoss(model.map_size, [bank], transform, torch.device("cpu"),
                                  spread_weight=5.0, correlation_weight=1.0)
    fake = transform.forward(torch.as_tensor(model_maps(model, point, args.batch, 1)))[:, None]
    times = []
    for i in range(args.repeats + 2):
        x = fake.clone().requires_grad_()
        start = time.perf_counter()
        loss(x).backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    print(json.dumps({"batch": args.batch, "bank": args.bank, "threads": args.threads,
                      "ms_per_call": round(1e3 * statistics.median(times), 1)}))


if __name__ == "__main__":
    main()
