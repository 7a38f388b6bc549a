"""The report of a conditional emulator's validation: index.html, report.md and five figures.

* ``plane.png``: the worst power-spectrum error at every cosmology over the (first two)
  parameters, the training design and the support marked;
* ``spectra.png``: mean power spectra at up to four cosmologies, emulator and reference,
  one colour per cosmology, and their ratio;
* ``response.png``: how the power spectrum and the peak counts change between two
  cosmologies one parameter apart, emulator against the physical model;
* ``parameter_line.png``: one latent vector z rendered as sigma_8 rises (and as Omega_m
  does), the other parameter at the centre of the support;
* ``cosmology_errors.png``: every statistic's headline metric at every cosmology, against
  its threshold, grouped by category.
The headline says PASS only when every cosmology inside the support passes every check,
the emulator interpolates at every held-out cosmology and every response holds.
"""

from __future__ import annotations

import datetime
import html
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pipeline.data.format import atomic_write_bytes
from pipeline.emulator import Emulator, latent
from pipeline.stats.compare import STATISTICS, statistic_columns
from pipeline.stats.table import read_table
from pipeline.validate import plots
from pipeline.validate.conditional import CATEGORIES, ConditionalSummary, CosmologyResult
from pipeline.validate.report import CSS, DISPLAY_MD, SCRIPT

COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")
MARKERS = {"training": "s", "held-out": "o", "edge": "D", "extrapolated": "X"}
LINE_MAPS = 6


def write_conditional_report(summary: ConditionalSummary, emulator: Emulator, ref_table: Path, gen_table: Path,
                             out: Path) -> Path:
    """Write the figures, report.md, summary.json and index.html (last) into out."""
    import json

    ref_t, gen_t = read_table(ref_table), read_table(gen_table)
    points = np.array([r.point for r in summary.results])
    ref_of = _row_cosmology(ref_t, points, summary.param_names)
    gen_of = gen_t.columns["index"] // summary.n_per_cosmology
    figures = [
        ("Worst power-spectrum error over the parameter plane", _plane(summary, out / "plane.png"),
         "The worst |relative error| of the mean C<sub>ℓ</sub> over the ℓ bins at every cosmology of the reference "
         "(the number beside each point, in %). Squares: training cosmologies; circles: held-out inside the "
         "support; diamonds: on its edge; crosses: outside it. Dashed: the training support."),
        ("Power spectra across cosmologies", _spectra(summary, ref_t, gen_t, ref_of, gen_of, out / "spectra.png"),
         "Mean ℓ(ℓ+1)C<sub>ℓ</sub>/2π at up to four cosmologies (held-out first), reference solid and emulator "
         "dashed in the same colour; below, emulator / reference with the verdict's threshold dotted."),
    ]
    if summary.responses:
        figures.append(("Response to the parameters", _response(summary, out / "response.png"),
                        "The ratio of mean statistics between two cosmologies that differ in one parameter only "
                        "(held-out or edge ones), reference solid and emulator dashed: what an inference "
                        "uses to tell cosmologies apart. Peak counts are shown where the reference's mean counts are "
                        "at least 5% of their largest at both."))
    figures.append(("One z along a line in parameter space", _parameter_line(emulator, summary,
                                                                              out / "parameter_line.png"),
                    "The same latent vector z rendered at rising values of each parameter, the other at the "
                    "centre of the support, on one colour scale per row: the emulator's picture of how the "
                    "cosmology shapes a map."))
    figures.append(("Every statistic at every cosmology", _errors(summary, out / "cosmology_errors.png"),
                    "Each statistic's headline metric (the power spectrum's worst relative error; the others' "
                    "worst difference over peak) at every cosmology, by category, over its threshold: "
                    "above 1 fails."))
    atomic_write_bytes(out / "summary.json", (json.dumps(summary.to_json(), indent=1) + "\n").encode())
    atomic_write_bytes(out / "report.md", _markdown(summary, figures).encode())
    index = out / "index.html"
    atomic_write_bytes(index, _html(summary, figures).encode())
    return index


def _row_cosmology(table, points: np.ndarray, names) -> np.ndarray:
    """Each table row's cosmology number, by its parameters."""
    cols = [table.header.param_names.index(n) for n in names]
    p = np.asarray(table.columns["params"], np.float64)[:, cols]
    return np.abs(p[:, None, :] - points[None]).max(2).argmin(1)


