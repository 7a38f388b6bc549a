"""Comparing two stats tables bin by bin: KS tests, relative errors of means, chi^2.

A is the reference (e.g. held-out simulations), B the candidate (e.g.
generated maps). For every statistic and bin: the two-sample KS test
(scipy.stats.ks_2samp), the relative difference of means (B - A) / |A| with
its standard error; for every statistic: the chi^2 of the mean difference
under the covariance of that difference, with the Hartlap et al. (2007)
factor for the inverse of an estimated covariance.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as sps

from pipeline.data.format import atomic_write_bytes
from pipeline.errors import DataError, os_error_text
from pipeline.stats.table import StatsTable, read_table

KS_ALPHA = 0.05
STATISTICS = ("power_spectrum", "V0", "V1", "V2", "peaks", "pdf")


def statistic_columns(table: StatsTable) -> dict[str, np.ndarray]:
    """Each compared statistic as (n_maps, n_bins), in STATISTICS order."""
    c = table.columns
    return {"power_spectrum": c["power_spectrum"], "V0": c["minkowski"][:, 0], "V1": c["minkowski"][:, 1],
            "V2": c["minkowski"][:, 2], "peaks": c["peaks"], "pdf": c["pdf"]}


@dataclass
class StatisticComparison:
    """One statistic of A (reference) against B (candidate), per bin and overall.

    Per bin: means, (B - A) / |A| of the means and its standard error (None where A's mean
    is 0), KS statistic and p-value. Overall: the worst bin by |relative difference|, the
    median |relative difference|, the worst |difference| over the largest |A mean| (for
    statistics that cross zero or vanish in their tails), the KS summary, and chi^2 of the
    mean difference with its degrees of freedom (None when too few maps for the bins).

    The per-map distributions (what covariances and likelihoods need): per bin the per-map
    standard deviations std_a, std_b (ddof=1), the bias of the mean in units of the
    reference's scatter (B - A) / std_a and the spread ratio std_b / std_a (None where A
    does not vary); overall the largest |bias| / std_a, and the difference of the two
    correlation matrices over the bins (largest |delta rho| off the diagonal and
    ||rho_B - rho_A||_F / ||rho_A||_F, over the bins that vary in both). For the peak counts
    and the pixel PDF, wasserstein_over_sigma is the 1-Wasserstein distance of the pooled
    distributions (peak heights; pixel values) on the threshold bins, in units of the
    reference's pooled pixel sigma (set by compare_tables).
    """

    name: str
    n_bins: int
    mean_a: list
    mean_b: list
    rel_diff: list
    rel_diff_se: list
    ks_statistic: list
    ks_pvalue: list
    worst_bin: int | None
    worst_rel_diff: float | None
    median_abs_rel_diff: float | None
    worst_diff_over_peak: float | None
    ks_min_pvalue: float
    ks_frac_above_alpha: float
    chi2: float | None
    chi2_dof: int
    chi2_pvalue: float | None
    notes: dict = field(default_factory=dict)  # why a figure is None, by field name
    # per-map distributions (defaults: summaries written before they were measured)
    std_a: list = field(default_factory=list)
    std_b: list = field(default_factory=list)
    bias_over_sigma: list = field(default_factory=list)
    sigma_ratio: list = field(default_factory=list)
    max_abs_bias_over_sigma: float | None = None
    corr_max_abs_diff: float | None = None
    corr_rel_frobenius: float | None = None
    wasserstein_over_sigma: float | None = None

    @property
    def reduced_chi2(self) -> float | None:
        return self.chi2 / self.chi2_dof if self.chi2_dof and self.chi2 is not None else None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ComparisonSummary:
    """Every statistic of two stats tables on the same bins (ell in rad^-1, thresholds and
    their midpoints nu in kappa; threshold_sigma: the kappa unit of thresholds in sigma)."""

    reference: str
    candidate: str
    n_reference: int
    n_candidate: int
    ell: list
    l_edges: list
    thresholds: list
    nu: list
    threshold_sigma: float
    ks_alpha: float
    statistics: dict[str, StatisticComparison]

    def to_json(self) -> dict:
        d = asdict(self)
        d["statistics"] = {k: v.to_json() for k, v in self.statistics.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> ComparisonSummary:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k != "statistics"}
        return cls(**fields, statistics={k: StatisticComparison(**v) for k, v in d["statistics"].items()})


def check_comparable(a: StatsTable, b: StatsTable) -> None:
    ha, hb = a.header, b.header
    if ha.map_shape != hb.map_shape or ha.side_angle_deg != hb.side_angle_deg:
        raise DataError(f"{b.path}: made from {hb.map_shape[0]}x{hb.map_shape[1]} maps over "
                        f"{hb.side_angle_deg} deg, but {a.path} from {ha.map_shape[0]}x{ha.map_shape[1]} "
                        f"over {ha.side_angle_deg} deg")
    if ha.bins.l_edges != hb.bins.l_edges:
        raise DataError(f"{b.path}: ell bins differ from those of {a.path} "
                        "(make it with `cosmogan stats --like` the other table)")
    if ha.bins.thresholds != hb.bins.thresholds:
        raise DataError(f"{b.path}: thresholds differ from those of {a.path} "
                        "(make it with `cosmogan stats --like` the other table)")


def compare_statistic(xa: np.ndarray, xb: np.ndarray, name: str = "") -> StatisticComparison:
    """Per-bin and overall comparison of one statistic; xa (n_a, bins), xb (n_b, bins)."""
    na, nb = len(xa), len(xb)
    ma, mb = xa.mean(0), xb.mean(0)
    va, vb = xa.var(0, ddof=1), xb.var(0, ddof=1)
    diff = mb - ma
    se = np.sqrt(va / na + vb / nb)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(ma != 0, diff / np.abs(ma), np.nan)
        rel_se = np.where(ma != 0, se / np.abs(ma), np.nan)
    with warnings.catch_warnings():
        # scipy's exact KS falls back to the asymptotic p-value when it cannot converge (ties,
        # large samples) and says so once per bin; the fallback is the right answer, not news.
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
        ks = [sps.ks_2samp(xa[:, j], xb[:, j]) for j in range(xa.shape[1])]
    ks_p = np.array([r.pvalue for r in ks])
    ks_d = np.array([r.statistic for r in ks])
    chi2, dof, chi2_note = _chi2(xa, xb, diff)
    sa, sb = np.sqrt(va), np.sqrt(vb)
    with np.errstate(divide="ignore", invalid="ignore"):
        bias = np.where(sa > 0, diff / sa, np.nan)
        spread = np.where(sa > 0, sb / sa, np.nan)
    corr_max, corr_frob = correlation_difference(xa, xb)
    finite = np.isfinite(rel)
    worst = int(np.nanargmax(np.abs(rel))) if finite.any() else None
    notes = {}
    if chi2 is None:
        notes["chi2"] = chi2_note
    if not finite.all():
        zero = np.flatnonzero(~finite).tolist()
        notes["rel_diff"] = f"bins {zero} have a reference mean of 0: no relative difference"
    if worst is None:
        notes["worst_rel_diff"] = "every reference mean is 0"
    if not np.abs(ma).max() > 0:
        notes["worst_diff_over_peak"] = "the reference curve is 0 in every bin"
    return StatisticComparison(
        name=name, n_bins=int(xa.shape[1]),
        mean_a=_listify(ma), mean_b=_listify(mb), rel_diff=_listify(rel), rel_diff_se=_listify(rel_se),
        ks_statistic=_listify(ks_d), ks_pvalue=_listify(ks_p),
        worst_bin=worst,
        worst_rel_diff=None if worst is None else float(rel[worst]),
        median_abs_rel_diff=float(np.nanmedian(np.abs(rel))) if finite.any() else None,
        # for statistics that cross zero or fall to zero in their tails (V2, peaks, PDF)
        # a relative error per bin means little; this scales by the statistic's peak amplitude
        worst_diff_over_peak=float(np.abs(diff).max() / np.abs(ma).max()) if np.abs(ma).max() > 0 else None,
        ks_min_pvalue=float(ks_p.min()),
        ks_frac_above_alpha=float((ks_p > KS_ALPHA).mean()),
        chi2=chi2, chi2_dof=dof,
        chi2_pvalue=None if chi2 is None else float(sps.chi2.sf(chi2, dof)), notes=notes,
        std_a=_listify(sa), std_b=_listify(sb), bias_over_sigma=_listify(bias), sigma_ratio=_listify(spread),
        max_abs_bias_over_sigma=float(np.nanmax(np.abs(bias))) if np.isfinite(bias).any() else None,
        corr_max_abs_diff=corr_max, corr_rel_frobenius=corr_frob)


def correlation_difference(xa: np.ndarray, xb: np.ndarray) -> tuple[float | None, float | None]:
    """(largest |rho_B - rho_A| off the diagonal, ||rho_B - rho_A||_F / ||rho_A||_F) of the
    correlation matrices over the bins, on the bins that vary in both; None below 2 such bins."""
    keep = (xa.std(0) > 0) & (xb.std(0) > 0)
    if keep.sum() < 2 or len(xa) < 3 or len(xb) < 3:
        return None, None
    ra, rb = np.corrcoef(xa[:, keep], rowvar=False), np.corrcoef(xb[:, keep], rowvar=False)
    d = rb - ra
    off = ~np.eye(len(d), dtype=bool)
    return float(np.abs(d[off]).max()), float(np.linalg.norm(d) / np.linalg.norm(ra))


def pooled_wasserstein(nu: np.ndarray, xa: np.ndarray, xb: np.ndarray, sigma: float) -> float | None:
    """1-Wasserstein distance between the pooled distributions of a binned statistic (peak
    counts or the PDF per bin, (n, bins)), bins at their centres nu (kappa), in units of
    sigma: scipy.stats.wasserstein_distance with the mean per-bin values as weights. What
    falls outside the bins is not counted; the bin width bounds the resolution."""
    wa, wb = np.clip(xa.mean(0), 0, None), np.clip(xb.mean(0), 0, None)
    if not (wa.sum() > 0 and wb.sum() > 0 and sigma > 0):
        return None
    return float(sps.wasserstein_distance(nu, nu, wa, wb) / sigma)


def _chi2(xa, xb, diff) -> tuple[float | None, int, str]:
    """chi^2 = d^T C^-1 d with C = cov_a/n_a + cov_b/n_b over the bins that vary, times the
    Hartlap factor (n - p - 2)/(n - 1), n the smaller sample, p the bins used; (None, 0,
    why) when no bin varies or there are too few maps for the bins."""
    keep = (xa.std(0) > 0) | (xb.std(0) > 0)
    p = int(keep.sum())
    n = min(len(xa), len(xb))
    if p == 0:
        return None, 0, "no bin varies over the maps"
    if n - p - 2 <= 0:
        return None, 0, f"needs more maps than bins + 2 (Hartlap factor): {n} maps, {p} bins that vary"
    cov = np.cov(xa[:, keep], rowvar=False) / len(xa) + np.cov(xb[:, keep], rowvar=False) / len(xb)
    cov = np.atleast_2d(cov)
    d = diff[keep]
    hartlap = (n - p - 2) / (n - 1)
    chi2 = float(hartlap * d @ np.linalg.lstsq(cov, d, rcond=None)[0])
    return chi2, p, ""


def _listify(a: np.ndarray) -> list:
    """Floats, with None for what is undefined (summary.json is strict JSON)."""
    return [None if not math.isfinite(x) else float(x) for x in a]


def compare_tables(path_a: str | Path, path_b: str | Path) -> ComparisonSummary:
    a, b = read_table(path_a), read_table(path_b)
    check_comparable(a, b)
    for t in (a, b):
        if t.n_maps < 2:
            raise DataError(f"{t.path}: holds {t.n_maps} map; comparing distributions needs at least 2")
    ca, cb = statistic_columns(a), statistic_columns(b)
    bins = a.header.bins
    summary = ComparisonSummary(
        reference=str(path_a), candidate=str(path_b), n_reference=a.n_maps, n_candidate=b.n_maps,
        ell=bins.ell.tolist(), l_edges=list(bins.l_edges), thresholds=list(bins.thresholds), nu=bins.nu.tolist(),
        threshold_sigma=bins.sigma, ks_alpha=KS_ALPHA,
        statistics={name: compare_statistic(ca[name], cb[name], name) for name in ca})
    for name in ("peaks", "pdf"):
        summary.statistics[name].wasserstein_over_sigma = pooled_wasserstein(bins.nu, ca[name], cb[name],
                                                                             _pixel_sigma(a))
    return summary


def _pixel_sigma(table: StatsTable) -> float:
    """The reference's pixel standard deviation (kappa): the threshold unit when thresholds
    are in sigma, else the square root of the mean per-map pixel variance."""
    if table.header.bins.sigma != 1.0:
        return float(table.header.bins.sigma)
    names = table.header.moment_names
    moments = table.columns["moments"]
    if "sigma0" in names:
        return float(np.sqrt(np.mean(moments[:, names.index("sigma0")] ** 2)))
    return float("nan")


def write_summary(summary, out_dir: str | Path) -> None:
    """summary.json (``summary.to_json()``: everything) and summary.md (the comparison's table
    and worst bins), atomically. summary: a ComparisonSummary or anything holding one as
    ``.comparison`` (the validate stage's summary)."""
    out = Path(out_dir)
    comparison = getattr(summary, "comparison", summary)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "summary.json", (json.dumps(summary.to_json(), indent=1, allow_nan=False)
                                                  + "\n").encode())
        atomic_write_bytes(out / "summary.md", summary_markdown(comparison).encode())
    except OSError as e:
        raise DataError(f"{out}: cannot write the summary ({os_error_text(e)})") from None


