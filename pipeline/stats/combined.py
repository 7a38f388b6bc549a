"""All statistics of a batch in one pass, sharing the FFT-free work."""

from __future__ import annotations

from . import chunking
from .inputs import finish


def all_statistics(maps, side_angle_deg, l_edges, thresholds, norm=False, *,
                   peak_thresholds=None, pdf_thresholds=None, connected=False,
                   dimensionless=False, dtype=None, device=None, chunk_size=None) -> dict:
    """Every statistic at once; the same numbers as the separate functions.

    The gradient, Hessian, standard deviation and the threshold binning of
    the pixels are computed once and shared. ``thresholds`` are the bins of
    the Minkowski functionals, and of the peaks and PDF unless
    ``peak_thresholds`` / ``pdf_thresholds`` are given. ``norm`` applies to
    all three threshold statistics.

    Returns a dict (arrays like the input: numpy or torch):

    ``ell`` (n_ell,), ``power_spectrum`` (B, n_ell) -- see power_spectrum;
    ``nu`` (T,), ``minkowski`` (B, 3, T) -- V0, V1, V2 as minkowski_functionals;
    ``peak_nu``, ``peaks`` (B, T_peaks) -- as peak_counts;
    ``pdf_nu``, ``pdf`` (B, T_pdf) -- as pixel_pdf;
    ``moments`` (B, 9) float64 -- as moments (names in ``moment_names``).
    A single (N, N) map gives no batch axis.
    """
    prep = chunking.prepare_maps(maps, dtype, device)
    sp = chunking.spectrum_plan(prep.n_side, side_angle_deg, l_edges)
    mf = chunking.threshold_plan(thresholds)
    pk = mf if peak_thresholds is None else chunking.threshold_plan(peak_thresholds,
                                                                   "peak_thresholds")
    pd = mf if pdf_thresholds is None else chunking.threshold_plan(pdf_thresholds,
                                                                  "pdf_thresholds")
    norm = chunking.check_flag(norm, "norm")
    mom = (chunking.check_flag(connected, "connected"),
           chunking.check_flag(dimensionless, "dimensionless"))
    chunk = chunking.check_chunk(chunk_size, prep)
    res = chunking.run(prep, chunk, spectrum=sp, mf=mf, peaks=pk, pdf=pd, moments=mom,
                      norm=norm)
    from .kernels import MOMENT_NAMES
    out = {
        "ell": finish(prep, chunking.axis(prep, sp.ell), batched=False),
        "nu": finish(prep, chunking.axis(prep, mf.nu), batched=False),
        "peak_nu": finish(prep, chunking.axis(prep, pk.nu), batched=False),
        "pdf_nu": finish(prep, chunking.axis(prep, pd.nu), batched=False),
        "moment_names": MOMENT_NAMES,
    }
    for key, val in res.items():
        out[key] = finish(prep, val)
    return out