def headline(summary: ConditionalSummary) -> tuple[str, str, list[str]]:
    """(class, banner text, one line per group) of the overall verdict."""
    lines = []
    for cat in CATEGORIES:
        rs = summary.group(cat)
        if not rs:
            continue
        means = sum(r.mean_passed for r in rs)
        dists = sum(r.distribution_passed for r in rs)
        lines.append(f"{cat} cosmologies: means pass at {means} of {len(rs)}, per-map distributions at "
                     f"{dists} of {len(rs)}" + (" (not judged: outside the support)" if cat == "extrapolated" else ""))
    interp = [r for r in summary.results if r.interpolation is not None]
    if interp:
        lines.append(f"interpolation: the emulator is nearer the physical model at its own cosmology than at the "
                     f"nearest training one at {sum(r.interpolation.passed for r in interp)} of {len(interp)}")
    for x in summary.responses:
        lines.append(f"response to {x.parameter} ({_point(summary, x.a)} → {_point(summary, x.b)}): worst "
                     f"{x.ps_worst:.1%} in the power spectrum ratio (allowed {x.tolerance:.0%}; sampling noise "
                     f"{x.ps_worst_noise:.1%} in that bin)")
    if summary.passed:
        return "pass", "PASS: every cosmology inside the support meets every criterion", lines
    failing = [r for r in summary.results if r.category != "extrapolated"
               and not (r.mean_passed and r.distribution_passed)]
    parts = []
    if failing:
        parts.append(f"{len(failing)} of {sum(r.category != 'extrapolated' for r in summary.results)} cosmologies "
                     "inside the support miss a criterion")
    if summary.interpolation_passed is False:
        parts.append("the emulator does not interpolate at every held-out cosmology")
    bad = [x.parameter for x in summary.responses if not x.passed]
    if bad:
        parts.append(f"its response to {', '.join(bad)} differs from the physical model's")
    return "fail", "FAIL: " + "; ".join(parts) + " (below)", lines


def _point(summary: ConditionalSummary, p) -> str:
    return ", ".join(f"{n}={v:.4g}" for n, v in zip(summary.param_names, p))


# ---------------------------------------------------------------- figures

def _worst(r: CosmologyResult, stat: str) -> float:
    v = r.summary.verdicts.statistics[stat]
    return v.value


def _plane(summary: ConditionalSummary, path: Path) -> Path:
    points = np.array([r.point for r in summary.results])
    err = np.array([_worst(r, "power_spectrum") for r in summary.results])
    threshold = summary.results[0].summary.verdicts.criteria.ps_max_rel_err
    fig = Figure(figsize=(6.2, 5.0))
    with matplotlib.rc_context(plots.STYLE):
        ax = fig.add_subplot()
        y = points[:, 1] if points.shape[1] > 1 else np.zeros(len(points))
        for cat in CATEGORIES:
            idx = [i for i, r in enumerate(summary.results) if r.category == cat]
            if not idx:
                continue
            sc = ax.scatter(points[idx, 0], y[idx], c=np.minimum(err[idx], 3 * threshold), cmap="viridis",
                            vmin=0, vmax=3 * threshold, marker=MARKERS[cat], s=70, edgecolors="k", linewidths=0.6,
                            label=cat)
        for (x0, y0), e in zip(np.c_[points[:, 0], y], err):
            ax.annotate(f"{100 * e:.0f}", (x0, y0), textcoords="offset points", xytext=(5, 5), fontsize=7.5)
        lo, hi = summary.support["low"], summary.support["high"]
        if len(lo) > 1:
            ax.add_patch(Rectangle((lo[0], lo[1]), hi[0] - lo[0], hi[1] - lo[1], fill=False, linestyle="--",
                                   edgecolor="grey"))
            ax.set_ylabel(summary.param_names[1])
        ax.set_xlabel(summary.param_names[0])
        cb = fig.colorbar(sc, ax=ax)
        cb.set_label(f"worst |rel. error| of mean C_ℓ (threshold {threshold:.0%}; clipped at 3x)")
        ax.legend(loc="upper left", fontsize=7.5)
        ax.set_title("Worst power-spectrum error per cosmology (%)")
    return plots.save(fig, path)


