"""The fused soft V0/V1 against the same formula written with plain autograd ops: values and
gradients, and torch's numerical gradient check in float64."""

import numpy as np
import torch

from pipeline.train.soft_excursions import soft_excursions


def plain(x, g, thresholds, width):
    """The broadcast formula the fused function replaces (pipeline/train/soft_excursions.py)."""
    s = torch.sigmoid((x[:, None, :] - thresholds[None, :, None]) / width)  # (B, T, P)
    return s.mean(2), (s * (1 - s) / width * g[:, None, :]).mean(2) / 4


def lognormal_pixels(b, p, seed, dtype):
    rng = np.random.default_rng(seed)
    x = 0.02 * (np.exp(0.5 * rng.standard_normal((b, p))) - np.exp(0.125))
    g = 0.01 * np.abs(rng.standard_normal((b, p)))
    return torch.tensor(x, dtype=dtype), torch.tensor(g, dtype=dtype)


def test_values_and_gradients_match_the_plain_formula():
    """float32, pixels of a quickstart-like map (sigma ~0.014), eleven thresholds, weights on
    both outputs so that every term of the backward pass counts."""
    x, g = lognormal_pixels(8, 4096, 0, torch.float32)
    sigma = float(x.std())
    thresholds = torch.tensor([t * sigma for t in (-2, -1, -0.5, 0, 0.5, 1, 2.5)])
    width = 0.1 * sigma
    a, b = torch.randn(8, 7, generator=torch.Generator().manual_seed(1)), torch.randn(8, 7)
    results = []
    for f in (plain, soft_excursions):
        xi, gi = x.clone().requires_grad_(), g.clone().requires_grad_()
        v0, v1 = f(xi, gi, thresholds, width)
        ((v0 * a).sum() + (v1 * b).sum() * sigma).backward()
        results.append((v0.detach(), v1.detach(), xi.grad, gi.grad))
    for want, got, name in zip(results[0], results[1], ("V0", "V1", "dL/dx", "dL/dg")):
        # float32 sums over 4096 pixels in another order: ~1e-6 relative
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()), msg=name)
    assert results[0][0].std() > 0 and results[0][1].abs().max() > 0


def test_gradcheck_in_float64():
    x, g = lognormal_pixels(3, 50, 2, torch.float64)
    sigma = float(x.std())
    thresholds = torch.tensor([-sigma, 0.0, sigma], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda xi, gi: soft_excursions(xi, gi, thresholds, 0.3 * sigma),
                                    (x.requires_grad_(), g.requires_grad_()))
