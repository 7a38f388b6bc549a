"""The bins every statistic is measured in: ell bins of the power spectrum, thresholds of
the Minkowski functionals, peaks and pixel PDF.

One place builds them from the ``stats`` config section, for the stats stage, validate
and the fidelity check during training, so the three always measure the same bins.
ell is in radians^-1; thresholds are kappa (dimensionless): edges in units of sigma
(stats.threshold_units: sigma) are multiplied by a pixel standard deviation sigma, in
kappa, that the caller measures on its reference maps.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from pipeline.config import StatsConfig
from pipeline.errors import DataError
from pipeline.stats.spectrum import mode_counts


@dataclass(frozen=True)
class Bins:
    """ell bin edges (rad^-1) and threshold edges (kappa); sigma: the kappa unit of
    thresholds given in units of sigma (1.0 when thresholds were given in kappa)."""

    l_edges: tuple
    thresholds: tuple
    sigma: float = 1.0

    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.l_edges, self.thresholds]).encode()).hexdigest()

    @property
    def ell(self) -> np.ndarray:
        e = np.asarray(self.l_edges)
        return 0.5 * (e[1:] + e[:-1])

    @property
    def nu(self) -> np.ndarray:
        t = np.asarray(self.thresholds)
        return 0.5 * (t[1:] + t[:-1])


def ell_edges(cfg: StatsConfig, map_size: int, side_angle_deg: float) -> np.ndarray:
    """ell bin edges (rad^-1). Defaults: from half the fundamental mode, pi/theta (bins are
    open below, so the fundamental modes 2 pi/theta fall inside the first bin), to half the
    Nyquist ell pi N/(2 theta), where pixel-window and aliasing effects are still small.
    That top edge lies on a shell of modes; it is raised by 1e-9 (relative) so the shell is
    included whatever the rounding."""
    theta = np.deg2rad(side_angle_deg)
    lo = cfg.ell_min or np.pi / theta
    hi = cfg.ell_max or np.pi * map_size / (2 * theta) * (1 + 1e-9)
    if hi <= lo:
        raise DataError(f"stats.ell_max {hi:.1f} must exceed stats.ell_min {lo:.1f} for "
                        f"{map_size}-pixel maps of {side_angle_deg} deg")
    edges = (np.geomspace if cfg.ell_spacing == "log" else np.linspace)(lo, hi, cfg.n_ell + 1)
    empty = np.flatnonzero(mode_counts(map_size, side_angle_deg, edges) == 0)
    if empty.size:
        j = int(empty[0])
        raise DataError(f"stats: ell bin ({edges[j]:.1f}, {edges[j + 1]:.1f}] holds no Fourier mode of "
                        f"{map_size}-pixel maps over {side_angle_deg} deg; use fewer bins (stats.n_ell) "
                        "or linear spacing (stats.ell_spacing)")
    return edges


def threshold_edges(cfg: StatsConfig, sigma: float = 1.0) -> np.ndarray:
    """n_thresholds + 1 edges (kappa) from threshold_min to threshold_max, times ``sigma``
    when they are in units of sigma (pass the reference's pixel standard deviation)."""
    scale = sigma if cfg.threshold_units == "sigma" else 1.0
    return np.linspace(cfg.threshold_min, cfg.threshold_max, cfg.n_thresholds + 1) * scale


def make_bins(cfg: StatsConfig, map_size: int, side_angle_deg: float, sigma: float = 1.0) -> Bins:
    """The stage's bins; sigma is recorded only when the thresholds are in units of it."""
    scale = sigma if cfg.threshold_units == "sigma" else 1.0
    return Bins(tuple(ell_edges(cfg, map_size, side_angle_deg).tolist()),
                tuple(threshold_edges(cfg, sigma).tolist()), scale)
