"""The auxiliary spectral loss: modes and shells, zero at the target, the log-ratio it
measures per mode and in kappa (not in the transformed pixels), gradients reach G."""


import numpy as np
import pytest
import torch

from pipeline.data.transforms import PixelTransform
from pipeline.train.aux_losses import SpectralLoss

# a large shift keeps every kappa below above -shift (no clamping), so inverse(forward(k)) = k
WIDE = PixelTransform(shift=1.0, scale=1.0)


def lognormal_like(n, size, seed):
    g = np.random.default_rng(seed)
    return (np.exp(0.5 * g.standard_normal((n, size, size))) - np.exp(0.125)) * 0.02


def test_cosine_power_lands_in_its_mode_and_shell():
    """cos(2 pi 3 x / N): the rfft2 has one mode, (ky, kx) = (0, 3), of amplitude N^2 / 2. Its
    shell |k|^2 = 9 holds three modes of the half plane, (0, 3), (3, 0) and (-3, 0)."""
    N = 32
    x = np.arange(N)
    cosine = np.broadcast_to(np.cos(2 * np.pi * 3 * x / N), (N, N))[None].astype(np.float32)
    loss = SpectralLoss(N, [cosine], WIDE, torch.device("cpu"))
    nine = int((loss.k2 == 9).nonzero()[0])
    assert int(loss.counts[loss.shell[nine]]) == 3
    power = loss.mode_power(torch.from_numpy(cosine))
    assert power[nine].item() == pytest.approx((N * N / 2) ** 2, rel=1e-5)
    assert float(power.sum() - power[nine]) < 1e-3 * power[nine].item()
    shells = loss.shell_power(torch.from_numpy(cosine))
    assert shells[loss.shell[nine]].item() == pytest.approx((N * N / 2) ** 2 / 3, rel=1e-5)


def test_shells_cover_the_modes_from_the_mean_to_half_the_grid():
    loss = SpectralLoss(16, [lognormal_like(2, 16, 0)], WIDE, torch.device("cpu"))
    assert int(loss.k2.min()) == 0 and int(loss.k2.max()) == 64  # |k| from 0 (the mean) to N/2 = 8
    assert int(loss.counts.sum()) == int(loss.keep.sum()) and loss.counts.min() > 0
    torch.testing.assert_close(loss.weights.sum(), torch.tensor(1.0))  # a weighted mean
    # rings of |k| = 0..8 weigh 1/9 each: ring 1 holds the shells |k|^2 = 1 and 2
    ring1 = (loss.k2 == 1) | (loss.k2 == 2)
    torch.testing.assert_close(loss.weights[ring1].sum(), torch.tensor(1 / 9))


