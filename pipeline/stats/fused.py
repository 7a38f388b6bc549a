"""Fused CPU kernels, float64 work: one pass over each map's pixels per statistic.

The torch kernels (kernels.py) make about thirty passes over a chunk: each stencil,
product and comparison is its own array. Here compiled loops (numba, in _fused_loops.py)
read each map's periodically padded pixels once per statistic and add into per-cell
totals straight away: one pass for V0/V1/V2 (stencils, |grad|, the curvature ratio, the
threshold cell), one for the peaks, one for the moment sums, one or two for the map's
mean and sigma. The definitions are those of kernels.py (the same cells
j = #{P_k s <= v}, the same unscaled stencils, the same 0/0 limit of the curvature),
so the two paths agree to rounding (tested to 1e-12); kernels.compute_chunk uses this
one for float64 work on the CPU and the torch kernels elsewhere (CUDA, float32).

Sums are per row, then over rows (in float64), as kernels._rowsum does, so a map's
numbers never depend on the other maps of its chunk. Compiled on first use and cached
beside the module (numba's cache; a user-wide one when that is read-only).
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np

N_MOMENT_SUMS = 8  # sums of g2, x^3, x^2 lap, g2 lap, x^4, x^3 lap, x g2 lap, g2^2 (unscaled)


@functools.lru_cache(maxsize=None)  # asked once per chunk; the answer cannot change
def available() -> bool:
    """numba is installed (imported only when a statistic first runs: the stages that
    compute none do not pay for it). Without it the torch kernels serve the CPU too."""
    return importlib.util.find_spec("numba") is not None


def _plan_args(plan):
    """(points, uniform, step) of a ThresholdPlan, or empty ones for no plan."""
    if plan is None:
        return np.zeros(0), False, 1.0
    return np.ascontiguousarray(plan.points, dtype=np.float64), bool(plan.uniform), float(plan.step)


def chunk_totals(x: np.ndarray, mf, peaks, pdf, moments: bool, norm: bool) -> dict:
    """Per-cell totals of a (B, N, N) float64 or float32 chunk (C-contiguous), in float64.

    mf, peaks, pdf: ThresholdPlans or None. Returns numpy arrays: ``sigma`` (B,) (the
    maps' standard deviations when norm or moments, else zeros), and for the plans given
    ``counts``, ``s1``, ``s2`` (B, L_mf), ``peaks`` (B, L_peaks), ``pdf`` (B, L_pdf),
    ``moment_sums`` (B, N_MOMENT_SUMS): the quantities kernels.compute_chunk turns into
    statistics, with the MF cells shared by the PDF and peaks when their plans are the same.
    """
    b = x.shape[0]
    mf_pts, mf_uni, mf_step = _plan_args(mf)
    pk_pts, pk_uni, pk_step = _plan_args(peaks)
    pdf_pts, pdf_uni, pdf_step = _plan_args(pdf)
    pdf_same = pdf is not None and pdf is mf

    def cells(plan):
        return np.zeros((b, plan.n_cells if plan is not None else 1))

    sig = np.zeros(b)
    counts, s1, s2 = cells(mf), cells(mf), cells(mf)
    pk, pd = cells(peaks), cells(pdf)
    mom = np.zeros((b, N_MOMENT_SUMS))
    from ._fused_loops import _chunk_totals

    _chunk_totals(x, norm, mf is not None, mf_pts, mf_uni, mf_step,
                  peaks is not None, pk_pts, pk_uni, pk_step,
                  pdf is not None, pdf_same, pdf_pts, pdf_uni, pdf_step,
                  moments, sig, counts, s1, s2, pk, pd, mom)
    out = {"sigma": sig}
    if mf is not None:
        out.update(counts=counts, s1=s1, s2=s2)
    if peaks is not None:
        out["peaks"] = pk
    if pdf is not None:
        out["pdf"] = pd
    if moments:
        out["moment_sums"] = mom
    return out


def pixel_sums(maps: np.ndarray) -> tuple[float, float]:
    """(sum, sum of squares) of all pixels of a (B, N, N) float32/float64 array, in float64,
    without a float64 copy of it (the stats stage's pooled sigma)."""
    from ._fused_loops import pixel_sums as sums

    return sums(np.ascontiguousarray(maps))