def _display_order(summary: ConditionalSummary, k: int = 4) -> list[int]:
    """Up to k cosmologies to overlay: held-out and edge first, then training, spread out."""
    order = [i for i, r in enumerate(summary.results) if r.category in ("held-out", "edge")]
    order += [i for i, r in enumerate(summary.results) if r.category not in ("held-out", "edge")]
    if len(order) <= k:
        return order
    return [order[j] for j in np.unique(np.linspace(0, len(order) - 1, k).round().astype(int))] \
        if len(order) > 2 * k else order[:k]


def _spectra(summary, ref_t, gen_t, ref_of, gen_of, path: Path) -> Path:
    bins = ref_t.header.bins
    ell = bins.ell
    ref_ps, gen_ps = statistic_columns(ref_t)["power_spectrum"], statistic_columns(gen_t)["power_spectrum"]
    threshold = summary.results[0].summary.verdicts.criteria.ps_max_rel_err
    fig = Figure(figsize=(7.0, 6.0))
    with matplotlib.rc_context(plots.STYLE):
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
        scale = ell * (ell + 1) / (2 * np.pi)
        for color, c in zip(COLORS, _display_order(summary)):
            r = summary.results[c]
            a, b = ref_ps[ref_of == c].mean(0), gen_ps[gen_of == c].mean(0)
            label = f"{_point(summary, r.point)} ({r.category})"
            top.plot(ell, scale * a, color=color, linewidth=1.6, label=label)
            top.plot(ell, scale * b, color=color, linewidth=1.6, linestyle="--")
            bottom.plot(ell, b / a, color=color, linestyle="--", marker="o", markersize=3)
        top.set_yscale("log")
        top.set_ylabel("ℓ(ℓ+1)C_ℓ / 2π")
        top.legend(fontsize=7.5, title="solid: reference, dashed: emulator", title_fontsize=7.5)
        for t in (1 - threshold, 1 + threshold):
            bottom.axhline(t, color="grey", linestyle=":", linewidth=1)
        bottom.axhline(1, color="k", linewidth=0.8)
        bottom.set_ylabel("emulator / reference")
        bottom.set_xlabel("multipole ℓ")
    return plots.save(fig, path)


def _response(summary: ConditionalSummary, path: Path) -> Path:
    shown = []
    for name in summary.param_names:  # one pair per parameter, the first found
        pair = next((x for x in summary.responses if x.parameter == name), None)
        if pair is not None:
            shown.append(pair)
    fig = Figure(figsize=(8.4, 3.2 * len(shown)))
    with matplotlib.rc_context(plots.STYLE):
        axes = np.atleast_2d(fig.subplots(len(shown), 2, squeeze=False))
        ell = np.asarray(summary.results[0].summary.comparison.ell)
        nu = np.asarray(summary.results[0].summary.comparison.nu) / summary.results[0].summary.comparison.threshold_sigma
        for (ax_ps, ax_pk), x in zip(axes, shown):
            title = f"{_point(summary, x.b)} over {_point(summary, x.a)}"
            ax_ps.plot(ell, x.ps_ratio_reference, color=plots.REF_COLOR, label=plots.REF_LABEL)
            band = np.asarray(x.ps_ratio_reference) * np.asarray(x.ps_noise)
            ax_ps.fill_between(ell, np.asarray(x.ps_ratio_reference) - band, np.asarray(x.ps_ratio_reference) + band,
                               color=plots.REF_COLOR, alpha=0.2, linewidth=0, label="±1σ sampling noise of the ratio")
            ax_ps.plot(ell, x.ps_ratio_emulator, color=plots.EMU_COLOR, linestyle="--", label=plots.EMU_LABEL)
            ax_ps.set_title(f"C_ℓ ratio: {title}", fontsize=8.5)
            ax_ps.set_xlabel("multipole ℓ")
            ax_ps.legend(fontsize=7.5)
            ref_pk = np.array([np.nan if v is None else v for v in x.peaks_ratio_reference])
            emu_pk = np.array([np.nan if v is None else v for v in x.peaks_ratio_emulator])
            ax_pk.plot(nu, ref_pk, color=plots.REF_COLOR)
            ax_pk.plot(nu, emu_pk, color=plots.EMU_COLOR, linestyle="--")
            ax_pk.set_title("peak-count ratio", fontsize=8.5)
            ax_pk.set_xlabel("threshold ν (pooled σ of the reference)")
            ax_pk.set_yscale("log")
        fig.tight_layout()
    return plots.save(fig, path)


