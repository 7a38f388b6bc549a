"""Where a conditional emulator's large-scale power goes: per ring of |k|, generated over test.

    python benchmarks/conditional_rings.py RUN DATA/test [--checkpoint best] [--n 768]
        [--points "0.2,0.6;0.25,0.7"] [--train-split DATA/train --batches 300]

For each cosmology (default: six training cosmologies of configs/conditional.yaml), the
mean power of the maps' Fourier modes in rings 0 (the map mean), 1 (the fundamental,
the first ell bin) and 2 of |k|, N generated maps (Emulator.sample, eval mode, seed 5)
over the test maps at that cosmology, and the standard deviation of the map means,
generated over test. With --train-split, the same rings from G in train mode
(BatchNorm on batch statistics), --batches batches of 64 whose cosmologies are drawn
uniformly from that split's cosmologies as training draws them: a check that eval mode
is not what makes the difference (the points must be among them).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

RINGS = (0, 1, 2)
DEFAULT_POINTS = "0.2,0.6;0.2,0.8;0.25,0.7;0.3,0.8;0.4,0.6;0.4,1.0;0.2,1.0"


def ring_power(maps: np.ndarray) -> np.ndarray:
    """Mean power (over maps and modes) in each ring of RINGS, maps (n, N, N)."""
    n = maps.shape[-1]
    ky, kx = np.fft.fftfreq(n, 1 / n), np.fft.rfftfreq(n, 1 / n)
    ring = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(int)
    power = np.abs(np.fft.rfft2(maps)) ** 2
    return np.array([power[:, ring == r].mean() for r in RINGS])


def train_mode_maps(emulator, points: np.ndarray, batches: int) -> dict[int, np.ndarray]:
    """Maps from G in train mode, batches of 64 at uniform draws of points; by point index.
    On a copy of G: a forward pass in train mode moves BatchNorm's running statistics,
    which eval mode (the emulator's) uses."""
    import copy

    from pipeline.emulator import latent

    rng = np.random.default_rng(0)
    gen = copy.deepcopy(emulator.generator).train()
    out = {c: [] for c in range(len(points))}
    with torch.no_grad():
        for b in range(batches):
            c = rng.integers(0, len(points), 64)
            z = torch.stack([latent(9, b * 64 + i, emulator.z_dim) for i in range(64)])
            cond = emulator.support.normalise(torch.as_tensor(points[c], dtype=torch.float32))
            kappa = emulator.transform.inverse(gen(z, cond).float(), cond)[:, 0].numpy()
            for i, ci in enumerate(c):
                out[int(ci)].append(kappa[i])
    return {c: np.array(v) for c, v in out.items() if v}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("reference")
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--n", type=int, default=768)
    ap.add_argument("--points", default=DEFAULT_POINTS, help="cosmologies 'Omega_m,sigma_8;...'")
    ap.add_argument("--train-split", help="the run's training split: adds the train-mode rings")
    ap.add_argument("--batches", type=int, default=300)
    args = ap.parse_args()

    from pipeline.data.loader import MapDataset
    from pipeline.emulator import Emulator
    from pipeline.models.conditioning import distinct_rows, rows_at

    emulator = Emulator.load(args.run, args.checkpoint)
    test = MapDataset(args.reference)
    params = test.all_params()
    points = np.array([[float(v) for v in p.split(",")] for p in args.points.split(";")])
    training, train_maps = None, {}
    if args.train_split:
        training = distinct_rows(MapDataset(args.train_split).all_params())[0].astype(np.float64)
        train_maps = train_mode_maps(emulator, training, args.batches)
    print(f"{args.run} ({args.checkpoint}, step {emulator.step}): power generated / test in rings {RINGS}; "
          "sd of map means generated / test" + ("; train mode, the same rings" if train_maps else ""))
    extra = " train mode: rings 0 / 1 / 2 |" if train_maps else ""
    print("| cosmology | ring 0 (map mean) | ring 1 | ring 2 | sd of map means |" + extra)
    print("|---|---|---|---|---|" + ("---|" if train_maps else ""))
    for p in points:
        real = test.read(rows_at(params, p))[0]
        if not len(real):
            raise SystemExit(f"{args.reference}: no map at ({p[0]:g}, {p[1]:g})")
        gen = emulator.sample(args.n, np.tile(p, (args.n, 1)), seed=5)
        ratio = ring_power(gen) / ring_power(real)
        sd = gen.mean(axis=(1, 2)).std() / real.mean(axis=(1, 2)).std()
        line = f"| ({p[0]:g}, {p[1]:g}) | " + " | ".join(f"{r:.2f}" for r in ratio) + f" | {sd:.2f} |"
        if train_maps:
            hit = rows_at(training, p)
            if not len(hit):
                raise SystemExit(f"{args.train_split}: ({p[0]:g}, {p[1]:g}) is not a training cosmology")
            tr = ring_power(train_maps[int(hit[0])]) / ring_power(real)
            line += " " + " / ".join(f"{r:.2f}" for r in tr) + " |"
        print(line)


if __name__ == "__main__":
    main()
