"""The figures of a conditional validation, per category of cosmology, as a Markdown table.

    python benchmarks/conditional_summary.py reports/conditional [more reports...]

Reads REPORT/summary.json (cosmogan validate on a conditional run) and prints, per
category (training, held-out, edge): how many cosmologies meet the mean criteria, the
median and worst of the power spectrum's worst-bin error, the worst of the other
statistics' errors over peak, the largest per-map bias and spread ratio of any statistic
(median over the category's cosmologies), then the interpolation and response checks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def rows(report: Path) -> list[str]:
    d = json.loads((report / "summary.json").read_text())
    out = [f"{report} (step {d['run']['step']}, {d['n_per_cosmology']} maps per cosmology):", "",
           "| category | cosmologies | means pass | P(l) worst bin: median / worst | other statistics: median / worst "
           "(of peak) | distributions pass | largest \\|bias\\|/σ: median / worst | largest σ ratio: median |",
           "|---|---|---|---|---|---|---|---|"]
    for cat in ("training", "held-out", "edge", "extrapolated"):
        rs = [c for c in d["cosmologies"] if c["category"] == cat]
        if not rs:
            continue
        stats = [c["summary"]["verdicts"]["statistics"] for c in rs]
        ps = [s["power_spectrum"]["value"] for s in stats]
        other = [max(v["value"] for k, v in s.items() if k != "power_spectrum") for s in stats]
        # per cosmology, the largest per-map bias (in the physical model's per-map sigma) and
        # the largest spread ratio of any statistic's judged bins
        bias = [max(v["bias"] for v in s.values() if v.get("bias") is not None) for s in stats]
        spread = [max(v["spread_hi"] for v in s.values() if v.get("spread_hi") is not None) for s in stats]
        out.append(f"| {cat} | {len(rs)} | {sum(c['mean_pass'] for c in rs)} | {np.median(ps):.1%} / {max(ps):.1%} | "
                   f"{np.median(other):.1%} / {max(other):.1%} | {sum(c['distribution_pass'] for c in rs)} | "
                   f"{np.median(bias):.2f} / {max(bias):.2f} | {np.median(spread):.2f} |")
    interp = [c for c in d["cosmologies"] if c["interpolation"]]
    out.append("")
    out.append(f"interpolation (chi2 at the truth < at the nearest training cosmology): "
               f"{sum(c['interpolation']['pass'] for c in interp)} of {len(interp)}")
    for r in d["responses"]:
        out.append(f"response to {r['parameter']} {np.round(r['a'], 4).tolist()} -> {np.round(r['b'], 4).tolist()}: worst {r['ps_worst']:.1%} in the C_l ratio (noise {r.get('ps_worst_noise') or float('nan'):.1%} there)")
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print("\n".join(rows(Path(arg))))
        print()