def _parameter_line(emulator: Emulator, summary: ConditionalSummary, path: Path) -> Path:
    lo, hi = np.array(summary.support["low"]), np.array(summary.support["high"])
    centre = (lo + hi) / 2
    order = list(range(len(lo)))[::-1]  # sigma_8 (the last) first: the seed's picture
    z = latent(0, 0, emulator.z_dim)[None].repeat(LINE_MAPS, 1)
    fig = Figure(figsize=(1.9 * LINE_MAPS, 2.2 * len(order)))
    with matplotlib.rc_context(plots.STYLE):
        axes = np.atleast_2d(fig.subplots(len(order), LINE_MAPS, squeeze=False))
        for row, j in zip(axes, order):
            params = np.tile(centre, (LINE_MAPS, 1))
            params[:, j] = np.linspace(lo[j], hi[j], LINE_MAPS)
            maps = emulator.maps_from_latent(z, params)
            vmin, vmax = np.percentile(maps, [0.5, 99.5])
            for ax, m, p in zip(row, maps, params):
                ax.imshow(m, cmap="inferno", vmin=vmin, vmax=vmax, origin="lower")
                ax.set_title(f"{summary.param_names[j]}={p[j]:.3g}", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
        fig.tight_layout()
    return plots.save(fig, path)


def _errors(summary: ConditionalSummary, path: Path) -> Path:
    fig = Figure(figsize=(9.0, 3.6))
    with matplotlib.rc_context(plots.STYLE):
        ax = fig.add_subplot()
        order = [i for cat in CATEGORIES for i, r in enumerate(summary.results) if r.category == cat]
        x = np.arange(len(order))
        for k, stat in enumerate(STATISTICS):
            y = [summary.results[i].summary.verdicts.statistics[stat].value
                 / summary.results[i].summary.verdicts.statistics[stat].threshold for i in order]
            ax.plot(x + (k - 2.5) * 0.1, y, linestyle="none", marker="o", markersize=3.5, label=DISPLAY_MD.get(stat, stat))
        ax.axhline(1, color="grey", linestyle=":")
        cats = [summary.results[i].category for i in order]
        for cat in CATEGORIES:
            idx = [j for j, c in enumerate(cats) if c == cat]
            if idx:
                ax.axvspan(idx[0] - 0.5, idx[-1] + 0.5, color="grey", alpha=0.06 * (1 + CATEGORIES.index(cat) % 2))
                ax.text((idx[0] + idx[-1]) / 2, 0.98, cat, transform=ax.get_xaxis_transform(), ha="center",
                        va="top", fontsize=8)
        ax.set_xticks(x)
        ax.set_xticklabels([_point(summary, summary.results[i].point).replace(", ", "\n") for i in order],
                           rotation=90, fontsize=5.5)
        ax.set_ylabel("metric / threshold")
        ax.legend(ncol=6, fontsize=7, loc="upper right", bbox_to_anchor=(1, 1.18))
        fig.tight_layout()
    return plots.save(fig, path)


# ---------------------------------------------------------------- tables and pages

TABLE_HEAD = ("cosmology", "category", "maps (ref / emu)", "P(ℓ) worst", "V0", "V1", "V2", "peaks", "PDF",
              "max |Δμ|/σ", "σ ratio range", "χ² truth / nearest", "means", "distributions")


def _cells(summary: ConditionalSummary, r: CosmologyResult) -> list[tuple[str, bool | None]]:
    v = r.summary.verdicts.statistics
    c = r.summary.comparison
    bias = max((x.bias for x in v.values() if x.bias is not None), default=None)
    lows = [x.spread_lo for x in v.values() if x.spread_lo is not None]
    highs = [x.spread_hi for x in v.values() if x.spread_hi is not None]
    interp = r.interpolation
    return [(_point(summary, r.point), None), (r.category, None), (f"{c.n_reference} / {c.n_candidate}", None)] + [
        (f"{v[s].value:.1%}", v[s].value_ok) for s in STATISTICS] + [
        ("–" if bias is None else f"{bias:.2f}", all(x.bias_ok is not False for x in v.values())),
        ("–" if not lows else f"{min(lows):.2f}–{max(highs):.2f}", all(x.spread_ok is not False for x in v.values())),
        ("–" if interp is None else f"{interp.chi2_truth:.3g} / {interp.chi2_nearest:.3g}",
         None if interp is None else interp.passed),
        ("pass" if r.mean_passed else "FAIL", r.mean_passed),
        ("pass" if r.distribution_passed else "FAIL", r.distribution_passed)]


def _markdown(summary: ConditionalSummary, figures) -> str:
    cls, text, lines = headline(summary)
    out = ["# Conditional emulator validation\n", f"**{text}**\n"] + [f"- {x}" for x in lines] + [""]
    out.append(f"Run: `{summary.run.dir}`, checkpoint `{summary.run.checkpoint}` (step {summary.run.step}); "
               f"{summary.n_per_cosmology} generated maps per cosmology.\n")
    out.append("| " + " | ".join(TABLE_HEAD) + " |")
    out.append("|" + "---|" * len(TABLE_HEAD))
    for r in summary.results:
        out.append("| " + " | ".join(t for t, _ in _cells(summary, r)) + " |")
    out.append("")
    for name, path, caption in figures:
        out.append(f"## {name}\n\n![{name}]({path.name})\n\n{html.unescape(caption).replace('<sub>', '_').replace('</sub>', '')}\n")
    return "\n".join(out)


def _html(summary: ConditionalSummary, figures) -> str:
    esc = html.escape
    cls, text, lines = headline(summary)
    head = "".join(f"<th>{esc(h)}</th>" for h in TABLE_HEAD)
    body = []
    for r in summary.results:
        cells = "".join(f'<td class="{"" if ok is None else ("ok" if ok else "bad")}">{esc(t)}</td>'
                        for t, ok in _cells(summary, r))
        body.append(f'<tr><td><a href="cosmologies/{esc(r.label)}/summary.json">{esc(r.label)}</a></td>{cells}</tr>')
    figs = "".join(f'<figure class="wide"><a href="{esc(p.name)}"><img src="{esc(p.name)}" alt="{esc(n)}"></a>'
                   f'<figcaption><b>{esc(n)}.</b> {cap}</figcaption></figure>' for n, p, cap in figures)
    crit = summary.results[0].summary.verdicts.criteria
    run = summary.run
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Conditional emulator validation</title>
<style>{CSS}</style>
</head>
<body data-images="pending">
<main>
<h1>Conditional emulator validation</h1>
<p id="image-warning" class="warn" hidden></p>
<div class="banner {cls}" id="overall">{esc(text)}</div>
<ul>{"".join(f"<li>{esc(x)}</li>" for x in lines)}</ul>
<dl class="prov"><dt>run</dt><dd>{esc(run.dir)}</dd><dt>checkpoint</dt><dd>{esc(run.checkpoint)} (step {run.step})</dd>
<dt>maps per cosmology</dt><dd>{summary.n_per_cosmology} generated</dd>
<dt>support</dt><dd>{esc(", ".join(f"{n} in [{lo:.4g}, {hi:.4g}]" for n, lo, hi in zip(summary.param_names, summary.support["low"], summary.support["high"])))}</dd>
<dt>written</dt><dd>{when}</dd></dl>
<h2>Cosmologies</h2>
<table id="cosmologies"><thead><tr><th>directory</th>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<p class="note">Each cosmology is judged with the validation criteria (power spectrum {crit.ps_max_rel_err:.0%},
Minkowski functionals {crit.mf_max_err_over_peak:.0%}, peaks {crit.peaks_max_err_over_peak:.0%} and PDF
{crit.pdf_max_err_over_peak:.0%} of peak; |Δμ|/σ ≤ {crit.max_bias_over_sigma}; σ ratio in
[{crit.sigma_ratio_min}, {crit.sigma_ratio_max}]); edge cosmologies' mean criteria are ×{crit.edge_factor}.
χ² truth / nearest: the emulator's mean power spectrum against the physical model's at this cosmology and at
the nearest training one (interpolation passes when the first is smaller). Bins are the whole reference's.</p>
<h2>Figures</h2>
<div class="figs">{figs}</div>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""
