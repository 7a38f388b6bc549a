"""The per-map distribution term alone (pipeline/train/distribution_loss.py): milliseconds
per forward and backward pass on a batch of quickstart-like 64x64 maps.

    python benchmarks/bench_distribution_term.py [--batch 64] [--bank 2048] [--threads 1] [--repeats 10]
    python benchmarks/compare_commits.py --base REV --key ms_per_call -- benchmarks/bench_distribution_term.py

The bank and the batch are lognormal maps of the physical model's kind (pipeline.physics
is not needed: the term's cost depends on the shapes only); spread and correlation parts
on. Prints one JSON line: ms_per_call, the median of --repeats calls after 2 warm-up calls.
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch

from pipeline.data.transforms import PixelTransform
from pipeline.train.distribution_loss import PerMapDistributionLoss


def lognormal_maps(n, size, seed):
    rng = np.random.default_rng(seed)
    g = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n, size, size))) / (1 + np.fft.rfftfreq(size) * 20),
                      s=(size, size))
    g /= g.std()
    return (0.014 * (np.exp(0.7 * g) - np.exp(0.245))).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--bank", type=int, default=2048)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transform = PixelTransform(shift=1.0, scale=1.0)
    loss = PerMapDistributionLoss(args.size, [lognormal_maps(args.bank, args.size, 0)], transform,
                                  torch.device("cpu"), spread_weight=5.0, correlation_weight=1.0)
    fake = transform.forward(torch.as_tensor(lognormal_maps(args.batch, args.size, 1)))[:, None]
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