def reference_loss(fake_kappa, target_kappa):
    """The loss written out in numpy, float64, over the FFT half plane kx >= 0."""
    N = target_kappa.shape[-1]
    k = np.fft.fftfreq(N, 1 / N)
    k2 = np.rint(k[:, None] ** 2 + np.fft.rfftfreq(N, 1 / N)[None, :] ** 2).astype(int)
    used = k2 <= (N // 2) ** 2
    fake = (np.abs(np.fft.rfft2(fake_kappa)) ** 2).mean(0)[used]
    target = (np.abs(np.fft.rfft2(target_kappa)) ** 2).mean(0)[used]
    shells = k2[used]
    target_shells = {s: target[shells == s].mean() for s in np.unique(shells)}
    floor = 1e-3 * np.median(list(target_shells.values()))
    per_shell = {s: np.mean((np.log(fake[shells == s] + floor) - np.log(t + floor)) ** 2)
                 for s, t in target_shells.items()}
    rings = {}
    for s, value in per_shell.items():
        rings.setdefault(int(np.rint(np.sqrt(s))), []).append(value)
    return float(np.mean([np.mean(v) for v in rings.values()]))


def test_matches_the_loss_written_out_in_numpy():
    """Against the target maps themselves (the within-shell scatter of 16 maps), twice their
    amplitude, the same maps with the single mode (0, 4) doubled in power (a stripe pattern
    that a radial average would dilute over its shell), the same maps with random means
    (shell 0), and an independent sample."""
    N = 32
    target = lognormal_like(16, N, 4)
    f = np.fft.rfft2(target)
    f[:, 0, 4] *= np.sqrt(2.0)
    striped = np.fft.irfft2(f, s=(N, N))
    loss = SpectralLoss(N, [target[:10], target[10:]], WIDE, torch.device("cpu"))  # chunks pool exactly
    values = {}
    offsets = 0.01 * np.random.default_rng(6).standard_normal((16, 1, 1))
    for name, fake in (("same", target), ("double", 2 * target), ("striped", striped),
                       ("offset", target + offsets), ("other", lognormal_like(16, N, 5))):
        values[name] = loss(WIDE.forward(torch.from_numpy(fake).float())[:, None]).item()
        assert values[name] == pytest.approx(reference_loss(fake, target), rel=2e-3, abs=1e-6), name
    assert values["striped"] > values["same"] and values["double"] > values["same"] + 1.0
    assert values["offset"] > values["same"] + 0.01


def test_it_measures_kappa_not_the_transformed_maps():
    """The transform compresses the positive tail: with a scale near the pixel spread the
    transformed maps' spectrum is far from the kappa spectrum. The loss of the target maps
    is only their within-shell scatter; feeding kappa as if it were transformed is far worse."""
    maps = lognormal_like(16, 32, 2)
    tight = PixelTransform(shift=0.05, scale=0.02)
    loss = SpectralLoss(32, [maps], tight, torch.device("cpu"))
    kappa = torch.from_numpy(maps).float()
    matched = loss(tight.forward(kappa)[:, None]).item()
    assert matched == pytest.approx(reference_loss(maps, maps), rel=2e-3)
    assert loss(kappa[:, None]).item() > 10 * matched


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


def test_maps_of_mean_exactly_zero_give_a_finite_target():
    """Mean-subtracted training maps leave shell 0 empty; the floor keeps the loss finite and
    still charges a generated mean."""
    maps = lognormal_like(8, 16, 7)
    maps -= maps.mean(axis=(1, 2), keepdims=True)
    loss = SpectralLoss(16, [maps], WIDE, torch.device("cpu"))
    assert torch.isfinite(loss.log_target).all()
    y = WIDE.forward(torch.from_numpy(maps).float())[:, None]
    shifted = WIDE.forward(torch.from_numpy(maps + 0.01).float())[:, None]
    assert np.isfinite(loss(y).item()) and loss(shifted).item() > loss(y).item()


def test_anisotropy_term_is_each_modes_departure_from_its_ring_written_out_in_numpy():
    """L_aniso against numpy, float64; near 0 (the batch's noise) for isotropic maps, and a
    planted cosine on the (4, 4) mode, a grid harmonic, or on the axis modes (4, 0) and
    (0, 4), the only modes of their shell, raises it far above that."""
    N = 16
    target = lognormal_like(256, N, 1)
    loss = SpectralLoss(N, [target], WIDE, torch.device("cpu"))

    def by_hand(maps):
        k = np.fft.fftfreq(N, 1 / N)
        k2 = np.rint(k[:, None] ** 2 + np.fft.rfftfreq(N, 1 / N)[None, :] ** 2).astype(int)
        used = k2 <= (N // 2) ** 2
        fake = (np.abs(np.fft.rfft2(maps.astype(np.float64))) ** 2).mean(0)[used]
        tgt = (np.abs(np.fft.rfft2(target.astype(np.float64))) ** 2).mean(0)[used]
        shells = k2[used]
        floor = 1e-3 * np.median([tgt[shells == s].mean() for s in np.unique(shells)])
        e = np.log(fake + floor) - np.log(np.array([tgt[shells == s].mean() for s in shells]) + floor)
        ring = np.rint(np.sqrt(shells)).astype(int)
        shared = np.array([(ring == r).sum() > 1 for r in ring])
        dev = e - np.array([e[ring == r].mean() for r in ring])
        return float(np.mean(dev[shared] ** 2))

    iso = lognormal_like(64, N, 2)
    x = np.arange(N)
    grid = 0.03 * np.cos(2 * np.pi * 4 * (x[:, None] + x[None, :]) / N)
    axes = 0.03 * (np.cos(2 * np.pi * 4 * x[:, None] / N) + np.cos(2 * np.pi * 4 * x[None, :] / N))
    values = []
    for maps in (iso, (iso + grid).astype(np.float32), (iso + axes).astype(np.float32)):
        errors = loss.mode_errors(WIDE.forward(torch.as_tensor(maps))[:, None])
        value = float(loss.anisotropy_term(errors))
        assert value == pytest.approx(by_hand(maps), rel=1e-4)
        values.append(value)
    assert values[0] < 0.05 and min(values[1:]) > 10 * values[0], values
