"""One-point pixel PDF (LensTools convention, normalised by all pixels)."""

from __future__ import annotations

from . import chunking
from .inputs import finish


def pixel_pdf(maps, thresholds, norm=False, *, dtype=None, device=None, chunk_size=None):
    """Histogram density of pixel values per unit threshold.

    p_i = #{pixels with t_i*s <= kappa < t_{i+1}*s} / (N^2 (t_{i+1} - t_i)),
    s = the map's standard deviation with norm=True, else 1. Pixels outside
    [t_0 s, t_T s) are counted in N^2 but in no bin, so sum(p * widths) <= 1
    (LensTools/numpy density=True divides by the in-range count instead).

    Returns nu (T,) bin midpoints and p (T,) or (B, T).
    """
    prep, plan, p = chunking.threshold_statistic("pdf", "pdf", maps, thresholds, norm, dtype, device,
                                                 chunk_size)
    return finish(prep, chunking.axis(prep, plan.nu), batched=False), finish(prep, p)
