"""One-point pixel PDF (LensTools convention, normalised by all pixels)."""

from __future__ import annotations

from . import _driver
from ._backend import finish


def pixel_pdf(maps, thresholds, norm=False, *, dtype=None, device=None, chunk_size=None):
    """Histogram density of pixel values per unit threshold.

    p_i = #{pixels with t_i*s <= kappa < t_{i+1}*s} / (N^2 (t_{i+1} - t_i)),
    s = the map's standard deviation with norm=True, else 1. Pixels outside
    [t_0 s, t_T s) are counted in N^2 but in no bin, so sum(p * widths) <= 1
    (LensTools/numpy density=True divides by the in-range count instead).

    Returns nu (T,) bin midpoints and p (T,) or (B, T).
    """
    prep = _driver.prepare_maps(maps, dtype, device)
    plan = _driver.threshold_plan(thresholds)
    norm = _driver.check_flag(norm, "norm")
    chunk = _driver.check_chunk(chunk_size, prep)
    p = _driver.run(prep, chunk, pdf=plan, norm=norm)["pdf"]
    return finish(prep, _driver.axis(prep, plan.nu), batched=False), finish(prep, p)
