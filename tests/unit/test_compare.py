"""The comparison engine against direct computations on known samples."""

import numpy as np
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