def summary_markdown(s: ComparisonSummary) -> str:
    lines = [f"# {Path(s.candidate).name} against {Path(s.reference).name}", "",
             f"Reference: `{s.reference}` ({s.n_reference} maps); candidate: `{s.candidate}` "
             f"({s.n_candidate} maps). Relative differences are (candidate - reference) / |reference| "
             f"of the bin means; KS p-values from scipy.stats.ks_2samp (alpha = {s.ks_alpha}).", "",
             "| statistic | bins | median abs rel diff | worst rel diff (bin) | worst diff / peak | min KS p "
             "| bins with KS p > alpha | chi2 / dof |", "|---|---|---|---|---|---|---|---|"]
    for name, r in s.statistics.items():
        worst = "n/a" if r.worst_bin is None else f"{r.worst_rel_diff:+.3%} ({r.worst_bin})"
        med = "n/a" if r.median_abs_rel_diff is None else f"{r.median_abs_rel_diff:.3%}"
        chi = "n/a" if r.reduced_chi2 is None else f"{r.chi2:.1f} / {r.chi2_dof}"
        peak = "n/a" if r.worst_diff_over_peak is None else f"{r.worst_diff_over_peak:.3%}"
        lines.append(f"| {name} | {r.n_bins} | {med} | {worst} | {peak} | {r.ks_min_pvalue:.3g} | "
                     f"{r.ks_frac_above_alpha:.0%} | {chi} |")
    lines += ["", "## Worst bins", ""]
    for name, r in s.statistics.items():
        order = np.argsort([-abs(x) if x is not None else 0 for x in r.rel_diff])[:3]
        axis = s.ell if name == "power_spectrum" else s.nu
        unit = "ell" if name == "power_spectrum" else "kappa"
        items = [f"{unit}={axis[j]:.4g}: {r.rel_diff[j]:+.3%} +- {r.rel_diff_se[j]:.3%}, "
                 f"KS p={r.ks_pvalue[j]:.3g}" for j in order if r.rel_diff[j] is not None]
        lines.append(f"- **{name}**: " + ("; ".join(items) or "no bin with a non-zero reference mean"))
    return "\n".join(lines) + "\n"
