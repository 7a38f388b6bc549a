"""What `cosmogan validate` concludes: the comparison, its verdicts and the run judged.

summary.json is ``ValidationSummary.to_json()``: the comparison's keys at the top level
(as `cosmogan compare` writes them), plus "verdicts" and "run" when there are some.
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

    def to_json(self) -> dict:
        d = self.comparison.to_json()
        if self.verdicts is not None:
            d["verdicts"] = self.verdicts.to_json()
        if self.run is not None:
            d["run"] = asdict(self.run)
        return d

    @classmethod
    def from_json(cls, d: dict) -> ValidationSummary:
        comparison = ComparisonSummary.from_json({k: v for k, v in d.items() if k not in ("verdicts", "run")})
        return cls(comparison, Verdicts.from_json(d["verdicts"]) if d.get("verdicts") else None,
                   RunInfo(**d["run"]) if d.get("run") else None)
