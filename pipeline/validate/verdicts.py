"""The verdicts of `cosmogan validate`: each statistic judged against the validation criteria.

Every statistic has one headline metric with a threshold (the power spectrum: the worst
|relative error| of the mean over the ell bins; the threshold statistics: the worst
|difference of the means| over the reference curve's largest |value|), and, when the
criteria ask for them, a least fraction of bins with KS p > 0.05 and a largest chi^2/dof.
A statistic passes when every check it is given passes; the run passes when all do.

The per-map distributions are checked too, when the criteria ask (validation section):
the largest |bias of the mean| / reference per-map sigma, the range of the ratio of
per-map sigmas (emulator / reference) over the judged bins, and, for the power spectrum,
the largest |difference of correlation coefficients| between ell bins.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from pipeline.config import ValidationConfig, build_typed
from pipeline.stats.compare import ComparisonSummary, StatisticComparison

MetricKind = Literal["relative_error", "diff_over_peak"]
METRIC_TEXT = {"relative_error": "worst |relative error| of the mean",
               "diff_over_peak": "worst |difference| / peak"}


@dataclass
class Verdict:
    """One statistic's checks. kind: what the headline metric measures (and the figure's lower
    panel shows); value: the metric (inf when undefined); ks_ok / chi2_ok: None when the
    criteria do not ask for that check; reduced_chi2: chi^2/dof (None when undefined)."""

    statistic: str
    kind: MetricKind
    value: float
    threshold: float
    value_ok: bool
    ks_frac_above: float
    ks_min_p: float
    ks_ok: bool | None
    reduced_chi2: float | None
    chi2_ok: bool | None
    # the per-map distributions (None: not measured, or not asked for by the criteria)
    bias: float | None = None
    bias_ok: bool | None = None
    spread_lo: float | None = None
    spread_hi: float | None = None
    spread_ok: bool | None = None
    corr_diff: float | None = None
    corr_ok: bool | None = None

    @property
    def metric(self) -> str:
        return METRIC_TEXT[self.kind]

    @property
    def mean_passed(self) -> bool:
        """The checks of the mean: the headline metric, KS and chi^2."""
        return self.value_ok and self.ks_ok is not False and self.chi2_ok is not False

    @property
    def distribution_passed(self) -> bool:
        """The checks of the per-map distribution: bias / sigma, spread ratio, correlations."""
        return self.bias_ok is not False and self.spread_ok is not False and self.corr_ok is not False

    @property
    def passed(self) -> bool:
        return self.mean_passed and self.distribution_passed

    @property
    def failed_checks(self) -> str:
        """What failed, for the report beside FAIL: "mean", "distribution", both or ""."""
        return ", ".join(w for w, ok in (("mean", self.mean_passed), ("distribution", self.distribution_passed))
                         if not ok)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["value"] = self.value if math.isfinite(self.value) else None
        return {**d, "metric": self.metric, "pass": self.passed}

    @classmethod
    def from_json(cls, d: dict) -> Verdict:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if fields["value"] is None:
            fields["value"] = math.inf
        return cls(**fields)


@dataclass
class Verdicts:
    statistics: dict[str, Verdict]
    criteria: ValidationConfig

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.statistics.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, v in self.statistics.items() if not v.passed]

    def to_json(self) -> dict:
        return {"statistics": {k: v.to_json() for k, v in self.statistics.items()}, "pass": self.passed,
                "criteria": dataclasses.asdict(self.criteria)}

    @classmethod
    def from_json(cls, d: dict) -> Verdicts:
        criteria = build_typed(ValidationConfig, d["criteria"], "validation")
        return cls({k: Verdict.from_json(v) for k, v in d["statistics"].items()}, criteria)


def _rule(name: str, vc: ValidationConfig) -> tuple[MetricKind, float]:
    if name == "power_spectrum":
        return "relative_error", vc.ps_max_rel_err
    if name in ("V0", "V1", "V2"):
        return "diff_over_peak", vc.mf_max_err_over_peak
    return "diff_over_peak", {"peaks": vc.peaks_max_err_over_peak, "pdf": vc.pdf_max_err_over_peak}[name]


def judge_statistic(r: StatisticComparison, vc: ValidationConfig) -> Verdict:
    kind, threshold = _rule(r.name, vc)
    raw = r.worst_rel_diff if kind == "relative_error" else r.worst_diff_over_peak
    value = abs(raw) if raw is not None else math.inf
    reduced = r.reduced_chi2
    ks_ok = r.ks_frac_above_alpha >= vc.ks_min_frac if vc.ks_min_frac else None
    chi2_ok = reduced <= vc.chi2_max_reduced if vc.chi2_max_reduced and reduced is not None else None
    bias, (lo, hi) = r.max_abs_bias_over_sigma, spread_range(r, vc)
    corr = r.corr_max_abs_diff if r.name == "power_spectrum" else None
    return Verdict(statistic=r.name, kind=kind, value=value, threshold=threshold, value_ok=value <= threshold,
                   ks_frac_above=r.ks_frac_above_alpha, ks_min_p=r.ks_min_pvalue, ks_ok=ks_ok,
                   reduced_chi2=reduced, chi2_ok=chi2_ok,
                   bias=bias, bias_ok=bias <= vc.max_bias_over_sigma if vc.max_bias_over_sigma and bias is not None
                   else None,
                   spread_lo=lo, spread_hi=hi,
                   spread_ok=(vc.sigma_ratio_min <= lo and hi <= vc.sigma_ratio_max)
                   if vc.sigma_ratio_max and lo is not None else None,
                   corr_diff=corr, corr_ok=corr <= vc.max_corr_diff if vc.max_corr_diff and corr is not None else None)


def spread_bins(r: StatisticComparison, vc: ValidationConfig) -> list[int]:
    """The bins whose spread ratio is judged: the reference varies there and, for the peak
    counts and the PDF, its mean is at least spread_min_mean_frac of its largest."""
    if not r.sigma_ratio:
        return []
    peak = max((abs(m) for m in r.mean_a if m is not None), default=0.0)
    small = r.name in ("peaks", "pdf")
    return [j for j, x in enumerate(r.sigma_ratio)
            if x is not None and not (small and abs(r.mean_a[j] or 0.0) < vc.spread_min_mean_frac * peak)]


def spread_range(r: StatisticComparison, vc: ValidationConfig) -> tuple[float | None, float | None]:
    """(lowest, highest) spread ratio over the judged bins; (None, None) without any."""
    judged = [r.sigma_ratio[j] for j in spread_bins(r, vc)]
    return (min(judged), max(judged)) if judged else (None, None)


def judge(comparison: ComparisonSummary, vc: ValidationConfig) -> Verdicts:
    return Verdicts({name: judge_statistic(r, vc) for name, r in comparison.statistics.items()}, vc)


def allowance_used(v: Verdict, vc: ValidationConfig) -> dict[str, float]:
    """Each applied check's figure as the fraction of its allowance used (above 1 fails):
    "mean" (the headline metric / its threshold), and, when checked, "bias", "spread" (the
    further of the two ends of the ratio's range from 1, relative to the allowed distance)
    and "corr"."""
    used = {"mean": v.value / v.threshold if v.threshold > 0 else math.inf}
    if v.bias_ok is not None:
        used["bias"] = v.bias / vc.max_bias_over_sigma
    if v.spread_ok is not None:
        low = (1 - v.spread_lo) / (1 - vc.sigma_ratio_min) if vc.sigma_ratio_min < 1 else math.inf * (v.spread_lo < 1)
        high = (v.spread_hi - 1) / (vc.sigma_ratio_max - 1) if vc.sigma_ratio_max > 1 else math.inf * (v.spread_hi > 1)
        used["spread"] = max(low, high, 0.0)
    if v.corr_ok is not None:
        used["corr"] = v.corr_diff / vc.max_corr_diff
    return used
