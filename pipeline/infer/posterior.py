"""Posteriors over the grid's box (a flat prior): on a refined grid, or sampled by emcee.

The simulations give the mean data vector at the grid's points; between them it is a
tensor-product cubic spline (not-a-knot), evaluated on a grid ``refine`` times finer.
That fine grid is the posterior for sampler "grid"; emcee samples the same likelihood with
the mean interpolated linearly on the fine grid (so the two samplers see one model).
Intervals are central (equal-tailed) intervals of each parameter's marginal; the 2-D
contours enclose 68% and 95% of the mass (highest density).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import RegularGridInterpolator, make_interp_spline

from pipeline.infer.likelihood import Likelihood

LEVELS = (0.6827, 0.9545)  # the 1 and 2 sigma masses of a Gaussian


def refine_means(axes: tuple[np.ndarray, ...], means: np.ndarray, refine: int):
    """(fine_axes, fine_means): means (*shape, d) splined onto axes `refine` times finer."""
    fine_axes, out = [], means
    for i, x in enumerate(axes):
        x = np.asarray(x, np.float64)
        fine = np.linspace(x[0], x[-1], (len(x) - 1) * refine + 1)
        out = make_interp_spline(x, out, k=3, axis=i)(fine)
        fine_axes.append(fine)
    return tuple(fine_axes), out


@dataclass
class PosteriorSummary:
    """One posterior in numbers (parameters in names' order, physical units)."""

    names: tuple[str, ...]
    simulator: str
    sampler: str
    n_obs: int
    best: np.ndarray                 # the maximum a posteriori point (of the grid or of the samples)
    mean: np.ndarray
    std: np.ndarray
    interval68: np.ndarray           # (P, 2) central intervals of the marginals
    interval95: np.ndarray
    correlation: np.ndarray          # (P, P)
    truth: np.ndarray | None = None
    edge_mass: float = 0.0           # mass in the box's outermost cells: > ~1% means the prior cuts it
    extra: dict = field(default_factory=dict)

    def bias_in_sigma(self) -> np.ndarray | None:
        return None if self.truth is None else (self.mean - self.truth) / self.std

    def covers(self, level: int) -> np.ndarray | None:
        if self.truth is None:
            return None
        iv = self.interval68 if level == 68 else self.interval95
        return (iv[:, 0] <= self.truth) & (self.truth <= iv[:, 1])

    def to_json(self) -> dict:
        d = {"parameters": list(self.names), "simulator": self.simulator, "sampler": self.sampler,
             "n_obs": self.n_obs, "map": self.best.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist(),
             "interval68": self.interval68.tolist(), "interval95": self.interval95.tolist(),
             "correlation": self.correlation.tolist(), "edge_mass": self.edge_mass, **self.extra}
        if self.truth is not None:
            d.update(truth=self.truth.tolist(), bias_in_sigma=self.bias_in_sigma().tolist(),
                     covered68=self.covers(68).tolist(), covered95=self.covers(95).tolist())
        return d


class LikelihoodSurface:
    """The likelihood of one simulation table over the fine grid: the whitened means are
    computed once, so each survey costs one pass over the grid."""

    def __init__(self, axes, means: np.ndarray, likelihood: Likelihood, refine: int):
        self.likelihood = likelihood
        self.axes, fine_means = refine_means(axes, means, refine)
        self.means_w = likelihood.whitened(fine_means)          # (*fine_shape, d_used)

    def chi2(self, x: np.ndarray) -> np.ndarray:
        """chi^2 of one map's covariance at every fine point, for survey data vector x (d,)."""
        diff = self.means_w - self.likelihood.whitened(x)
        return np.einsum("...i,...i->...", diff, diff)

    def log_posterior(self, x: np.ndarray, n_obs: int) -> np.ndarray:
        lp = self.likelihood.log_likelihood(self.chi2(x), n_obs)
        return lp - lp.max()

    def interpolator(self) -> RegularGridInterpolator:
        return RegularGridInterpolator(self.axes, self.means_w, method="linear", bounds_error=False,
                                       fill_value=None)


def grid_summary(axes, log_post: np.ndarray, names, simulator: str, n_obs: int, truth=None) -> PosteriorSummary:
    """Moments, marginal intervals and the MAP of a posterior given on a grid."""
    p = np.exp(log_post - log_post.max())
    p /= p.sum()
    mesh = np.meshgrid(*axes, indexing="ij")
    mean = np.array([(p * m).sum() for m in mesh])
    dev = [m - mu for m, mu in zip(mesh, mean)]
    cov = np.array([[(p * a * b).sum() for b in dev] for a in dev])
    std = np.sqrt(np.diag(cov))
    iv68, iv95 = [], []
    for i, x in enumerate(axes):
        marginal = p.sum(axis=tuple(j for j in range(p.ndim) if j != i))
        iv68.append(_central(x, marginal, LEVELS[0]))
        iv95.append(_central(x, marginal, LEVELS[1]))
    best = np.array([m.flat[int(np.argmax(log_post))] for m in mesh])
    return PosteriorSummary(tuple(names), simulator, "grid", n_obs, best, mean, std, np.array(iv68), np.array(iv95),
                            cov / np.outer(std, std), None if truth is None else np.asarray(truth, np.float64),
                            _edge_mass(p))


def _central(x: np.ndarray, w: np.ndarray, level: float) -> tuple[float, float]:
    """Equal-tailed interval of a distribution of point masses w at x (interpolated CDF)."""
    cdf = np.cumsum(w) - 0.5 * w  # each cell's mass centred on its point
    lo, hi = (1 - level) / 2, (1 + level) / 2
    return float(np.interp(lo, cdf, x)), float(np.interp(hi, cdf, x))


def _edge_mass(p: np.ndarray) -> float:
    inner = p[tuple(slice(1, -1) for _ in range(p.ndim))]
    return float(1.0 - inner.sum())


def sample_emcee(surface: LikelihoodSurface, x: np.ndarray, n_obs: int, start: PosteriorSummary, walkers: int,
                 steps: int, burn: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(samples (n, P), their log posterior) from emcee's affine-invariant ensemble, started
    in a small ball around the grid's MAP; the prior is flat over the grid's box."""
    import emcee

    lo = np.array([a[0] for a in surface.axes])
    hi = np.array([a[-1] for a in surface.axes])
    mean_w = surface.interpolator()
    x_w = surface.likelihood.whitened(x)

    def log_prob(theta):
        theta = np.atleast_2d(theta)
        inside = np.all((theta >= lo) & (theta <= hi), axis=1)
        out = np.full(len(theta), -np.inf)
        if inside.any():
            diff = mean_w(theta[inside]) - x_w
            out[inside] = surface.likelihood.log_likelihood(np.einsum("ij,ij->i", diff, diff), n_obs)
        return out

    rng = np.random.default_rng(seed)
    p0 = start.best + 0.1 * start.std * rng.standard_normal((walkers, len(lo)))
    p0 = np.clip(p0, lo, hi)
    sampler = emcee.EnsembleSampler(walkers, len(lo), log_prob, vectorize=True)
    sampler.random_state = np.random.RandomState(seed).get_state()
    sampler.run_mcmc(p0, steps, progress=False)
    return sampler.get_chain(discard=burn, flat=True), sampler.get_log_prob(discard=burn, flat=True)


def samples_summary(samples: np.ndarray, log_prob: np.ndarray, names, simulator: str, n_obs: int, axes,
                    truth=None) -> PosteriorSummary:
    mean, std = samples.mean(axis=0), samples.std(axis=0, ddof=1)
    iv = lambda level: np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0).T  # noqa: E731
    corr = np.atleast_2d(np.corrcoef(samples, rowvar=False))
    lo = np.array([a[1] for a in axes])
    hi = np.array([a[-2] for a in axes])
    edge = float(np.mean(np.any((samples < lo) | (samples > hi), axis=1)))
    return PosteriorSummary(tuple(names), simulator, "emcee", n_obs, samples[int(np.argmax(log_prob))], mean, std,
                            iv(LEVELS[0]), iv(LEVELS[1]), corr, None if truth is None else np.asarray(truth),
                            edge, {"n_samples": int(len(samples))})


def density_levels(p: np.ndarray, levels=LEVELS) -> list[float]:
    """Density values whose upper sets hold ``levels`` of the mass of grid weights p."""
    flat = np.sort(p.ravel())[::-1]
    cum = np.cumsum(flat) / flat.sum()
    return [float(flat[min(int(np.searchsorted(cum, lv)), len(flat) - 1)]) for lv in levels]
