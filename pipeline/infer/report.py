"""The inference report: contours.png and index.html beside summary.json.

The figure draws each simulator's posterior: 68% and 95% highest-density contours over
the parameter plane with both marginals (a single curve for one parameter); the physical
model in solid blue and the emulator in dashed orange, as in the validation report; the
truth, when the observed maps carry it, as a black star and lines. index.html is written
last, self-contained apart from the PNG beside it.
"""

from __future__ import annotations

import datetime
import html

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.ndimage import gaussian_filter

from pipeline.data.format import atomic_write_bytes
from pipeline.infer.posterior import LEVELS, density_levels
from pipeline.validate import plots
from pipeline.validate.report import CSS, SCRIPT

STYLE = {"emulator": (plots.EMU_COLOR, "--", "emulator (GAN)"),
         "physics": (plots.REF_COLOR, "-", "physical model")}
LABELS = {"Omega_m": r"$\Omega_m$", "sigma_8": r"$\sigma_8$"}


def density(p) -> np.ndarray:
    """A posterior's weights on its fine grid: from the grid, or emcee's samples binned there."""
    if p.samples is None:
        w = np.exp(p.log_post - p.log_post.max())
        return w / w.sum()
    edges = [np.concatenate([[a[0]], 0.5 * (a[1:] + a[:-1]), [a[-1]]]) for a in p.axes]
    h, _ = np.histogramdd(p.samples, bins=edges)
    h = gaussian_filter(h, 1.0)  # one fine cell: samples' shot noise off the contours
    return h / h.sum()


def style(result, name: str) -> tuple[str, str, str]:
    """(colour, line style, legend label) of a simulator's curves; the label says when the
    emulator's mean was corrected by its training maps."""
    color, ls, label = STYLE[name]
    info = result.likelihood.get(name)
    return color, ls, label[:-1] + ", corrected mean)" if info and info.mean_correction else label


def contour_figure(result, path):
    names = next(iter(result.posteriors.values())).summary.names
    truth = result.observed.truth
    with plots.matplotlib.rc_context(plots.STYLE):
        if len(names) == 1:
            fig = Figure(figsize=(5.2, 3.6))
            ax = fig.subplots()
            for name, p in result.posteriors.items():
                color, ls, label = style(result, name)
                w = density(p)
                ax.plot(p.axes[0], w / np.trapezoid(w, p.axes[0]), color=color, ls=ls, label=label)
            if truth is not None:
                ax.axvline(truth[0], color="k", lw=0.8, label="truth")
            ax.set_xlabel(LABELS.get(names[0], names[0]))
            ax.set_ylabel("posterior density")
            ax.legend()
        else:
            fig = Figure(figsize=(6.0, 6.0))
            grid = fig.add_gridspec(2, 2, width_ratios=(4, 1.2), height_ratios=(1.2, 4), wspace=0.05, hspace=0.05)
            main = fig.add_subplot(grid[1, 0])
            top = fig.add_subplot(grid[0, 0], sharex=main)
            right = fig.add_subplot(grid[1, 1], sharey=main)
            handles = []
            for name, p in result.posteriors.items():
                color, ls, label = style(result, name)
                w = density(p)
                levels = sorted(set(density_levels(w)))
                main.contour(p.axes[0], p.axes[1], w.T, levels=levels + [w.max() * 1.0001], colors=[color],
                             linestyles=[ls], linewidths=[1.0, 1.6][:len(levels)] + [0])
                main.contourf(p.axes[0], p.axes[1], w.T, levels=[levels[-1], w.max() * 1.0001], colors=[color],
                              alpha=0.15)
                top.plot(p.axes[0], w.sum(axis=1), color=color, ls=ls)
                right.plot(w.sum(axis=0), p.axes[1], color=color, ls=ls)
                handles.append(Line2D([], [], color=color, ls=ls, label=label))
            if truth is not None:
                main.plot(*truth, marker="*", color="k", ms=11, ls="none")
                main.axvline(truth[0], color="k", lw=0.5)
                main.axhline(truth[1], color="k", lw=0.5)
                top.axvline(truth[0], color="k", lw=0.5)
                right.axhline(truth[1], color="k", lw=0.5)
                handles.append(Line2D([], [], marker="*", color="k", ls="none", ms=9, label="truth"))
            main.set_xlabel(LABELS.get(names[0], names[0]))
            main.set_ylabel(LABELS.get(names[1], names[1]))
            for ax in (top, right):
                ax.tick_params(labelbottom=False, labelleft=False)
                ax.grid(False)
            top.set_title(f"posterior from {result.observed.n_obs} maps: {int(LEVELS[0] * 100)}% and "
                          f"{int(round(LEVELS[1] * 100))}% contours", fontsize=9.5)
            main.legend(handles=handles, loc="best")
        return plots.save(fig, path)


