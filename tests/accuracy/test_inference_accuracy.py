"""The inference stage against closed-form posteriors, on Gaussian random fields.

For a periodic Gaussian field of spectrum C(ell), each independent Fourier mode's power
q_k = |kappa_k|^2 (theta / N^2)^2 is exponential with mean C(ell_k) (complex modes) or
C(ell_k) chi^2_1 (the few self-conjugate ones), so the likelihood of the maps' modes in the
ell range is known exactly. The pipeline instead fits a Gaussian likelihood of the binned
power spectrum, mean and covariance from simulations. With many modes per bin the two
must agree; the tolerances below say by how much, and why.
"""

import math

import numpy as np
import pytest

from pipeline.config import StatsConfig
from pipeline.infer.likelihood import Likelihood
from pipeline.infer.posterior import LikelihoodSurface, grid_summary
from pipeline.infer.simulations import GridAxes, simulation_table
from pipeline.infer.summaries import SummarySpec
from pipeline.physics.fields import ell_grid, gaussian_amplitude, gaussian_field
from pipeline.stats.bins import ell_edges

pytestmark = pytest.mark.accuracy

N, SIDE = 32, 3.5
ELL0 = 2000.0


class PowerLawField:
    """Gaussian maps with C(ell) = A 1e-9 (ell / ELL0)^n; parameters ("A",) or ("A", "n")."""

    name = "gaussian"
    map_size, side_angle_deg = N, SIDE

    def __init__(self, names, n_fixed=-1.0):
        self.param_names, self.n_fixed = tuple(names), n_fixed
        self.ell = ell_grid(N, SIDE)

    def cl(self, point) -> np.ndarray:
        a = point[0]
        n = point[1] if len(point) > 1 else self.n_fixed
        c = np.zeros_like(self.ell)
        c[self.ell > 0] = a * 1e-9 * (self.ell[self.ell > 0] / ELL0) ** n
        return c

    def maps(self, point, n, seed, first_index=0):
        amp = gaussian_amplitude(self.cl(point), SIDE)
        out = np.empty((n, N, N))
        for j in range(n):
            white = np.random.default_rng([seed, first_index + j]).standard_normal((N, N))
            out[j] = gaussian_field(white, amp)
        return out


