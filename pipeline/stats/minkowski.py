"""Minkowski functionals V0, V1, V2 of excursion sets (LensTools convention)."""

from __future__ import annotations

from . import chunking
from .inputs import finish


def minkowski_functionals(maps, thresholds, norm=False, *, dtype=None, device=None,
                          chunk_size=None):
    """The three Minkowski functionals of the excursion sets of each map.

    Parameters
    ----------
    maps : array or tensor, (N, N) or (B, N, N); kappa (dimensionless)
    thresholds : 1-D array, strictly increasing, at least 2 entries
        Bin edges t_0 < ... < t_T in kappa (norm=False) or in units of each
        map's standard deviation sigma (norm=True).
    norm : bool
        As LensTools: the edges used for binning are t_i * sigma (sigma =
        the map's population standard deviation), the divisions are by the
        widths t_{i+1} - t_i in threshold units, and the integrands are those
        of kappa itself (not kappa / sigma).

    Returns
    -------
    nu : (T,) bin midpoints 0.5*(t_i + t_{i+1})
    v0 : fraction of pixels with kappa >= midpoint_i (* sigma)
    v1 : sum over pixels with t_i*s <= kappa < t_{i+1}*s of |grad kappa|/4,
         divided by N^2 (t_{i+1} - t_i)
    v2 : same with the curvature term
         (2 gx gy hxy - gx^2 hyy - gy^2 hxx) / (gx^2 + gy^2) / (2 pi)
    Each of shape (T,) or (B, T). Derivatives are periodic central
    differences in pixel units (x along the last axis). See
    docs/statistics.md for the formulas and for how they relate to Tomita's.
    """
    prep, plan, mf = chunking.threshold_statistic("mf", "minkowski", maps, thresholds, norm, dtype, device,
                                                 chunk_size)
    nu = finish(prep, chunking.axis(prep, plan.nu), batched=False)
    return nu, finish(prep, mf[:, 0]), finish(prep, mf[:, 1]), finish(prep, mf[:, 2])
