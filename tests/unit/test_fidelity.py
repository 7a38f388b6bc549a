"""The fidelity check's per-map bias: |delta mu| / sigma_ref of the power spectrum and the
PDF, against a hand-computed case, and its weight in the score that picks best.pt."""

import numpy as np
import pytest
import torch

from pipeline.config import StatsConfig
from pipeline.stats import pixel_pdf, power_spectrum
from pipeline.stats.bins import ell_edges
from pipeline.train.fidelity import FidelityCheck

SIZE, SIDE_DEG = 32, 1.75


def noise_maps(n, seed, amplitude=0.01):
    """Gaussian maps whose per-map amplitude varies by 10%, so each bin has a per-map scatter."""
    g = np.random.default_rng(seed)
    a = amplitude * (1 + 0.1 * g.standard_normal((n, 1, 1)))
    return (g.standard_normal((n, SIZE, SIZE)) * a).astype(np.float32)


def check(reference, weight):
    return FidelityCheck(reference, SIDE_DEG, StatsConfig(n_ell=6), 1, torch.zeros(len(reference), 4),
                         bias_weight=weight)


def test_the_same_maps_have_no_bias_and_scaled_maps_the_hand_computed_one():
    """Maps scaled by a have power a^2 x each map's: the power spectrum's bias in bin b is
    (a^2 - 1) mean_b / std_b of the reference's per-map power, exactly."""
    reference = noise_maps(200, 0)
    a = 1.03
    same, scaled = check(reference, 0.4).score(reference), check(reference, 0.4).score(reference * a)
    assert same["fid_bias_max"] == 0 and same["fid_score"] == 0
    _, ps = power_spectrum(reference, SIDE_DEG, ell_edges(StatsConfig(n_ell=6), SIZE, SIDE_DEG))
    ps_bias = float(((a ** 2 - 1) * ps.mean(0) / ps.std(0, ddof=1)).max())
    assert scaled["fid_bias_max"] >= ps_bias * (1 - 1e-5)
    # and the PDF's part: the scaled maps' mean PDF against the reference's, per map, in
    # every bin where the reference varies (the thresholds as the check took them)
    edges = check(reference, 0.4).thresholds[0]
    _, ref_pdf = pixel_pdf(reference, edges)
    _, gen_pdf = pixel_pdf(reference * a, edges)
    sd = ref_pdf.std(0, ddof=1)
    varies = sd > 0
    pdf_bias = float((np.abs(gen_pdf.mean(0) - ref_pdf.mean(0))[varies] / sd[varies]).max())
    assert scaled["fid_bias_max"] == pytest.approx(max(ps_bias, pdf_bias), rel=1e-5)


def test_the_bias_weight_enters_the_score():
    reference, generated = noise_maps(200, 1), noise_maps(200, 2, amplitude=0.0102)
    plain, weighted = check(reference, 0.0).score(generated), check(reference, 0.4).score(generated)
    assert plain["fid_score"] == pytest.approx(plain["fid_ps_mean"] + plain["fid_pdf_max"])
    assert weighted["fid_score"] == pytest.approx(plain["fid_score"] + 0.4 * plain["fid_bias_max"])
    assert plain["fid_bias_max"] > 0.1  # 2% in amplitude, 4% in power: ~0.2 per-map sigmas here
