"""The inference stage's parts against analytic results: likelihood corrections, the grid's
spline, posterior moments and contours, grid ranges and calibration's choice of cosmologies."""

import numpy as np
import pytest
from scipy.stats import chi2

from pipeline.errors import DataError
from pipeline.infer.calibration import choose_cosmologies
from pipeline.infer.infer import fiducial_point, grid_axes, mean_noise
from pipeline.infer.likelihood import Likelihood
from pipeline.infer.posterior import density_levels, grid_summary, refine_means
from pipeline.models.conditioning import ParamSupport

SUPPORT = ParamSupport(("Omega_m", "sigma_8"), (0.2, 0.6), (0.4, 1.0), ((0.2, 0.6), (0.4, 1.0)))


def test_whitening_gives_the_chi2_of_the_sample_covariance():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 4))
    vectors = rng.standard_normal((500, 4)) @ a * np.array([1e-9, 1.0, 3.0, 1e3])  # units far apart
    like = Likelihood.from_vectors(vectors, n_sim=100)
    d = rng.standard_normal(4) * vectors.std(0)
    expect = d @ np.linalg.solve(np.cov(vectors, rowvar=False), d)
    assert np.sum(like.whitened(d) ** 2) == pytest.approx(expect, rel=1e-9)


def test_hartlap_and_t_likelihoods():
    rng = np.random.default_rng(1)
    like_h = Likelihood.from_vectors(rng.standard_normal((50, 5)), n_sim=40, kind="hartlap")
    like_t = Likelihood.from_vectors(rng.standard_normal((50, 5)), n_sim=40, kind="t")
    assert like_h.scale(10) == pytest.approx(1 / 10 + 1 / 40)
    c = np.array([0.0, 3.0])
    np.testing.assert_allclose(like_h.log_likelihood(c * like_h.scale(10), 10), -0.5 * (50 - 5 - 2) / 49 * c)
    np.testing.assert_allclose(like_t.log_likelihood(c * like_t.scale(10), 10), -25 * np.log1p(c / 49))


def test_constant_components_are_dropped_and_too_few_maps_refused():
    rng = np.random.default_rng(2)
    v = np.column_stack([rng.standard_normal(20), np.ones(20), rng.standard_normal(20)])
    like = Likelihood.from_vectors(v, n_sim=10)
    assert like.keep.tolist() == [True, False, True] and like.whitened(np.zeros(3)).shape == (2,)
    with pytest.raises(DataError, match="more than d \\+ 2"):
        Likelihood.from_vectors(rng.standard_normal((5, 4)), n_sim=10)
    twice = np.column_stack([v[:, 0], 2 * v[:, 0], v[:, 2]])
    with pytest.raises(DataError, match="singular"):
        Likelihood.from_vectors(twice, n_sim=10)


def test_the_spline_is_exact_for_cubics_and_keeps_the_nodes():
    x, y = np.linspace(0.2, 0.4, 6), np.linspace(0.6, 1.0, 5)
    f = lambda a, b: np.stack([a**3 - 2 * a * b**2, b**3 + a], axis=-1)  # noqa: E731
    means = f(*np.meshgrid(x, y, indexing="ij"))
    (fx, fy), fine = refine_means((x, y), means, 4)
    assert len(fx) == 21 and len(fy) == 17 and fx[0] == x[0] and fy[-1] == y[-1]
    np.testing.assert_allclose(fine, f(*np.meshgrid(fx, fy, indexing="ij")), rtol=1e-10, atol=1e-12)


def test_grid_summary_of_a_gaussian_posterior():
    mu, sd, rho = np.array([0.31, 0.79]), np.array([0.012, 0.02]), -0.8
    a = np.linspace(0.2, 0.4, 401)
    b = np.linspace(0.6, 1.0, 401)
    A, B = np.meshgrid(a, b, indexing="ij")
    za, zb = (A - mu[0]) / sd[0], (B - mu[1]) / sd[1]
    lp = -0.5 * (za**2 - 2 * rho * za * zb + zb**2) / (1 - rho**2)
    s = grid_summary((a, b), lp, ("Omega_m", "sigma_8"), "test", 1, truth=mu)
    # grid spacing 0.0005 and 0.001: a twelfth of the spacing squared adds to the variance
    np.testing.assert_allclose(s.mean, mu, atol=1e-6)
    np.testing.assert_allclose(s.std, sd, rtol=2e-3)
    assert s.correlation[0, 1] == pytest.approx(rho, abs=2e-3)
    np.testing.assert_allclose(s.interval68, np.stack([mu - sd, mu + sd], 1), atol=3e-4)
    np.testing.assert_allclose(s.interval95, np.stack([mu - 2 * sd, mu + 2 * sd], 1), atol=5e-4)
    np.testing.assert_allclose(s.best, mu, atol=1e-3)
    assert s.edge_mass < 1e-9 and s.covers(68).all() and np.abs(s.bias_in_sigma()).max() < 1e-3


