"""Per-map pixel moments and V0 of an emulator against the physical model's maps.

    python benchmarks/per_map_moments.py RUN DATA/test [--floor DATA/validation] [--n 2048]
        [--checkpoint best|last|PATH] [--train-mode]

For each map: its pixel mean, standard deviation, skewness and V0 (the area fraction
above a threshold) at thresholds of -1, 0, 1, 2 reference sigma (kappa). Prints, per
figure, the reference's mean and per-map standard deviation, then for the emulator (and
the floor sample, when given) the bias of the mean in units of the reference's per-map
sigma and the ratio of per-map sigmas: the quantities the validation report judges per
bin, here on the moments that set the Minkowski curves. Then the correlations over maps
of pairs of figures (CORRELATED_PAIRS): the joint distribution, which sets how V0 near
the mode scatters (a lognormal map's mean follows its realised variance). --train-mode also samples with
G's BatchNorm on batch statistics (as during training, batches of 64) to separate what
training saw from what eval mode (running statistics) gives.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from pipeline.data.loader import MapDataset
from pipeline.emulator import Emulator, latent

THRESHOLDS_SIGMA = (-2.0, -1.0, 0.0, 1.0, 2.0)
CORRELATED_PAIRS = (("mean", "sigma"), ("mean", "skewness"), ("sigma", "skewness"),
                    ("mean", "V0(-1)"), ("sigma", "V0(-1)"), ("mean", "V0(+0)"))


def per_map_figures(maps: np.ndarray, sigma_ref: float, mean_ref: float) -> dict[str, np.ndarray]:
    """Each map's mean, sigma, skewness and V0 at THRESHOLDS_SIGMA (n,) per figure."""
    x = maps.reshape(len(maps), -1).astype(np.float64)
    mu = x.mean(1)
    sd = x.std(1)
    skew = ((x - mu[:, None]) ** 3).mean(1) / sd ** 3
    out = {"mean": mu, "sigma": sd, "skewness": skew}
    for t in THRESHOLDS_SIGMA:
        out[f"V0({t:+g})"] = (x > mean_ref + t * sigma_ref).mean(1)
    return out


def read_maps(path: str, n: int) -> np.ndarray:
    data = MapDataset(path)
    try:
        return data.read(np.arange(min(n, len(data))))[0]
    finally:
        data.close()


def sample_train_mode(emu: Emulator, n: int, batch: int = 64) -> np.ndarray:
    """n maps with G's BatchNorm on each batch's statistics (training's mode), no update kept."""
    gen = emu.generator
    state = {k: v.clone() for k, v in gen.state_dict().items()}
    z = torch.stack([latent(0, i, emu.z_dim) for i in range(n)])
    out = []
    gen.train()
    try:
        with torch.no_grad():
            for s in range(0, n, batch):
                y = gen(z[s:s + batch], torch.zeros(len(z[s:s + batch]), 0)).float()
                out.append(emu.transform.inverse(y)[:, 0].numpy())
    finally:
        gen.load_state_dict(state)
        gen.eval()
    return np.concatenate(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("reference")
    ap.add_argument("--floor", help="a second sample of the physical model (the noise floor)")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--train-mode", action="store_true")
    args = ap.parse_args()
    ref = read_maps(args.reference, args.n)
    sigma_ref, mean_ref = float(ref.std()), float(ref.mean())
    emu = Emulator.load(args.run, args.checkpoint)
    samples = {f"emulator (step {emu.step}, eval)": emu.sample(args.n, seed=0)}
    if args.train_mode:
        samples["emulator (train-mode BN)"] = sample_train_mode(emu, args.n)
    if args.floor:
        samples["floor"] = read_maps(args.floor, args.n)
    r = per_map_figures(ref, sigma_ref, mean_ref)
    figures = {name: per_map_figures(m, sigma_ref, mean_ref) for name, m in samples.items()}
    print(f"reference {args.reference}: {len(ref)} maps, pixel sigma {sigma_ref:.4g}")
    print(f"{'figure':12s} {'ref mean':>11s} {'ref sd':>10s}  " + "  ".join(f"{k[:24]:>26s}" for k in samples))
    print(f"{'':12s} {'':>11s} {'':>10s}  " + "  ".join(f"{'bias/sd   sd ratio':>26s}" for _ in samples))
    for key, ra in r.items():
        cells = []
        for f in figures.values():
            b = (f[key].mean() - ra.mean()) / ra.std(ddof=1)
            cells.append(f"{b:+10.3f} {f[key].std(ddof=1) / ra.std(ddof=1):10.3f}      ")
        print(f"{key:12s} {ra.mean():11.4g} {ra.std(ddof=1):10.4g}  " + "  ".join(cells))
    print(f"\n{'correlation':24s} {'ref':>7s}  " + "  ".join(f"{k[:24]:>26s}" for k in samples))
    for a, b in CORRELATED_PAIRS:
        cells = [f"{np.corrcoef(f[a], f[b])[0, 1]:26.3f}" for f in figures.values()]
        print(f"{a + ', ' + b:24s} {np.corrcoef(r[a], r[b])[0, 1]:7.3f}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
