"""The comparison engine against direct computations on known samples."""

import numpy as np
import pytest
from scipy import stats as sps

from pipeline.stats.compare import ComparisonSummary, compare_statistic, summary_markdown


def test_identical_samples_agree_perfectly():
    x = np.random.default_rng(0).normal(1.0, 0.1, size=(200, 5))
    r = compare_statistic(x, x.copy())
    assert r.worst_rel_diff == 0 and r.ks_min_pvalue == 1.0 and r.chi2 == 0.0
    assert r.ks_frac_above_alpha == 1.0


def test_relative_difference_and_its_error_are_exact():
    rng = np.random.default_rng(1)
    a = rng.normal(2.0, 0.2, size=(400, 3))
    b = a[:300] * 1.1
    r = compare_statistic(a, b)
    expected = (b.mean(0) - a.mean(0)) / np.abs(a.mean(0))
    np.testing.assert_allclose(r.rel_diff, expected, rtol=1e-12)
    se = np.sqrt(a.var(0, ddof=1) / 400 + b.var(0, ddof=1) / 300) / np.abs(a.mean(0))
    np.testing.assert_allclose(r.rel_diff_se, se, rtol=1e-12)
    assert r.worst_bin == int(np.argmax(np.abs(expected)))


def test_ks_matches_scipy_per_bin():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(150, 4)), rng.normal(0.3, 1, size=(120, 4))
    r = compare_statistic(a, b)
    for j in range(4):
        ks = sps.ks_2samp(a[:, j], b[:, j])
        assert r.ks_pvalue[j] == ks.pvalue and r.ks_statistic[j] == ks.statistic


def test_chi2_with_independent_bins_is_the_sum_of_squares():
    """With a diagonal covariance, chi^2 = Hartlap * sum (d / se)^2 up to the sample
    covariance's off-diagonal noise; exact when the columns are built uncorrelated."""
    rng = np.random.default_rng(3)
    n, p = 500, 3
    # exactly uncorrelated columns: orthogonal sample vectors (centred), so cov is diagonal
    q, _ = np.linalg.qr(rng.normal(size=(n, p + 1)))
    a = 1.0 + (q[:, 1:] - q[:, 1:].mean(0)) * 10
    b = a + np.array([0.01, -0.02, 0.03])  # shifted copy: same covariance, known mean difference
    r = compare_statistic(a, b)
    d = b.mean(0) - a.mean(0)
    cov = np.cov(a, rowvar=False) * (2 / n)
    expected = (n - p - 2) / (n - 1) * d @ np.linalg.solve(cov, d)
    assert r.chi2_dof == p
    np.testing.assert_allclose(r.chi2, expected, rtol=1e-9)


def test_chi2_is_calibrated_under_the_null():
    """Two samples of one distribution: chi^2/dof near 1 (its std is sqrt(2/dof) ~ 0.2 here)."""
    rng = np.random.default_rng(4)
    cov = 0.5 * np.eye(40) + 0.5
    draws = [compare_statistic(rng.multivariate_normal(np.ones(40), cov, 1000),
                               rng.multivariate_normal(np.ones(40), cov, 1000)) for _ in range(20)]
    mean_reduced = np.mean([r.chi2 / r.chi2_dof for r in draws])
    assert abs(mean_reduced - 1) < 0.15  # mean of 20 draws: std ~0.05, so 3 sigma


def test_constant_bins_are_left_out_of_chi2():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(100, 3)), rng.normal(size=(100, 3))
    a[:, 1] = b[:, 1] = 0.0
    r = compare_statistic(a, b)
    assert r.chi2_dof == 2 and r.rel_diff[1] is None


def test_too_few_maps_for_the_bins_leave_chi2_undefined_and_json_strict():
    """chi^2 needs more maps than bins (Hartlap: n - p - 2 > 0): with 5 maps of 10 bins it is
    None, not NaN, so summary.json stays valid JSON."""
    import json

    rng = np.random.default_rng(7)
    r = compare_statistic(rng.normal(size=(5, 10)), rng.normal(size=(5, 10)), "peaks")
    assert r.chi2 is None and r.chi2_dof == 0 and r.reduced_chi2 is None and r.chi2_pvalue is None
    json.dumps(r.to_json(), allow_nan=False)


def test_markdown_names_each_statistic():
    rng = np.random.default_rng(6)
    r = compare_statistic(rng.normal(1, 0.1, (50, 3)), rng.normal(1, 0.1, (50, 3)))
    s = ComparisonSummary("a.h5", "b.h5", 50, 50, ell=[1.0, 2.0, 3.0], l_edges=[0.5, 1.5, 2.5, 3.5],
                          thresholds=[0.05, 0.15, 0.25, 0.35], nu=[0.1, 0.2, 0.3], threshold_sigma=1.0,
                          ks_alpha=0.05, statistics={"power_spectrum": r, "pdf": r})
    md = summary_markdown(s)
    assert "| power_spectrum | 3 |" in md and "| pdf | 3 |" in md and "**pdf**" in md


# -- per-map distributions ----------------------------------------------------------------------