def _fmt(summary, j) -> str:
    lo, hi = summary.interval68[j]
    return f"{summary.mean[j]:.4f} ± {summary.std[j]:.4f} (68%: {lo:.4f} – {hi:.4f})"


def _rows(result) -> str:
    esc = html.escape
    rows = []
    for name, p in result.posteriors.items():
        s = p.summary
        for j, par in enumerate(s.names):
            cells = [name, par, f"{s.best[j]:.4f}", _fmt(s, j), f"{s.interval95[j][0]:.4f} – {s.interval95[j][1]:.4f}"]
            if s.truth is not None:
                cells += [f"{s.truth[j]:.4f}", f"{s.bias_in_sigma()[j]:+.2f}"]
            rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(rows)


def write_report(result, emulator) -> None:
    esc = html.escape
    out = result.out
    contour_figure(result, out / "contours.png")
    truth = result.observed.truth is not None
    head = ["simulator", "parameter", "MAP", "mean ± std (68% interval)", "95% interval"] + \
        (["truth", "(mean − truth) / std"] if truth else [])
    like = next(iter(result.likelihood.values()))
    notes = [f"{esc(k)}: {len(v.dropped)} constant components dropped ({esc(', '.join(v.dropped))})"
             for k, v in result.likelihood.items() if v.dropped]
    edge = [f"{esc(k)}: {p.summary.edge_mass:.1%} of the mass lies in the outermost cells of the box: the prior "
            "(the grid's range) cuts the posterior" for k, p in result.posteriors.items() if p.summary.edge_mass > 0.01]
    corr = "; ".join(f"{esc(k)} {p.summary.correlation[0, 1]:+.2f}" for k, p in result.posteriors.items()
                     if len(p.summary.names) > 1)
    corrected = "".join(
        f"; the {esc(k)}'s mean corrected by its training maps ({esc(c['training_maps'])}, {c['points']} "
        f"cosmologies), whose own noise can move the posterior by about {c['noise_in_sigma']:.2f} of its width"
        for k, c in ((k, v.mean_correction) for k, v in result.likelihood.items()) if c)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Parameter inference</title>
<style>{CSS}</style>
</head>
<body data-images="pending">
<main>
<h1>Parameter inference</h1>
<p id="image-warning" class="warn" hidden></p>
<dl class="prov"><dt>observed</dt><dd>{esc(result.observed.source)} ({result.observed.n_obs} maps, their statistics averaged)</dd>
<dt>emulator</dt><dd>{esc(str(emulator.source))} (step {emulator.step}, {esc(emulator.weights)} weights)</dd>
<dt>likelihood</dt><dd>{esc(like.kind)} ({"Sellentin &amp; Heavens 2016" if like.kind == "t" else "Gaussian, Hartlap factor"}),
{like.components} components; covariance from {like.n_cov} maps at {"the grid point nearest the best fit" if like.covariance == "best-fit" else "the fiducial point"}
({esc("; ".join(k + ": " + ", ".join(f"{v:.4g}" for v in i.covariance_point) for k, i in result.likelihood.items()))}),
scaled by 1/n_obs + 1/n_sim</dd>
<dt>simulations</dt><dd>a {"×".join(map(str, like.grid))} grid, {like.n_sim} maps per point (the same latent draws at
every point), refined ×{like.refine} by a cubic spline; flat prior over the grid's box. The mean's own noise can move
the posterior as a whole by about {like.mean_noise_in_sigma:.2f} of its standard deviation (more maps per point,
--n-sim, make it smaller){corrected}</dd>
<dt>written</dt><dd>{when}</dd></dl>
{"".join(f'<p class="warn">{x}</p>' for x in edge)}
<h2>Posterior</h2>
<table id="posterior"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead><tbody>
{_rows(result)}
</tbody></table>
<p class="note">Intervals are central intervals of each marginal.{f" Correlation: {corr}." if corr else ""}
{" ".join(notes)}</p>
<div class="figs"><figure class="wide"><a href="contours.png"><img src="contours.png" alt="posterior contours"></a>
<figcaption><b>Posterior.</b> 68% and 95% highest-density contours and the marginals{"; the star is the truth" if truth else ""}.</figcaption></figure></div>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""
    atomic_write_bytes(out / "index.html", page.encode())
