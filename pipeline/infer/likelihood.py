"""A Gaussian likelihood of a survey's mean data vector, with a covariance from simulations.

The survey is n_obs maps; its data vector x is the mean of theirs. The model mean mu(theta)
is the mean of n_sim simulated maps, so x - mu(theta) has covariance C (1/n_obs + 1/n_sim),
C the covariance of one map's data vector. C is estimated once, from n_cov simulated maps
at a fiducial cosmology: a parameter-dependent covariance estimated from simulations adds
noise and spurious information (Carron 2013), and surveys' analyses fix it likewise.

C-hat from n_cov maps is noisy; its inverse is biased high. Two corrections:
- "hartlap": the Gaussian likelihood with C-hat^-1 scaled by (n_cov - d - 2) / (n_cov - 1)
  (Hartlap, Simon & Schneider 2007);
- "t": the likelihood with the covariance's uncertainty marginalised (Sellentin & Heavens
  2016): ln L = -n_cov / 2 ln(1 + chi^2 / (n_cov - 1)), chi^2 with C-hat itself.
Components with no variance across the fiducial maps (a bin every map fills alike) carry no
usable information about their scatter and are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import DataError


@dataclass(frozen=True)
class Likelihood:
    """kind: "t" or "hartlap"; keep: (d,) bool, the components used; whiten: (k, d_used)
    maps a data-vector difference to one whose squared norm is chi^2 for one map's
    covariance; scale(n_obs) gives the factor of the survey's."""

    kind: str
    n_cov: int
    n_sim: int
    keep: np.ndarray
    whiten: np.ndarray

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, n_sim: int, kind: str = "t", where: str = "covariance") -> Likelihood:
        """From the fiducial maps' data vectors (n_cov, d)."""
        n_cov = len(vectors)
        std = vectors.std(axis=0, ddof=1) if n_cov > 1 else np.zeros(vectors.shape[1])
        keep = std > 0
        d = int(keep.sum())
        if d == 0:
            raise DataError(f"{where}: no component of the data vector varies across the {n_cov} fiducial maps")
        if n_cov < d + 3:
            raise DataError(f"{where}: {n_cov} fiducial maps for a data vector of {d} components; the "
                            f"covariance needs more than d + 2 (set infer.n_cov >= {d + 3}, or fewer statistics "
                            "or bins)")
        z = vectors[:, keep] / std[keep]  # correlation-scaled: well conditioned whatever the units
        corr = np.cov(z, rowvar=False)
        try:
            chol = np.linalg.cholesky(np.atleast_2d(corr))
        except np.linalg.LinAlgError:
            raise DataError(f"{where}: the covariance of the {n_cov} fiducial maps is singular (components "
                            "that are linear combinations of others); use fewer statistics or bins") from None
        whiten = np.linalg.solve(chol, np.diag(1.0 / std[keep]))
        return cls(kind, n_cov, int(n_sim), keep, whiten)

    @property
    def size(self) -> int:
        return int(self.keep.sum())

    def scale(self, n_obs: int) -> float:
        """Variance of (survey mean - model mean) in units of one map's: 1/n_obs + 1/n_sim."""
        return 1.0 / n_obs + 1.0 / self.n_sim

    def whitened(self, x: np.ndarray) -> np.ndarray:
        """(..., d) data vectors -> (..., d_used) whitened ones."""
        return np.asarray(x)[..., self.keep] @ self.whiten.T

    def log_likelihood(self, chi2_one_map: np.ndarray, n_obs: int) -> np.ndarray:
        """ln L (up to a constant) from chi^2 against one map's covariance."""
        chi2 = np.asarray(chi2_one_map) / self.scale(n_obs)
        if self.kind == "hartlap":
            return -0.5 * (self.n_cov - self.size - 2) / (self.n_cov - 1) * chi2
        return -0.5 * self.n_cov * np.log1p(chi2 / (self.n_cov - 1))