def test_highest_density_levels_of_a_gaussian():
    x = np.linspace(-6, 6, 601)
    X, Y = np.meshgrid(x, x, indexing="ij")
    p = np.exp(-0.5 * (X**2 + Y**2))
    l68, l95 = density_levels(p / p.sum())
    # the contour of mass q of a 2-D unit Gaussian is at r^2 = chi2_2.ppf(q)
    assert l68 / (p.max() / p.sum()) == pytest.approx(np.exp(-0.5 * chi2(2).ppf(0.6827)), rel=0.01)
    assert l95 / (p.max() / p.sum()) == pytest.approx(np.exp(-0.5 * chi2(2).ppf(0.9545)), rel=0.02)


def test_grid_axes_and_the_fiducial_point():
    axes = grid_axes(SUPPORT, "", 41)
    assert axes.shape == (41, 41) and axes.values[0][0] == 0.2 and axes.values[1][-1] == 1.0
    axes = grid_axes(SUPPORT, "Omega_m=0.25:0.35", 11)
    assert axes.values[0][0] == 0.25 and axes.values[0][-1] == 0.35 and axes.values[1][0] == 0.6
    assert axes.points().shape == (121, 2) and tuple(axes.points()[1]) == (0.25, 0.64)
    for ranges, match in [("Omega_m=0.1:0.3", "outside the training support"), ("w=0:1", "unknown parameter"),
                          ("Omega_m=0.3", "NAME=LOW:HIGH"), ("Omega_m=0.35:0.25", "empty")]:
        with pytest.raises(DataError, match=match):
            grid_axes(SUPPORT, ranges, 11)
    np.testing.assert_allclose(fiducial_point(SUPPORT, "centre"), [0.3, 0.8])
    np.testing.assert_allclose(fiducial_point(SUPPORT, "sigma_8=0.7,Omega_m=0.25"), [0.25, 0.7])
    with pytest.raises(DataError, match="outside the training support"):
        fiducial_point(SUPPORT, "Omega_m=0.5,sigma_8=0.8")


def test_calibration_chooses_the_held_out_cosmologies():
    points = np.array([[0.2, 0.6], [0.3, 0.75], [0.2, 0.65], [0.325, 0.95], [0.4, 1.0]])
    assert choose_cosmologies(SUPPORT, points, "held-out") == [1, 3]
    assert choose_cosmologies(SUPPORT, points, "held-out+edge") == [1, 2, 3]
    assert choose_cosmologies(SUPPORT, points, "Omega_m=0.325,sigma_8=0.95;Omega_m=0.2,sigma_8=0.6") == [3, 0]
    with pytest.raises(DataError, match="no map at"):
        choose_cosmologies(SUPPORT, points, "Omega_m=0.33,sigma_8=0.95")


def test_the_mean_noise_in_posterior_widths():
    # Var(shift) = C / n_sim against the posterior's C (1/n_obs + 1/n_sim)
    assert mean_noise(250, 10) == pytest.approx(np.sqrt(0.004 / 0.104))
    assert mean_noise(10**9, 10) < 1e-3 and mean_noise(10, 10) == pytest.approx(np.sqrt(0.5))


