"""The sweep table: one row per item, in HDF5 (sweep.h5) and CSV (sweep.csv).

Each row names the item (run, checkpoint, step, cosmology) and gives, per statistic, the
verdict's headline metric and its threshold, the fraction of bins with KS p > 0.05,
chi^2/dof, the per-map distribution's figures (largest |bias| / sigma, the spread ratio's
range, the largest |delta rho|), ``ratio`` (the largest fraction of an allowance any of its
checks uses, verdicts.allowance_used: above 1 fails) and the pass flag; ``worst_ratio``
is the largest ratio and ``worst_statistic`` its statistic.
Checkpoints are ranked by the worst ratio over their cosmologies.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.data.format import atomic_path, atomic_write_bytes, hdf5_write
from pipeline.stats.compare import STATISTICS
from pipeline.validate.summary import ValidationSummary
from pipeline.validate.sweep_items import SweepItem
from pipeline.validate.verdicts import allowance_used

FORMAT_NAME = "cosmogan-sweep"
FORMAT_VERSION = 1
PER_STATISTIC = ("value", "threshold", "ratio", "ks_frac", "chi2_reduced", "bias", "spread_lo", "spread_hi",
                 "corr_diff", "pass")


@dataclass
class ItemResult:
    """An item and what its validation concluded; checkpoint_sha256 names the weights judged."""

    item: SweepItem
    checkpoint_sha256: str
    summary: ValidationSummary

    def to_json(self) -> dict:
        return {"item": self.item.to_json(), "checkpoint_sha256": self.checkpoint_sha256,
                "summary": self.summary.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> ItemResult:
        return cls(SweepItem.from_json(d["item"]), str(d["checkpoint_sha256"]),
                   ValidationSummary.from_json(d["summary"]))

    def ratio(self, statistic: str) -> float:
        """The largest fraction of an allowance the statistic's checks use (verdicts.allowance_used)."""
        verdicts = self.summary.verdicts
        return max(allowance_used(verdicts.statistics[statistic], verdicts.criteria).values())

    @property
    def worst(self) -> tuple[str, float]:
        """The statistic whose metric uses the most of its threshold, and that fraction."""
        name = max(STATISTICS, key=self.ratio)
        return name, self.ratio(name)

    @property
    def passed(self) -> bool:
        return self.summary.verdicts.passed


@dataclass
class CheckpointRank:
    """A checkpoint judged over all its items (its cosmologies): the worst of them."""

    run_label: str
    step: int
    best: bool
    worst_ratio: float
    worst_statistic: str
    worst_cosmology: str
    n_items: int
    n_passed: int

    @property
    def passed(self) -> bool:
        return self.n_passed == self.n_items


def rank_checkpoints(results: list[ItemResult]) -> list[CheckpointRank]:
    """Checkpoints by their worst ratio, best first (ties: run order, then step)."""
    groups: dict[tuple[str, int], list[ItemResult]] = {}
    for r in results:
        groups.setdefault(r.item.checkpoint_key, []).append(r)
    ranks = []
    for (label, step), items in groups.items():
        worst = max(items, key=lambda r: r.worst[1])
        ranks.append(CheckpointRank(label, step, items[0].item.best, worst.worst[1], worst.worst[0],
                                    worst.item.cosmology_label, len(items), sum(r.passed for r in items)))
    order = {key: i for i, key in enumerate(groups)}
    return sorted(ranks, key=lambda c: (c.worst_ratio, order[(c.run_label, c.step)]))


def columns(results: list[ItemResult]) -> dict[str, list]:
    """The table's columns, in order: the item's identity, the overall figures, then per statistic."""
    names = sorted({n for r in results for n in r.item.param_names})
    cols: dict[str, list] = {k: [] for k in ("run", "run_dir", "checkpoint", "step", "best", "cosmology",
                                             *names, "extrapolated", "pass", "worst_ratio", "worst_statistic")}
    for s in STATISTICS:
        for f in PER_STATISTIC:
            cols[f"{s}_{f}"] = []
    for r in results:
        it, values = r.item, dict(zip(r.item.param_names, r.item.cosmology))
        worst_name, worst_ratio = r.worst
        row = {"run": it.run_label, "run_dir": it.run_dir, "checkpoint": it.checkpoint, "step": it.step,
               "best": it.best, "cosmology": it.cosmology_label, **{n: values.get(n, math.nan) for n in names},
               "extrapolated": it.extrapolated, "pass": r.passed, "worst_ratio": worst_ratio,
               "worst_statistic": worst_name}
        for s in STATISTICS:
            v = r.summary.verdicts.statistics[s]
            row.update({f"{s}_value": v.value, f"{s}_threshold": v.threshold, f"{s}_ratio": r.ratio(s),
                        f"{s}_ks_frac": v.ks_frac_above,
                        f"{s}_chi2_reduced": _nan(v.reduced_chi2), f"{s}_bias": _nan(v.bias),
                        f"{s}_spread_lo": _nan(v.spread_lo), f"{s}_spread_hi": _nan(v.spread_hi),
                        f"{s}_corr_diff": _nan(v.corr_diff), f"{s}_pass": v.passed})
        for k in cols:
            cols[k].append(row[k])
    return cols


def write_table(results: list[ItemResult], out: Path, attrs: dict) -> tuple[Path, Path]:
    """sweep.h5 (a group "items" of one dataset per column; attrs: format, settings) and
    sweep.csv, atomically; returns both paths."""
    cols = columns(results)
    h5, csv_path = out / "sweep.h5", out / "sweep.csv"
    with atomic_path(h5) as tmp, hdf5_write(tmp, 4096 * (len(results) + 1)) as f:
        f.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                        **{k: json.dumps(v) for k, v in attrs.items()}})
        g = f.create_group("items")
        for k, v in cols.items():
            if v and isinstance(v[0], str):
                g.create_dataset(k, data=np.array(v, dtype=object), dtype=h5py.string_dtype())
            else:
                g[k] = np.asarray(v)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(cols)
    for i in range(len(results)):
        writer.writerow([_csv(cols[k][i]) for k in cols])
    atomic_write_bytes(csv_path, text.getvalue().encode())
    return h5, csv_path


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _csv(x):
    if isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, float):
        return "" if math.isnan(x) else ("inf" if math.isinf(x) else f"{x:.6g}")
    return x


def read_table(path: Path) -> dict[str, np.ndarray]:
    """The columns of a sweep.h5 (strings decoded)."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT_NAME:
            from pipeline.errors import DataError

            raise DataError(f"{path}: not a sweep table")
        return {k: (f["items"][k].asstr()[:] if h5py.check_string_dtype(f["items"][k].dtype) else f["items"][k][:])
                for k in f["items"]}
