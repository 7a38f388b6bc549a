"""Peak counts (LensTools convention)."""

from __future__ import annotations

from . import chunking
from .inputs import finish


def peak_counts(maps, thresholds, norm=False, *, dtype=None, device=None, chunk_size=None):
    """Histogram of peak heights per unit threshold.

    A peak is a pixel strictly above its 8 neighbours (periodic boundaries).
    A peak of height kappa counts in bin i when t_i*s <= kappa < t_{i+1}*s
    (s = the map's standard deviation with norm=True, else 1).

    Returns
    -------
    nu : (T,) bin midpoints 0.5*(t_i + t_{i+1})
    n : (T,) or (B, T) number of peaks in each bin divided by the bin width
        t_{i+1} - t_i (threshold units): dN/dnu per map, not per pixel.
    """
    prep, plan, n = chunking.threshold_statistic("peaks", "peaks", maps, thresholds, norm, dtype, device,
                                                 chunk_size)
    return finish(prep, chunking.axis(prep, plan.nu), batched=False), finish(prep, n)
