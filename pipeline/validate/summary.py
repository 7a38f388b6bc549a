"""What `cosmogan validate` concludes: the comparison, its verdicts and the run judged.

summary.json is ``ValidationSummary.to_json()``: the comparison's keys at the top level
(as `cosmogan compare` writes them), plus "verdicts" and "run" when there are some, and
"noise_floor": the same comparison of two independent samples of the reference model (the
reference against a second held-out sample, e.g. test against validation), which says
what sampling alone gives for every figure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.stats.compare import ComparisonSummary
from pipeline.validate.verdicts import Verdicts


@dataclass
class RunInfo:
    """The run a validation judged: its directory, the checkpoint file and its step."""

    dir: str
    checkpoint: str
    step: int


@dataclass
class ValidationSummary:
    comparison: ComparisonSummary
    verdicts: Verdicts | None = None
    run: RunInfo | None = None
    noise_floor: ComparisonSummary | None = None

    def to_json(self) -> dict:
        d = self.comparison.to_json()
        if self.verdicts is not None:
            d["verdicts"] = self.verdicts.to_json()
        if self.run is not None:
            d["run"] = asdict(self.run)
        if self.noise_floor is not None:
            d["noise_floor"] = self.noise_floor.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict) -> ValidationSummary:
        comparison = ComparisonSummary.from_json({k: v for k, v in d.items()
                                                  if k not in ("verdicts", "run", "noise_floor")})
        return cls(comparison, Verdicts.from_json(d["verdicts"]) if d.get("verdicts") else None,
                   RunInfo(**d["run"]) if d.get("run") else None,
                   ComparisonSummary.from_json(d["noise_floor"]) if d.get("noise_floor") else None)