def independent_modes(l_lo, l_hi):
    """Masks (complex, real) over the rfft2 half-plane of the independent modes in (l_lo, l_hi]."""
    ell = ell_grid(N, SIDE)
    inside = (ell > l_lo) & (ell <= l_hi)
    complex_, real = np.zeros_like(inside), np.zeros_like(inside)
    complex_[:, 1:N // 2] = True
    complex_[1:N // 2, 0] = complex_[1:N // 2, N // 2] = True   # rows N/2+1.. are their conjugates
    for i, j in ((0, N // 2), (N // 2, 0), (N // 2, N // 2)):
        real[i, j] = True
    return complex_ & inside, real & inside


def exact_log_likelihood(sim, maps, points, l_lo, l_hi) -> np.ndarray:
    q = np.abs(np.fft.rfft2(maps)) ** 2 * (math.radians(SIDE) / N**2) ** 2   # (n, N, N/2+1)
    cm, rm = independent_modes(l_lo, l_hi)
    qc, qr = q[:, cm].sum(axis=0), q[:, rm].sum(axis=0)
    out = []
    for p in points:
        c = sim.cl(p)
        out.append(-(len(maps) * np.log(c[cm])).sum() - (qc / c[cm]).sum()
                   - 0.5 * (len(maps) * np.log(c[rm])).sum() - 0.5 * (qr / c[rm]).sum())
    return np.array(out)


def pipeline_posterior(sim, axes, observed, tmp_path, n_sim, n_cov, kind="t"):
    edges = ell_edges(StatsConfig(n_ell=8), N, SIDE)
    spec = SummarySpec(("power_spectrum",), tuple(edges.tolist()), (-1.0, 0.0, 1.0), 1.0, N, SIDE)
    fiducial = np.array([np.mean(v) for v in axes.values])
    tmp_path.mkdir(parents=True, exist_ok=True)
    table = simulation_table(sim, spec, axes, fiducial, n_sim, n_cov, seed=1, out=tmp_path / "sims.h5",
                             recipe="test", progress=False)
    like = Likelihood.from_vectors(table.fiducial_vectors, n_sim, kind)
    surface = LikelihoodSurface(axes.values, table.means, like, refine=4)
    x = spec.measure(observed).mean(axis=0)
    return surface, surface.log_posterior(x, len(observed)), edges, spec


def test_one_parameter_posterior_matches_the_exact_one(tmp_path):
    sim = PowerLawField(["A"])
    truth = np.array([1.0])
    observed = sim.maps(truth, 16, seed=99)
    axes = GridAxes(("A",), (tuple(np.linspace(0.8, 1.2, 21)),))
    surface, lp, edges, _ = pipeline_posterior(sim, axes, observed, tmp_path, n_sim=2048, n_cov=4096)
    got = grid_summary(surface.axes, lp, ("A",), "gaussian", 16, truth)
    exact_lp = exact_log_likelihood(sim, observed, surface.axes[0][:, None], edges[0], edges[-1])
    exact = grid_summary(surface.axes, exact_lp, ("A",), "exact", 16, truth)
    # ~1700 independent modes: sigma_A / A ~ 2.4%, resolved by ~10 fine grid points.
    assert 0.015 < exact.std[0] < 0.04 and exact.edge_mass < 1e-6
    # Means: the Gaussian likelihood's estimate is the modes' inverse-variance average as the
    # exact one's is; what differs is the n_sim maps' noise in the mean (sigma_A / sqrt(n_sim / n_obs)
    # = 0.09 sigma) and the binning (C(ell) varies within a bin): allow 0.2 sigma.
    assert abs(got.mean[0] - exact.mean[0]) < 0.2 * exact.std[0]
    # Widths: the covariance fixed at the fiducial A = 1 (within 3% of the posterior's A), the
    # 1/n_sim term (+0.4%) and the covariance's noise (n_cov = 4096, d = 8: ~1%): allow 8%.
    assert got.std[0] == pytest.approx(exact.std[0], rel=0.08)
    assert got.interval68[0] == pytest.approx(exact.interval68[0], abs=0.2 * exact.std[0])
    # and the truth lies within the posterior's width (the seed is fixed: this is one draw)
    assert abs(got.mean[0] - truth[0]) < 2 * got.std[0]


def test_two_parameter_posterior_recovers_the_truth_and_the_exact_contours(tmp_path):
    sim = PowerLawField(["A", "n"])
    truth = np.array([1.0, -1.0])
    observed = sim.maps(truth, 16, seed=7)
    axes = GridAxes(("A", "n"), (tuple(np.linspace(0.8, 1.2, 11)), tuple(np.linspace(-1.6, -0.4, 11))))
    surface, lp, edges, _ = pipeline_posterior(sim, axes, observed, tmp_path, n_sim=512, n_cov=2048)
    got = grid_summary(surface.axes, lp, ("A", "n"), "gaussian", 16, truth)
    mesh = np.stack(np.meshgrid(*surface.axes, indexing="ij"), axis=-1).reshape(-1, 2)
    exact_lp = exact_log_likelihood(sim, observed, mesh, edges[0], edges[-1]).reshape(lp.shape)
    exact = grid_summary(surface.axes, exact_lp, ("A", "n"), "exact", 16, truth)
    assert np.all(np.abs(got.mean - truth) < 2.5 * got.std)
    # Binning costs information about the tilt (C(ell) varies within a bin, which the exact
    # likelihood sees mode by mode): the binned posterior is no narrower than the exact one
    # and at most 15% wider, and its mean moves within half a width (0.1-0.4 sigma measured
    # on two seeds, the same with n_sim = 2048, so not the simulations' noise).
    assert np.all(got.std > 0.97 * exact.std) and np.all(got.std < 1.15 * exact.std)
    np.testing.assert_array_less(np.abs(got.mean - exact.mean), 0.5 * exact.std)
    # A and n are strongly correlated through the pivot ELL0 above the data's ell
    assert got.correlation[0, 1] == pytest.approx(exact.correlation[0, 1], abs=0.05)


def test_posteriors_over_many_surveys_cover_the_truth(tmp_path):
    """100 surveys of 16 maps at one truth: the posterior mean is off by (mean - truth) / std
    distributed as a unit normal (a calibrated posterior) and the 68% interval covers the
    truth in 68% of them. Tolerances: two binomial / normal standard errors of 100 draws."""
    sim = PowerLawField(["A"])
    truth = np.array([1.05])
    axes = GridAxes(("A",), (tuple(np.linspace(0.8, 1.3, 21)),))
    surface, _, _, spec = pipeline_posterior(sim, axes, sim.maps(truth, 16, seed=0), tmp_path, n_sim=1024,
                                             n_cov=2048)
    z, covered = [], []
    for k in range(100):
        obs = sim.maps(truth, 16, seed=1000 + k)
        lp = surface.log_posterior(spec.measure(obs).mean(axis=0), 16)
        s = grid_summary(surface.axes, lp, ("A",), "gaussian", 16, truth)
        z.append(s.bias_in_sigma()[0])
        covered.append(bool(s.covers(68)[0]))
    z = np.array(z)
    assert abs(z.mean()) < 0.2 + 2 / np.sqrt(100)
    assert 0.8 < z.std() < 1.2
    assert 0.68 - 2 * 0.047 < np.mean(covered) < 0.68 + 2 * 0.047

def test_a_hartlap_posterior_is_wider_when_the_covariance_is_poorer(tmp_path):
    """Fewer fiducial maps: each correction widens the posterior; the t-likelihood's tails are heavier."""
    sim = PowerLawField(["A"])
    observed = sim.maps(np.array([1.0]), 16, seed=5)
    axes = GridAxes(("A",), (tuple(np.linspace(0.8, 1.2, 21)),))
    widths = {}
    for n_cov in (12, 4096):
        for kind in ("t", "hartlap"):
            surface, lp, _, _ = pipeline_posterior(sim, axes, observed, tmp_path / f"{n_cov}-{kind}", n_sim=256,
                                                n_cov=n_cov, kind=kind)
            widths[n_cov, kind] = grid_summary(surface.axes, lp, ("A",), kind, 16).std[0]
    assert widths[12, "t"] > 1.2 * widths[4096, "t"]
    assert widths[12, "hartlap"] > widths[4096, "hartlap"]
    assert widths[4096, "t"] == pytest.approx(widths[4096, "hartlap"], rel=0.02)
