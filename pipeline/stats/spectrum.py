"""Angular power spectrum C_ell of flat-sky convergence maps (LensTools convention)."""

from __future__ import annotations

from . import chunking
from .inputs import finish


def power_spectrum(maps, side_angle_deg, l_edges, *, dtype=None, device=None,
                   chunk_size=None):
    """Binned angular power spectrum C_ell of periodic square maps.

    Parameters
    ----------
    maps : array or tensor, (N, N) or (B, N, N)
        Convergence kappa (dimensionless).
    side_angle_deg : float
        Side of the (square) map in degrees; theta = side in radians.
    l_edges : 1-D array, strictly increasing, >= 0
        Multipole bin edges in radians^-1. A mode belongs to bin k when
        l_edges[k] < ell <= l_edges[k+1].
    dtype : None, float32 or float64
        Working precision; None means float64 on CPU, float32 on CUDA.
    device : optional torch device to compute on (numpy input is moved there
        and the result comes back as numpy).

    Returns
    -------
    ell : (n_bins,) bin centres 0.5*(l_edges[1:] + l_edges[:-1]), radians^-1
    cl : (n_bins,) or (B, n_bins)
        C_ell (not ell(ell+1)C_ell/2pi), in steradians (kappa^2 sr): the mean of
        |rfft2(kappa)|^2 over the rfft2 half-plane modes of the bin, times
        (theta_rad / N^2)^2; 0 for a bin with no mode. ell of a mode is
        (2 pi / theta_rad) * sqrt(min(i, N-i)^2 + j^2), i the row frequency
        index, j = 0..N/2 the column one. See docs/statistics.md.
    """
    prep = chunking.prepare_maps(maps, dtype, device)
    plan = chunking.spectrum_plan(prep.n_side, side_angle_deg, l_edges)
    chunk = chunking.check_chunk(chunk_size, prep)
    res = chunking.run(prep, chunk, spectrum=plan)
    return (finish(prep, chunking.axis(prep, plan.ell), batched=False),
            finish(prep, res["power_spectrum"]))


def mode_counts(n_side: int, side_angle_deg, l_edges):
    """Number of rfft2 half-plane modes in each ell bin (numpy int64 array).

    These are the modes averaged by :func:`power_spectrum`. Note that modes of
    the j=0 and j=N/2 columns come in complex-conjugate pairs that are both
    counted (as LensTools does), so they are not all independent.
    """
    plan = chunking.spectrum_plan(int(n_side), side_angle_deg, l_edges)
    return plan.hits.copy()
