"""Fisher forecasts from a simulation table: how much a simulator's mean data vector tells
about the parameters at one point, statistic by statistic.

    F = J^T [C (1/n_obs + 1/n_sim)]^-1 J,   J = d mu / d theta (d, P)

with mu(theta) the table's mean data vector, differentiated through the same tensor-product
cubic spline the posterior interpolates it with, and C one map's covariance. sqrt((F^-1)_ii)
is the Cramer-Rao bound on theta_i from a survey of n_obs maps: the width a posterior takes
where the likelihood is near Gaussian in theta and the prior's box does not cut it.

Pairing one simulator's mean with another's covariance separates the two ways an emulator's
posterior can be wider than the physical model's: a mean that responds less to the
parameters (the same C, a smaller J) or maps that scatter more (the same J, a larger C).
infer-calibration reports both (docs/inference.md); so does LensTools' FisherAnalysis for
emulated summary statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import make_interp_spline

from pipeline.errors import DataError
from pipeline.infer.likelihood import Likelihood
from pipeline.infer.simulations import SimulationTable


def mean_gradient(table: SimulationTable, point: np.ndarray) -> np.ndarray:
    """d mu / d theta (d, P) at ``point`` (P,) inside the table's grid, in data-vector units per
    parameter unit."""
    axes = [np.asarray(v, np.float64) for v in table.axes.values]
    columns = []
    for i in range(len(axes)):
        m = table.means
        for j in reversed(range(len(axes))):  # contract the last axis first: m keeps axes 0 .. j - 1
            spline = make_interp_spline(axes[j], m, k=3, axis=j)
            m = (spline.derivative() if i == j else spline)(float(point[j]))
        columns.append(m)
    return np.stack(columns, axis=1)


def fisher_matrix(gradient: np.ndarray, likelihood: Likelihood, n_obs: int) -> np.ndarray:
    """F (P, P) of a survey of n_obs maps, from the mean's gradient (d, P) and the likelihood's
    covariance (its components and whitening)."""
    g = likelihood.whiten @ gradient[likelihood.keep]
    return g.T @ g / likelihood.scale(n_obs)


def marginal_std(fisher: np.ndarray) -> np.ndarray:
    """sqrt(diag F^-1) (P,); inf for a parameter the statistics do not constrain."""
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        return np.full(len(fisher), np.inf)
    d = np.diag(cov)
    return np.where(d > 0, np.sqrt(np.abs(d)), np.inf)


@dataclass(frozen=True)
class FisherForecast:
    """The Cramer-Rao widths std (P,) at ``point`` from ``statistics``, with the mean of
    ``mean_from`` and the covariance of ``covariance_from`` (simulator names)."""

    point: list[float]
    statistics: tuple[str, ...]
    mean_from: str
    covariance_from: str
    std: list[float] | None      # None where the covariance of these statistics is singular


def forecasts(tables: dict[str, SimulationTable], covariances: dict[str, np.ndarray], point: np.ndarray,
              n_obs: int, groups: list[tuple[str, ...]], kind: str = "t") -> list[FisherForecast]:
    """Every (mean, covariance) pairing of the simulators, for each group of statistics.
    covariances: per simulator the data vectors (n_cov, d) of its maps near ``point``."""
    spec = next(iter(tables.values())).spec
    names = np.array([label.split("[")[0] for label in spec.labels()])
    gradients = {name: mean_gradient(t, point) for name, t in tables.items()}
    out = []
    for group in groups:
        mask = np.isin(names, group)
        for cov_from, vectors in covariances.items():
            try:
                like = Likelihood.from_vectors(vectors[:, mask], tables[cov_from].n_sim, kind)
            except DataError:  # too few maps for these components, or collinear ones: no forecast
                like = None
            for mean_from, grad in gradients.items():
                std = None if like is None else marginal_std(fisher_matrix(grad[mask], like, n_obs)).tolist()
                out.append(FisherForecast([float(v) for v in point], tuple(group), mean_from, cov_from, std))
    return out