def test_bias_in_units_of_scatter_and_spread_ratio_are_exact():
    """b = 1.2 a + 0.05 (per bin): the spread ratio is 1.2 in every bin and the bias is the
    shift of the means over a's per-map standard deviation, to rounding."""
    rng = np.random.default_rng(5)
    a = rng.normal(1.0, [0.1, 0.2, 0.3], size=(500, 3))
    b = 1.2 * a + 0.05
    r = compare_statistic(a, b)
    np.testing.assert_allclose(r.sigma_ratio, 1.2, rtol=1e-12)
    np.testing.assert_allclose(r.bias_over_sigma, (b.mean(0) - a.mean(0)) / a.std(0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(r.std_a, a.std(0, ddof=1), rtol=1e-12)
    assert r.max_abs_bias_over_sigma == max(abs(x) for x in r.bias_over_sigma)
    # a linear map of each column leaves every correlation unchanged
    assert r.corr_max_abs_diff < 1e-12 and r.corr_rel_frobenius < 1e-12


def test_correlation_difference_of_a_coupled_and_an_independent_sample():
    """a's two bins correlated at rho = 0.8 (a shared Gaussian), b's independent: the largest
    off-diagonal difference is the sample's rho, near 0.8 (within 3 standard errors of a
    correlation coefficient, (1 - rho^2) / sqrt(n) = 0.006 at n = 10000)."""
    rng = np.random.default_rng(6)
    n = 10000
    shared = rng.normal(size=n)
    a = np.stack([shared, 0.8 * shared + 0.6 * rng.normal(size=n)], 1)
    b = rng.normal(size=(n, 2))
    r = compare_statistic(a, b)
    assert abs(r.corr_max_abs_diff - 0.8) < 3 * 0.36 / np.sqrt(n) + 3 / np.sqrt(n)
    # ||rho_b - rho_a||_F / ||rho_a||_F with rho_a = [[1, .8], [.8, 1]]: sqrt(2) 0.8 / sqrt(2 + 2 x 0.64)
    assert abs(r.corr_rel_frobenius - np.sqrt(2) * 0.8 / np.sqrt(3.28)) < 0.01


def test_pooled_wasserstein_of_a_shift_is_the_shift():
    """Two unit Gaussians 0.3 sigma apart, binned in 0.05 sigma bins: the binned 1-Wasserstein
    distance equals scipy's on the raw samples to within half a bin, and both are near 0.3."""
    from pipeline.stats.compare import pooled_wasserstein

    rng = np.random.default_rng(7)
    sigma = 0.02  # kappa
    xa, xb = rng.normal(0, sigma, 200000), rng.normal(0.3 * sigma, sigma, 200000)
    edges = np.linspace(-6 * sigma, 6 * sigma, 241)
    nu = (edges[1:] + edges[:-1]) / 2
    ha, hb = np.histogram(xa, edges)[0][None] / 1.0, np.histogram(xb, edges)[0][None] / 1.0
    w = pooled_wasserstein(nu, ha, hb, sigma)
    raw = sps.wasserstein_distance(xa, xb) / sigma
    assert abs(w - raw) < 0.5 * 0.05 and abs(raw - 0.3) < 0.01


def test_distribution_verdicts():
    """The checks of the per-map distribution: a spread 25% low fails the ratio, a shift of
    half a sigma fails the bias, criteria of 0 are not checked."""
    from pipeline.config import ValidationConfig
    from pipeline.validate.verdicts import allowance_used, judge_statistic

    rng = np.random.default_rng(8)
    a = rng.normal(1.0, 0.1, size=(4000, 4))
    narrow = compare_statistic(a, 1.0 + 0.75 * (rng.normal(1.0, 0.1, size=(4000, 4)) - 1.0), "V1")
    shifted = compare_statistic(a, rng.normal(1.05, 0.1, size=(4000, 4)), "V1")
    same = compare_statistic(a, rng.normal(1.0, 0.1, size=(4000, 4)), "V1")
    vc = ValidationConfig()
    v = judge_statistic(narrow, vc)
    assert v.spread_ok is False and v.spread_hi < 0.85 and v.bias_ok is True and not v.passed
    assert allowance_used(v, vc)["spread"] == pytest.approx((1 - v.spread_lo) / 0.15)
    v = judge_statistic(shifted, vc)
    assert v.bias_ok is False and v.bias > 0.4 and v.spread_ok is True and not v.distribution_passed
    v = judge_statistic(same, vc)
    assert v.bias_ok and v.spread_ok and v.corr_ok is None  # correlations are judged on the power spectrum
    off = judge_statistic(narrow, ValidationConfig(max_bias_over_sigma=0, sigma_ratio_max=0, max_corr_diff=0))
    assert (off.bias_ok, off.spread_ok, off.corr_ok) == (None, None, None) and off.distribution_passed


def test_spread_of_sparse_bins_is_shown_not_judged():
    """For peak counts, bins whose reference mean is below spread_min_mean_frac of its largest
    are left out of the judged spread range."""
    from pipeline.config import ValidationConfig
    from pipeline.validate.verdicts import spread_bins

    rng = np.random.default_rng(9)
    a = np.stack([rng.poisson(100, 3000), rng.poisson(2, 3000)], 1).astype(float)
    b = np.stack([rng.poisson(100, 3000), rng.poisson(2, 3000) * 3], 1).astype(float)
    r = compare_statistic(a, b, "peaks")
    assert spread_bins(r, ValidationConfig()) == [0]
    assert spread_bins(r, ValidationConfig(spread_min_mean_frac=0)) == [0, 1]
