"""The sweep report: index.html and sweep.md beside the sweep table, with two figures.

* ``sweep_curves.png``: each statistic's headline metric against training step, one line
  per run (for a conditional run, the worst over its cosmologies, the cosmologies thin
  behind it), the verdict's threshold dotted: where a run peaked or collapsed.
* ``sweep_worst.png``: the worst fraction of an allowance used, over the statistics, their
  checks (mean and per-map distribution) and the cosmologies, against step: above 1 a
  checkpoint fails.
Then the checkpoints ranked by that worst fraction, and, for conditional runs, every
(checkpoint, cosmology) item. The page is self-contained, like the validation report's.
"""

from __future__ import annotations

import datetime
import html
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pipeline.data.format import atomic_write_bytes
from pipeline.stats.compare import STATISTICS
from pipeline.validate import plots
from pipeline.validate.report import CSS, DISPLAY, DISPLAY_MD, SCRIPT
from pipeline.validate.sweep_table import CheckpointRank, ItemResult, rank_checkpoints

COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")


def write_sweep_report(results: list[ItemResult], out: Path, reference: Path, n_maps: int,
                       full_reports: bool) -> Path:
    """Write the figures, sweep.md and index.html (last) into out; returns index.html."""
    ranks = rank_checkpoints(results)
    curves = _curves(results, out / "sweep_curves.png")
    worst = _worst(results, out / "sweep_worst.png")
    atomic_write_bytes(out / "sweep.md", _markdown(results, ranks, reference, n_maps).encode())
    index = out / "index.html"
    atomic_write_bytes(index, _html(results, ranks, reference, n_maps, full_reports, (curves, worst)).encode())
    return index


def _by_run(results: list[ItemResult]) -> dict[str, list[ItemResult]]:
    runs: dict[str, list[ItemResult]] = {}
    for r in results:
        runs.setdefault(r.item.run_label, []).append(r)
    return runs


def _series(items: list[ItemResult], value) -> tuple[np.ndarray, np.ndarray]:
    """Steps and the largest ``value(item)`` over each step's items (its cosmologies)."""
    steps = sorted({r.item.step for r in items})
    return np.array(steps), np.array([max(value(r) for r in items if r.item.step == s) for s in steps])


def _plot_run(ax, items, value, color, label):
    cosmologies = sorted({r.item.cosmology for r in items})
    if len(cosmologies) > 1:
        for c in cosmologies:
            x, y = _series([r for r in items if r.item.cosmology == c], value)
            ax.plot(x, y, color=color, lw=0.6, alpha=0.35)
        label += " (worst cosmology)"
    x, y = _series(items, value)
    ax.plot(x, y, color=color, lw=1.6, marker="o", ms=3.5, label=label)


def _curves(results: list[ItemResult], path: Path) -> Path:
    with plots.matplotlib.rc_context(plots.STYLE):
        fig = Figure(figsize=(12, 6.4))
        axes = fig.subplots(2, 3, sharex=True).ravel()
        runs = _by_run(results)
        for ax, name in zip(axes, STATISTICS):
            v0 = results[0].summary.verdicts.statistics[name]
            for (label, items), color in zip(runs.items(), _colors(len(runs))):
                _plot_run(ax, items, lambda r, n=name: r.summary.verdicts.statistics[n].value, color, label)
            ax.axhline(v0.threshold, color="0.4", ls=":", lw=1.2, label="threshold")
            ax.set_title(DISPLAY_MD[name], fontsize=10)
            ax.set_ylabel(v0.metric, fontsize=8)
            ax.set_yscale("log")
        for ax in axes[3:]:
            ax.set_xlabel("training step")
        axes[0].legend(fontsize=7.5, loc="best")
        fig.tight_layout()
        return plots.save(fig, path)


def _worst(results: list[ItemResult], path: Path) -> Path:
    with plots.matplotlib.rc_context(plots.STYLE):
        fig = Figure(figsize=(7.5, 4.2))
        ax = fig.subplots()
        runs = _by_run(results)
        for (label, items), color in zip(runs.items(), _colors(len(runs))):
            _plot_run(ax, items, lambda r: r.worst[1], color, label)
        ax.axhline(1.0, color="0.4", ls=":", lw=1.2, label="1 = at the limit")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("worst fraction of an allowance used")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return plots.save(fig, path)


def _colors(n: int) -> list[str]:
    return [COLORS[i % len(COLORS)] for i in range(n)]


def _headline(ranks: list[CheckpointRank]) -> tuple[str, str]:
    n_pass = sum(c.passed for c in ranks)
    top = ranks[0]
    text = (f"{n_pass} of {len(ranks)} checkpoints meet every criterion; the closest: {top.run_label} at step "
            f"{top.step}, its worst statistic ({DISPLAY_MD.get(top.worst_statistic, top.worst_statistic)}) "
            f"using {top.worst_ratio:.3g}x its allowance")
    return ("pass" if n_pass else "fail"), text


def _item_link(out_item: str, full_reports: bool, text: str) -> str:
    esc = html.escape
    return f'<a href="items/{esc(out_item)}/index.html">{esc(text)}</a>' if full_reports else esc(text)