def exact_covariance_vectors(cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n vectors whose sample covariance is exactly cov (whitened draws, recoloured)."""
    z = np.random.default_rng(seed).standard_normal((n, len(cov)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False)).T)
    return z @ np.linalg.cholesky(cov).T


def linear_table(name: str, response: np.ndarray, spec) -> "SimulationTable":
    """A table whose mean is mu(theta) = response @ theta + a cubic that vanishes in the gradient at
    theta = (0.3, 0.8) (so the spline's gradient there is response, if it is exact on cubics)."""
    from pipeline.infer.simulations import GridAxes, SimulationTable

    axes = GridAxes.spanning(("Omega_m", "sigma_8"), (0.2, 0.6), (0.4, 1.0), 9)
    a, b = np.meshgrid(*[np.asarray(v) for v in axes.values], indexing="ij")
    theta = np.stack([a, b], -1)
    cubic = ((a - 0.3) ** 3 - (a - 0.3) * (b - 0.8) ** 2)[..., None] * np.arange(1, spec.size + 1)
    return SimulationTable(name, spec, axes, np.array([0.3, 0.8]), theta @ response.T + cubic,
                           np.zeros((4, spec.size)), 100, 0, "")


def test_fisher_forecast_of_a_linear_gaussian_model():
    """mu = A theta with a known covariance: F = A^T C^-1 A / (1/n_obs + 1/n_sim) exactly; the
    spline's gradient is exact; halving the emulator's response doubles its width with the same
    covariance, and doubling its maps' scatter doubles it with the same response."""
    from pipeline.infer.fisher import fisher_matrix, forecasts, marginal_std, mean_gradient
    from pipeline.infer.summaries import SummarySpec

    spec = SummarySpec(("power_spectrum", "peaks"), (50.0, 100.0, 200.0), (-1.0, 0.0, 1.0), 1.0, 16, 1.0)
    rng = np.random.default_rng(4)
    A = rng.standard_normal((4, 2)) * 3
    B = rng.standard_normal((4, 4))
    C = B @ B.T + 4 * np.eye(4)
    phys, emu = linear_table("physics", A, spec), linear_table("emulator", A / 2, spec)
    np.testing.assert_allclose(mean_gradient(phys, np.array([0.3, 0.8])), A, rtol=1e-9, atol=1e-9)
    vectors = exact_covariance_vectors(C, 500, 5)
    like = Likelihood.from_vectors(vectors, n_sim=100)
    expect = A.T @ np.linalg.solve(C, A) / (1 / 10 + 1 / 100)
    np.testing.assert_allclose(fisher_matrix(A, like, 10), expect, rtol=1e-9)
    np.testing.assert_allclose(marginal_std(expect), np.sqrt(np.diag(np.linalg.inv(expect))), rtol=1e-12)
    assert np.isinf(marginal_std(np.array([[1.0, 1.0], [1.0, 1.0]]))).all()

    out = forecasts({"physics": phys, "emulator": emu}, {"physics": vectors, "emulator": 2 * vectors},
                    np.array([0.3, 0.8]), 10, [("power_spectrum", "peaks"), ("peaks",)])
    got = {(f.statistics, f.mean_from, f.covariance_from): np.array(f.std) for f in out}
    assert len(got) == 8
    both = ("power_spectrum", "peaks")
    base = got[(both, "physics", "physics")]
    np.testing.assert_allclose(base, marginal_std(expect), rtol=1e-9)
    np.testing.assert_allclose(got[(both, "emulator", "physics")], 2 * base, rtol=1e-9)
    np.testing.assert_allclose(got[(both, "physics", "emulator")], 2 * base, rtol=1e-9)
    np.testing.assert_allclose(got[(both, "emulator", "emulator")], 4 * base, rtol=1e-9)
    # peaks alone: its two components only
    sub = A[2:]
    f_peaks = sub.T @ np.linalg.solve(C[2:, 2:], sub) / (1 / 10 + 1 / 100)
    np.testing.assert_allclose(got[(("peaks",), "physics", "physics")], marginal_std(f_peaks), rtol=1e-9)


def test_the_training_maps_correction_removes_a_linear_error_exactly():
    """An emulator whose mean responds half as much as the truth's, plus a constant offset: the
    residual at the training cosmologies is linear in theta, so the thin-plate spline with its
    linear term restores the true mean at every grid point, not only at the training ones; a
    curved residual is reproduced at the training points and approximated between them."""
    from pipeline.infer.correction import MeanCorrection
    from pipeline.infer.summaries import SummarySpec

    spec = SummarySpec(("power_spectrum", "peaks"), (50.0, 100.0, 200.0), (-1.0, 0.0, 1.0), 1.0, 16, 1.0)
    A = np.random.default_rng(7).standard_normal((4, 2)) * 3
    truth, emu = linear_table("physics", A, spec), linear_table("emulator", A / 2, spec)
    offset = np.array([0.5, -1.0, 2.0, 0.0])
    emu = type(emu)(**{**emu.__dict__, "means": emu.means + offset})
    design = np.array([(a, b) for a in (0.2, 0.25, 0.3, 0.35, 0.4) for b in (0.6, 0.7, 0.8, 0.9, 1.0)])
    residuals = design @ (A / 2).T - offset
    corrected = MeanCorrection("train", design, residuals, [512] * 25).applied_to(emu, SUPPORT)
    np.testing.assert_allclose(corrected.means, truth.means, atol=1e-9)
    assert corrected.correction is not None and emu.correction is None

    curved = MeanCorrection("train", design, (design[:, :1] - 0.3) ** 2 * np.ones(4), [512] * 25)
    np.testing.assert_allclose(curved.at(design, SUPPORT), curved.residuals, atol=1e-9)
    # midway between training points, no worse than a straight line between them: (h/2)^2 f''/2
    # = 0.025^2 = 6.25e-4 for h = 0.05 and f'' = 2
    between = np.array([[0.225, 0.75], [0.325, 0.95]])
    np.testing.assert_allclose(curved.at(between, SUPPORT)[:, 0], (between[:, 0] - 0.3) ** 2, rtol=0, atol=6.25e-4)
    # the training means' own noise: 1/512 of a map's covariance against 1/10 + 1/512
    assert curved.noise_in_sigma(10, 512) == pytest.approx(np.sqrt((1 / 512) / (1 / 10 + 1 / 512)))
