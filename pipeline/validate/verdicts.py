"""The verdicts of `cosmogan validate`: each statistic judged against the validation criteria.

Every statistic has one headline metric with a threshold (the power spectrum: the worst
|relative error| of the mean over the ell bins; the threshold statistics: the worst
|difference of the means| over the reference curve's largest |value|), and, when the
criteria ask for them, a least fraction of bins with KS p > 0.05 and a largest chi^2/dof.
A statistic passes when every check it is given passes; the run passes when all do.
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

    @property
    def metric(self) -> str:
        return METRIC_TEXT[self.kind]

    @property
    def passed(self) -> bool:
        return self.value_ok and self.ks_ok is not False and self.chi2_ok is not False

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["value"] = self.value if math.isfinite(self.value) else None
        return {**d, "metric": self.metric, "pass": self.passed}

    @classmethod
    def from_json(cls, d: dict) -> Verdict:
        fields = {k: d[k] for k in cls.__dataclass_fields__}
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
    return Verdict(statistic=r.name, kind=kind, value=value, threshold=threshold, value_ok=value <= threshold,
                   ks_frac_above=r.ks_frac_above_alpha, ks_min_p=r.ks_min_pvalue, ks_ok=ks_ok,
                   reduced_chi2=reduced, chi2_ok=chi2_ok)


def judge(comparison: ComparisonSummary, vc: ValidationConfig) -> Verdicts:
    return Verdicts({name: judge_statistic(r, vc) for name, r in comparison.statistics.items()}, vc)