def _html(results, ranks, reference, n_maps, full_reports, figures) -> str:
    esc = html.escape
    cls, text = _headline(ranks)
    conditional = any(r.item.cosmology for r in results)
    key_of = {r.item.checkpoint_key: r.item.key.rsplit("/", 1)[0] if r.item.cosmology else r.item.key
              for r in results}
    head = ["rank", "run", "step", "best.pt", "worst fraction of an allowance", "worst statistic"] + \
        (["worst cosmology", "cosmologies passed"] if conditional else []) + ["verdict"]
    rows = []
    for i, c in enumerate(ranks, 1):
        link = _item_link(key_of[(c.run_label, c.step)], full_reports and not conditional, c.run_label)
        cells = [str(i), link, str(c.step), "yes" if c.best else "", f"{c.worst_ratio:.3g}",
                 DISPLAY.get(c.worst_statistic, c.worst_statistic)]
        if conditional:
            cells += [esc(c.worst_cosmology), f"{c.n_passed} / {c.n_items}"]
        cells.append(f'<b>{"PASS" if c.passed else "FAIL"}</b>')
        ok = ' class="ok"' if c.passed else ' class="bad"'
        rows.append(f'<tr data-run="{esc(c.run_label)}" data-step="{c.step}">'
                    + "".join(f"<td>{x}</td>" for x in cells[:-1]) + f"<td{ok}>{cells[-1]}</td></tr>")
    ranked = ('<table class="verdicts" id="ranked"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head)
              + "</tr></thead><tbody>" + "\n".join(rows) + "</tbody></table>")
    items_html = _items_html(results, full_reports) if conditional else ""
    figs = "".join(f'<figure class="wide"><a href="{p.name}"><img src="{p.name}" alt="{esc(cap)}"></a>'
                   f"<figcaption>{cap}</figcaption></figure>" for p, cap in zip(figures, (
                       "Each statistic's headline metric (the one its verdict judges) against training step, "
                       "one line per run; dotted: the threshold. Log scale.",
                       "The worst fraction of an allowance used, over the statistics and their checks, against "
                       "training step: below 1 every criterion is met.")))
    written = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Validation sweep</title>
<style>{CSS}</style>
</head>
<body data-images="pending">
<main>
<h1>Validation sweep</h1>
<div class="banner {cls}" id="overall">{esc(text)}</div>
<p id="image-warning" class="warn" hidden></p>
<dl class="prov"><dt>reference</dt><dd>{esc(str(reference))}</dd><dt>maps per item</dt><dd>{n_maps}</dd>
<dt>items</dt><dd>{len(results)} ({len(ranks)} checkpoints of {len(_by_run(results))} runs)</dd>
<dt>every number</dt><dd>sweep.h5, sweep.csv (beside this page)</dd><dt>written</dt><dd>{written}</dd></dl>
<p class="note">A checkpoint passes when every statistic meets the validation criteria (the same as
<code>cosmogan validate</code>'s) {"at every cosmology of the reference " if conditional else ""}— it is
judged on {n_maps} generated maps against the reference, so a pass says the statistics agree within those
thresholds, not that the maps are indistinguishable from simulations.</p>
<h2>Checkpoints, ranked by the worst fraction of an allowance used</h2>
<p class="note">Each check's figure over its allowance: the mean's metric over its threshold, the largest
|bias| / σ over <code>max_bias_over_sigma</code>, the spread ratio's distance from 1 over the allowed distance,
the largest |Δρ| over <code>max_corr_diff</code>; the worst of them over the statistics. Above 1 fails.</p>
{ranked}
{items_html}
<h2>Figures</h2>
<div class="figs">
{figs}
</div>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _items_html(results: list[ItemResult], full_reports: bool) -> str:
    esc = html.escape
    head = ["run", "step", "cosmology", "extrapolated", "worst fraction of an allowance", "worst statistic", "verdict"]
    rows = []
    for r in results:
        name, ratio = r.worst
        cells = [_item_link(r.item.key, full_reports, r.item.run_label), str(r.item.step),
                 esc(r.item.cosmology_label), "yes" if r.item.extrapolated else "", f"{ratio:.3g}",
                 DISPLAY.get(name, name)]
        ok = ' class="ok"' if r.passed else ' class="bad"'
        rows.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells)
                    + f'<td{ok}><b>{"PASS" if r.passed else "FAIL"}</b></td></tr>')
    return ('<h2>Every item (checkpoint and cosmology)</h2><table class="verdicts" id="items"><thead><tr>'
            + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>" + "\n".join(rows)
            + "</tbody></table>")


def _markdown(results, ranks, reference, n_maps) -> str:
    _, text = _headline(ranks)
    lines = ["# Validation sweep", "", f"**{text}**", "", f"- reference: {reference}", f"- maps per item: {n_maps}",
             f"- items: {len(results)}; every number in sweep.h5 and sweep.csv", "",
             "| rank | run | step | best.pt | worst fraction of an allowance | worst statistic | passed | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for i, c in enumerate(ranks, 1):
        lines.append(f"| {i} | {c.run_label} | {c.step} | {'yes' if c.best else ''} | {c.worst_ratio:.3g} | "
                     f"{DISPLAY_MD.get(c.worst_statistic, c.worst_statistic)} | {c.n_passed} / {c.n_items} | "
                     f"**{'PASS' if c.passed else 'FAIL'}** |")
    lines += ["", "![metrics against step](sweep_curves.png)", "", "![worst fraction](sweep_worst.png)", ""]
    return "\n".join(lines)
