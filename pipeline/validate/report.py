"""The validation report: a self-contained HTML page (index.html), its Markdown twin
(report.md) and the PNG figures beside them, comparing emulated maps with simulations.

    write_report(summary, reference_table, candidate_table, reference_dir, candidate_dir, out_dir)

``summary`` is a ValidationSummary (pipeline/validate/summary.py): the comparison,
and the validate stage's verdicts per statistic when there are some; without them
the report shows the comparison's numbers and no verdict. The page needs no
server and no network: no external CSS, scripts or fonts; figures are referenced
relatively. A small inline script marks ``<body data-images="ok:N">`` once all N
figures have loaded (``missing:...`` and a visible warning otherwise), which
the headless-browser test reads. Every file is written atomically, index.html
last. What each figure shows and how to read the verdicts: docs/report.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import math
from pathlib import Path

import numpy as np

from pipeline.data.format import atomic_write_bytes
from pipeline.data.loader import MapDataset
from pipeline.errors import DataError, os_error_text
from pipeline.stats.compare import check_comparable, statistic_columns
from pipeline.stats.table import read_table
from pipeline.validate import plots
from pipeline.validate.summary import ValidationSummary
from pipeline.validate.verdicts import Verdict

N_SHOWN_MAPS = 4
MF_NOTE = {"V0": "V0 falls from 1 to 0: a shift of the curve is a shift of the pixel distribution.",
           "V1": "V1 peaks near the most common κ; its height measures how much contour there is (the "
                 "map's gradients, i.e. its small-scale power).",
           "V2": "V2 crosses zero (a ratio would be meaningless there): negative where holes dominate the "
                 "excursion set, positive where isolated hot spots do."}
N_HISTOGRAM_MAPS = 256

DISPLAY = {"power_spectrum": "power spectrum C<sub>ℓ</sub>", "V0": "V0 (area)", "V1": "V1 (boundary)",
           "V2": "V2 (Euler char.)", "peaks": "peak counts", "pdf": "pixel PDF"}
DISPLAY_MD = {"power_spectrum": "power spectrum C_ell", "V0": "V0 (area)", "V1": "V1 (boundary)",
              "V2": "V2 (Euler char.)", "peaks": "peak counts", "pdf": "pixel PDF"}


def write_report(summary: ValidationSummary, reference_table: str | Path, candidate_table: str | Path,
                 reference_dir: str | Path, candidate_dir: str | Path, out_dir: str | Path,
                 title: str = "Emulator validation", reference_rows=None, candidate_rows=None) -> Path:
    """Write report.md, index.html and the figures into out_dir; returns out_dir/index.html.

    reference_table / candidate_table: stats tables on the same bins (the reference =
    simulations, the candidate = the emulator's maps); reference_dir / candidate_dir:
    the datasets they were made from (for the sample maps and the pixel histogram);
    reference_rows: the reference dataset's map indices the table holds (None: all), e.g.
    one cosmology's, so that the pixel figures show those maps only; candidate_rows: the
    same for the candidate dataset.
    """
    out = Path(out_dir)
    ref, emu = read_table(reference_table), read_table(candidate_table)
    check_comparable(ref, emu)
    try:
        out.mkdir(parents=True, exist_ok=True)
        figures = _figures(summary, ref, emu, Path(reference_dir), Path(candidate_dir), out, reference_rows,
                           candidate_rows)
        atomic_write_bytes(out / "report.md", _markdown(summary, figures, title, out).encode())
        index = out / "index.html"
        atomic_write_bytes(index, _html(summary, figures, title, out).encode())
    except OSError as e:
        raise DataError(f"{out}: cannot write the report ({os_error_text(e)})") from None
    return index


# ---------------------------------------------------------------- figures

def _sample(dataset_dir: Path, n_hist: int, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """The first maps (to show) and up to n_hist maps evenly spread over the dataset (histogram),
    of its maps ``rows`` only when given."""
    data = MapDataset(dataset_dir)
    try:
        rows = np.arange(len(data)) if rows is None else np.sort(np.asarray(rows, np.int64))
        n = len(rows)
        shown, _ = data.read(rows[:N_SHOWN_MAPS])
        hist, _ = data.read(rows[np.unique(np.linspace(0, n - 1, min(n_hist, n)).round().astype(np.int64))])
    finally:
        data.close()
    return shown, hist


def _verdict_threshold(summary: ValidationSummary, name: str, kind: str) -> float | None:
    """The verdict's threshold for a statistic when its metric is what the figure's lower panel
    shows (kind: "relative_error" or "diff_over_peak")."""
    v = summary.verdicts.statistics.get(name) if summary.verdicts else None
    return v.threshold if v is not None and v.kind == kind else None


def _figures(summary, ref, emu, ref_dir, emu_dir, out, ref_rows=None, emu_rows=None) -> list[dict]:
    bins = ref.header.bins
    sigma = bins.sigma
    l_edges = np.asarray(bins.l_edges)
    nu = bins.nu / sigma
    in_sigma = sigma != 1.0
    xlabel = ("threshold ν = κ / σ$_κ$" + f"  (σ$_κ$ = {sigma:.3g}, pooled pixel std of the reference)"
              if in_sigma else "threshold κ (dimensionless)")
    ca, cb = statistic_columns(ref), statistic_columns(emu)
    side = ref.header.side_angle_deg
    shown_a, hist_a = _sample(ref_dir, N_HISTOGRAM_MAPS, ref_rows)
    shown_b, hist_b = _sample(emu_dir, N_HISTOGRAM_MAPS, emu_rows)
    nu_word = "ν (units of σ<sub>κ</sub>)" if in_sigma else "κ"
    figs = []

    def add(name, path, caption, wide=False):
        figs.append({"name": name, "file": path.name, "caption": caption, "wide": wide})

    add("Sample maps", plots.sample_maps(shown_a, shown_b, side, out / "maps.png"),
        f"The first {len(shown_a)} reference and {len(shown_b)} emulated maps on one colour scale "
        "(0.5 to 99.5 percentiles of the pixels shown). The emulator should be indistinguishable by eye: "
        "the same filamentary structure, the same rare bright halos, the same contrast.", wide=True)
    add("Pixel histogram", plots.pixel_histogram(hist_a, hist_b, out / "pixel_histogram.png",
                                                 thresholds=np.asarray(bins.thresholds)),
        f"Every pixel of {len(hist_a)} reference and {len(hist_b)} emulated maps (evenly spread over each "
        "dataset), as a density per unit κ on a log scale; below, their ratio with Poisson errors. "
        "The high-κ tail (halos) and the low-κ cut-off (voids) are where GANs most often fail.")
    add("Power spectrum", plots.power_spectrum(bins.ell, l_edges, ca["power_spectrum"], cb["power_spectrum"],
                                               out / "power_spectrum.png",
                                               _verdict_threshold(summary, "power_spectrum", "relative_error")),
        "ℓ(ℓ+1)C<sub>ℓ</sub>/2π, the mean over maps with a band of ±1 per-map standard deviation. "
        "Below: emulator / reference of the means; the blue band is the error of that ratio "
        "(standard errors of both means), dotted lines the verdict's threshold.")
    add("Power-spectrum correlations", plots.correlation_matrices(l_edges, ca["power_spectrum"],
                                                                  cb["power_spectrum"], out / "ps_correlation.png"),
        "Correlation coefficients of C<sub>ℓ</sub> between ℓ bins over the maps, for each sample, and their "
        "difference (right, its own colour scale). Non-Gaussian fields couple scales (off-diagonal correlation, "
        "strongest at high ℓ); a faithful emulator reproduces the pattern, not just the diagonal.", wide=True)
    panels = _distribution_panels(summary, bins, in_sigma)
    if panels:
        crit = summary.verdicts.criteria if summary.verdicts else None
        floor = " Grey: the same measures for two samples of the simulations (the noise floor)." \
            if summary.noise_floor is not None else ""
        add("Per-map distributions", plots.distributions(
            panels, out / "distributions.png", crit.max_bias_over_sigma if crit else None,
            (crit.sigma_ratio_min, crit.sigma_ratio_max) if crit and crit.sigma_ratio_max else None),
            "Top: the difference of the means in units of the reference's per-map standard deviation, bin by bin "
            "(how far one map of the emulator is from one of the simulations, on average, compared with how much "
            "maps differ). Bottom: the ratio of the per-map standard deviations (the spread a covariance or a "
            "likelihood inherits); open circles are bins shown but not judged (peak counts and PDF where the "
            "reference mean is below " + (f"{crit.spread_min_mean_frac:.0%}" if crit else "5%") + " of its largest)."
            " Dotted: the criteria." + floor, wide=True)
    mf = {"V0": ("Minkowski functional V0: area fraction above the threshold", "V0 (fraction of the map)"),
          "V1": ("Minkowski functional V1: boundary length", "V1 (per pixel, per unit κ)"),
          "V2": ("Minkowski functional V2: Euler characteristic", "V2 (per pixel², per unit κ)")}
    for name, (title, ylabel) in mf.items():
        add(f"Minkowski {name}", plots.threshold_statistic(
            nu, ca[name], cb[name], out / f"minkowski_{name}.png", title=title, ylabel=ylabel, xlabel=xlabel,
            threshold=_verdict_threshold(summary, name, "diff_over_peak")),
            f"{name} against the threshold {nu_word}: mean ±1 per-map standard deviation. Below: the difference "
            "of the means over the reference curve's largest |value|, with its error band and the verdict's "
            "threshold (dotted). " + MF_NOTE[name])
    add("Peak counts", plots.threshold_statistic(
        nu, ca["peaks"], cb["peaks"], out / "peaks.png", title="Peak counts (pixels above their 8 neighbours)",
        ylabel="peaks per map per unit κ", xlabel=xlabel, threshold=_verdict_threshold(summary, "peaks", "diff_over_peak")),
        f"Number of local maxima per map by height {nu_word}, mean ±1 per-map standard deviation; below, "
        "difference over the peak of the reference curve. High peaks trace massive halos.")
    add("Pixel PDF", plots.threshold_statistic(
        nu, ca["pdf"], cb["pdf"], out / "pdf.png", title="Pixel PDF per map, in the statistics' threshold bins",
        ylabel="p(κ) (per unit κ)", xlabel=xlabel, threshold=_verdict_threshold(summary, "pdf", "diff_over_peak"),
        logy=True),
        "The one-point PDF measured map by map in the threshold bins the verdict uses (the histogram above pools "
        "the pixels instead): mean ±1 per-map standard deviation, and the difference over its peak below.")
    return figs


def _distribution_panels(summary: ValidationSummary, bins, in_sigma: bool) -> list[dict]:
    """The per-statistic inputs of plots.distributions; [] for a summary without the measures."""
    from pipeline.validate.verdicts import spread_bins

    c = summary.comparison
    if not all(r.bias_over_sigma for r in c.statistics.values()):
        return []
    crit = summary.verdicts.criteria if summary.verdicts else None
    floor = summary.noise_floor.statistics if summary.noise_floor is not None else {}
    nu = (np.asarray(bins.nu) / bins.sigma).tolist()
    panels = []
    for name, r in c.statistics.items():
        judged = set(spread_bins(r, crit)) if crit else {j for j, x in enumerate(r.sigma_ratio) if x is not None}
        f = floor.get(name)
        ps = name == "power_spectrum"
        panels.append({"title": DISPLAY_MD[name], "x": c.ell if ps else nu,
                       "xlabel": "ℓ" if ps else ("ν = κ/σ" if in_sigma else "κ"), "logx": ps and _log_spaced(bins),
                       "bias": r.bias_over_sigma, "ratio": r.sigma_ratio,
                       "judged": [j in judged for j in range(r.n_bins)],
                       "floor_bias": f.bias_over_sigma if f is not None and f.bias_over_sigma else None,
                       "floor_ratio": f.sigma_ratio if f is not None and f.sigma_ratio else None})
    return panels


def _log_spaced(bins) -> bool:
    from pipeline.validate.plots import _log_spaced as log_spaced

    return log_spaced(np.asarray(bins.l_edges))


# ---------------------------------------------------------------- verdict table

def _pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2%}"


def _num(x, fmt=".3g") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def _axis(summary: ValidationSummary, name: str) -> tuple[list, float, str]:
    """A statistic's bin centres, their display unit (1 or sigma) and symbol."""
    c = summary.comparison
    if name == "power_spectrum":
        return c.ell, 1.0, "ℓ"
    sigma = c.threshold_sigma or 1.0
    return c.nu, sigma, "ν" if sigma != 1.0 else "κ"


def _rows(summary: ValidationSummary) -> list[dict]:
    """One row per statistic: the comparison's numbers, each check and its outcome (None: not checked)."""
    verdicts = summary.verdicts
    rows = []
    for name, r in summary.comparison.statistics.items():
        axis, scale, sym = _axis(summary, name)
        worst = "n/a" if r.worst_bin is None else f"{r.worst_rel_diff:+.2%} ({sym}={axis[r.worst_bin] / scale:.3g})"
        chi = "n/a" if r.reduced_chi2 is None else f"{r.reduced_chi2:.3g}"
        if r.chi2_pvalue is not None:
            chi += f" (p={r.chi2_pvalue:.2g})"
        row = {"name": name, "bins": r.n_bins, "worst_rel": worst, "diff_peak": _pct(r.worst_diff_over_peak),
               "ks_min": _num(r.ks_min_pvalue), "ks_frac": f"{r.ks_frac_above_alpha:.0%}", "chi2": chi,
               "ks_ok": None, "chi_ok": None, "verdict": None, "metric": "", "check": "", "value_ok": None}
        v: Verdict | None = verdicts.statistics.get(name) if verdicts else None
        if v is not None:
            crit = verdicts.criteria
            if v.ks_ok is not None:
                row["ks_ok"] = v.ks_ok
                row["ks_frac"] += f" ≥ {crit.ks_min_frac:.0%}" if v.ks_ok else f" < {crit.ks_min_frac:.0%}"
            if v.chi2_ok is not None:
                row["chi_ok"] = v.chi2_ok
                row["chi2"] += f" {'≤' if v.chi2_ok else '>'} {crit.chi2_max_reduced:g}"
            row["value_ok"] = v.value_ok
            row["check"] = f"{_pct(v.value)} {'≤' if v.value_ok else '>'} {_pct(v.threshold)}"
            row["metric"] = v.metric
            row["verdict"] = v.passed
            # named beside FAIL: the criterion columns show the mean's checks only
            row["why"] = v.failed_checks
        rows.append(row)
    return rows


def _banner(summary: ValidationSummary) -> tuple[str, str]:
    """(class, text) of the overall verdict."""
    verdicts = summary.verdicts
    if verdicts is None:
        return "none", "NO VERDICT: no criteria were given; the numbers below are the comparison alone"
    n = len(verdicts.statistics)
    if verdicts.passed:
        return "pass", f"PASS: all {n} statistics within their thresholds"
    failed = verdicts.failed
    means = [k for k, v in verdicts.statistics.items() if not v.mean_passed]
    spreads = [k for k, v in verdicts.statistics.items() if not v.distribution_passed]
    parts = [f"the means of {', '.join(means)}" if means else "",
             f"the per-map distributions of {', '.join(spreads)}" if spreads else ""]
    return "fail", (f"FAIL: {len(failed)} of {n} statistics outside their thresholds: "
                    + "; ".join(p for p in parts if p))


HEAD = ("statistic", "bins", "worst rel. error of the mean (at)", "worst |diff| / peak", "KS min p",
        "bins with KS p > α", "χ²/dof (p)")


def _verdict_table_html(summary: ValidationSummary) -> str:
    rows = _rows(summary)
    has_verdicts = summary.verdicts is not None
    head = list(HEAD) + (["criterion", "value vs threshold", "verdict"] if has_verdicts else [])
    out = ['<table class="verdicts" id="verdict-table">', "<thead><tr>" +
           "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]

    def cell(text, ok=None, raw=False):
        cls = "" if ok is None else (' class="ok"' if ok else ' class="bad"')
        return f"<td{cls}>{text if raw else html.escape(str(text))}</td>"

    for r in rows:
        cells = [cell(DISPLAY.get(r["name"], html.escape(r["name"])), raw=True), cell(r["bins"]),
                 cell(r["worst_rel"]), cell(r["diff_peak"]), cell(r["ks_min"]), cell(r["ks_frac"], r["ks_ok"]),
                 cell(r["chi2"], r["chi_ok"])]
        if has_verdicts:
            if r["verdict"] is None:
                cells += [cell("—"), cell("—"), cell("not judged")]
            else:
                cells += [cell(r["metric"]), cell(r["check"], r["value_ok"]),
                          cell("<b>PASS</b>" if r["verdict"] else f"<b>FAIL</b> ({r['why']})", r["verdict"], raw=True)]
        out.append(f'<tr data-statistic="{html.escape(r["name"])}">' + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def _verdict_table_md(summary: ValidationSummary) -> str:
    rows = _rows(summary)
    has_verdicts = summary.verdicts is not None
    head = [h.replace("|", "\\|") for h in HEAD] + (["criterion", "value vs threshold", "verdict"]
                                                    if has_verdicts else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [DISPLAY_MD.get(r["name"], r["name"]), str(r["bins"]), r["worst_rel"], r["diff_peak"], r["ks_min"],
                 r["ks_frac"], r["chi2"]]
        if has_verdicts:
            if r["verdict"] is None:
                cells += ["-", "-", "not judged"]
            else:
                cells += [r["metric"], r["check"], "**PASS**" if r["verdict"] else f"**FAIL** ({r['why']})"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


DIST_HEAD = ("statistic", "max |Δμ| / σ", "σ ratio (judged bins)", "max |Δρ|", "‖Δρ‖ / ‖ρ‖",
             "W₁ / σ (pooled)", "χ²/dof", "distribution")


def _floor_text(x, fmt) -> str:
    return "" if x is None else f" (floor {format(x, fmt)})"


def _distribution_rows(summary: ValidationSummary) -> list[tuple[str, list[tuple[str, bool | None]]]]:
    """Per statistic: the per-map distribution's figures, each with its noise floor when the
    summary has one, and whether the check on it passed (None: not checked)."""
    from pipeline.validate.verdicts import spread_range

    c, floor = summary.comparison, summary.noise_floor
    if not all(r.bias_over_sigma for r in c.statistics.values()):
        return []
    crit = summary.verdicts.criteria if summary.verdicts else None
    rows = []
    for name, r in c.statistics.items():
        f = floor.statistics.get(name) if floor is not None else None
        v = summary.verdicts.statistics.get(name) if summary.verdicts else None
        lo, hi = spread_range(r, crit) if crit else (None, None)
        flo, fhi = spread_range(f, crit) if crit and f is not None and f.sigma_ratio else (None, None)
        spread = "n/a" if lo is None else f"{lo:.3f} – {hi:.3f}"
        if flo is not None:
            spread += f" (floor {flo:.3f} – {fhi:.3f})"
        cells = [
            (_num(r.max_abs_bias_over_sigma) + _floor_text(f and f.max_abs_bias_over_sigma, ".3g"),
             v.bias_ok if v else None),
            (spread, v.spread_ok if v else None),
            (_num(r.corr_max_abs_diff) + _floor_text(f and f.corr_max_abs_diff, ".3g"), v.corr_ok if v else None),
            (_num(r.corr_rel_frobenius) + _floor_text(f and f.corr_rel_frobenius, ".3g"), None),
            ("—" if r.wasserstein_over_sigma is None else
             _num(r.wasserstein_over_sigma) + _floor_text(f and f.wasserstein_over_sigma, ".3g"), None),
            (_num(r.reduced_chi2) + _floor_text(f and f.reduced_chi2, ".3g"), None),
            ("not judged" if v is None else ("PASS" if v.distribution_passed else "FAIL"),
             None if v is None else v.distribution_passed)]
        rows.append((name, cells))
    return rows


def _distribution_table_html(summary: ValidationSummary) -> str:
    rows = _distribution_rows(summary)
    if not rows:
        return ""
    out = ['<h2>Per-map distributions</h2>', '<table class="verdicts" id="distribution-table">', "<thead><tr>"
           + "".join(f"<th>{html.escape(h)}</th>" for h in DIST_HEAD) + "</tr></thead>", "<tbody>"]
    for name, cells in rows:
        tds = [f"<td>{DISPLAY.get(name, html.escape(name))}</td>"]
        for text, ok in cells:
            cls = "" if ok is None else (' class="ok"' if ok else ' class="bad"')
            tds.append(f"<td{cls}>{html.escape(text)}</td>")
        out.append(f'<tr data-statistic="{html.escape(name)}">' + "".join(tds) + "</tr>")
    out += ["</tbody>", "</table>", '<p class="note">What covariance matrices and likelihoods need: Δμ / σ is the '
            "difference of the means over the reference's per-map standard deviation (per bin, the largest shown); "
            "the σ ratio is emulator / reference of the per-map standard deviations over the judged bins; Δρ "
            "compares the correlation matrices between bins (largest off-diagonal difference, and the relative "
            "Frobenius norm); W₁ / σ is the 1-Wasserstein distance of the pooled distribution (peak heights; "
            "pixel values) on the threshold bins, in units of the pixel σ. The floor is the same figure for two "
            "independent samples of the simulations (<code>--noise-floor</code>): sampling alone gives that much."
            "</p>"]
    return "\n".join(out)


def _distribution_table_md(summary: ValidationSummary) -> str:
    rows = _distribution_rows(summary)
    if not rows:
        return ""
    head = [h.replace("|", "\\|") for h in DIST_HEAD]
    lines = ["## Per-map distributions", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cells in rows:
        lines.append("| " + " | ".join([DISPLAY_MD.get(name, name)] + [t for t, _ in cells]) + " |")
    return "\n".join(lines) + "\n"


def _criteria_items(summary: ValidationSummary) -> list[str]:
    if summary.verdicts is None:
        return []
    crit = dataclasses.asdict(summary.verdicts.criteria)
    return [f"{k} = {v}" + (" (not required)" if v in (0, 0.0) and k in ("ks_min_frac", "chi2_max_reduced") else "")
            for k, v in crit.items()]


def _provenance(summary: ValidationSummary, out: Path) -> list[tuple[str, str]]:
    c = summary.comparison
    items = [("reference (simulations)", f"{c.reference} ({c.n_reference} maps)"),
             ("candidate (emulator)", f"{c.candidate} ({c.n_candidate} maps)")]
    if summary.run is not None:
        run = summary.run
        items.append(("run", f"dir: {run.dir}; checkpoint: {run.checkpoint}; step: {run.step}"))
    if c.threshold_sigma and c.threshold_sigma != 1.0:
        items.append(("threshold unit σ<sub>κ</sub>", f"{c.threshold_sigma:.4g} (pooled pixel std of the reference)"))
    items.append(("KS level α", str(c.ks_alpha)))
    if (out / "summary.json").is_file():
        items.append(("every number", "summary.json, summary.md (beside this page)"))
    items.append(("written", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")))
    return items


# ---------------------------------------------------------------- documents

def _markdown(summary: ValidationSummary, figures: list[dict], title: str, out: Path) -> str:
    _, text = _banner(summary)
    lines = [f"# {title}", "", f"**{text}**", ""]
    for k, v in _provenance(summary, out):
        lines.append(f"- {k.replace('<sub>κ</sub>', '_κ')}: {v}")
    lines += ["", "## Verdicts", "", _verdict_table_md(summary), "", _distribution_table_md(summary)]
    crit = _criteria_items(summary)
    if crit:
        lines += ["Criteria: " + "; ".join(f"`{c}`" for c in crit), ""]
    lines += [("Relative errors are (emulator - reference) / |reference| of the bin means; "
               "|diff| / peak divides by the largest |reference mean|; KS p-values are per bin "
               "(two-sample Kolmogorov-Smirnov); chi^2 uses the covariance of the difference of the means "
               "with the Hartlap factor. See docs/report.md."), "", "## Figures", ""]
    for f in figures:
        caption = f["caption"].replace("<sub>", "_").replace("</sub>", "")
        lines += [f"### {f['name']}", "", f"![{f['name']}]({f['file']})", "", caption, ""]
    return "\n".join(lines)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       color: #1b1b1b; background: #f6f7f9; }
main { max-width: 1320px; margin: 0 auto; padding: 18px 24px 40px; }
h1 { font-size: 1.6em; margin: 0.3em 0 0.4em; }
h2 { font-size: 1.25em; margin: 1.4em 0 0.5em; border-bottom: 1px solid #d0d4da; padding-bottom: 0.2em; }
.banner { font-size: 1.3em; font-weight: 700; padding: 12px 18px; border-radius: 6px; margin: 8px 0 14px;
          color: white; }
.banner.pass { background: #1b7f3b; } .banner.fail { background: #b3261e; } .banner.none { background: #5f6368; }
dl.prov { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; font-size: 0.92em; margin: 0; }
dl.prov dt { font-weight: 600; color: #444; } dl.prov dd { margin: 0; word-break: break-all; }
table { border-collapse: collapse; background: white; font-size: 0.9em; }
th, td { border: 1px solid #cfd3d8; padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #e9ecef; }
table.verdicts td { white-space: nowrap; }
table.verdicts td:nth-child(1), table.verdicts td:nth-child(8) { white-space: normal; }
td.ok { background: #dff3e3; } td.bad { background: #f9dedc; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
figure { margin: 0; background: white; border: 1px solid #d9dde2; border-radius: 6px; padding: 10px; }
figure.wide { grid-column: 1 / -1; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: 0.88em; color: #333; margin-top: 6px; line-height: 1.35; }
figcaption b { color: #111; }
.warn { background: #fff3cd; border: 1px solid #e0c060; padding: 8px 12px; border-radius: 6px; }
.note { font-size: 0.88em; color: #444; max-width: 1100px; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
.ref { color: #0072B2; font-weight: 700; } .emu { color: #D55E00; font-weight: 700; }
"""

SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, bad = [];
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { bad.push(imgs[i].getAttribute("src")); }
  }
  document.body.setAttribute("data-images", bad.length ? "missing:" + bad.join(",") : "ok:" + imgs.length);
  if (bad.length) {
    var w = document.getElementById("image-warning");
    w.textContent = bad.length + " figure(s) failed to load: " + bad.join(", ") +
      ". Keep the PNG files beside index.html.";
    w.hidden = false;
  }
});
"""


def _per_bin_html(summary: ValidationSummary) -> str:
    parts = []
    for name, r in summary.comparison.statistics.items():
        axis, scale, sym = _axis(summary, name)
        sym = {"ℓ": "ℓ (rad<sup>−1</sup>)", "ν": "ν = κ/σ<sub>κ</sub>"}.get(sym, sym)
        rows = []
        for j in range(r.n_bins):
            rel, se = r.rel_diff[j], r.rel_diff_se[j]
            rel_s = "n/a" if rel is None else f"{rel:+.2%} ± {se:.2%}"
            rows.append(f"<tr><td>{j}</td><td>{axis[j] / scale:.4g}</td><td>{_num(r.mean_a[j], '.4g')}</td>"
                        f"<td>{_num(r.mean_b[j], '.4g')}</td><td>{rel_s}</td><td>{_num(r.ks_pvalue[j])}</td></tr>")
        parts.append(f"<details><summary>{DISPLAY.get(name, html.escape(name))}</summary><table><thead><tr>"
                     f"<th>bin</th><th>{sym}</th><th>reference mean</th><th>emulator mean</th>"
                     "<th>relative difference ± error</th><th>KS p</th></tr></thead><tbody>"
                     + "".join(rows) + "</tbody></table></details>")
    return "\n".join(parts)


def _html(summary: ValidationSummary, figures: list[dict], title: str, out: Path) -> str:
    cls, text = _banner(summary)
    esc = html.escape
    prov = "".join(f"<dt>{k}</dt><dd>{esc(v)}</dd>" for k, v in _provenance(summary, out))
    crit = _criteria_items(summary)
    crit_html = ("<p class=\"note\">Criteria: " + "; ".join(f"<code>{esc(c)}</code>" for c in crit) + "</p>"
                 if crit else "")
    figs = []
    for f in figures:
        wide = ' class="wide"' if f["wide"] else ""
        figs.append(f'<figure{wide} id="fig-{esc(f["file"][:-4])}">'
                    f'<a href="{esc(f["file"])}"><img src="{esc(f["file"])}" alt="{esc(f["name"])}"></a>'
                    f'<figcaption><b>{esc(f["name"])}.</b> {f["caption"]}</figcaption></figure>')
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body data-images="pending">
<main>
<h1>{esc(title)}</h1>
<div class="banner {cls}" id="overall">{esc(text)}</div>
<p id="image-warning" class="warn" hidden></p>
<dl class="prov">{prov}</dl>
<h2>Verdicts</h2>
{_verdict_table_html(summary)}
{_distribution_table_html(summary)}
{crit_html}
<p class="note">Relative errors are (emulator − reference) / |reference| of the bin means;
|diff| / peak divides the difference of the means by the largest |reference mean| (for statistics that
cross zero or vanish in their tails); KS p-values are per bin (two-sample Kolmogorov–Smirnov, the fraction
of bins above α = {summary.comparison.ks_alpha} should be near 1 − α for identical distributions);
χ²/dof uses the covariance of the difference of the means with the Hartlap factor (≈ 1 when the samples
agree). Green / red cells are the checks the verdict applies.</p>
<h2>Figures</h2>
<p class="note"><span class="ref">Blue, solid: reference (simulations)</span>;
<span class="emu">orange, dashed: emulator (GAN)</span>. Bands: ±1 standard deviation per map; lower
panels: the quantity the verdict judges, with the error of the mean and the threshold (dotted).</p>
<div class="figs">
{chr(10).join(figs)}
</div>
<h2>Per-bin numbers</h2>
{_per_bin_html(summary)}
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""
