"""The auxiliary spectral loss: radial binning, zero at the target, the log-ratio it measures
in kappa (not in the transformed pixels), gradients reach G."""

import math

import numpy as np
import torch

from pipeline.data.transforms import PixelTransform
from pipeline.train.aux_losses import SpectralLoss

# a large shift keeps every kappa below above -shift (no clamping), so inverse(forward(k)) = k
WIDE = PixelTransform(shift=1.0, scale=1.0)


def lognormal_like(n, size, seed):
    g = np.random.default_rng(seed)
    return (np.exp(0.5 * g.standard_normal((n, size, size))) - np.exp(0.125)) * 0.02


def test_cosine_power_lands_in_its_bin_with_its_amplitude():
    """cos(2 pi 3 x / N): the rfft2 has one mode, (ky, kx) = (0, 3), of amplitude N^2 / 2, so
    the mean power of bin |k| = 3 is (N^2 / 2)^2 / (modes in the bin), and every other bin is 0."""
    N = 32
    x = np.arange(N)
    cosine = np.broadcast_to(np.cos(2 * np.pi * 3 * x / N), (N, N))[None].astype(np.float32)
    loss = SpectralLoss(N, [cosine], WIDE, torch.device("cpu"))
    power = loss.binned(torch.from_numpy(cosine))
    expected = torch.zeros(N // 2)
    expected[2] = (N * N / 2) ** 2 / loss.counts[2]
    torch.testing.assert_close(power, expected, rtol=1e-5, atol=1e-3)


def test_bins_cover_the_modes_from_the_fundamental_to_nyquist():
    loss = SpectralLoss(16, [lognormal_like(2, 16, 0)], WIDE, torch.device("cpu"))
    assert loss.n_bins == 8 and loss.counts.min() > 0
    assert int(loss.counts.sum()) == int(loss.keep.sum())


def test_zero_at_the_target_and_the_squared_log_ratio_elsewhere():
    maps = lognormal_like(16, 32, 1)
    loss = SpectralLoss(32, [maps[:10], maps[10:]], WIDE, torch.device("cpu"))  # chunks pool exactly
    y = WIDE.forward(torch.from_numpy(maps).float())[:, None]
    assert loss(y).item() < 1e-10
    # twice the kappa amplitude: every bin's power x4, each log differs by log 4
    y2 = WIDE.forward(2 * torch.from_numpy(maps).float())[:, None]
    assert abs(loss(y2).item() - math.log(4.0) ** 2) < 1e-4


def test_it_measures_kappa_not_the_transformed_maps():
    """The transform compresses the positive tail: with a scale near the pixel spread the
    transformed maps' spectrum is far from the kappa spectrum. Matching kappa is zero loss;
    feeding kappa as if it were transformed is not."""
    maps = lognormal_like(16, 32, 2)
    tight = PixelTransform(shift=0.05, scale=0.02)
    loss = SpectralLoss(32, [maps], tight, torch.device("cpu"))
    kappa = torch.from_numpy(maps).float()
    assert loss(tight.forward(kappa)[:, None]).item() < 1e-8
    assert loss(kappa[:, None]).item() > 0.1


def test_gradient_flows_to_the_generated_maps():
    loss = SpectralLoss(16, [lognormal_like(4, 16, 3)], WIDE, torch.device("cpu"))
    fake = (0.1 * torch.randn(4, 1, 16, 16)).requires_grad_()
    loss(fake).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_training_with_the_spectral_term_logs_it(tiny_data, tmp_path):
    import json

    from conftest import CONFIGS, run_main

    run_main("train", "--config", CONFIGS / "tiny.yaml", "--data", tiny_data, "--run", tmp_path / "run",
             "--quiet", "--set", "train.steps=4", "--set", "train.spectral_weight=0.1", check=True)
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert line["loss_aux"] > 0
